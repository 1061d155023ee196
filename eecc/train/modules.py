"""The trainable part of an exit head as a torch module, and its export to ONNX-ready numpy weights."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eecc.exits.heads import HeadSpec, HeadWeights


class HeadModule(nn.Module):
    """pooled features → standardise (fixed, per channel) → the head of `spec.kind` (eecc/exits/heads.py):
    gap: [Conv1×1 → ReLU] → global mean → Linear;  flat: [Conv1×1 → ReLU] → flatten → Linear;
    mlp: flatten → Linear → ReLU → Linear. Flattening is channel-major (c, then position), as ONNX
    Flatten lays out [N, C, H, W].

    The standardisation only conditions the optimisation; `export` folds it into the first layer,
    so the ONNX head is exactly the designed head.
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
        self.hidden = nn.Linear(c * spec.positions, spec.hidden) if spec.kind == "mlp" else None
        fc_in = {"gap": spec.width or c, "flat": (spec.width or c) * spec.positions, "mlp": spec.hidden}[spec.kind]
        self.fc = nn.Linear(fc_in, spec.num_classes)

    @property
    def channel_major(self) -> bool:
        """Flat heads without a conv and MLPs read the map as ONNX Flatten lays it out, [N, C·P]: training
        and prediction hand them that (a reshape of the cached [N, C, ...] features, no transpose)."""
        return self.spec.kind != "gap" and self.conv is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_major:
            return self.forward_flat(x.reshape(x.shape[0], -1))
        x = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)  # [N, positions, C]
        return self.forward_standardised((x - self.mean) / self.std)

    def folded_first(self, position_major: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
        """Channel-major heads: (W', b', μ, 1/σ) of the first layer with the standardisation folded in,
        μ and 1/σ repeated over positions: W' = W/σ, b' = b − W'μ, so x·W'ᵀ + b' = ((x − μ)/σ)·Wᵀ + b.
        `position_major`: for inputs ordered p·C + c (channels-last rows, `batch_layout`): W's columns and μ, 1/σ
        in that order; the same function, summed in another order (rounding)."""
        first = self.hidden if self.hidden is not None else self.fc
        # μ and 1/σ per input change only when the buffers do (their version counters): once per head, not per step
        key = (self.mean._version, self.std._version, self.mean.data_ptr(), self.std.data_ptr(), position_major)
        if getattr(self, "_repeated", (None,))[0] != key:
            p, mean, inv = self.spec.positions, self.mean.flatten(), 1.0 / self.std.flatten()
            self._repeated = (key, *((v.repeat(p) if position_major else v.repeat_interleave(p)) for v in (mean, inv)))
        _, mean, inv = self._repeated
        w = (position_major_columns(first.weight, self.spec.positions) if position_major else first.weight) * inv
        return w, first.bias - w @ mean, mean, inv

    def forward_flat(self, x: torch.Tensor, position_major: bool = False) -> torch.Tensor:
        """x: [N, C·P] channel-major ([N, P·C] when `position_major`), not standardised (channel-major heads only)."""
        w, b, _, _ = self.folded_first(position_major)
        h = torch.addmm(b, x, w.t())
        return h if self.hidden is None else self.fc(torch.relu(h))

    def forward_standardised(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, positions, C], already standardised."""
        if self.conv is not None:
            x = torch.relu(self.conv(x))
        if self.spec.kind == "gap":
            return self.fc(x.mean(dim=1))
        if self.hidden is None:  # flat: [N, P·W] as laid out, against the fc columns in that order
            return nn.functional.linear(x.reshape(x.shape[0], -1), position_major_columns(self.fc.weight, x.shape[1]),
                                        self.fc.bias)
        flat = x.transpose(1, 2).reshape(x.shape[0], -1)  # channel-major, as ONNX Flatten
        return self.fc(torch.relu(self.hidden(flat)))

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, positions, C], not standardised: the standardisation is folded into the first layer.

        Same function as `forward_standardised((x - mean) / std)` without two elementwise passes over
        the batch; `loss_and_grads` differentiates exactly this form.
        """
        if self.spec.kind != "gap":
            return self.forward_standardised((x - self.mean) / self.std)
        first = self.conv if self.conv is not None else self.fc
        w = first.weight / self.std.reshape(1, -1)
        b = first.bias - w @ self.mean.flatten()
        if self.conv is None:
            return nn.functional.linear(x.mean(dim=1), w, b)  # the mean commutes with the affine layer
        return self.fc(torch.relu(nn.functional.linear(x, w, b)).mean(dim=1))


@torch.no_grad()
def loss_and_grads(module: HeadModule, x: torch.Tensor, y: torch.Tensor, *, loss: bool = True,
                   onehot: torch.Tensor | None = None, position_major: bool = False) -> float | None:
    """Cross-entropy of `forward_raw(x)` against y (None when `loss` is False: training does not read it);
    writes the parameters' .grad by hand. `onehot`: y as float one-hot rows [N, classes], when the caller
    has it (built once per batch for all the heads that step on it, `one_hot`). `position_major`: a
    channel-major head's x is [N, P·C] (channels-last rows, `batch_layout`; `HeadModule.folded_first`).

    The head is four ops deep, so autograd's per-node bookkeeping cost more than the arithmetic on
    all but the widest heads. Gradients equal autograd's (tests/test_train.py checks it):
      W' = W/σ, b' = b − W'μ, h = xW'ᵀ + b', g = mean_p relu(h), z = g·Wfᵀ + bf
      dz = (softmax z − onehot y)/N;  dWf = dzᵀg;  dh = [h > 0]·(dz·Wf)/P
      dW' = dhᵀx − (Σdh)⊗μ;  dW = dW'/σ;  db = Σdh
    (without the conv the same holds with g = mean_p x, z = g·W'ᵀ + b'; a flat head with a conv has
    g = relu(h) flattened position-major against Wf's columns in that order (`position_major_columns`) and
    dh = [h > 0]·(dz·Wf) unflattened, no 1/P).
    """
    if module.channel_major:
        return _flat_loss_and_grads(module, x, y, loss, onehot, position_major)
    n, positions, c = x.shape
    inv = 1.0 / module.std.reshape(1, c)
    mean = module.mean.reshape(c)
    first = module.conv if module.conv is not None else module.fc
    w = first.weight * inv
    b = first.bias - w @ mean
    if module.conv is None:
        pooled = x.mean(dim=1)
        value, dz = _softmax_grad(torch.addmm(b, pooled, w.t()), y, loss, onehot)
        _set_affine_grads(first, dz.t() @ pooled, dz.sum(0), mean, inv)
        return value
    flat = x.reshape(n * positions, c)
    h = torch.addmm(b, flat, w.t())
    a = h.relu_().reshape(n, positions, -1)  # in place: [a > 0] is [h > 0], the mask below reads a
    gap = module.spec.kind == "gap"
    # gap: the mean over positions; flat: every position, [N, P·W] as computed (a view), against the fc's
    # columns permuted to that order: transposing a [W, P] block per sample instead cost two copies of the batch
    g = a.mean(dim=1) if gap else a.reshape(n, -1)
    fc_w = module.fc.weight if gap else position_major_columns(module.fc.weight, positions)
    value, dz = _softmax_grad(torch.addmm(module.fc.bias, g, fc_w.t()), y, loss, onehot)
    module.fc.weight.grad = dz.t() @ g if gap else channel_major(dz.t() @ g, positions)
    module.fc.bias.grad = dz.sum(0)
    dg = dz @ fc_w
    if gap:  # the broadcast over positions stays a stride-0 view, read without a copy
        da = dg.div_(positions).unsqueeze(1).expand(n, positions, -1)
    else:
        da = dg.reshape(n, positions, -1)
    dh = torch.ops.aten.threshold_backward(da, a, 0.0).reshape(n * positions, -1)
    _set_affine_grads(first, dh.t() @ flat, dh.sum(0), mean, inv)
    return value


def position_major_columns(w: torch.Tensor, positions: int) -> torch.Tensor:
    """Columns of w [K, W·P] (channel-major: column c·P + p, as ONNX Flatten) reordered to p·W + c."""
    return w.reshape(len(w), -1, positions).transpose(1, 2).reshape(len(w), -1)


def channel_major(w: torch.Tensor, positions: int) -> torch.Tensor:
    """The inverse of `position_major_columns`: w [K, P·W] → [K, W·P]."""
    return w.reshape(len(w), positions, -1).transpose(1, 2).reshape(len(w), -1)


def _flat_loss_and_grads(module: HeadModule, x: torch.Tensor, y: torch.Tensor, loss: bool,
                         onehot: torch.Tensor | None = None, position_major: bool = False) -> float | None:
    """Channel-major heads on x [N, C·P] ([N, P·C] when `position_major`; `HeadModule.folded_first`): with
    h = x·W'ᵀ + b', flat: z = h;  mlp: z = relu(h)·Wfᵀ + bf, dWf = dzᵀ·relu(h), dh = [h > 0]·(dz·Wf);
      dW' = dhᵀx, db' = Σdh, and back through the fold: dW = (dW' − db'⊗μ)/σ, db = db'."""
    w, b, mean, inv = module.folded_first(position_major)
    order = module.spec.positions if position_major else 0
    h = torch.addmm(b, x, w.t())
    if module.hidden is None:
        value, dh = _softmax_grad(h, y, loss, onehot)
        _set_affine_grads(module.fc, dh.t() @ x, dh.sum(0), mean, inv, order)
        return value
    a = h.relu_()  # in place: [a > 0] is [h > 0]
    value, dz = _softmax_grad(torch.addmm(module.fc.bias, a, module.fc.weight.t()), y, loss, onehot)
    module.fc.weight.grad = dz.t() @ a
    module.fc.bias.grad = dz.sum(0)
    dh = torch.ops.aten.threshold_backward(dz @ module.fc.weight, a, 0.0)
    _set_affine_grads(module.hidden, dh.t() @ x, dh.sum(0), mean, inv, order)
    return value


def one_hot(y: torch.Tensor, classes: int) -> torch.Tensor:
    """y [N] int64 → float32 [N, classes] rows of 0 and 1 (`_softmax_grad`'s subtrahend)."""
    return torch.zeros(len(y), classes).scatter_(1, y.unsqueeze(1), 1.0)


def _softmax_grad(z: torch.Tensor, y: torch.Tensor, loss: bool = True,
                  onehot: torch.Tensor | None = None) -> tuple[float | None, torch.Tensor]:
    """Mean cross-entropy (if `loss`) and its gradient; spelled out because log_softmax is slow on 10-wide rows.
    Subtracting `onehot` (0 off the label: x − 0 = x exactly) gives the same bits as subtracting 1 at the labels."""
    z = z - z.amax(dim=1, keepdim=True)
    e = z.exp()
    total = e.sum(dim=1, keepdim=True)
    value = float((total.log() - z.gather(1, y.unsqueeze(1))).mean()) if loss else None
    dz = e.div_(total)
    if onehot is None:
        dz[torch.arange(len(y)), y] -= 1.0
    else:
        dz.sub_(onehot)
    return value, dz.div_(len(y))


def _set_affine_grads(layer: nn.Linear, dw_folded: torch.Tensor, db: torch.Tensor, mean: torch.Tensor,
                      inv: torch.Tensor, positions: int = 0) -> None:
    """`positions`: dw_folded's columns are position-major over that many positions (0: as the weight's)."""
    grad = (dw_folded - torch.outer(db, mean)).mul_(inv)
    layer.weight.grad = channel_major(grad, positions).contiguous() if positions else grad
    layer.bias.grad = db


def export(module: HeadModule) -> HeadWeights:
    """Weights with the standardisation folded in: W' = W/σ, b' = b − W·(μ/σ) on the first layer."""
    with torch.no_grad():
        mean = module.mean.double().flatten()
        std = module.std.double().flatten()
        if module.conv is None and module.spec.kind != "gap":
            return _export_flat(module, mean, std)
        first = module.conv if module.conv is not None else module.fc
        w_folded = first.weight.double() / std  # [out, C]
        b_folded = (first.bias.double() - w_folded @ mean).float().numpy()
        w_folded = w_folded.float().numpy()
        if module.conv is None:
            return HeadWeights(fc_w=w_folded, fc_b=b_folded)
        kernel = w_folded.reshape(*w_folded.shape, *[1] * module.rank)
        return HeadWeights(fc_w=module.fc.weight.numpy().copy(), fc_b=module.fc.bias.numpy().copy(),
                           conv_w=kernel, conv_b=b_folded)


def _export_flat(module: HeadModule, mean: torch.Tensor, std: torch.Tensor) -> HeadWeights:
    """First layer on the flattened map: W'[:, c·P + p] = W[:, c·P + p]/σ_c, b' = b − W'·(μ_c per input)."""
    first = module.hidden if module.hidden is not None else module.fc
    positions = module.spec.positions
    w = first.weight.double().reshape(first.out_features, -1, positions) / std.reshape(1, -1, 1)
    b = (first.bias.double() - (w * mean.reshape(1, -1, 1)).sum(dim=(1, 2))).float().numpy()
    w = w.reshape(first.out_features, -1).float().numpy()
    if module.hidden is None:
        return HeadWeights(fc_w=w, fc_b=b)
    return HeadWeights(fc_w=module.fc.weight.numpy().copy(), fc_b=module.fc.bias.numpy().copy(), hid_w=w, hid_b=b)


def stored_layout(features: np.ndarray) -> tuple[np.ndarray, bool]:
    """`features` [N, C, *pooled] in its memory order, and whether that is channels-last: the feature cache
    (eecc.data.cache) stores maps [N, *pooled, C] and hands out [N, C, *pooled] views of them; a row gather or a
    block of rows is cheapest from the array as stored. Rows may be strided; a C-contiguous array is taken as
    it is (with one channel or one position both orders are the same bytes)."""
    if features.ndim < 3 or features.flags.c_contiguous:
        return features, False
    stored = np.moveaxis(features, 1, -1)
    inner = [features.itemsize]
    for d in stored.shape[:0:-1]:
        inner.append(inner[-1] * d)
    if tuple(stored.strides[1:]) == tuple(inner[-2::-1]):
        return stored, True
    return features, False


def batch_layout(rows: np.ndarray, channels_last: bool, spec: HeadSpec, channel_major: bool) -> torch.Tensor:
    """fp32 rows of a map as stored (`stored_layout`) in the layout a head reads: [n, positions, C] for heads
    with a conv or a global pool, a flat row for the others ([n, C·P] from NCHW rows, [n, P·C] from
    channels-last ones: `loss_and_grads(position_major=True)`). A view except for NCHW rows of a conv/gap head."""
    n, c = len(rows), spec.channels
    x = torch.from_numpy(rows if rows.flags.writeable else rows.copy())
    if channel_major:
        return x.reshape(n, -1)
    if channels_last:
        return x.reshape(n, -1, c)
    x = x.reshape(n, c, -1)
    return torch.empty(n, x.shape[2], c).copy_(x.transpose(1, 2))  # one pass: cast + layout


def predict(module: HeadModule, features: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Logits [N, classes] float32 for pooled features [N, C, *pooled] (float32, e.g. a cached memmap view)."""
    module.eval()
    stored, last = stored_layout(features)
    out = np.empty((len(features), module.spec.num_classes), np.float32)
    with torch.no_grad():
        for start in range(0, len(stored), batch):
            x = batch_layout(np.asarray(stored[start:start + batch], np.float32), last, module.spec,
                             module.channel_major)
            z = module.forward_flat(x, last) if module.channel_major else module.forward_raw(x)
            out[start:start + len(x)] = z.numpy()
    return out
