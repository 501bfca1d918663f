import torch
import torch.nn.functional as F

from hovit_nas.config import ArchConfig, StageConfig
from hovit_nas.models import add_lora, create_hovit, merge_lora


def _model():
    torch.manual_seed(0)
    return create_hovit(ArchConfig(stages=[StageConfig(32, 2, 3, 2), StageConfig(48, 2, 2, None, "conv")],
                                   img_size=32, num_classes=3, head_width=32))


def test_base_weights_frozen_adapters_train():
    model = add_lora(_model(), rank=4, alpha=8)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert base and lora
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "gate" in n or "head" in n for n in trainable)
    assert any("gate.logits" in n for n in trainable) and any(n.startswith("head_conv") for n in trainable)
    assert not any(n.startswith("stem") for n in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = dict(model.named_parameters())
    for n, before in base.items():
        assert torch.equal(params[n], before), n
    assert any(not torch.equal(params[n], before) for n, before in lora.items())


def test_rank_zero_is_full_finetuning():
    model = add_lora(_model(), rank=0, alpha=1)
    assert all(p.requires_grad for p in model.parameters())
    assert not any("lora_" in n for n, _ in model.named_parameters())


def test_merge_puts_plain_linears_back():
    model = add_lora(_model(), rank=4, alpha=8)
    merge_lora(model)
    assert not any("lora_" in n or "base_layer" in n for n, _ in model.named_parameters())
    assert isinstance(model.stages[0].blocks[0].attn.qkv.linear, torch.nn.Linear)
