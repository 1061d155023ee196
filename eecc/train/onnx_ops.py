"""ONNX op semantics in torch.nn.functional: the op table of eecc.train.finetune's graph interpreter.

Each entry maps an ONNX op to `fn(inputs, attrs) -> tensor` with ONNX's semantics (pads, ceil mode,
count_include_pad, axes as input or attribute by opset); an op missing here makes fine-tuning refuse
the graph with a one-line error.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from eecc.errors import EeccError


def _ints(v) -> list[int]:
    return [int(i) for i in (v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else v)]


def _pads(attrs, rank: int) -> list[int]:
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise EeccError(f"finetune: auto_pad={attrs['auto_pad']} is not supported; re-export with explicit pads")
    return _ints(attrs.get("pads", [0] * (2 * rank)))


def _padded(x, pads, value=0.0):
    """ONNX pads [b1..bn, e1..en] → torch F.pad order (last dim first)."""
    n = len(pads) // 2
    if not any(pads):
        return x
    torch_pads = [p for i in reversed(range(n)) for p in (pads[i], pads[i + n])]
    return F.pad(x, torch_pads, value=value)


def _conv(a, attrs):
    x, w = a[0], a[1]
    rank = w.dim() - 2
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return fn(_padded(x, _pads(attrs, rank)), w, a[2] if len(a) > 2 else None,
              stride=_ints(attrs.get("strides", [1] * rank)), dilation=_ints(attrs.get("dilations", [1] * rank)),
              groups=int(attrs.get("group", 1)))


def _pool(kind):
    def run(a, attrs):
        x = a[0]
        k = _ints(attrs["kernel_shape"])
        rank, ceil = len(k), bool(attrs.get("ceil_mode", 0))
        stride, pads = _ints(attrs.get("strides", [1] * rank)), _pads(attrs, rank)
        sym = pads[:rank] == pads[rank:]
        if kind == "max":
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
            dil = _ints(attrs.get("dilations", [1] * rank))
            if sym:
                return fn(x, k, stride, pads[:rank], dil, ceil_mode=ceil)
            return fn(_padded(x, pads, -math.inf), k, stride, 0, dil, ceil_mode=ceil)
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
        include = bool(attrs.get("count_include_pad", 0))
        if sym and (pads[0] * 2 <= k[0]):
            return fn(x, k, stride, pads[:rank], ceil_mode=ceil, count_include_pad=include)
        if any(pads) and not include:
            raise EeccError("finetune: AveragePool with asymmetric pads and count_include_pad=0 is not supported")
        return fn(_padded(x, pads), k, stride, 0, ceil_mode=ceil)
    return run


def _axes(a, attrs, rank=None):
    axes = a[1] if len(a) > 1 and a[1] is not None else attrs.get("axes")
    if axes is None:
        return None
    axes = _ints(axes)
    return [i % rank for i in axes] if rank is not None else axes


def _reduce_mean(a, attrs):
    x = a[0]
    axes = _axes(a, attrs, x.dim())
    keep = bool(attrs.get("keepdims", 1))
    if axes is None:
        if attrs.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    return x.mean(dim=axes, keepdim=keep)


def _reshape(a, attrs):
    x, shape = a[0], _ints(a[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _gemm(a, attrs):
    A = a[0].transpose(0, 1) if attrs.get("transA", 0) else a[0]
    B = a[1].transpose(0, 1) if attrs.get("transB", 0) else a[1]
    out = float(attrs.get("alpha", 1.0)) * (A @ B)
    if len(a) > 2 and a[2] is not None:
        out = out + float(attrs.get("beta", 1.0)) * a[2]
    return out


def _clip(a, attrs):
    lo = a[1] if len(a) > 1 and a[1] is not None else attrs.get("min")
    hi = a[2] if len(a) > 2 and a[2] is not None else attrs.get("max")
    return torch.clamp(a[0], None if lo is None else float(lo), None if hi is None else float(hi))


def _batch_norm(a, attrs):
    x, scale, bias, mean, var = a[:5]
    return F.batch_norm(x, mean.float(), var.float(), scale, bias, training=False,
                        eps=float(attrs.get("epsilon", 1e-5)))


def _squeeze(a, attrs):
    axes = _axes(a, attrs, a[0].dim())
    if axes is None:
        return a[0].squeeze()
    for i in sorted(axes, reverse=True):
        a[0] = a[0].squeeze(i)
    return a[0]


def _unsqueeze(a, attrs):
    x = a[0]
    axes = _axes(a, attrs)
    rank = x.dim() + len(axes)
    for i in sorted(i % rank for i in axes):
        x = x.unsqueeze(i)
    return x


def _flatten(a, attrs):
    x = a[0]
    axis = int(attrs.get("axis", 1)) % max(x.dim(), 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _softmax(a, attrs):
    return F.softmax(a[0], dim=int(attrs.get("axis", -1)))


def _log_softmax(a, attrs):  # eecc's own load-time rewrite of a Softmax output (README "Probabilities vs logits")
    return F.log_softmax(a[0], dim=int(attrs.get("axis", -1)))


def _concat(a, attrs):
    return torch.cat(a, dim=int(attrs["axis"]))


def _cast(a, attrs):
    return a[0] if a[0].is_floating_point() else a[0].float()


def _transpose(a, attrs):
    perm = _ints(attrs["perm"]) if "perm" in attrs else list(reversed(range(a[0].dim())))
    return a[0].permute(*perm)


def _layer_norm(a, attrs):
    """ONNX LayerNormalization (opset 17): normalised over dims axis..-1 with the biased variance; returns
    (Y, Mean, InvStdDev), the optional outputs with the reduced dims kept as 1."""
    x = a[0]
    dims = tuple(range(int(attrs.get("axis", -1)) % x.dim(), x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(((x - mean) ** 2).mean(dim=dims, keepdim=True) + float(attrs.get("epsilon", 1e-5)))
    y = (x - mean) * inv_std * a[1]
    return (y + a[2] if len(a) > 2 and a[2] is not None else y), mean, inv_std


def _gelu(a, attrs):  # ONNX Gelu (opset 20): approximate "none" (erf) or "tanh", as torch's
    return F.gelu(a[0], approximate=str(attrs.get("approximate", "none")))


OPS: dict[str, Callable[[Sequence[torch.Tensor], dict], torch.Tensor]] = {
    "Conv": _conv, "Relu": lambda a, _: F.relu(a[0]), "Add": lambda a, _: a[0] + a[1],
    "Sub": lambda a, _: a[0] - a[1], "Mul": lambda a, _: a[0] * a[1], "Div": lambda a, _: a[0] / a[1],
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda a, _: a[0].mean(dim=tuple(range(2, a[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda a, _: a[0].amax(dim=tuple(range(2, a[0].dim())), keepdim=True),
    "ReduceMean": _reduce_mean, "Flatten": _flatten,
    "Reshape": _reshape, "Gemm": _gemm, "MatMul": lambda a, _: a[0] @ a[1], "Clip": _clip,
    "BatchNormalization": _batch_norm, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Identity": lambda a, _: a[0], "Sigmoid": lambda a, _: torch.sigmoid(a[0]), "Softmax": _softmax,
    "LogSoftmax": _log_softmax,
    "Concat": _concat, "Cast": _cast, "Dropout": lambda a, _: a[0],
    # nu14 F6: eecc's own binary advice torch.cat([-z, z], 1) exports a Neg; dynamo/ConvNeXt-style models bring
    # Transpose, LayerNormalization and Gelu, and TorchScript exports decompose those into Erf, Tanh, Pow and Sqrt
    "Neg": lambda a, _: -a[0], "Transpose": _transpose, "LayerNormalization": _layer_norm, "Gelu": _gelu,
    "Erf": lambda a, _: torch.erf(a[0]), "Tanh": lambda a, _: torch.tanh(a[0]), "Sqrt": lambda a, _: torch.sqrt(a[0]),
    "Pow": lambda a, _: torch.pow(a[0], a[1]),
}
