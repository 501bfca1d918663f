"""The CLI is a skin: logging set up once (-v/-q), library errors' setting names shown as flags,
option choices from the library's constants, and the train overrides as a library rule."""
import logging

import click
import pytest

from conftest import run_cli
from hovit_nas import cli, config
from hovit_nas.config import TrainOverrides
from hovit_nas.models import PRESETS


def test_quiet_keeps_warnings_and_results_drops_progress(tmp_path, class_folder):
    import json

    idx = {"train_idx": list(range(0, 12)), "val_idx": [12, 13, 14], "test_idx": [15, 16, 17]}  # TUM: none in train
    (tmp_path / "idx.json").write_text(json.dumps(idx))
    args = ["train", "--config", "hovit_s", "--data", str(class_folder), "--split-index", str(tmp_path / "idx.json"),
            "--img-size", "32", "--epochs", "1", "--max-steps", "1", "--out", str(tmp_path / "run")]
    loud = run_cli(*args)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "scanned " in loud.stderr and "dense epoch 1/1" in loud.stderr
    assert "warning: class TUM has no train samples" in loud.stderr
    quiet = run_cli("-q", *args)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr.strip().splitlines() == [l for l in loud.stderr.strip().splitlines() if l.startswith("warning:")]
    assert "test: top1" in quiet.stdout  # the result is output, not a log line
    verbose = run_cli("-v", "pareto", "--study", "none", cwd=tmp_path)
    assert verbose.returncode == 2


def test_the_library_prints_nothing_without_a_handler(tmp_path, class_folder, capsys):
    from hovit_nas.config import DataSpec
    from hovit_nas.data import load_data

    logging.getLogger("hovit_nas").setLevel(logging.INFO)
    load_data(DataSpec(path=str(class_folder), img_size=16, cache_dir=str(tmp_path / "c")))
    assert capsys.readouterr().err == ""


def test_setting_names_in_library_errors_become_the_command_s_flags():
    search = cli.main.commands["search"]
    line = "error: `trials` must be >= 1; use `study` NEW_NAME (or set `latency_anchor` to match); `unknown` stays"
    assert cli._as_flags(search, line) == ("error: --trials must be >= 1; use --study NEW_NAME (or set "
                                           "--latency-anchor/--no-latency-anchor to match); `unknown` stays")
    assert cli._as_flags(cli.main.commands["train"], "`resume` needs `out` DIR") == "--resume needs --out DIR"


def test_option_choices_come_from_the_library():
    def choices(cmd, name):
        p = next(p for p in cli.main.commands[cmd].params if p.name == name)
        assert isinstance(p.type, click.Choice)
        return tuple(p.type.choices)

    assert choices("search", "sampler") == config.SAMPLERS
    assert choices("search", "metric") == config.METRICS
    assert choices("search", "runtime") == config.RUNTIMES
    assert choices("search", "precision") == choices("export", "precision") == config.PRECISIONS
    assert choices("export", "runtime") == config.QUANTIZABLE
    assert choices("search", "executor") == choices("confirm", "executor") == config.EXECUTORS
    assert choices("search", "early_stop") == config.EARLY_STOP_RULES
    assert choices("export", "fmt") == config.EXPORT_FORMATS
    fields = {f.name for f in config.dataclasses.fields(config.SearchConfig)}
    params = {p.name for p in cli.main.commands["search"].params}
    assert fields <= params | {"data_options", "limits", "ray"}  # search passes its options through as is


def test_train_overrides():
    base = PRESETS["hovit_b"]()  # pruned: --epochs N means N dense + N // 2 pruning epochs
    cfg = TrainOverrides(img_size=48, epochs=4, batch_size=8, seed=3).apply(base)
    assert (cfg.model.img_size, cfg.train.epochs_dense, cfg.train.epochs_prune) == (48, 4, 2)
    assert (cfg.train.batch_size, cfg.train.seed) == (8, 3)
    assert base.model.img_size != 48  # a copy
    dense = TrainOverrides(epochs=3).apply(PRESETS["hovit_s"]())  # nothing to prune: no pruning epochs
    assert (dense.train.epochs_dense, dense.train.epochs_prune) == (3, 0)
    assert TrainOverrides(epochs=1, epochs_prune=5).apply(base).train.epochs_prune == 5
    assert base.train.amp and not TrainOverrides(amp=False).apply(base).train.amp  # --no-amp: fp32 throughout
    assert TrainOverrides().apply(base).train.amp  # no flag: the config's
    with pytest.raises(config.ConfigError):
        TrainOverrides(batch_size=0).apply(base)

