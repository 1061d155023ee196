"""The feature pass's graph, input and output: onnxruntime runs into reused buffers, rows written into .npy files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from eecc.exits.heads import HeadSpec
from eecc.passes.insert_exits import expose_features


def stored_shape(pooled_shape: Sequence[int]) -> tuple[int, ...]:
    """Per-sample shape of a cached map: channels-last, (C, *pooled) -> (*pooled, C); a vector (F,) as it is."""
    return (*pooled_shape[1:], pooled_shape[0]) if len(pooled_shape) >= 2 else tuple(pooled_shape)


def feature_graph(graph: gs.Graph, heads: Sequence[HeadSpec]) -> gs.Graph:
    """What the feature pass runs: `expose_features` with every pooled map of rank >= 3 given channels-last,
    [N, *pooled, C] (`stored_shape`), as the cache stores it.

    onnxruntime computes the maps in its blocked layout (NCHWc, 16 channels a block with AVX-512) and copies
    each output back out (ReorderOutput). To NCHW that copy transposes value by value; to channels-last (a
    Transpose it fuses into the copy) it moves whole blocks, and the Identity of an unpooled map goes.
    ResNet fixture of bench/exits.py, 30 maps, one thread, runs of 116 rows: 0.155 -> 0.140 CPU-ms per row
    (plain model 0.124). The heads read the rows as stored (eecc.train.modules.batch_layout), no transpose.
    """
    graph = expose_features(graph, heads=heads)
    for out in graph.outputs[1:]:
        rank = len(out.shape or ())
        if rank < 3:
            continue
        inner = gs.Variable(f"{out.name}.nchw", dtype=out.dtype, shape=list(out.shape))
        producer = out.inputs[0]
        producer.outputs[producer.outputs.index(out)] = inner
        out.shape = [out.shape[0], *out.shape[2:], out.shape[1]]
        graph.nodes.append(gs.Node("Transpose", name=f"{out.name}.Transpose", attrs={"perm": [0, *range(2, rank), 1]},
                                   inputs=[inner], outputs=[out]))
    return graph


class Runner:
    """Runs the feature session into output buffers reused from chunk to chunk (onnxruntime IO binding).

    Fresh output arrays per chunk cost 14 % of the pass's CPU (new memory faulted in for 30 outputs,
    measured on the ResNet fixture of bench/exits.py); outputs whose per-sample shape or type is not a
    static float32 one are returned by a plain run. The buffers are overwritten by the next `run`.
    `rows`: each onnxruntime run takes at most that many rows of the chunk, written in place into the chunk's
    buffers (None: the whole chunk in one run). A run's maps then stay in a core's cache for the pools that
    read them: the ResNet fixture's feature graph took 12-18 % less CPU per row in runs of 64-128 rows than
    of 933 (one thread, 2 MB L2 per core; the plain model 7 %). Every row's outputs are the same bits either
    way: onnxruntime computes each sample on its own (tests/test_cache.py).
    """

    def __init__(self, sess, rows: int | None = None):
        self.sess, self.input, self.rows = sess, sess.get_inputs()[0].name, rows
        self.shapes = {o.name: tuple(o.shape[1:]) for o in sess.get_outputs()
                       if o.type == "tensor(float)" and all(isinstance(d, int) for d in o.shape[1:])}
        self.key, self.parts, self.buffers = None, [], []

    def run(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        if any(n not in self.shapes for n in names):
            return self.sess.run(names, {self.input: x})  # fresh arrays: no later run overwrites them
        if self.key != (len(x), tuple(names)):
            self.key, step = (len(x), tuple(names)), self.rows or max(1, len(x))
            self.buffers = [np.empty((len(x), *self.shapes[n]), np.float32) for n in names]
            self.parts = []  # (first row, binding of the buffers' rows from there): one per run
            for start in range(0, len(x), step):
                binding = self.sess.io_binding()
                for name, buf in zip(names, self.buffers):
                    rows = buf[start:start + step]  # contiguous: buffers are row-major
                    binding.bind_output(name, "cpu", 0, np.float32, list(rows.shape), rows.ctypes.data)
                self.parts.append((start, binding))
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.rows or max(1, len(x))
        for start, binding in self.parts:
            binding.bind_cpu_input(self.input, x[start:start + step])
            self.sess.run_with_iobinding(binding)
        return self.buffers


class RowFile:
    """A preallocated .npy file (cache._open) written by rows with pwrite, opened once for a whole shard."""

    def __init__(self, path: Path):
        mm = np.load(path, mmap_mode="r")  # only for the header: where the rows start, their size
        self.offset, self.dtype, self.row_bytes = mm.offset, mm.dtype, mm[0].nbytes if len(mm) else 0
        del mm
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, start: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        if data[0].nbytes != self.row_bytes:
            raise ValueError(f"cache rows of {data[0].nbytes} bytes for a file of {self.row_bytes}-byte rows")
        view, at = memoryview(data).cast("B"), self.offset + start * self.row_bytes
        while view:  # pwrite may write less than asked
            done = os.pwrite(self.fd, view, at)
            view, at = view[done:], at + done

    def close(self) -> None:
        os.close(self.fd)
