"""Train a tiny torch classifier on a data split and export it to ONNX, for tests that need a model really trained
on real data (tests/test_gru_digits.py, tests/test_cost_coverage.py)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path


def train_and_export(net, x, y, *, epochs: int, path: Path, example_shape: tuple, opset: int) -> Path:
    """Adam (lr 1e-2) on cross-entropy, batches of 32 in a seeded order, `epochs` passes over x [N, ...] float32 /
    y [N] int64 (numpy), on one thread (a tiny net: more threads only spin on 2 shared cores); then a TorchScript
    export at `opset` with a dynamic batch ("input" -> "output"). Seed torch before building `net`. Returns `path`."""
    import torch
    import torch.nn.functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
            for i in range(0, len(x) - 31, 32):
                opt.zero_grad()
                F.cross_entropy(net(x[order[i:i + 32]]), y[order[i:i + 32]]).backward()
                opt.step()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(net.eval(), (torch.zeros(*example_shape),), str(path), dynamo=False,
                              opset_version=opset, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "n"}, "output": {0: "n"}})
    finally:
        torch.set_num_threads(threads)
    return path
