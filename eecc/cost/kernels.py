"""Which kernel the Cortex-M lowering gives a convolution, per (cpu, numeric format), and the loop counts of
that kernel: the features the cost model prices eecc's own hand-scheduled kernels by.

The choice is the lowering's own (targets/tvm_import.lower_stage):
  int8   mcu_kernels.kernel_kind(target) ("dsp" on the M4, "plain" on the M0+) and mcu_kernels.fits (2-D
         and 1-D as H = 1, batch 1, no dilation): groups = 1 -> the tile conv2d (2×2 on "dsp", 1×2 on "plain"), depthwise ->
         mcu_depthwise.depthwise2d (two outputs of a row per step; 3-wide filters at stride 1 or 2 on
         "dsp": _depthwise_dsp);
  fp32   kernel_kind == "dsp" (an M4F-class core): groups = 1 convs, 2-D and 1-D (as H = 1) -> mcu_float.conv2d_f32;
  else   TVM's own operators (priced by the per-op-kind features of eecc/cost/features.py).

Loop counts (per sample; npix = output pixels, npp = ⌈npix/2⌉ pixel pairs, K = Cin·Kh·Kw, O2 = Cout
rounded up to even, KP = K rounded up to a multiple of 4), from the kernels' TIR loops:
  tile_body    inner-loop bodies: dsp npp·O2/2·KP/4 (4 SMLAD pairs), fp32 npp·O2/2·K (4 FMUL+FADD),
               plain npp·Cout·KP/4 (one weight word, 8 MACs)
  tile_acc     accumulator tiles (bias load, loop set-up, requantised stores): npp·O2/2, plain npp·Cout
  tile_col     column elements built (bounds-checked gather): 2·npp·K
  dwk_step     depthwise steps: generic kernel Cout·Oh·⌈Ow/2⌉ (Kh·Kw taps unrolled, 2 outputs); dsp3
               Cout·Oh·⌈Ow/2⌉·Kh
  dwk_tap      taps of the generic kernel (2 MACs each): Cout·Oh·⌈Ow/2⌉·Kh·Kw
  dwk_out      depthwise outputs (requantised)
  dwk_plane    padded plane filled once + each channel copied in: Hp·Wp + C·H·W
  dwk_ch       channels (per-channel loop set-up, dsp3: tap pairs built)
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from eecc.targets import cortex_m, mcu_kernels, mcu_quantize

# (cpu, format) blocks of the feature vector: the Cortex-M kinds, then the Cortex-A (eecc/cost/aarch64.py: TVM's
# operators only, rows in their own file), so that the Cortex-M blocks keep their columns; last a GPU's kernel
# launches (no measured rows: segments.overhead_s reads its `kernels`, the kernels TVM's operator fusion leaves)
GPU = "gpu"
GROUPS = (("cortex-m0plus", "fp32"), ("cortex-m4", "fp32"), ("cortex-m0plus", "int8"), ("cortex-m4", "int8"),
          ("cortex-a", "fp32"), ("cortex-a", "int8"), (GPU, "fp32"))
KERNEL_FEATURES = ("tile_body", "tile_acc", "tile_col", "dwk_step", "dwk_tap", "dwk_out",
                   "dwk_plane", "dwk_ch")


def _kind(cpu: str) -> str | None:
    # kernel_kind reads only the target's mtriple and mcpu: the backend's own target dict, without TVM; a core that
    # is not a microcontroller (the Cortex-A) gets TVM's own operators
    if cpu not in cortex_m.CPUS:
        return None
    return mcu_kernels.kernel_kind(SimpleNamespace(attrs=cortex_m.CPUS[cpu]["target"]))


def table_dequantised(n: int, cpu: str) -> bool:
    """Whether the int8 lowering dequantises a tensor of n elements (per sample) on `cpu` with mcu_quantize's
    256-entry table (a load per value) rather than a conversion and a multiply (TVM's operators, soft float on
    the M0+; cdriver/ops_fpu.c's conversion loop on the M4): its dequantize_rule takes tensors of at least
    mcu_quantize.TABLE_MIN elements on cores without an FPU ("plain" kernels); no table before that rule."""
    least = getattr(mcu_quantize, "TABLE_MIN", None)
    return least is not None and n >= least and _kind(cpu) == "plain"


def soft_float(cpu: str) -> bool:
    """Whether `cpu` has no FPU (its fp32 arithmetic is libgcc's soft-float calls, whose cost depends on the values):
    the cores eecc's int8 kernels treat as "plain" (the M0+)."""
    return _kind(cpu) == "plain"


def _geometry(node) -> tuple[int, ...]:
    """(C, H, W, O, KH, KW, SH, SW, pad top, left, bottom, right) of a Conv; a 1-D conv (NCW) as the H = 1 conv
    the lowering runs (mcu_float.conv2d_f32, mcu_kernels.relax_call)."""
    w = [int(d) for d in node.inputs[1].shape]
    one_d = len(w) == 3
    c, *spatial = (int(d) for d in node.inputs[0].shape[1:])
    strides = [int(s) for s in node.attrs.get("strides", [1] * (len(w) - 2))]
    pads = [int(p) for p in node.attrs.get("pads", [0] * 2 * (len(w) - 2))]
    if one_d:
        return (c, 1, spatial[0], w[0], 1, w[2], 1, strides[0], 0, pads[0], 0, pads[1])
    return (c, *spatial, w[0], w[2], w[3], *strides, *pads)


def conv_kernel(node, cpu: str, fmt: str) -> str:
    """"tile", "dw", "dw3" (eecc's kernels) or "tvm" (TVM's operators) for an ONNX Conv node."""
    w, x = node.inputs[1].shape, node.inputs[0].shape
    if not w or not x or len(w) not in (3, 4) or any(not isinstance(d, (int, np.integer)) for d in [*w, *x[1:]]):
        return "tvm"  # unknown shapes
    group = int(node.attrs.get("group", 1))
    dilation = [int(d) for d in node.attrs.get("dilations", [1] * (len(w) - 2))]
    kind = _kind(cpu)
    if fmt == "fp32":
        return "tile" if kind == "dsp" and group == 1 and set(dilation) == {1} else "tvm"
    if kind is None:
        return "tvm"
    c, h, wd, o, kh, kw, _, sw, *_ = _geometry(node)
    call = SimpleNamespace(attrs=SimpleNamespace(groups=group, dilation=dilation),
                           args=[SimpleNamespace(ty=SimpleNamespace(shape=SimpleNamespace(values=[1, c, h, wd])))])
    if not mcu_kernels.fits(call, np.empty([o, int(w[1]), kh, kw], np.int8), kind):
        return "tvm"
    if group == 1:
        return "tile"
    return "dw3" if kind == "dsp" and kw == 3 and sw in (1, 2) else "dw"  # mcu_kernels.depthwise2d


def kernel_features(node, kernel: str, cpu: str, fmt: str) -> dict[str, float]:
    """{KERNEL_FEATURES name: count} of one Conv lowered to `kernel` (conv_kernel) on (cpu, fmt); a 1-D conv
    counts as the H = 1 conv the lowering runs."""
    c, h, wd, o, kh, kw, sh, sw, pt, pl, pb, pr = _geometry(node)
    oh, ow = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    npix = oh * ow
    if kernel == "tile":
        k, npp, o2 = c * kh * kw, -(-npix // 2), o + o % 2
        plain = _kind(cpu) == "plain" and fmt == "int8"
        body = npp * o2 // 2 * k if fmt == "fp32" else npp * (o if plain else o2 // 2) * -(-k // 4)
        return {"tile_body": body, "tile_acc": npp * (o if plain else o2 // 2), "tile_col": 2 * npp * k}
    hp, wp = h + pt + pb, wd + pl + pr
    if kernel == "dw3":  # _depthwise_dsp: output pairs at stride 1, an even-pitch plane
        steps = -(-ow // 2) if sw == 1 else ow
        pitch = max(wp, 2 * steps + 2)
        return {"dwk_step": c * oh * steps * kh, "dwk_out": c * npix, "dwk_plane": hp * (pitch + pitch % 2) + c * h * wd,
                "dwk_ch": c}
    steps, plane = c * oh * -(-ow // 2), hp * wp + c * h * wd  # mcu_depthwise.depthwise2d: output pairs
    return {"dwk_step": steps, "dwk_tap": steps * kh * kw, "dwk_out": c * npix, "dwk_plane": plane, "dwk_ch": c}
