import pytest
import torch

from hovit_nas.errors import HovitError
from hovit_nas.models import BASELINES, count_params, create_baseline


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_builds_offline_with_classes_and_size(name):
    model = create_baseline(name, num_classes=9, img_size=64).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 9)
    assert count_params(model) > 1e6


def test_unknown_baseline():
    with pytest.raises(HovitError, match="unknown baseline 'vgg'"):
        create_baseline("vgg")
