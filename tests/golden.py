"""Golden-graph harness: canonical text of an ONNX graph, and an equality check that shows the first difference.

Canonical form: node names dropped; graph inputs and outputs keep their names (they are the interface the
runtime wires by name); every other tensor, initializers included, is renamed %0, %1, … in a topological
order that does not depend on how a pass happened to order independent nodes.
"""

from __future__ import annotations

import difflib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, parser


def parse(text: str, seed: int = 0) -> onnx.ModelProto:
    """Parse ONNX text; tensors declared in `<...>` without a value become seeded random float weights."""
    model = parser.parse_model(text)
    g = model.graph
    produced = {o for n in g.node for o in n.output} | {i.name for i in g.initializer}
    rng = np.random.default_rng(seed)
    for vi in list(g.value_info):
        if vi.name in produced:
            continue
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        assert np.issubdtype(dtype, np.floating), f"give integer constant '{vi.name}' a value in the text"
        values = (0.5 * rng.standard_normal(dims)).astype(dtype)
        g.initializer.append(onnx.numpy_helper.from_array(values, vi.name))
        g.value_info.remove(vi)
    onnx.checker.check_model(model, full_check=True)
    return model


def canonical(model: onnx.ModelProto) -> str:
    g = model.graph
    public = {v.name for v in g.input} | {v.name for v in g.output}
    names: dict[str, str] = {n: n for n in public}
    inits = {i.name: i for i in g.initializer}

    def rename(name: str) -> str:
        if name == "":
            return ""
        if name not in names:
            names[name] = f"%{len(names) - len(public)}"
        return names[name]

    lines = [f"input {v.name}: {_type(v)}" for v in g.input if v.name not in inits]
    lines += [f"output {v.name}: {_type(v)}" for v in g.output]
    for node in _stable_toposort(g, inits, rename):
        ins = []
        for i in node.input:
            label = rename(i)
            if i in inits:
                t = inits[i]
                label += f":{helper.tensor_dtype_to_np_dtype(t.data_type)}{list(t.dims)}"
            ins.append(label)
        attrs = ",".join(f"{a.name}={_attr(a)}" for a in sorted(node.attribute, key=lambda a: a.name))
        outs = ", ".join(rename(o) for o in node.output)
        domain = f"{node.domain}." if node.domain else ""
        lines.append(f"{outs} = {domain}{node.op_type}<{attrs}>({', '.join(ins)})")
    return "\n".join(lines)


def assert_same_graph(actual: onnx.ModelProto, expected: onnx.ModelProto) -> None:
    a, e = canonical(actual), canonical(expected)
    if a != e:
        diff = "\n".join(difflib.unified_diff(e.splitlines(), a.splitlines(), "expected", "actual", lineterm=""))
        raise AssertionError(f"graphs differ:\n{diff}\n--- expected ---\n{e}\n--- actual ---\n{a}")


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict:
    """onnxruntime on CPU with every graph optimisation off, so that its fusions cannot hide a bug."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def _stable_toposort(g: onnx.GraphProto, inits: dict, rename) -> list[onnx.NodeProto]:
    available = {v.name for v in g.input} | set(inits) | {""}
    pending = list(g.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise AssertionError("graph has a cycle or a dangling input")
        # Order independent nodes by what they compute, not by where the pass put them.
        ready.sort(key=lambda n: (n.op_type, [rename(i) if i not in inits else "" for i in n.input],
                                  [_attr(a) for a in n.attribute]))
        node = ready[0]
        ordered.append(node)
        pending.remove(node)
        available.update(node.output)
    return ordered


def _type(v: onnx.ValueInfoProto) -> str:
    if not v.type.HasField("tensor_type"):  # a sequence or map (scikit-learn's ZipMap output)
        return helper.printable_type(v.type)
    t = v.type.tensor_type
    dims = [d.dim_param or d.dim_value for d in t.shape.dim] if t.HasField("shape") else "?"
    return f"{helper.tensor_dtype_to_np_dtype(t.elem_type)}{dims}"


def _attr(a: onnx.AttributeProto) -> str:
    value = helper.get_attribute_value(a)
    if isinstance(value, onnx.TensorProto):
        arr = onnx.numpy_helper.to_array(value)
        return f"tensor{list(arr.shape)}{arr.ravel()[:8].tolist()}"
    if isinstance(value, onnx.GraphProto):
        return f"graph({len(value.node)} nodes)"
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
