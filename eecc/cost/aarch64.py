"""The Cortex-A group of the cost model (the rk3588 CPU): units built by targets/cortex_a.py for the A76 and counted
under qemu-aarch64 (the TCG instruction plugin counts eecc_run() alone), fitted like the Cortex-M groups.

  instructions(stage) ≈ w[cortex-a, format] · features(stage)[cortex-a, format block]
  seconds = instructions × CPI["cortex-a"] / clock_hz            (CPI: targets/calibration.py, an assumption)

On a Cortex-A, TVM lowers every node with its own operators (tvm_import.lower_stage: no eecc kernels outside
microcontrollers; in int8, int8_lowering's integer rules without the microcontroller edge loops), so its block of
eecc/cost/features.py holds the per-op-kind TVM-operator features, and two of its own (node_block): neon_macs,
the MACs of loops LLVM vectorises for NEON, and in int8 gemm_relu. The search and the manifest price a Cortex-A
stage from the feature vector they build for every group.

The rows ship in `eecc/cost/measured_cortex_a.json`, apart from the Cortex-M rows (measured.json), each row with its
block by feature name and each format with the hash of the code its counts depend on (kernels_id):
targets/cortex_a.py and the eecc.targets modules it reaches, less those only microcontroller builds run, and the C
files linked into the aarch64 library and its harness; `python -m eecc.cost refit --group cortex-a` measures them
again (counts cached per format and hash under `<cache>/cost/cortex-a-<format>-<hash>/`, ~10-25 min for 552 units
on 2 shared cores). The Cortex-M refit never reads or writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eecc.cost.features import _INDEX as INDEX, BASE, FEATURES, _bias_add, _reduction, block  # noqa: PLC2701
from eecc.cost.measure import NOT_KERNELS, kernels_files

KIND = "cortex-a"      # the platform processor kind (targets/platforms/*.toml)
CPU = "cortex-a76"     # the core the units are built for and run as (targets.codegen.CORTEX_A_CPU)
# Whole reductions up to these lengths unroll, and LLVM then vectorises the output row (_neon_share)
NEON_K_CONV, NEON_K_GEMM = 24, 32
ROW_UNROLLED = 9  # up to this many outputs a 2-D conv's row is unrolled, parts of it vectorised (_neon_share)
LOOP_K = 48  # a longer reduction of a 1×1 Conv / Gemm stays a loop (_reduction_loop)
SDOT_POSITIONS = 64  # int8: up to this many output positions, the reduction runs on SDOT (_sdot)
MEASURED_A = Path(__file__).with_name("measured_cortex_a.json")
FORMATS = ("fp32", "int8")
# Modules only microcontroller builds run (eecc's own kernels, the edge loops, the fp32 tile conv), never on an A76
MCU_ONLY = {"mcu_kernels", "mcu_depthwise", "mcu_float", "mcu_pool", "mcu_quantize", "mcu_program", "program_codegen",
            "mcu_abi", "mcu_dense", "mcu_gate", "mcu_requant"}
INT8_ONLY = {"int8_lowering", "fixed_point", "quantize"}
# C files compiled into the aarch64 stage library and its harness, and the QEMU plugin that counts it
LINKED = {"runtime_common.c", "host_main.c", "eecc_driver.h", "insn_count.c"}


def code_files(fmt: str) -> list[Path]:
    """The eecc/targets files a Cortex-A count in `fmt` depends on: the modules reached from cortex_a (in int8 also
    the quantiser) less MCU_ONLY (and INT8_ONLY in fp32), and the LINKED C files."""
    roots = ("cortex_a", "quantize") if fmt == "int8" else ("cortex_a",)
    skip = NOT_KERNELS - {"cortex_a"} | MCU_ONLY | (set() if fmt == "int8" else INT8_ONLY)
    return kernels_files(roots, skip, LINKED)


def kernels_id(fmt: str) -> str:
    """Hash of code_files(fmt), normalised as measure.kernels_id normalises, + the TVM version."""
    from eecc.cost.measure import kernels_id as hash_files

    return hash_files(code_files(fmt))


def by_name(values, names, fmt: str) -> np.ndarray:
    """[len(FEATURES)] with `values` (the features called `names`) in the (KIND, fmt) block; names this checkout
    no longer has raise KeyError."""
    out = np.zeros(len(FEATURES))
    out[[block(KIND, fmt).start + BASE.index(n) for n in names]] = values
    return out


def load_rows(path: Path = MEASURED_A) -> tuple[list[dict], list[str]]:
    """(rows with full feature vectors, notes): [] when the file is missing or names features this checkout does not
    compute; a note per format measured with other code than this checkout's (kernels_id)."""
    path = Path(path)
    if not path.is_file():
        return [], []
    data = json.loads(path.read_text())
    if not set(data.get("features", [None])) <= set(BASE):
        return [], [f"cost model: {path.name} holds other Cortex-A features than this checkout computes: run "
                    f"`python -m eecc.cost refit --group cortex-a`"]
    notes = [f"cost model: the Cortex-A {fmt} measurements came from other code than this checkout's (eecc/targets "
             f"changed); predictions may be off: run `python -m eecc.cost refit --group cortex-a`"
             for fmt, kid in data["kernels"].items() if kid != kernels_id(fmt)]
    return [{**r, "features": by_name(r["features"], data["features"], r["format"]).tolist()}
            for r in data["rows"]], notes


def write_rows(rows: list[dict], out: Path) -> dict:
    """The rows file: one unit per line, features (the row's own block) by BASE name, the kernels id of each format."""
    fmts = sorted({r["format"] for r in rows}, key=FORMATS.index)
    doc = {"kernels": {f: kernels_id(f) for f in fmts}, "cpu": CPU, "features": list(BASE), "samples_per_unit": 2,
           "command": "python -m eecc.cost refit --group cortex-a", "rows": rows}
    rows_text = ",\n".join(json.dumps(r, separators=(",", ":")) for r in rows)
    head = json.dumps({k: v for k, v in doc.items() if k != "rows"}, indent=1)[:-2]
    Path(out).write_text(f"{head},\n \"rows\": [\n{rows_text}\n]}}\n")
    return doc


def measure(units, cache: Path, *, progress=None) -> list[dict]:
    """Rows of every unit in fp32 then int8 on the A76 (measure.measure_units per model, cached)."""
    from eecc.cost.measure import measure_units

    groups: dict[str, list] = {}
    for u in units:
        groups.setdefault(u.model, []).append(u)
    return [r for fmt in FORMATS for g in groups.values() if fmt == "fp32" or not g[0].model.startswith(FP32_ONLY)
            for r in measure_units(g, KIND, fmt, cache, progress=progress)]


def node_block(node, fmt: str, ops: np.ndarray) -> np.ndarray:
    """[B] of a node on the Cortex-A: `ops` with the share of its MACs that LLVM vectorises (_neon_share) moved to
    neon_macs; the MACs of a 1×1 Conv or Gemm / MatMul whose reduction stays a loop (K > LOOP_K) moved to loop_macs
    (the Cortex-M4's gemm_loop / gemm_rem / gemm_far rules do not hold here: zeroed); in int8 the MACs of a Gemm /
    MatMul whose output a Relu reads also as gemm_relu (measured 4.4-4.8 instructions per MAC against 2.4-3.6
    without the Relu: eecc/cost/layers.py's dense units)."""
    f, share = ops.copy(), _neon_share(node, fmt)
    f[[INDEX["gemm_loop"], INDEX["gemm_rem"], INDEX["gemm_far"]]] = 0
    # grouped and dilated convs stay priced as before the Cortex-M's grp_macs / dil_macs: as depthwise / dense MACs
    # (layers.TVM_CONV measured on the A76: -57..+58 %, and int8 held-out 116 -> 113 of 209 with them in the fit)
    f[INDEX["dw_macs"]] += f[INDEX["grp_macs"]]
    f[[INDEX["grp_macs"], INDEX["dil_macs"]]] = 0
    if node.op == "Conv" and not any(int(p) for p in node.attrs.get("pads", [])):
        f[INDEX["pad_in"]] = 0  # no padding: TVM reads the input in place (no copy loop)
    for name in ("conv_macs", "pw_macs", "dw_macs", "gemm_macs"):
        f[INDEX["neon_macs"]] += f[INDEX[name]] * share
        f[INDEX[name]] *= 1 - share
    if k := _reduction_loop(node):
        for name in ("pw_macs", "gemm_macs"):
            f[INDEX["loop_macs"]] += f[INDEX[name]]
            f[INDEX["loop_iters"]] += f[INDEX[name]] / _unroll(k)
            f[INDEX[name]] = 0
    if fmt == "int8" and _sdot(node):
        for name in ("pw_macs", "gemm_macs", "loop_macs"):
            f[INDEX["sdot_macs"]] += f[INDEX[name]]
            f[INDEX[name]] = 0
        f[INDEX["loop_iters"]] = 0
    if fmt == "int8" and node.op in ("Gemm", "MatMul"):
        after = [n for t in node.outputs for n in t.outputs]
        after = [n for t in after[0].outputs for n in t.outputs] if len(after) == 1 and _bias_add(after[0]) else after
        f[INDEX["gemm_relu"]] = ops[INDEX["gemm_macs"]] if any(n.op == "Relu" for n in after) else 0
    return f


def _reduction_loop(node) -> int:
    """K of a 1×1 Conv / Gemm / MatMul whose reduction LLVM keeps a loop on AArch64 (K > LOOP_K; A76 disassembly of
    a 1×1 conv: K = 48 unrolled fully, ~2.6 instructions per MAC; K = 64 the first MAC peeled and 63 in a loop
    unrolled by 3, ~4.2), else 0. A k×k conv keeps its Cin loop, but k·k MACs per trip amortise it (conv_macs)."""
    if node.op == "Conv" and node.inputs[1].shape and int(np.prod(node.inputs[1].shape[2:])) == 1:
        k = int(node.inputs[1].shape[1])
    else:
        k = _reduction(node) if node.op in ("Gemm", "MatMul") else 0
    return k if k > LOOP_K else 0


def _sdot(node) -> bool:
    """Whether LLVM vectorises an int8 1×1 Conv's / Gemm's reduction with SDOT (ARMv8.2 dot product; ~2.4-2.6
    instructions per MAC against 4.4-5.2 without): seen in the A76 builds when the loop over output positions (Hout·Wout,
    a Gemm's N) has at most SDOT_POSITIONS trips and K is > LOOP_K or ≤ 16 (1×1 conv 64 -> 64: on 7×7 and 8×8 yes, on
    10×10 and 14×14 no; 32 -> 64 on 7×7 no, 16 -> 64 yes; dense K = 64: N = 64 yes, 72 no)."""
    if node.op == "Conv" and node.inputs[1].shape and int(np.prod(node.inputs[1].shape[2:])) == 1:
        k, shape = int(node.inputs[1].shape[1]), getattr(node.outputs[0], "shape", None) or []
        positions = int(np.prod(shape[2:])) if all(isinstance(d, (int, np.integer)) for d in shape[2:]) else 0
    elif node.op in ("Gemm", "MatMul"):
        shape = getattr(node.outputs[0], "shape", None) or [0]
        k, positions = _reduction(node), int(shape[-1]) if isinstance(shape[-1], (int, np.integer)) else 0
    else:
        return False
    return 0 < positions <= SDOT_POSITIONS and (k > LOOP_K or 0 < k <= 16)


def _unroll(k: int) -> int:
    """Copies of the body in the loop over K - 1 (the first MAC peeled): its largest divisor up to 5, else 4 (with
    exit tests). The dense units: 4.0-4.2 instructions per MAC at K = 64, 100 (by 3), 3.4-3.5 at 96, 256 (by 5)."""
    return max([d for d in range(2, 6) if (k - 1) % d == 0], default=4)


def _neon_share(node, fmt: str = "fp32") -> float:
    """The share of a Conv's / Gemm's MACs in loops LLVM vectorises for AArch64 (4 fp32 lanes; TVM's untuned
    loops, measured on the A76 units: 0.65-1.4 instructions per MAC against 2.3-4.7): when the whole reduction
    unrolls (Conv (Cin/groups)·prod(kernel) ≤ NEON_K_CONV, Gemm K ≤ NEON_K_GEMM) the output row is vectorised,
    4 outputs at a time along a unit-stride last axis, the rest (Wout mod 4) in scalar code. A 2-D conv's rows of
    more than ROW_UNROLLED outputs that are not a multiple of 4 stay scalar (depthwise 3x3 units on the A76: 0.81-0.87
    instructions per MAC at Wout 8, 12, 16, 20, 28; 1.9-2.8 at 10, 13, 14; 1.2-1.6 at 5-9: nu11's depthwise stages
    were priced 23 % under; in int8 the rule made the held-out fit worse, 116 -> 112 of 209: fp32 only)."""
    if node.op == "Conv" and node.inputs[1].shape:
        k = int(np.prod(node.inputs[1].shape[1:]))
        stride = int((node.attrs.get("strides") or [1])[-1])
        ok = k <= NEON_K_CONV and stride == 1
    elif node.op in ("Gemm", "MatMul"):
        ok = 0 < _reduction(node) <= NEON_K_GEMM
    else:
        return 0.0
    shape = getattr(node.outputs[0], "shape", None) or [0]
    w = int(shape[-1]) if isinstance(shape[-1], (int, np.integer)) else 0
    if ok and fmt == "fp32" and len(shape) == 4 and w % 4 and w > ROW_UNROLLED:
        return 0.0
    return (w // 4 * 4) / w if ok and w >= 4 else 0.0


# Layers shaped like the fixtures' (depthwise-separable blocks on 25x5, 14x14, 7x7 maps, pointwise convs either side of
# LOOP_K, dense layers by K - 1's divisors): measured on the A76 only, so a fixture held out of the fit still has its
# layer kinds in it (the Cortex-M fit has its own units in eecc/cost/layers.py).
CONVS = [(48, 25, 5, 48, 3, 1, 48), (64, 14, 14, 64, 3, 1, 64), (32, 7, 7, 32, 3, 1, 32), (96, 5, 5, 96, 3, 1, 96),
         (64, 14, 14, 64, 3, 2, 64), (32, 10, 10, 32, 3, 2, 32), (48, 25, 5, 48, 1, 1, 1), (32, 25, 5, 32, 1, 1, 1),
         (64, 14, 14, 64, 1, 1, 1), (64, 7, 7, 64, 1, 1, 1), (96, 5, 5, 64, 1, 1, 1), (40, 6, 6, 40, 1, 1, 1),
         (128, 4, 4, 64, 1, 1, 1), (1, 28, 28, 16, 3, 2, 1), (16, 14, 14, 32, 3, 1, 1), (32, 7, 7, 64, 3, 2, 1)]
DENSE = [(48, 64, 1, 0), (64, 64, 1, 1), (96, 32, 1, 0), (100, 100, 1, 1), (144, 10, 1, 0), (256, 64, 1, 1),
         (128, 32, 1, 0), (200, 10, 1, 0)]                                                 # K, out, bias, relu


# Depthwise 3x3 layers over the output widths LLVM vectorises whole (a multiple of 4), in part (up to ROW_UNROLLED) or
# not at all, stride 1 and 2 (nu11's depthwise-separable CNN: fp32 stages 23 % under). fp32 only (FP32_ONLY): in int8
# they made the held-out fit worse (116 -> ~100 of 209 fixture units within 15 %).
DEPTHWISE_A = [(16, 14, 1), (16, 28, 1), (32, 14, 1), (32, 8, 1), (32, 16, 1), (64, 7, 1), (64, 8, 1), (16, 12, 1),
               (16, 13, 1), (16, 10, 1), (16, 20, 1), (16, 14, 2), (32, 14, 2), (64, 7, 2), (16, 28, 2), (16, 6, 1)]
FP32_ONLY = ("layer:a-dw-",)                                                                     # C, H=W, stride


def layer_models(seed: int = 1) -> dict:
    """{"layer:a-<spec>": float model} of the Cortex-A-only layer units (deterministic)."""
    from eecc.cost.layers import _conv, _dense

    rng, out = np.random.default_rng(seed), {}
    for c, h, w, o, k, s, g in CONVS:
        out[f"layer:a-conv-{c}x{h}x{w}-o{o}k{k}s{s}g{g}"] = _conv("a", c, o, [k, k], [h, w], s, k // 2, g, rng)
    for k, o, bias, relu in DENSE:
        out[f"layer:a-dense-{k}-o{o}{'b' if bias else ''}{'r' if relu else ''}"] = _dense(k, o, bias, relu, "gemm", rng)
    for c, n, s in DEPTHWISE_A:  # last: the earlier units keep their draws
        out[f"layer:a-dw-{c}x{n}s{s}"] = _conv("a", c, c, [3, 3], [n, n], s, 1, c, rng)
    return out
