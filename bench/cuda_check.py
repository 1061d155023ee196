"""CUDA stage check on a real GPU: TVM's CUDA kernels of a stage (the same launch plan as the Mali path,
targets/gpu_plan.py) compiled to PTX (nvcc, else NVRTC), loaded with the CUDA driver API through ctypes,
run, and compared with onnxruntime. Skips, saying why, where no GPU / driver / CUDA compiler exists.

    python bench/cuda_check.py [MODEL.onnx ...] [--samples 4] [--out bench/results/cuda_check.json]

Default models: the test fixtures and the pad-before-conv test model. Correctness only, no timing.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
TARGET = {"kind": "cuda", "arch": "sm_86", "host": {"kind": "llvm"}}


class Skip(Exception):
    """No GPU, driver or CUDA C compiler here."""


class Driver:
    """The few CUDA driver API calls a launch plan needs (libcuda ships with the NVIDIA driver)."""

    def __init__(self):
        name = ctypes.util.find_library("cuda") or "libcuda.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as exc:
            raise Skip(f"no CUDA driver library ({exc}): no NVIDIA GPU on this machine") from None
        if self.lib.cuInit(0) != 0:
            raise Skip("cuInit failed: no usable NVIDIA GPU")
        count = ctypes.c_int()
        self.call("cuDeviceGetCount", ctypes.byref(count))
        if count.value == 0:
            raise Skip("the CUDA driver sees no GPU")
        self.dev, self.ctx = ctypes.c_int(), ctypes.c_void_p()
        self.call("cuDeviceGet", ctypes.byref(self.dev), 0)
        self.call("cuCtxCreate_v2", ctypes.byref(self.ctx), 0, self.dev)
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.call("cuDeviceGetAttribute", ctypes.byref(major), 75, self.dev)  # COMPUTE_CAPABILITY_MAJOR
        self.call("cuDeviceGetAttribute", ctypes.byref(minor), 76, self.dev)
        self.arch = f"{major.value}{minor.value}"
        buf = ctypes.create_string_buffer(256)
        self.call("cuDeviceGetName", buf, 256, self.dev)
        self.name = buf.value.decode()

    def call(self, fn: str, *args) -> None:
        rc = getattr(self.lib, fn)(*args)
        if rc != 0:
            raise RuntimeError(f"{fn} returned CUDA error {rc}")

    def alloc(self, nbytes: int, host: np.ndarray | None = None) -> ctypes.c_uint64:
        ptr = ctypes.c_uint64()
        self.call("cuMemAlloc_v2", ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 4)))
        if host is not None:
            self.call("cuMemcpyHtoD_v2", ptr, host.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(host.nbytes))
        return ptr


def to_ptx(src: str, arch: str, work: Path) -> str:
    cu = work / "stage.cu"
    cu.write_text(src)
    nvcc = shutil.which("nvcc")
    if nvcc:
        subprocess.run([nvcc, "-ptx", f"-arch=compute_{arch}", str(cu), "-o", str(work / "stage.ptx")], check=True)
        return (work / "stage.ptx").read_text()
    name = ctypes.util.find_library("nvrtc")
    if name is None:
        raise Skip("neither nvcc nor NVRTC (libnvrtc) is installed: the CUDA C source cannot become PTX")
    nvrtc, prog = ctypes.CDLL(name), ctypes.c_void_p()
    nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"stage.cu", 0, None, None)
    opts = (ctypes.c_char_p * 1)(f"--gpu-architecture=compute_{arch}".encode())
    if nvrtc.nvrtcCompileProgram(prog, 1, opts) != 0:
        raise RuntimeError("NVRTC rejected TVM's CUDA source")
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    return ptx.value.decode()


def run_stage(drv: Driver, model: onnx.ModelProto, x: np.ndarray, work: Path) -> dict[str, np.ndarray]:
    from eecc.targets.mali import lower_gpu_stage

    src, plan, _, _, constants = lower_gpu_stage(model, TARGET, "cuda")
    module = ctypes.c_void_p()
    drv.call("cuModuleLoadData", ctypes.byref(module), ctypes.c_char_p(to_ptx(src, drv.arch, work).encode()))
    bufs = {k: drv.alloc(v.nbytes, np.ascontiguousarray(v)) for k, v in constants.items()}
    bufs.update({k: drv.alloc(int(v)) for k, v in plan["buffers"].items()})
    spec_in, outs = plan["inputs"][0], {}
    bufs[spec_in["buffer"]] = drv.alloc(int(np.prod(spec_in["shape"])) * 4)
    for i, sample in enumerate(x):
        host = np.ascontiguousarray(sample[None], dtype=spec_in["dtype"])
        drv.call("cuMemcpyHtoD_v2", bufs[spec_in["buffer"]], host.ctypes.data_as(ctypes.c_void_p),
                 ctypes.c_size_t(host.nbytes))
        for launch in plan["launches"]:
            fn = ctypes.c_void_p()
            drv.call("cuModuleGetFunction", ctypes.byref(fn), module, launch["kernel"].encode())
            values = [bufs[a["buffer"]] if "buffer" in a else np.ctypeslib.as_ctypes_type(np.dtype(a["dtype"]))(a["scalar"])
                      for a in launch["args"]]
            params = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in values])
            drv.call("cuLaunchKernel", fn, *launch["grid"], *launch["block"], 0, None, params, None)
        drv.call("cuCtxSynchronize")
        for spec in plan["outputs"]:
            got = np.empty(spec["shape"], dtype=spec["dtype"])
            drv.call("cuMemcpyDtoH_v2", got.ctypes.data_as(ctypes.c_void_p), bufs[spec["buffer"]],
                     ctypes.c_size_t(got.nbytes))
            outs.setdefault(spec["name"], []).append(got)
    return {k: np.concatenate(v) for k, v in outs.items()}


def default_models():
    sys.path.insert(0, str(ROOT / "tests"))
    from test_gpu_codegen import pad_dw_cnn

    models = {p.stem: onnx.load(p) for p in sorted((ROOT / "tests" / "fixtures" / "models").glob("*.onnx"))}
    return {**models, "pad_dw_cnn": pad_dw_cnn()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cuda_check.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    try:
        drv = Driver()
    except Skip as exc:
        print(f"SKIP: {exc}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"skipped": str(exc)}, indent=1) + "\n")
        return 0
    models = {p.stem: onnx.load(p) for p in args.models} or default_models()
    rows = []
    for name, model in models.items():
        inp = model.graph.input[0]
        x = np.random.default_rng(0).standard_normal(
            [args.samples] + [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            got = run_stage(drv, model, x, Path(tmp))
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = [np.concatenate(r) for r in zip(*[sess.run(None, {inp.name: xi[None]}) for xi in x])]
        err = max(float(np.abs(got[o.name].reshape(w.shape) - w).max()) for o, w in zip(model.graph.output, want))
        rows.append({"model": name, "max_abs_error": err, "ok": err <= 1e-4})
        print(f"{name:16s} max |err| {err:.1e} {'ok' if err <= 1e-4 else 'MISMATCH'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"gpu": drv.name, "arch": drv.arch, "rows": rows}, indent=1) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
