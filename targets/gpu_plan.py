"""A GPU stage as a launch plan: the kernels of TVM's device source called in order on named buffers
(what TVM's VM and device API would do), written as JSON so a host without TVM can run it."""

from __future__ import annotations

SPLIT = "tirx.SplitHostDevice"


def lower_split(mod, target):
    """TVM's own default TIR pipeline for `target`, stopped right after SplitHostDevice (the passes after it
    are skipped): host functions then call their device kernels by GlobalVar with plain pointer arguments."""
    import tvm
    from tvm import tirx

    @tvm.instrument.pass_instrument
    class StopAfterSplit:
        def __init__(self):
            self.done = False

        def should_run(self, _mod, info):
            return not self.done

        def run_after_pass(self, _mod, info):
            self.done = self.done or info.name == SPLIT

    host = target.host or tvm.target.Target("llvm")
    # The relax legalisation tags kernels with the device target alone; the split needs the host in it too.
    funcs = {gv: f.without_attr("target") if f.attrs is not None and "target" in f.attrs else f
             for gv, f in mod.functions.items()}
    bound = tirx.transform.BindTarget(target.with_host(host))(tvm.IRModule(funcs))
    pipeline, _, _ = tvm.tirx.get_default_tir_pipeline(target)
    stop = StopAfterSplit()
    with tvm.transform.PassContext(opt_level=3, instruments=[stop]):
        out = pipeline(bound)
    if not stop.done:
        raise RuntimeError(f"TVM's TIR pipeline ran no {SPLIT}; the launch plan cannot be read")
    return out


def launch_plan(split_mod, stage) -> dict:
    """The launches of every kernel call of `stage` (a tvm_import.LoweredStage whose kernels were lowered
    to `split_mod` by lower_split), in order, as JSON-ready dicts:

      buffers:  name -> bytes (activations, and temporaries a kernel allocates in global memory)
      launches: [{"kernel": device kernel name, "grid": [x, y, z], "block": [x, y, z],
                  "args": [{"buffer": name} | {"scalar": value, "dtype": "int32"}]}]

    A buffer is named after the stage's storage (views of one buffer share it), so the constants,
    inputs and outputs of `stage` are buffers too.
    """
    import tvm
    import tvm_ffi
    from tvm import tirx

    from eecc.errors import EeccError

    buffers = {buf: nbytes for buf, nbytes in stage.buffers().items()}
    launches = []
    for call, views in stage.calls:
        host = split_mod[split_mod.get_global_var(call)]
        names = {p.name: stage.storage[v] for p, v in zip(host.params, views)}
        if len(names) != len(views):
            raise EeccError(f"gpu_plan: kernel '{call}' has parameters with the same name; report it")

        def on_alloc(node, call=call, names=names):
            if node.buffer.scope() == "global":
                name = f"{call}.{node.buffer.name}"
                names[node.buffer.name] = name
                size = 1
                for d in node.buffer.shape:
                    size *= int(d)
                buffers[name] = size * tvm.runtime.DataType(node.buffer.dtype).bits // 8

        def on_call(node, call=call, names=names):
            if node.op.name == "tirx.call_ffi_kernel":
                launches.append(_launch(node, names, call))

        tvm_ffi.structural_walk(host.body, [(tirx.AllocBuffer, on_alloc), (tvm.ir.Call, on_call)], order="pre")
    return {"buffers": buffers, "launches": launches}


def _launch(node, names: dict, call: str) -> dict:
    from tvm import tirx

    from eecc.errors import EeccError

    params = [str(p) for p in node.attrs.launch_params]
    kernel, rest = str(node.args[0].value), list(node.args[1:])
    values, args = rest[len(rest) - len(params):], rest[:len(rest) - len(params)]
    grid, block = [1, 1, 1], [1, 1, 1]
    for tag, value in zip(params, values):
        if not isinstance(value, tirx.IntImm) or not tag.startswith(("blockIdx.", "threadIdx.")):
            raise EeccError(f"gpu_plan: kernel '{kernel}' of '{call}' has launch parameter {tag}={value}; "
                            "only static grids without dynamic shared memory are supported")
        (grid if tag.startswith("block") else block)["xyz".index(tag[-1])] = int(value)
    out = []
    for arg in args:
        if isinstance(arg, (tirx.IntImm, tirx.FloatImm)):
            out.append({"scalar": arg.value, "dtype": str(arg.dtype)})
        elif getattr(arg, "op", None) is not None and arg.op.name == "tirx.buffer_data" and arg.args[0].name in names:
            out.append({"buffer": names[arg.args[0].name]})
        else:
            raise EeccError(f"gpu_plan: kernel '{kernel}' of '{call}' takes argument '{arg}', which is neither a "
                            "buffer of the stage nor a constant; report it")
    return {"kernel": kernel, "grid": grid, "block": block, "args": out}
