"""The trainable part of an exit head as a torch module, and its export to ONNX-ready numpy weights."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eecc.heads import HeadSpec, HeadWeights


class HeadModule(nn.Module):
    """pooled features → standardise (fixed, per channel) → [Conv1×1 → ReLU] → global mean → Linear.

    The standardisation only conditions the optimisation; `export` folds it into the first layer,
    so the ONNX head is exactly the blueprint.
    """

    def __init__(self, spec: HeadSpec, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.spec = spec
        c, rank = spec.channels, len(spec.in_shape) - 1
        self.rank = rank
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)).reshape(1, 1, c))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, np.float32)).reshape(1, 1, c))
        # A 1×1 conv is a Linear over channels at every position; as a matmul it is far cheaper on CPU.
        self.conv = nn.Linear(c, spec.width) if spec.width else None
        self.fc = nn.Linear(spec.width or c, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)  # [N, positions, C]
        x = (x - self.mean) / self.std
        if self.conv is not None:
            x = torch.relu(self.conv(x))
        return self.fc(x.mean(dim=1))


def export(module: HeadModule) -> HeadWeights:
    """Weights with the standardisation folded in: W' = W/σ, b' = b − W·(μ/σ) on the first layer."""
    with torch.no_grad():
        mean = module.mean.double().flatten()
        std = module.std.double().flatten()
        first = module.conv if module.conv is not None else module.fc
        w_folded = first.weight.double() / std  # [out, C]
        b_folded = (first.bias.double() - w_folded @ mean).float().numpy()
        w_folded = w_folded.float().numpy()
        if module.conv is None:
            return HeadWeights(fc_w=w_folded, fc_b=b_folded)
        kernel = w_folded.reshape(*w_folded.shape, *[1] * module.rank)
        return HeadWeights(fc_w=module.fc.weight.numpy().copy(), fc_b=module.fc.bias.numpy().copy(),
                           conv_w=kernel, conv_b=b_folded)


def predict(module: HeadModule, features: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Logits [N, classes] float32 for pooled features (any float dtype, e.g. an fp16 memmap)."""
    module.eval()
    out = np.empty((len(features), module.spec.num_classes), np.float32)
    with torch.no_grad():
        for start in range(0, len(features), batch):
            x = torch.from_numpy(np.asarray(features[start:start + batch], dtype=np.float32))
            out[start:start + len(x)] = module(x).numpy()
    return out
