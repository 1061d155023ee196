"""Cortex-M kernel builds whose entry points read nothing of a tensor argument but its data pointer.

The eecc Cortex-M driver (mcu_driver.stage_tables with pointers=True) hands each TVM kernel wrapper
(`__tvm_ffi_<kernel>`) a pointer to a 4-byte data pointer where tvm-ffi expects a `DLTensor*` (40 bytes on a
32-bit core). That is sound only while the wrapper, built without argument checks, reads `DLTensor.data`
(offset 0) and uses no other field: a kernel with a dynamic shape, strides or a byte offset would read past the
pointer. `build_kernels` therefore checks the host functions MakePackedAPI produced, with the asserts removed as
the build removes them, and fails the build if any other field's value is used. TVM 0.27 has no unpacked-API
pass (src/tirx/transform/make_packed_api.cc), so the wrappers themselves stay.
"""

from __future__ import annotations

import re

from eecc.errors import EeccError

# tvm_struct_get(handle, 0, kind, ...) on a DLTensor handle: kind 1 = kArrData (include/tvm/tirx/builtin.h)
_GET = re.compile(r"T\.tvm_struct_get\((\w+), 0, (\d+),")
_LET = re.compile(r"^\s*(\w+): T\.let\[.*?\] = T\.tvm_struct_get\((\w+), 0, (\d+),")
ARR_DATA, ARR_DEVICE_ID = 1, 9
# device_id goes only to the workspace allocator (cdriver/runtime_common.c), which ignores it
_ALLOC = r"T\.TVMBackend(Alloc|Free)Workspace\(1, {}, "


def build_kernels(kernels, target):
    """tvm.tirx.build(kernels, target) without argument checks (its steps, so that the host functions can be
    checked before code generation); raises EeccError if a wrapper uses a DLTensor field other than data."""
    import tvm
    from tvm.tirx.build import split_host_device_mods, tir_to_runtime

    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        target = tvm.target.Target(target)
        mod = tvm.tirx.transform.BindTarget(target.with_host(target))(kernels)
        pipeline, finalize_host, finalize_device = tvm.tirx.get_default_tir_pipeline(target)
        host, devices = split_host_device_mods(pipeline(mod))
        host = finalize_host()(host)
        devices = {t: finalize_device()(m) for t, m in devices.items()}
        check_data_only(host)
        return tir_to_runtime(host, devices, target)


def check_data_only(host) -> None:
    """host: the lowered host IRModule. Each packed wrapper (`__tvm_ffi_*`) must read its tensors' data pointers
    and use no other DLTensor field once the asserts are gone (what is read only for an assert, or bound and
    never used, is dead code the C compiler drops). The one exception is the device id a wrapper hands to the
    workspace allocator (cdriver/runtime_common.c ignores it): it reads whatever lies 8 bytes past the view, which
    is why mcu_driver ends each view table with two spare null pointers."""
    import tvm

    passes = [tvm.tirx.transform.SkipAssert(), tvm.tirx.transform.StmtSimplify(), tvm.tirx.transform.RemoveNoOp()]
    host = tvm.transform.Sequential(passes)(host)
    wrappers = 0
    for func in host.functions.values():
        symbol = str((func.attrs or {}).get("global_symbol", ""))
        if symbol.startswith("__tvm_ffi_"):
            wrappers += 1
            _check_wrapper(symbol, func.script())
    if wrappers == 0 and len(host.functions):
        raise EeccError("cortex_m: no kernel wrapper (__tvm_ffi_*) found to check in the lowered kernels; this TVM "
                        "lowers them differently from 0.27 (targets/mcu_abi.py must learn it)")


def _check_wrapper(name: str, text: str) -> None:
    lines = text.splitlines()
    reads, used = 0, []
    for i, line in enumerate(lines):
        let = _LET.match(line)
        for handle, kind in _GET.findall(line):
            if handle == "args":  # the tvm-ffi argument array (type index, value), which the driver fills
                continue
            if int(kind) == ARR_DATA:
                reads += 1
            elif let is None or let.group(2) != handle:
                used.append(f"field {kind} of '{handle}'")
            else:  # bound to a name: only a use of that name counts
                word, ok = re.compile(rf"\b{re.escape(let.group(1))}\b"), _ALLOC.format(re.escape(let.group(1)))
                if any(word.search(other) and not (int(kind) == ARR_DEVICE_ID and re.search(ok, other))
                       for j, other in enumerate(lines) if j != i):
                    used.append(f"field {kind} of '{handle}' (as {let.group(1)})")
    if used or reads == 0:
        what = ", ".join(used) if used else "no data pointer read was found"
        raise EeccError(f"cortex_m: kernel wrapper {name} uses {what}; the Cortex-M driver passes each tensor as "
                        "its data pointer alone (targets/mcu_abi.py). Report it with the stage ONNX file")
