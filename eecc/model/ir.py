"""The one boundary between ONNX files/ModelProtos and the onnx-graphsurgeon graphs passes work on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference

from eecc.errors import EeccError, SymbolicInputShape
from eecc.files import replacing

ANN_PREFIX = "eecc."          # in-memory annotation attrs on gs nodes
META_PREFIX = "pkg.eecc."     # NodeProto.metadata_props keys on disk
MIN_OPSET, MAX_OPSET = 11, 23


def get_ann(node: gs.Node, key: str, default: Any = None) -> Any:
    return node.attrs.get(ANN_PREFIX + key, default)


def set_ann(node: gs.Node, key: str, value: Any) -> None:
    node.attrs[ANN_PREFIX + key] = value


def annotations(node: gs.Node) -> dict[str, Any]:
    return {k[len(ANN_PREFIX):]: v for k, v in node.attrs.items() if k.startswith(ANN_PREFIX)}


def load(path: str | os.PathLike, *, input_shape: Sequence[int] | None = None,
         classifier: bool = True) -> gs.Graph:
    """Read an ONNX file into a shape-inferred gs graph, with eecc annotations restored."""
    return from_model(read(path), input_shape=input_shape, origin=str(path), classifier=classifier)


def read(path: str | os.PathLike) -> onnx.ModelProto:
    """The ModelProto in an ONNX file (external data beside it included); EeccError when unreadable."""
    path = Path(path)
    if not path.exists():
        raise EeccError(f"model file '{path}' does not exist; check the path")
    if path.is_dir():
        raise EeccError(f"'{path}' is a directory, not an ONNX model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning-ish or ValueError
        raise EeccError(f"'{path}' is not a readable ONNX model ({type(exc).__name__}); "
                        "it may be truncated or another format: re-export it with torch.onnx.export") from None
    _load_external_data(model, path)
    if not model.graph.node:
        raise EeccError(f"'{path}' contains no ONNX graph nodes; it is not a model exported to ONNX")
    return model


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """The weights kept in files beside the model (torch.onnx.export's dynamo exporter writes `<model>.data`),
    read into `model`; EeccError naming the data file when it is missing or unreadable."""
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, uses_external_data

    tensors = [*model.graph.initializer, *(a.t for n in model.graph.node for a in n.attribute if a.HasField("t"))]
    files = list(dict.fromkeys(ExternalDataInfo(t).location for t in tensors if uses_external_data(t)))
    missing = [f for f in files if not (path.parent / f).is_file()]
    if missing:
        raise EeccError(f"'{path}' keeps its weights in the external data file '{missing[0]}', which is missing "
                        f"({path.parent / missing[0]} does not exist); copy it beside the model, or re-export with "
                        "the weights inside (torch.onnx.export(..., external_data=False))")
    if not files:
        return
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # a short or foreign data file: onnx raises ValueError / ValidationError
        raise EeccError(f"'{path}': its external data file {', '.join(repr(f) for f in files)} is unreadable "
                        f"({type(exc).__name__}); copy it again from the export, or re-export with the weights "
                        "inside (torch.onnx.export(..., external_data=False))") from None


def from_model(model: onnx.ModelProto, *, input_shape: Sequence[int] | None = None,
               origin: str = "model", classifier: bool = True) -> gs.Graph:
    """`classifier=False` accepts several outputs (models eecc wrote: exits inserted, stages)."""
    model = _checked(model, origin, classifier)
    _name_nodes(model)
    _fix_input_shape(model, input_shape, origin)
    model = _infer_shapes(model, origin)
    anns = {n.name: {p.key[len(META_PREFIX):]: json.loads(p.value)
                     for p in n.metadata_props if p.key.startswith(META_PREFIX)}
            for n in model.graph.node}
    graph = gs.import_onnx(model)
    for node in graph.nodes:
        for key, value in anns.get(node.name, {}).items():
            set_ann(node, key, value)
    return graph


def to_model(graph: gs.Graph) -> onnx.ModelProto:
    """Export a gs graph; eecc annotations move from attrs to metadata_props (inert for checker/ORT/TVM)."""
    graph = graph.copy()
    anns: dict[str, dict[str, Any]] = {}
    for node in graph.nodes:
        node_anns = annotations(node)
        if node_anns:
            anns[node.name] = node_anns
        for key in node_anns:
            del node.attrs[ANN_PREFIX + key]
    model = gs.export_onnx(graph)
    for node in model.graph.node:
        for key, value in sorted(anns.get(node.name, {}).items()):
            node.metadata_props.add(key=META_PREFIX + key, value=json.dumps(value, default=json_default))
    return model


def save(graph_or_model: gs.Graph | onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write atomically: a crash never leaves a half-written model at `path`."""
    model = graph_or_model if isinstance(graph_or_model, onnx.ModelProto) else to_model(graph_or_model)
    path = Path(path)
    with replacing(path) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return path


def per_sample_shape(var: gs.Variable) -> tuple[int, ...] | None:
    """Shape without the batch dimension, or None where any remaining dim is not a known int."""
    if var.shape is None or len(var.shape) == 0:
        return None
    rest = tuple(var.shape[1:])
    return rest if all(isinstance(d, (int, np.integer)) and d >= 0 for d in rest) else None


def sample_shape(var: gs.Variable) -> tuple[int, ...] | None:
    """The shape of one sample's share of `var`, wherever its batch is: a dim 'batch*<k>' (the batch folded with k
    rows per sample, `_batch_dim`: attention's [N·tokens, dim]) counts k; a tensor whose batch moved off axis 0
    (attention's permute(2, 0, 3, 1, 4), an RNN's seq-first X [seq, N, I]) has it as its one symbolic dim; else
    per_sample_shape. None where the shape is unknown."""
    shares = [folded_share(d) for d in var.shape or ()]
    if sum(k is not None for k in shares) == 1:
        return tuple(int(k if k is not None else d) for d, k in zip(var.shape, shares))
    shape = per_sample_shape(var)
    symbolic = [i for i, d in enumerate(var.shape or ()) if not isinstance(d, (int, np.integer))]
    if shape is None and len(symbolic) == 1:
        shape = tuple(int(d) for i, d in enumerate(var.shape) if i != symbolic[0])
    return shape


def json_default(value: Any) -> Any:
    """json.dumps(default=...) for numpy scalars and arrays (annotations, manifests)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"annotation value {value!r} is not JSON-serialisable")


def _checked(model: onnx.ModelProto, origin: str, classifier: bool) -> onnx.ModelProto:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise EeccError(f"{origin}: default-domain opset {opset} is unsupported; "
                        f"export with opset {MIN_OPSET}..{MAX_OPSET} (e.g. torch.onnx.export(..., opset_version=17))")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise EeccError(f"{origin}: fails onnx.checker ({first}); re-export the model") from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    # Stages eecc wrote may take more (an ensemble stage's earlier members after its data input).
    if len(inputs) != 1 and (classifier or not inputs):
        names = ", ".join(i.name for i in inputs) or "none"
        raise EeccError(f"{origin}: has {len(inputs)} graph inputs ({names}); eecc needs a "
                        "single-input classifier: fold the other inputs into constants before export")
    elem = inputs[0].type.tensor_type.elem_type
    if classifier and elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        kind = onnx.TensorProto.DataType.Name(elem).lower()  # nu10: an Embedding's token ids, refused after training
        raise EeccError(_cast_advice(model, inputs[0].name, kind, origin) or
                        f"{origin}: input '{inputs[0].name}' is {kind} (ids or codes, e.g. token ids into an "
                        "embedding); eecc needs a float input: export the network from its first float tensor on "
                        "(after the embedding) and give that tensor's values as x")
    if classifier and len(model.graph.output) != 1:
        raise EeccError(_outputs_advice(model, inputs[0].name, origin))
    return model


def _cast_advice(model: onnx.ModelProto, input_name: str, kind: str, origin: str) -> str | None:
    """An integer input whose only use is a Cast to float (an image model with its normalisation inside, as TFLite /
    Keras conversions write it): the onnx call that cuts the model at the Cast's output, and the compile option that
    turns the integer data into those floats (nu13 F4: it was called "token ids into an embedding"); else None."""
    users = [n for n in model.graph.node if input_name in n.input]
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    if len(users) != 1 or users[0].op_type != "Cast" or len(model.graph.output) != 1 \
            or next((a.i for a in users[0].attribute if a.name == "to"), None) not in floats:
        return None
    cast, out = users[0].output[0], model.graph.output[0].name
    src = origin if origin.endswith(".onnx") else "model.onnx"
    return (f"{origin}: input '{input_name}' is {kind} and only cast to float ('{cast}'); eecc needs a float input: "
            f"cut the model at the cast, onnx.utils.extract_model('{src}', '{src[:-5]}.float.onnx', ['{cast}'], "
            f"['{out}']), and compile that with " + ("the uint8 data and --scale 1" if kind == "uint8" else
                                                     "x.astype(np.float32) as x")
            + " (the cast's values: the model's own scaling after the cast stays in it)")


def _outputs_advice(model: onnx.ModelProto, input_name: str, origin: str) -> str:
    """Several outputs: the message names them and the onnx call that keeps the class scores (the first float
    [N, C] output), which the user can run on the file they have (nu11: "drop before export" cannot help a
    scikit-learn user)."""
    outs = model.graph.output
    scores = next((o.name for o in outs if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
                   and len(o.type.tensor_type.shape.dim) == 2), outs[0].name)
    src = origin if origin.endswith(".onnx") else "model.onnx"
    return (f"{origin}: has {len(outs)} graph outputs ({', '.join(o.name for o in outs)}); eecc needs a classifier "
            f"with one output of class scores: keep that one, e.g. onnx.utils.extract_model('{src}', "
            f"'{src[:-5]}.scores.onnx', ['{input_name}'], ['{scores}']), or drop the others before export")


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed or duplicate-named nodes deterministic names so annotations can be keyed by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def set_input_shape(model: onnx.ModelProto, input_shape: Sequence[int] | None, origin: str = "model") -> None:
    """Fix the non-batch input dims to `input_shape` in place; EeccError when they contradict declared dims."""
    _fix_input_shape(model, input_shape, origin)


def _fix_input_shape(model: onnx.ModelProto, input_shape: Sequence[int] | None, origin: str) -> None:
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = inp.type.tensor_type.shape.dim
    if input_shape is not None:
        if len(input_shape) != len(dims) - 1:
            raise EeccError(f"{origin}: --input-shape {list(input_shape)} has {len(input_shape)} dims but input "
                            f"'{inp.name}' has {len(dims) - 1} non-batch dims; give the shape without the batch dim")
        declared = [d.dim_value if d.HasField("dim_value") else None for d in list(dims)[1:]]
        if any(d is not None and d != int(s) for d, s in zip(declared, input_shape)):
            want = ",".join("?" if d is None else str(d) for d in declared)
            raise EeccError(f"{origin}: --input-shape {','.join(map(str, input_shape))} contradicts the dims "
                            f"input '{inp.name}' declares ({want}); leave --input-shape out or give those dims "
                            "(for data in another layout, transpose the data, not the model's shape)")
        for dim, size in zip(list(dims)[1:], input_shape):
            dim.Clear()
            dim.dim_value = int(size)
    unknown = [i for i, d in enumerate(dims) if i > 0 and not d.HasField("dim_value")]
    if len(dims) < 2:
        raise EeccError(f"{origin}: input '{inp.name}' has no dims after the batch dim; export the model with its "
                        "sample dims (e.g. [N, features])")
    if unknown:  # the advice in this model's own rank: C,H,W was asked of a 1-D model (nu12 F5)
        rest = list(dims)[1:]
        example = ",".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or f"D{i + 1}")
                           for i, d in enumerate(rest))
        raise SymbolicInputShape(
            f"{origin}: input '{inp.name}' has symbolic non-batch dims at positions {unknown}; pass --input-shape "
            f"{example} with their sizes ({len(rest)} dim{'s' * (len(rest) != 1)}, without the batch dim) or export "
            "with a static shape",
            [d.dim_value if d.HasField("dim_value") else None for d in rest])


def _infer_shapes(model: onnx.ModelProto, origin: str) -> onnx.ModelProto:
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise EeccError(f"{origin}: ONNX shape inference failed ({str(exc).splitlines()[0]}); "
                        "export with static input shape") from None
    known = {vi.name for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)
             if _has_static_rest(vi)}
    missing = [o for n in model.graph.node for o in n.output if o and o not in known]
    if missing:
        _shapes_from_onnxruntime(model, missing, origin)
    folded = _folded_batch_candidates(model)
    if folded:
        try:
            _shapes_from_onnxruntime(model, folded, origin)
        except EeccError:
            pass  # the static shapes stand (a MAC count of one row per sample, as before the probe)
    return model


def _folded_batch_candidates(model: onnx.ModelProto) -> list[str]:
    """Outputs with a symbolic dim that is not the input's batch dim: one that may hold the batch folded with other
    dims (attention's out-projection, a Gemm on [N·tokens, dim], and the Reshape in front of it: nu11 F6, fx7). A run
    at two batch sizes tells its per-sample share (`_shapes_from_onnxruntime` writes it as 'batch*<share>')."""
    inits = {i.name for i in model.graph.initializer}
    inp = next((i for i in model.graph.input if i.name not in inits), None)
    if inp is None:
        return []
    batch = inp.type.tensor_type.shape.dim[0].dim_param if inp.type.tensor_type.shape.dim else ""
    shapes = {vi.name: vi.type.tensor_type.shape.dim for vi in list(model.graph.value_info) + list(model.graph.output)
              if vi.type.HasField("tensor_type")}
    return [o for n in model.graph.node for o in n.output if o in shapes
            and any(d.dim_param and d.dim_param != batch and not d.dim_param.startswith("batch") for d in shapes[o])]


def _batch_dim(one: int, two: int) -> str:
    """A dim that changes with the batch size: 'batch', or 'batch*<k>' where it holds k rows per sample (a batch
    folded with k tokens: 50 at batch 1, 100 at batch 2)."""
    return f"batch*{one}" if one > 1 and two == 2 * one else "batch"


def folded_share(dim) -> int | None:
    """k of a 'batch*<k>' dim (`_batch_dim`); None for any other dim."""
    if isinstance(dim, str) and dim.startswith("batch*") and dim[6:].isdigit():
        return int(dim[6:])
    return None


def _has_static_rest(vi: onnx.ValueInfoProto) -> bool:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return False
    dims = vi.type.tensor_type.shape.dim
    return all(d.HasField("dim_value") for d in list(dims)[1:])


def _shapes_from_onnxruntime(model: onnx.ModelProto, names: list[str], origin: str) -> None:
    """Static inference left some shapes unknown (e.g. a dynamic Pad): learn them from one real run."""
    import onnxruntime as ort
    from eecc.runtime.sessions import session_options

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    rest = [d.dim_value for d in list(inp.type.tensor_type.shape.dim)[1:]]
    elem = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
        # Two batch sizes tell batch-dependent dims (symbolic) from fixed ones (shape tensors, weights).
        runs = [sess.run(names, {inp.name: np.zeros([b, *rest], dtype=elem)}) for b in (1, 2)]
    except Exception as exc:
        raise EeccError(f"{origin}: cannot determine intermediate shapes (onnxruntime: "
                        f"{str(exc).splitlines()[0][:160]}); export with static shapes") from None
    by_name = {vi.name: vi for vi in model.graph.value_info}
    for name, one, two in zip(names, *runs):
        one, two = np.asarray(one), np.asarray(two)
        dims = [d1 if d1 == d2 else _batch_dim(d1, d2) for d1, d2 in zip(one.shape, two.shape)]
        vi = onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(one.dtype), dims)
        if name in by_name:
            by_name[name].CopyFrom(vi)
        else:
            model.graph.value_info.append(vi)
