import pytest
import torch
import torch.nn.functional as F

from hovit_nas.config import ArchConfig, StageConfig
from hovit_nas.models import BlockGate, create_hovit, set_tau, tau_at
from hovit_nas.models.gating import gates


def _small(blocks=4, keep=2):
    return create_hovit(ArchConfig(stages=[StageConfig(32, 2, blocks, keep), StageConfig(48, 2, blocks, keep, "conv")],
                                   img_size=32, num_classes=3, head_width=32))


def test_training_keeps_exactly_n_blocks_per_stage():
    torch.manual_seed(0)
    model = _small()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
    model.train()
    for step in range(6):
        set_tau(model, tau_at(step, 6, 1.0, 0.1))
        for g in gates(model):
            assert g().sum().item() == g.keep  # every hard sample keeps exactly N
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(g.logits.grad is not None and g.logits.grad.abs().sum() > 0 for g in gates(model))
    for g in gates(model):
        assert len(g.selected()) == g.keep
        assert sorted(set(g.selected())) == g.selected()
        model.eval()
        assert g().sum().item() == g.keep


def test_eval_is_deterministic():
    model = _small()
    with torch.no_grad():
        for g in gates(model):
            g.logits.normal_()
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_eval_selection_is_argmax_not_a_draw():
    g = BlockGate(4, 2).eval()
    with torch.no_grad():
        g.logits.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0, 0.0]))  # combo 4 = blocks (1, 3)
    assert g.selected() == [1, 3]
    assert g().tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("schedule", ["linear", "cosine", "exponential"])
def test_tau_schedule_endpoints(schedule):
    assert tau_at(0, 100, 1.0, 0.1, schedule) == pytest.approx(1.0)
    assert tau_at(99, 100, 1.0, 0.1, schedule) == pytest.approx(0.1)
    mid = tau_at(50, 100, 1.0, 0.1, schedule)
    assert 0.1 < mid < 1.0
