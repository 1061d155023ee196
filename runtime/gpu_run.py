"""Run a GPU stage's launch plan (targets/gpu_plan.py) on an OpenCL device with pyopencl: here PoCL on the
CPU, on the board the Mali. This checks that the kernels compute what onnxruntime computes; it says
nothing about speed (PoCL runs the kernels on host CPU threads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class GpuRunError(RuntimeError):
    """No OpenCL runtime/device, or the plan or kernels cannot be run."""


def opencl_device():
    """(context, queue, one-line description) of the first OpenCL device, or GpuRunError saying why none."""
    try:
        import pyopencl as cl
    except ImportError as exc:
        raise GpuRunError("pyopencl is not installed (pip install 'eecc[tvm]')") from exc
    try:
        devices = [d for p in cl.get_platforms() for d in p.get_devices()]
    except cl.Error as exc:
        raise GpuRunError(f"no OpenCL platform ({exc}); Debian: pocl-opencl-icd") from exc
    if not devices:
        raise GpuRunError("no OpenCL device (Debian: pocl-opencl-icd)")
    ctx = cl.Context([devices[0]])
    return ctx, cl.CommandQueue(ctx), f"{devices[0].platform.name.strip()} / {devices[0].name.strip()}"


def run_plan(plan_path: Path, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """(outputs name -> [N, ...], device description). `inputs`: name -> [N, ...] (N samples, each one
    launch sequence at the plan's batch size of 1)."""
    import pyopencl as cl

    plan_path = Path(plan_path)
    plan = json.loads(plan_path.read_text())
    if plan.get("api") != "opencl":
        raise GpuRunError(f"{plan_path}: a '{plan.get('api')}' plan, not OpenCL")
    ctx, queue, device = opencl_device()
    try:
        # the options of targets/cdriver/clbuild.c, so that PoCL reuses the binary that the compile-time check built
        program = cl.Program(ctx, (plan_path.parent / plan["source"]).read_text()).build(options=["-cl-std=CL1.2"])
    except cl.Error as exc:
        raise GpuRunError(f"the OpenCL compiler rejected {plan['source']}: {str(exc)[-1500:]}") from exc
    weights = np.load(plan_path.parent / plan["weights"])
    flags = cl.mem_flags
    bufs = {name: cl.Buffer(ctx, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(weights[name]))
            for name in plan["constants"]}
    for name, nbytes in plan["buffers"].items():
        bufs[name] = cl.Buffer(ctx, flags.READ_WRITE, size=max(int(nbytes), 4))
    for spec in plan["inputs"]:
        bufs[spec["buffer"]] = cl.Buffer(ctx, flags.READ_ONLY, size=max(_nbytes(spec), 4))
    kernels = {k: cl.Kernel(program, k) for k in {launch["kernel"] for launch in plan["launches"]}}
    n = _samples(plan, inputs)
    outputs = {o["name"]: np.empty((n, *o["shape"][1:]), dtype=o["dtype"]) for o in plan["outputs"]}
    for i in range(n):
        for spec in plan["inputs"]:
            sample = np.ascontiguousarray(np.asarray(inputs[spec["name"]])[i], dtype=spec["dtype"])
            cl.enqueue_copy(queue, bufs[spec["buffer"]], sample)
        for launch in plan["launches"]:
            kernel = kernels[launch["kernel"]]
            kernel.set_args(*[bufs[a["buffer"]] if "buffer" in a else np.dtype(a["dtype"]).type(a["scalar"])
                              for a in launch["args"]])
            block = tuple(launch["block"])
            cl.enqueue_nd_range_kernel(queue, kernel, tuple(g * b for g, b in zip(launch["grid"], block)), block)
        for spec in plan["outputs"]:
            host = np.empty(spec["shape"], dtype=spec["dtype"])
            cl.enqueue_copy(queue, host, bufs[spec["buffer"]])
            outputs[spec["name"]][i] = host.reshape(outputs[spec["name"]].shape[1:])
    queue.finish()
    return outputs, device


def _nbytes(spec: dict) -> int:
    return int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize


def _samples(plan: dict, inputs: dict) -> int:
    counts = set()
    for spec in plan["inputs"]:
        if spec["name"] not in inputs:
            raise GpuRunError(f"input '{spec['name']}' missing; the stage takes {[s['name'] for s in plan['inputs']]}")
        arr = np.asarray(inputs[spec["name"]])
        per = int(np.prod(spec["shape"][1:]))
        if arr.size % max(per, 1):
            raise GpuRunError(f"input '{spec['name']}' of shape {arr.shape} does not hold whole samples of "
                              f"shape {spec['shape'][1:]}")
        counts.add(arr.size // max(per, 1))
    if len(counts) != 1:
        raise GpuRunError(f"inputs hold different sample counts {sorted(counts)}")
    return counts.pop()
