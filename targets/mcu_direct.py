"""Kernels that are one C call, called by the driver straight from a two-line shim in stage.c.

eecc's C loops (cdriver/ops_fpu.c: quantise, dequantise, max pool, fully connected, softmax max, ...) enter a
stage as PrimFuncs whose whole body is one `T.call_extern(symbol, &x[0], &y[0], n, scalars...)`. Built by TVM,
each became a packed wrapper (`__tvm_ffi_<kernel>`, unpacking the driver's argument array) plus a compute
function that only forwards the call: 40-118 B per kernel on the M4 (kws search stage 0: 382 B for five). The
driver knows every argument at build time (a view's data pointer is a constant of stage.c, the scalars are
constants of the PrimFunc), so stage.c instead gets one static function per such call with the driver's kernel
signature that calls the C loop with those constants (~20-30 B), and the PrimFunc leaves the TVM build.
Same C loop, same arguments: the outputs are bit for bit the same.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Direct:
    symbol: str  # the C function (void, cdriver)
    args: tuple  # per argument: ("tensor", index into the call's views) or ("int", C type, value)


def direct_calls(kernels) -> dict[str, Direct]:
    """kernel name -> Direct for each PrimFunc of `kernels` (a tvm.IRModule) whose body is blocks around one
    call_extern of tensor addresses at element 0 and integer constants; other kernels are not listed."""
    out = {}
    for gv, func in kernels.functions.items():
        found = _direct(func)
        if found is not None:
            out[gv.name_hint] = found
    return out


def _direct(func) -> Direct | None:
    from tvm import s_tir, tirx
    from tvm.ir.expr import Call, TensorLoad

    stmts, todo = [], [func.body]
    while todo:  # the statements: blocks, buffer declarations, sequences and one Evaluate, or it is no direct call
        s = todo.pop()
        stmts.append(s)
        if isinstance(s, s_tir.SBlockRealize):
            todo.append(s.block)
        elif isinstance(s, s_tir.SBlock):
            if s.alloc_buffers or s.match_buffers or s.init is not None:
                return None
            todo.append(s.body)
        elif isinstance(s, tirx.SeqStmt):
            todo += list(s.seq)
        elif not isinstance(s, (tirx.DeclBuffer, tirx.Evaluate)):
            return None
    evals = [s for s in stmts if isinstance(s, tirx.Evaluate)]
    call = evals[0].value if len(evals) == 1 else None
    if not (isinstance(call, Call) and call.op.name == "tirx.call_extern"):
        return None
    views = [(d.buffer, d.data) for d in stmts if isinstance(d, tirx.DeclBuffer)]  # xf = x.view(n): data of x
    args = []
    for a in call.args[1:]:
        if isinstance(a, tirx.IntImm) and str(a.ty) in ("int32", "int64"):
            args.append(("int", f"{a.ty}_t", int(a.value)))
            continue
        load = a.args[0] if isinstance(a, Call) and a.op.name == "tirx.address_of" else None
        if not isinstance(load, TensorLoad) or any(not (isinstance(i, tirx.IntImm) and int(i.value) == 0)
                                                   for i in load.indices) or str(load.source.elem_offset) != "0":
            return None
        index = _param(func.params, load.source, views)
        if index is None:
            return None
        args.append(("tensor", index))
    return Direct(str(call.args[0].value), tuple(args))


def _param(params, source, views) -> int | None:
    """The index of the parameter whose data `source` (a parameter, or a view declared on one's data) is."""
    for buffer, data in views:
        if buffer.same_as(source):
            if len(getattr(data, "args", ())) != 1:
                return None
            source = data.args[0]
    index = [i for i, p in enumerate(params) if p.same_as(source)]
    return index[0] if len(index) == 1 else None


def without(kernels, direct: dict[str, Direct]):
    """`kernels` less the directly called ones (tvm.IRModule)."""
    import tvm

    return tvm.IRModule({gv: f for gv, f in kernels.functions.items() if gv.name_hint not in direct})


def write_kernels(kernels, target, path: Path, gcc: str, cflags: list[str]) -> None:
    """The TVM build of `kernels` (mcu_abi.build_kernels) as object file `path`; an empty object when every
    kernel of the stage is called directly."""
    from eecc.targets import mcu_abi

    if len(kernels.functions):
        mcu_abi.build_kernels(kernels, target).write_to_file(str(path))
        return
    src = path.with_suffix(".c")
    src.write_text("/* every kernel of this stage is a direct C call (mcu_direct.py) */\n")
    proc = subprocess.run([gcc, *cflags, "-c", str(src), "-o", str(path)], capture_output=True, text=True)
    src.unlink()
    if proc.returncode != 0:
        from eecc.errors import EeccError
        raise EeccError(f"cortex_m: compiling an empty kernel object failed: {proc.stderr.strip()[-500:]}")


def shims(calls, direct: dict[str, Direct], ptr, prefix: str) -> tuple[list[str], dict[int, str]]:
    """C lines (prototypes + one static shim per direct call) and call index -> shim name. `calls`: the stage's
    (kernel, views); `ptr`: view -> C expression of its data pointer (mcu_driver.stage_tables)."""
    lines, names, declared = [], {}, set()
    for c, (kernel, views) in enumerate(calls):
        d = direct.get(kernel)
        if d is None:
            continue
        proto = ", ".join("void*" if a[0] == "tensor" else a[1] for a in d.args)
        if (d.symbol, proto) not in declared:
            declared.add((d.symbol, proto))
            lines.append(f"extern void {d.symbol}({proto});")
        values = ", ".join(ptr(views[a[1]]) if a[0] == "tensor" else _int(a) for a in d.args)
        names[c] = f"{prefix}direct_{c}"
        lines.append(f"static int {names[c]}(void* s, const TVMFFIAny* a, int32_t n, TVMFFIAny* r) {{ /* {kernel} */\n"
                     f"  (void)s; (void)a; (void)n; (void)r; {d.symbol}({values}); return 0;\n}}")
    return lines, names


def _int(arg) -> str:
    _, ctype, value = arg
    if ctype == "int64_t":
        return f"(int64_t){value}LL"
    return f"(int32_t){value}" if value != -2 ** 31 else "(int32_t)(-2147483647 - 1)"
