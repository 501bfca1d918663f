import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hovit_nas.config import ArchConfig, StageConfig
from hovit_nas.models import PRESETS, count_params, create_hovit, export, hovit_b
from hovit_nas.models.hovit import hovit_b_dense

PAPER_M = {"hovit_s": 4.9, "hovit_b_dense": 8.3, "hovit_b_exported": 5.0}


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("img_size", [224, 64])
def test_preset_forward_shapes(name, img_size):
    model = create_hovit(PRESETS[name](img_size=img_size, num_classes=9)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, img_size, img_size)).shape == (2, 9)


def test_param_counts_match_paper_within_5_percent():
    counts = {
        "hovit_s": count_params(create_hovit(PRESETS["hovit_s"]())),
        "hovit_b_dense": count_params(create_hovit(hovit_b_dense())),
        "hovit_b_exported": count_params(export(create_hovit(hovit_b()))),
    }
    for name, n in counts.items():
        print(f"{name}: {n / 1e6:.3f} M params (paper {PAPER_M[name]} M)")
        assert abs(n / 1e6 - PAPER_M[name]) / PAPER_M[name] <= 0.05, name


@st.composite
def arch_configs(draw):
    n_stages = draw(st.integers(1, 3))
    img = draw(st.sampled_from([32, 48, 64, 80]))
    heads = draw(st.sampled_from([1, 2, 4]))
    stages, dim = [], None
    for i in range(n_stages):
        new_dim = draw(st.sampled_from([16, 32, 48])) * heads // heads
        new_dim = max(heads, new_dim - new_dim % heads)
        down = "none" if i == 0 else draw(st.sampled_from(["conv", "attention"]))
        if i == 0:
            dim = new_dim
        elif down == "none":
            new_dim = dim
        blocks = draw(st.integers(1, 4))
        keep = draw(st.one_of(st.none(), st.integers(1, blocks)))
        stages.append(StageConfig(new_dim, heads, blocks, keep, down))
        dim = new_dim
    return ArchConfig(stages=stages, img_size=img, num_classes=draw(st.integers(2, 5)),
                      head_width=draw(st.sampled_from([0, 32])), key_dim=draw(st.sampled_from([None, 8])))


@settings(max_examples=25, deadline=None)
@given(arch_configs())
def test_random_valid_configs_build_forward_and_export(cfg):
    cfg.validate()
    model = create_hovit(cfg)
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    model.train()
    assert model(x).shape == (2, cfg.num_classes)
    model.eval()
    with torch.no_grad():
        a = model(x)
        b = export(model)(x)
    assert a.shape == b.shape == (2, cfg.num_classes)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_pruning_phase_blocks_get_contiguous_tokens_and_inference_keeps_the_view():
    """In training, every block's tokens are contiguous, so a frozen linear layer (the pruning phase
    trains only gates and LoRA) folds into one matrix product rather than a batched one over a
    per-image copy of its weight (2.3x a step under bf16 autocast on the CPU). Inference keeps
    LeViT's transposed view; both hold the same values."""
    from hovit_nas.models.hovit import to_tokens
    from hovit_nas.train import _prepare_phase

    cfg = PRESETS["hovit_b"]()
    cfg.model.img_size, cfg.model.num_classes = 64, 2
    m = create_hovit(cfg)
    _prepare_phase(m, cfg, "prune")
    seen = []
    for stage in m.stages:
        for block in stage.blocks:
            block.register_forward_pre_hook(lambda mod, args: seen.append(args[0].is_contiguous()))
    x = torch.randn(2, 3, 64, 64)
    m.train()
    m(x)
    assert len(seen) == sum(len(s.blocks) for s in m.stages) and all(seen)
    seen.clear()
    with torch.no_grad():
        m.eval()(x)
    assert not all(seen)  # inference: the view, as LeViT's
    fm = torch.randn(2, 8, 3, 3)
    assert torch.equal(to_tokens(fm, True), to_tokens(fm, False)) and to_tokens(fm, True).shape == (2, 9, 8)
