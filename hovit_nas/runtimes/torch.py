"""PyTorch eager: the exported ``nn.Module`` itself, on the CPU or a GPU, at fp32."""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import HovitError
from . import CAPS


class TorchRuntime:
    name = "torch"
    caps = CAPS["torch"]

    def require(self) -> None:
        return None

    def version(self) -> Optional[str]:
        return None  # recorded as torch_version

    def supports(self, device) -> bool:
        return torch.device(device).type == "cpu" or torch.cuda.is_available()

    def require_int8(self) -> None:
        raise HovitError("int8 post-training quantization runs on onnxruntime or openvino, not torch")

    def compile(self, model, threads: int, device: torch.device):
        return model

    def run(self, compiled, x):
        return lambda: compiled(x)

    def module(self, onnx, config, device, threads):
        raise HovitError("an .onnx model runs on onnxruntime or openvino; a .safetensors model runs on torch")

    def quantize(self, onnx, batches, workdir):
        raise HovitError("int8 post-training quantization runs on onnxruntime or openvino, not torch")


RUNTIME = TorchRuntime()  # what the registry (runtimes/__init__.py) loads
