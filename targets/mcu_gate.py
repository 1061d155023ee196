"""The max-softmax exit gate's confidence on Armv7E-M with an FPU: one rolled C loop (cdriver/ops_fpu.c
eecc_softmax_max) for max(Softmax(z)) over the last axis instead of TVM's softmax and max, which with newlib's
expf took ~1.6 KB of every gated stage (kws search stage 0: softmax 568 B, max 232 B, expf with errno ~760 B, two
wrappers), in its int8 and its fp32 build alike.

    max_i softmax(z)_i = exp(0) / Σ_i exp(z_i - m) = 1 / Σ_i exp(z_i - m),  m = max_i z_i

as TVM's stable softmax computes its largest probability (the same float32 sum, divided into exp(0) = 1); exp is
ops_fpu.c's own (Cody-Waite reduction, degree-6 Taylor), the result within 4 ulp of that sum over exact exps
(tests/test_mcu_ops_fpu.py). The GreaterOrEqual against the threshold stays TVM's (66 B). Only the M4 build
(mcu_kernels.kernel_kind "dsp"): the M0+ has no FPU and keeps TVM's gate.
"""

from __future__ import annotations

SOFTMAX_MAX = "eecc_softmax_max"


def lower_gates(mod):
    """A new IRModule whose float32 max(softmax(z, axis=-1), axis=[-1]) over [1, C] calls eecc_softmax_max."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    builder = relax.BlockBuilder(mod)
    z = wildcard()
    soft = is_op("relax.nn.softmax")(z)
    pattern = is_op("relax.max")(soft)

    def rewrite(expr, m):
        shape = [int(d) for d in m[z].ty.shape.values]
        axes = [int(a) for a in (expr.attrs.axis or [])]
        if (len(shape) != 2 or shape[0] != 1 or str(m[z].ty.dtype) != "float32" or int(m[soft].attrs.axis) % 2 != 1
                or [a % 2 for a in axes] != [1] or bool(expr.attrs.keepdims)):
            return expr
        gv = builder.add_func(_kernel(shape[1]), "softmax_max")
        return relax.call_tir(gv, [m[z]], relax.TensorType([1], "float32"))

    main = rewrite_call(pattern, rewrite, mod["main"])
    out = tvm.IRModule({gv: f for gv, f in builder.get().functions.items() if gv.name_hint != "main"})
    out["main"] = main
    return relax.transform.DeadCodeElimination(["main"])(out)


def _kernel(n: int):
    """PrimFunc(z float32 [1, n], y float32 [1]) = eecc_softmax_max(z, y, n)."""
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def kernel(zb: T.Buffer((1, n), "float32"), yb: T.Buffer((1,), "float32")):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})
        with T.sblock("gate"):
            T.evaluate(T.call_extern("int32", SOFTMAX_MAX, T.address_of(zb[0, 0]), T.address_of(yb[0]), n))

    return kernel
