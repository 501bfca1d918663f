import pytest
import torch

from hovit_nas.config import ArchConfig, StageConfig
from hovit_nas.errors import HovitError
from hovit_nas.models import add_lora, count_params, create_hovit, export, load_exported, save_exported
from hovit_nas.models.gating import gates


def _randomise(model):
    """Non-trivial BN statistics, gate logits and LoRA weights, so fusing and merging matter."""
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
        for n, p in model.named_parameters():
            if "lora_B" in n or "attention_biases" in n:
                p.normal_(0, 0.2)
        for g in gates(model):
            g.logits.normal_()
    return model


@pytest.mark.parametrize("down", ["conv", "attention"])
@pytest.mark.parametrize("lora_rank", [0, 4])
def test_export_matches_eval_model(down, lora_rank):
    cfg = ArchConfig(stages=[StageConfig(64, 4, 4, 2), StageConfig(96, 4, 3, 1, down)], img_size=64, num_classes=5,
                     head_width=128)
    model = create_hovit(cfg)
    add_lora(model, lora_rank, 8)
    model = _randomise(model).eval()
    deployed = export(model)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        ref, out = model(x), deployed(x)
    rel = ((out - ref).abs().max() / ref.abs().max()).item()
    assert rel < 1e-4, rel
    assert [len(s.blocks) for s in deployed.stages] == [2, 1]
    assert all(s.gate is None for s in deployed.stages)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())
    assert not any("lora_" in n for n, _ in deployed.named_parameters())
    assert count_params(deployed) < count_params(model)


def test_save_load_round_trip(tmp_path):
    cfg = ArchConfig(stages=[StageConfig(32, 2, 3, 2), StageConfig(48, 2, 2, None, "conv")], img_size=32,
                     num_classes=4, head_width=32)
    deployed = export(_randomise(create_hovit(cfg)).eval())
    path = save_exported(deployed, tmp_path / "m.safetensors")
    loaded = load_exported(path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), deployed(x))
    assert loaded.config.stages[0].blocks == 2 and loaded.config.stages[0].keep is None


def test_load_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(HovitError, match="not a safetensors file"):
        load_exported(bad)
    with pytest.raises(HovitError, match="no such exported model"):
        load_exported(tmp_path / "missing.safetensors")
