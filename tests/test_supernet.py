"""The weight-sharing HoViT supernet (issue 21): slicing along timm's LeViT layout, extraction,
the sandwich step, BatchNorm recalibration and ONNX export of an extracted subnet."""
import numpy as np
import pytest
import torch

from hovit_nas import supernet as S
from hovit_nas.models.supernet import deployed
from hovit_nas.space import load_space


@pytest.fixture(scope="module")
def built():
    space = load_space("hovit-wide-cpu")
    space.base.model.img_size = 32  # small and quick; the layout is the same at 64 px
    torch.manual_seed(0)
    net, subnets = S.build(space, seed=0)
    with torch.no_grad():  # non-trivial BatchNorm statistics and LeViT biases (zero at init)
        for name, t in net.named_buffers():
            if name.endswith("running_mean"):
                t.normal_(0, 0.1)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
        for name, p in net.named_parameters():
            if name.endswith(("attention_biases", ".bn.bias")):
                p.normal_(0, 0.1)
    return net, subnets


def _attention_subnet(subnets):
    for _ in range(200):
        c = subnets.sample()
        if c.model.stages[1].downsample == "attention" and c.model.key_dim == 16:
            return c
    pytest.fail("no subnet with attention downsampling and key_dim 16 in 200 draws")


def test_an_extracted_subnet_is_the_stand_alone_hovit_with_its_slices_copied_in(built):
    """The slices are checked against an independent reading of timm's layout: qkv rows per head
    ([q | k | v] within a head), proj columns per head, attention_biases[:heads], the first
    channels elsewhere. The extracted model equals the subnet computed on the shared weights."""
    net, subnets = built
    cfg = _attention_subnet(subnets)
    arch = deployed(cfg.model)
    sub = net.extract(cfg)
    h, kd, dim = arch.stages[0].heads, arch.key_dim_for(0), arch.stages[0].dim
    big = net.net.stages[0].blocks[0].attn
    kd_max, h_max = net.largest_config.key_dim_for(0), net.largest_config.stages[0].heads
    w = big.qkv.linear.weight.view(h_max, 3 * kd_max, -1)  # attn_ratio 1: v has key_dim rows
    want = torch.cat([torch.cat([w[i, :kd], w[i, kd_max:kd_max + kd], w[i, 2 * kd_max:2 * kd_max + kd]])
                      for i in range(h)])[:, :dim]
    got = sub.stages[0].blocks[0].attn
    assert torch.equal(got.qkv.linear.weight, want)
    pw = big.proj.ln.linear.weight.view(-1, h_max, kd_max)[:dim, :h, :kd].reshape(dim, -1)
    assert torch.equal(got.proj.ln.linear.weight, pw)
    assert torch.equal(got.attention_biases, big.attention_biases[:h])
    assert torch.equal(sub.stages[0].blocks[0].mlp.ln1.linear.weight,
                       net.net.stages[0].blocks[0].mlp.ln1.linear.weight[:int(dim * arch.mlp_ratio), :dim])
    assert torch.equal(sub.stem.conv1.linear.weight, net.net.stem.conv1.linear.weight[:dim // 8])
    assert torch.equal(got.qkv.bn.running_mean, torch.cat(
        [big.qkv.bn.running_mean.view(h_max, -1)[i, o:o + kd] for i in range(h) for o in (0, kd_max, 2 * kd_max)]))
    ds = sub.stages[1].downsample.attn_downsample
    assert ds.num_heads == arch.stages[0].dim // 16 and torch.equal(
        ds.attention_biases, net.attn_down["1"].attn_downsample.attention_biases[:ds.num_heads])
    x = torch.randn(4, 3, 32, 32)
    net.train(), sub.train()
    with torch.no_grad():
        assert torch.equal(net.forward_subnet(cfg.model, x), sub(x))
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in net.parameters())


def test_the_largest_subnet_is_the_supernet(built):
    net, subnets = built
    largest = net.extract(net.largest_config)
    mine, theirs = largest.state_dict(), net.net.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    x = torch.randn(2, 3, 32, 32)
    largest.eval(), net.eval()
    with torch.no_grad():
        assert torch.equal(largest(x), net(x))


def test_one_sandwich_step_updates_the_shared_weights_and_bn_recalibration_only_statistics():
    space = load_space("hovit-wide-cpu")
    space.base.model.img_size = 32
    net, subnets = S.build(space, seed=1)
    from hovit_nas.train import make_optimizer

    opt = make_optimizer(net, space.base.train)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 2, (8,))
    losses = S.sandwich_step(net, subnets, x, y, opt, S.SupernetConfig(sandwich_k=1))
    assert all(np.isfinite(v) for v in losses.values()) and losses["smallest"] > 0
    small = deployed(subnets.smallest.model)
    stem = net.net.stem.conv1.linear.weight  # the smallest's stem slice is shared by every subnet
    assert not torch.equal(stem[:small.stages[0].dim // 8], before["net.stem.conv1.linear.weight"][:small.stages[0].dim // 8])
    changed = sum(not torch.equal(v, before[k]) for k, v in net.named_parameters())
    assert changed > len(before) // 2

    model = net.extract(subnets.smallest)
    params = {k: v.clone() for k, v in model.named_parameters()}
    stats = {k: v.clone() for k, v in model.named_buffers() if "running" in k}
    S.recalibrate_bn(model, torch.randn(16, 3, 32, 32), batch_size=8)
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    assert all(not torch.equal(v, stats[k]) for k, v in model.named_buffers() if "running" in k)
    assert not model.training


def test_an_extracted_subnet_exports_to_onnx_matching_pytorch(built):
    from hovit_nas.models import export
    from hovit_nas.models.onnx import onnx_bytes, session

    net, subnets = built
    cfg = _attention_subnet(subnets)
    model = export(S.recalibrate_bn(net.extract(cfg), torch.randn(16, 3, 32, 32)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x).numpy()
    got = session(onnx_bytes(model, 32), 1, "cpu").run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_search_with_the_supernet_evaluator_records_estimates_and_refuses_another_supernet(tmp_path, monkeypatch):
    """`supernet train` on the built-in data, then `search --evaluator supernet`: every trial ends
    COMPLETE without training, its accuracy marked as the supernet's estimate; only architecture
    parameters are searched; `pareto` labels the figures as estimates. `supernet extract` writes
    a run directory that `eval` accepts, scoring what the search estimated. A resume against
    another supernet (another id) is refused in one line, and so is a resume that trains."""
    import json
    import shutil

    import optuna

    from conftest import builtin_study, run_cli
    from spaces import tiny_space

    space = tiny_space(tmp_path, trials=3)
    r = run_cli("supernet", "train", "--space", str(space), "--epochs", "1", "--max-steps", "2", "--sandwich-k", "1",
                "--threads", "1", "--out", "sn", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "sn" / "supernet.json").read_text())
    assert len(rec["id"]) == 16 and rec["history"][0]["epoch"] == 1
    s = run_cli("search", "--space", str(space), "--evaluator", "supernet", "--supernet", "sn", "--threads", "1",
                cwd=tmp_path)
    assert s.returncode == 0, s.stderr[-2000:]
    study = builtin_study(tmp_path)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        assert t.user_attrs["estimate"] == {"by": "supernet", "supernet": rec["id"]}
        assert "history" not in t.user_attrs and "test" not in t.user_attrs and 0 <= t.values[0] <= 1  # val only
        assert not any(k.startswith(("tau", "lora")) for k in t.params)
    assert study.user_attrs["supernet"]["id"] == rec["id"]
    from hovit_nas import pareto

    assert f"supernet {rec['id']} estimate" in pareto.format_report(pareto.summarise(study))

    from hovit_nas.config import dump_run_config, run_config_from_dict

    fp = next(t for t in trials if t.number == 0)  # the extracted subnet scores what the search estimated
    (tmp_path / "fp.yaml").write_text(dump_run_config(run_config_from_dict(fp.user_attrs["config"], "fp")))
    x = run_cli("supernet", "extract", "--supernet", "sn", "--config", "fp.yaml", "--out", "run", cwd=tmp_path)
    assert x.returncode == 0, x.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["val"]["top1"] == pytest.approx(fp.values[0]) and (tmp_path / "run" / "model.safetensors").is_file()
    ev = run_cli("eval", "run", cwd=tmp_path)
    assert ev.returncode == 0 and f"top1 {result['test']['top1']:.4f}" in ev.stdout, ev.stderr[-2000:]

    # from estimate to answer: no pin on estimates; confirm retrains stand-alone and shows both
    p = run_cli("pin", cwd=tmp_path)
    assert p.returncode != 0 and "supernet estimates" in p.stderr and "confirm" in p.stderr.strip().splitlines()[-1]
    assert "Traceback" not in p.stderr
    c = run_cli("confirm", "--top-k", "1", "--seeds", "2", "--threads", "1", cwd=tmp_path)
    assert c.returncode == 0, c.stderr[-2000:]
    runs = optuna.load_study(study_name="tiny-builtin-confirm", storage=f"sqlite:///{tmp_path}/studies/tiny-builtin/"
                             "study.db").get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert runs and all(len(t.user_attrs["history"]) >= 1 and "estimate" not in t.user_attrs for t in runs)  # trained
    assert "supernet estimate" in c.stdout and f"{fp.values[0]:8.4f}" in c.stdout  # HoViT-B's estimate beside
    pa = run_cli("pareto", "--no-baselines", cwd=tmp_path)
    html = (tmp_path / "studies" / "tiny-builtin" / "pareto.html").read_text()
    assert pa.returncode == 0 and "confirmed stand-alone: mean" in html and "supernet estimate " in html
    p = run_cli("pin", cwd=tmp_path)
    assert p.returncode == 0 and "confirmed over 2 seeds" in p.stdout, p.stderr[-2000:]

    shutil.copytree(tmp_path / "sn", tmp_path / "sn2")
    rec_id, rec["id"] = rec["id"], "0" * 16
    (tmp_path / "sn2" / "supernet.json").write_text(json.dumps(rec))
    from hovit_nas.config import SearchConfig
    from hovit_nas.errors import HovitError
    from hovit_nas.search import run_search

    monkeypatch.chdir(tmp_path)  # the refusals in-process (the CLI prints the same line: test_cli.py)
    with pytest.raises(HovitError) as other:
        run_search(SearchConfig(space=str(space), evaluator="supernet", supernet="sn2", trials=4))
    assert str(other.value).startswith(f"study 'tiny-builtin' was scored by supernet {rec_id} ")
    with pytest.raises(HovitError) as trains:
        run_search(SearchConfig(space=str(space), trials=4))
    assert "was scored by supernet" in str(trains.value)
