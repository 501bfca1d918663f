import json

import pytest
import torch

from conftest import run_cli
from hovit_nas.config import ArchConfig, RunConfig, StageConfig, TrainConfig
from hovit_nas.data import DataSpec, load_data
from hovit_nas.errors import TrialFailed
from hovit_nas.models import load_exported
from hovit_nas.train import train_and_evaluate


def _tiny(num_classes=10, keep=1, epochs=(2, 2)):
    return RunConfig(
        name="tiny",
        model=ArchConfig(stages=[StageConfig(32, 2, 2, keep), StageConfig(48, 2, 2, keep, "conv")], img_size=32,
                         num_classes=num_classes, head_width=32),
        train=TrainConfig(epochs_dense=epochs[0], epochs_prune=epochs[1], batch_size=32, max_steps_per_epoch=4,
                          lr=2e-3)).validate()


@pytest.fixture(scope="module")
def digits32():
    return load_data(DataSpec(img_size=32, max_per_split=160))


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, digits32):
    full = train_and_evaluate(_tiny(), digits32, "cpu", out_dir=tmp_path / "full")

    def stop_after_3(rec):
        if rec["global_epoch"] == 3:  # inside phase 2 (prune, with LoRA)
            raise Interrupt

    with pytest.raises(Interrupt):
        train_and_evaluate(_tiny(), digits32, "cpu", out_dir=tmp_path / "cut",
                           on_epoch=stop_after_3)
    resumed = train_and_evaluate(_tiny(), digits32, "cpu", out_dir=tmp_path / "cut", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 1, 2]
    assert [round(h["loss"], 5) for h in resumed.history] == [round(h["loss"], 5) for h in full.history]
    assert resumed.selected_blocks == full.selected_blocks
    assert resumed.test == full.test


def test_a_stop_returned_by_on_epoch_ends_training_there_and_scores_nothing(digits32):
    """Early stopping is a decision the callback returns (lifecycle.Stop), not an exception."""
    from hovit_nas.lifecycle import Stop

    seen = []

    def rung_at_3(rec):
        seen.append(rec["global_epoch"])
        return Stop("stopped at the rung at epoch 3", 3, rec["val_top1"]) if rec["global_epoch"] == 3 else None

    r = train_and_evaluate(_tiny(), digits32, "cpu", on_epoch=rung_at_3)
    assert seen == [1, 2, 3] and [(h["phase"], h["epoch"]) for h in r.history] == [("dense", 1), ("dense", 2),
                                                                                  ("prune", 1)]
    assert r.stop == Stop("stopped at the rung at epoch 3", 3, r.history[-1]["val_top1"])
    assert r.val == {} and r.test == {} and r.exported is None and r.scores is None
    assert train_and_evaluate(_tiny(epochs=(1, 0)), digits32, "cpu", on_epoch=lambda rec: None).stop is None


def test_nan_loss_fails_with_reason(digits32):
    cfg = _tiny()
    cfg.train.lr = 1e30
    with pytest.raises(TrialFailed, match=r"loss became (nan|inf) \(NaN/inf\) in phase dense, epoch 1, step ([2-9]|\d\d)$"):
        train_and_evaluate(cfg, digits32, "cpu")  # step 1 is finite: the first update blows it up


@pytest.mark.slow
def test_end_to_end_on_real_crc_tiles(tmp_path, crc_tiles):
    """train -> prune -> export -> eval on real NCT-CRC-HE tiles (TIFF/PNG), through the CLI."""
    out = tmp_path / "run"
    r = run_cli("train", "--config", "hovit_b", "--data", str(crc_tiles), "--img-size", "64",
                "--epochs-dense", "2", "--epochs-prune", "1", "--batch-size", "16", "--threads", "2",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "prune epoch 1/1" in r.stderr and "test: top1" in r.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["params_exported"] < result["params_dense"]
    assert [len(b) for b in result["selected_blocks"]] == [2, 2]
    assert result["latency"]["median_ms"] > 0 and result["latency"]["threads"] == 2
    model = load_exported(out / "model.safetensors")
    assert [len(s.blocks) for s in model.stages] == [2, 2]
    ev = run_cli("eval", str(out), "--data", str(crc_tiles))
    assert ev.returncode == 0, ev.stderr
    summary = json.loads(ev.stdout.strip().splitlines()[-1])
    assert summary["test"]["top1"] == pytest.approx(result["test"]["top1"])
    ex = run_cli("export", str(out), "--out", str(tmp_path / "again.safetensors"))
    assert ex.returncode == 0, ex.stderr
    a, b = load_exported(out / "model.safetensors"), load_exported(tmp_path / "again.safetensors")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_cli_bad_config_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  stages:\n    - {dim: 64, heads: 3, blocks: 2}\n")
    r = run_cli("train", "--config", str(p))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {p}: model.stages[0].heads: 3 heads do not divide dim 64"
    r = run_cli("train", "--config", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "none.yaml: no such file" in r.stderr


def test_weight_decay_skips_batchnorm_biases_and_attention_biases_as_timm_does():
    """timm's rule (param_groups_weight_decay, create_optimizer_v2): decay weight matrices and
    kernels only; Levit.no_weight_decay() lists the attention biases; phase 2's gates get their own
    group at gate_lr_mult x lr, undecayed, and frozen dense weights are left out."""
    from hovit_nas.models import add_lora, create_hovit
    from hovit_nas.train import make_optimizer

    cfg = _tiny(keep=1)
    model = create_hovit(cfg)

    def groups(opt):
        names = {id(p): n for n, p in model.named_parameters()}
        return [(g["weight_decay"], g["lr"], {names[id(p)] for p in g["params"]}) for g in opt.param_groups]

    decayed = set().union(*(ns for wd, _, ns in groups(make_optimizer(model, cfg.train)) if wd > 0))
    undecayed = set().union(*(ns for wd, _, ns in groups(make_optimizer(model, cfg.train)) if wd == 0))
    params = dict(model.named_parameters())
    assert decayed and all(params[n].ndim > 1 and "attention_biases" not in n for n in decayed)
    assert {n for n in params if n.endswith("attention_biases")} <= undecayed
    assert {n for n in params if params[n].ndim <= 1} <= undecayed  # BatchNorm, biases, gate logits
    assert decayed | undecayed == set(params)
    model.set_dense(False)
    add_lora(model, 2, 4)
    g = groups(make_optimizer(model, cfg.train, gate_lr_mult=10.0))
    assert g[-1][:2] == (0.0, cfg.train.lr * 10.0) and all("gate.logits" in n for n in g[-1][2])
    trained = set().union(*(ns for _, _, ns in g))
    assert all("lora_" in n or n.startswith(("stages.0.gate", "stages.1.gate", "head")) for n in trained)


def test_cosine_schedule_is_timms_per_update_and_resumes_at_its_step():
    """timm's CosineLRScheduler per update: every group (a 10x group as the gates' too) follows
    lr * (1 + cos(pi * s / total)) / 2 after the warm-up, warms up linearly from WARMUP_LR_INIT to its
    own lr, and a
    scheduler loaded from a state dict -- its own, or a torch LambdaLR's from an older checkpoint --
    continues at the same step."""
    import math

    from hovit_nas.train import WARMUP_LR_INIT, make_schedule

    t = TrainConfig(lr=1e-3)
    def opt_():
        w = torch.nn.Parameter(torch.zeros(2))
        return torch.optim.AdamW([{"params": [w]}, {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-2}],
                                 lr=t.lr)
    opt = opt_()
    sched = make_schedule(opt, t, total_steps=20, warmup_steps=4)
    assert [g["lr"] for g in opt.param_groups] == [WARMUP_LR_INIT] * 2
    lrs = []
    for _ in range(20):
        sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    for s, (a, b) in enumerate(lrs, start=1):
        if s < 4:  # from WARMUP_LR_INIT for every group, to the group's own lr
            assert (a, b) == (pytest.approx(WARMUP_LR_INIT + s * (1e-3 - WARMUP_LR_INIT) / 4),
                              pytest.approx(WARMUP_LR_INIT + s * (1e-2 - WARMUP_LR_INIT) / 4))
        else:
            cos = (1 + math.cos(math.pi * s / 20)) / 2
            assert (a, b) == (pytest.approx(1e-3 * cos), pytest.approx(1e-2 * cos))
    assert lrs[-1] == [0.0, 0.0]

    for state in ({"updates": 9}, torch.optim.lr_scheduler.LambdaLR(opt_(), lambda s: 1.0).state_dict() | {"last_epoch": 9}):
        opt2 = opt_()
        resumed = make_schedule(opt2, t, total_steps=20, warmup_steps=4)
        resumed.load_state_dict(state)
        resumed.step()
        assert [g["lr"] for g in opt2.param_groups] == pytest.approx(lrs[9])
