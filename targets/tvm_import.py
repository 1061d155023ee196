"""ONNX stage -> TVM Relax (default CPU pipeline, fused) -> TIR kernels + the call list that runs them."""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from eecc.errors import EeccError
from eecc.targets.cpu_schedule import shrink_intermediates

ALIGN = 64  # TVM kernels assume 64-byte aligned tensor data (kAllocAlignment)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: float32, int64, bool, ...

    @property
    def nbytes(self) -> int:
        return int(math.prod(self.shape)) * np.dtype(self.dtype).itemsize


@dataclass
class LoweredStage:
    """A stage as TIR kernels called in order on named buffers (the Relax VM's job, done by eecc's driver)."""

    kernels: object  # tvm.IRModule of scheduled TIR PrimFuncs (global symbols attached)
    calls: list[tuple[str, list[str]]]  # (kernel, view names: inputs then outputs)
    views: dict[str, TensorSpec]  # every tensor a kernel sees; several views may share one buffer
    storage: dict[str, str]  # view -> buffer it lives in (a buffer is named after its first view)
    constants: dict[str, np.ndarray]  # buffer -> weights (flash)
    inputs: list[str]  # ONNX input names, model order (these are buffers)
    outputs: list[str]  # ONNX output names, model order (these are views)
    output_views: dict[str, str] = field(default_factory=dict)  # ONNX output -> view holding it

    def buffers(self) -> dict[str, int]:
        """Activation buffers (neither graph input nor constant) with their sizes in bytes."""
        sizes: dict[str, int] = {}
        for view, buf in self.storage.items():
            if buf in self.constants or buf in self.inputs:
                continue
            sizes[buf] = max(sizes.get(buf, 0), self.views[view].nbytes)
        return sizes


def fixed_shapes(model: onnx.ModelProto, *, batch: int = 1) -> dict[str, list[int]]:
    """Input shapes with the batch dimension pinned: an MCU stage runs one sample at a time."""
    inits = {i.name for i in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = []
        for i, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value if i else batch)
            elif i == 0:
                dims.append(batch)
            else:
                raise EeccError(
                    f"tvm_import: input '{inp.name}' has a dynamic dimension {i} ('{d.dim_param}'); "
                    "export the stage with a static input shape"
                )
        shapes[inp.name] = dims
    return shapes


def fold_dynamic_pads(model: onnx.ModelProto, *, batch: int = 1) -> onnx.ModelProto:
    """TVM's importer rejects a Pad whose amounts are computed (TorchScript exports of 'same' padding do
    this). With the batch fixed, as TVM compiles it anyway, onnxruntime's basic level folds those shape
    computations into constants, exactly."""
    import onnxruntime as ort

    consts = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                          for o in n.output}
    if not any(n.op_type == "Pad" and len(n.input) > 1 and n.input[1] not in consts for n in model.graph.node):
        return model
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    shapes = fixed_shapes(model, batch=batch)
    for inp in (i for i in fixed.graph.input if i.name in shapes):
        for dim, size in zip(inp.type.tensor_type.shape.dim, shapes[inp.name]):
            dim.Clear()
            dim.dim_value = size
    with tempfile.TemporaryDirectory(prefix="eecc-fold-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(fixed.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath)


def with_identifier_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Graph inputs renamed to C identifiers: GPU backends print input names as kernel parameters, and a
    TorchScript hand-off such as '/5/Relu_output_0' is no valid OpenCL/CUDA name."""
    inits = {i.name for i in model.graph.initializer}
    bad = {i.name for i in model.graph.input if i.name not in inits and not re.fullmatch(r"[A-Za-z_]\w*", i.name)}
    if not bad:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = {old: f"stage_input{k}" for k, old in enumerate(sorted(bad))}
    for inp in out.graph.input:
        inp.name = names.get(inp.name, inp.name)
    for node in out.graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
    return out


def relax_module(model: onnx.ModelProto, *, batch: int = 1):
    from tvm.relax.frontend.onnx import from_onnx

    model = fold_dynamic_pads(model, batch=batch)
    try:
        return from_onnx(model, shape_dict=fixed_shapes(model, batch=batch), sanitize_input_names=False)
    except EeccError:
        raise
    except Exception as exc:  # the frontend raises bare errors for unsupported ops
        raise EeccError(f"tvm_import: TVM cannot import the stage ({str(exc).splitlines()[-1]}); "
                        "simplify or re-export the model") from exc


def lower_stage(model: onnx.ModelProto, target, *, reduce_workspace: bool = True) -> LoweredStage:
    """Default Relax CPU pipeline up to (not including) the VM lowering, then read main's call list."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    mod = relax_module(model)
    from eecc.targets import int8_lowering, mcu_float, mcu_gate, mcu_kernels

    if int8_lowering.has_qdq(model):  # int8: QDQ islands become integer kernels
        mod = int8_lowering.lower_int8(mod, kernels=mcu_kernels.kernel_kind(target))
    elif mcu_kernels.kernel_kind(target) == "dsp":  # an M4F-class core: fp32 convolutions, register-tiled
        mod = mcu_float.lower_float_convs(mod)
    if mcu_kernels.kernel_kind(target) == "dsp":  # and the exit gate's max softmax in one C loop (int8 and fp32)
        mod = mcu_gate.lower_gates(mod)
    with target:
        seq = cpu.library_dispatch_passes(target) + cpu.legalize_passes(target) + cpu.dataflow_lower_passes(target)
        mod = tvm.transform.Sequential(seq)(mod)
    mod = relax.transform.AttachGlobalSymbol()(mod)
    stage = _read_main(mod, model)
    used = {name for name, _ in stage.calls}
    funcs = {}
    for gv, func in mod.functions.items():
        if gv.name_hint in used:
            funcs[gv] = shrink_intermediates(func) if reduce_workspace else func
    stage.kernels = tvm.IRModule(funcs)
    return stage


class _MainReader:
    """Walks the lowered Relax `main` once: a view per tensor (storage = the buffer it aliases), the
    constants, and the kernel calls in order (only TIR calls, reshapes and allocations are supported)."""

    def __init__(self):
        self.views: dict[str, TensorSpec] = {}
        self.storage: dict[str, str] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.calls: list[tuple[str, list[str]]] = []
        self.names: dict[object, str] = {}  # relax Var -> view name (a tuple of them for tuples)

    def add(self, name: str, ty, storage: str | None = None) -> str:
        shape = tuple(int(d) for d in ty.shape.values)
        self.views[name] = TensorSpec(name, shape, "bool" if ty.dtype == "bool" else str(np.dtype(str(ty.dtype))))
        self.storage[name] = storage or name
        return name

    def arg(self, expr) -> str:
        import tvm

        if isinstance(expr, tvm.ir.Var):
            return self.names[expr]
        if isinstance(expr, tvm.ir.Constant):
            name = f"const{len(self.constants)}"
            arr = self.constants[name] = expr.value.numpy()
            self.views[name], self.storage[name] = TensorSpec(name, tuple(arr.shape), str(arr.dtype)), name
            return name
        raise EeccError(f"tvm_import: unsupported kernel argument {type(expr).__name__} in the lowered stage")

    def bind(self, var, value) -> None:
        import tvm
        from tvm import relax

        name = f"t{len(self.names)}_{var.name}"
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            if value.op.name == "relax.builtin.alloc_tensor":
                self.names[var] = self.add(name, var.ty)
            elif value.op.name == "relax.reshape":  # a view: same bytes, new shape
                self.names[var] = self.add(name, var.ty, self.storage[self.arg(value.args[0])])
            else:
                raise EeccError(f"tvm_import: the lowered stage calls '{value.op.name}', which the eecc "
                                "driver cannot run; only TIR kernels, reshapes and allocations are supported")
        elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
            self.calls.append((value.op.name_hint, [self.arg(a) for a in value.args]))
        elif isinstance(value, tvm.ir.Var):
            self.names[var] = self.names[value]
        elif isinstance(value, (relax.Tuple, tvm.ir.Tuple)):
            self.names[var] = tuple(self.arg(f) for f in value.fields)
        elif isinstance(value, (relax.TupleGetItem, tvm.ir.TupleGetItem)):
            self.names[var] = self.names[value.tuple_value][value.index]
        else:
            raise EeccError(f"tvm_import: unsupported binding '{var.name} = {type(value).__name__}' "
                            "in the lowered stage")

    def results(self, result) -> list[str]:
        import tvm
        from tvm import relax

        if isinstance(result, (relax.Tuple, tvm.ir.Tuple)):
            return [self.arg(f) for f in result.fields]
        out = self.names[result] if isinstance(result, tvm.ir.Var) else self.arg(result)
        return list(out) if isinstance(out, tuple) else [out]


def _read_main(mod, model: onnx.ModelProto) -> LoweredStage:
    main, reader = mod["main"], _MainReader()
    graph_inputs = [i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}]
    for param, onnx_name in zip(main.params, graph_inputs):
        reader.names[param] = reader.add(onnx_name, param.ty)
    inputs = graph_inputs[: len(main.params)]
    for block in main.body.blocks:
        for binding in block.bindings:
            reader.bind(binding.var, binding.value)
    out_views, outputs = reader.results(main.body.body), [o.name for o in model.graph.output]
    if len(outputs) != len(out_views):
        raise EeccError(f"tvm_import: the stage has {len(outputs)} outputs but TVM produced {len(out_views)}")
    for onnx_name, view in zip(outputs, out_views):
        if reader.storage[view] in reader.constants or reader.storage[view] in inputs:
            raise EeccError(f"tvm_import: output '{onnx_name}' is a constant or a copy of an input; "
                            "the eecc driver needs every output computed by a kernel")
    return LoweredStage(None, reader.calls, reader.views, reader.storage, reader.constants, inputs, outputs,
                        dict(zip(outputs, out_views)))


@dataclass(frozen=True)
class MemoryPlan:
    offsets: dict[str, int]  # buffer -> byte offset in the arena
    arena_bytes: int
    unplanned_bytes: int  # one static buffer per tensor, no reuse


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(stage: LoweredStage) -> MemoryPlan:
    """Greedy-by-size offset assignment over live intervals (the TFLite Micro planner's rule):
    two buffers may overlap in memory only if no kernel call sees both alive."""
    sizes = stage.buffers()
    first, last = {}, {}
    for i, (_, args) in enumerate(stage.calls):
        for view in args:
            buf = stage.storage[view]
            if buf in sizes:
                first.setdefault(buf, i)
                last[buf] = i
    for view in stage.output_views.values():  # outputs are read by the host after the last call
        last[stage.storage[view]] = len(stage.calls)
    placed: list[tuple[int, int, str]] = []
    offsets = {}
    for buf in sorted(sizes, key=lambda b: (-sizes[b], first.get(b, 0))):
        lo, hi = first.get(buf, 0), last.get(buf, 0)
        clash = sorted((off, off + _align(sizes[o])) for off, _, o in placed
                       if not (last.get(o, 0) < lo or hi < first.get(o, 0)))
        offset = 0
        for start, end in clash:
            if offset + _align(sizes[buf]) <= start:
                break
            offset = max(offset, end)
        offsets[buf] = offset
        placed.append((offset, sizes[buf], buf))
    arena = max((offsets[b] + _align(sizes[b]) for b in sizes), default=0)
    return MemoryPlan(offsets, arena, sum(_align(s) for s in sizes.values()))


def unplanned(stage: LoweredStage) -> MemoryPlan:
    offsets, total = {}, 0
    for buf, size in stage.buffers().items():
        offsets[buf] = total
        total += _align(size)
    return MemoryPlan(offsets, total, total)


def workspace_bytes(kernels, target) -> int:
    """Largest in-kernel scratch need, read from the lowered TIR (every kernel runs alone)."""
    import tvm
    from tvm import s_tir

    pipeline, finalize_host, _ = tvm.tirx.get_tir_pipeline("default")
    bound = tvm.tirx.transform.BindTarget(target.with_host(target))(kernels)
    lowered = pipeline(bound)  # before LowerTVMBuiltin turns allocations into workspace calls
    worst = 0
    for _, func in lowered.functions.items():
        per_scope = s_tir.analysis.calculate_allocated_bytes(func)
        total = 0
        for scope in per_scope.values():
            total += sum(_align(int(v)) for v in scope.values())
        worst = max(worst, total)
    return worst


def build_kernels(kernels, target, *, checks: bool = True):
    """checks=False: no per-kernel argument checks (~2 KB each on a Cortex-M; eecc's driver made the shapes)."""
    import tvm

    with tvm.transform.PassContext(config={"tirx.disable_assert": not checks}):
        return tvm.tirx.build(kernels, target=target)
