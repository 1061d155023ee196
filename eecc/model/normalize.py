"""Load-time normalisation of foreign classifier exports: the ordered pass list (DESIGN.md decision 14)."""

from __future__ import annotations

import json
from typing import Sequence

import onnx
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.model import ir
from eecc.passes.expand_sum import expand_sum
from eecc.passes.fold_batchnorm import fold_batchnorm
from eecc.passes.fold_constants import fold_constants
from eecc.passes.inline_functions import inline_functions
from eecc.passes.normalize_float import normalize_float
from eecc.passes.normalize_opset import normalize_opset
from eecc.passes.remove_dropout import remove_dropout
from eecc.passes.unfix_batch import unfix_batch

# Opset first: the other passes assume opset >= 11; the input shape is fixed before folding so that
# shapes are static; BatchNormalization folds last, when constant subgraphs are initializers. normalize_output (a gs pass) follows in the analysis pipeline (eecc/driver/pipeline.py).
BEFORE_SHAPE = (normalize_opset, inline_functions)
AFTER_SHAPE = (normalize_float, remove_dropout, expand_sum, unfix_batch, fold_constants, fold_batchnorm)
NORMALIZED_KEY = "pkg.eecc.normalized"
QUANTISED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul"}


def normalize(model: onnx.ModelProto, *, input_shape: Sequence[int] | None = None,
              origin: str = "model") -> onnx.ModelProto:
    """A foreign classifier export, rewritten into the form eecc's analysis expects (outputs unchanged).

    The names of the passes that changed the model go to the model's metadata_props under
    NORMALIZED_KEY. Raises EeccError for int8-quantised models: eecc analyses and trains in float32,
    and dequantising would report costs of a model the user does not deploy (README, "Models eecc accepts").
    """
    quantised = sorted({n.op_type for n in model.graph.node if n.op_type in QUANTISED_OPS})
    if quantised:
        raise EeccError(f"{origin}: is an int8-quantised model ({', '.join(quantised)} nodes); eecc needs the "
                        "float model from before quantisation: give that one (eecc quantises stages itself "
                        "with compile --quantize)")
    applied: list[str] = []
    for step in BEFORE_SHAPE:
        model = _step(step, model, applied)
    inits = {i.name for i in model.graph.initializer}
    if sum(i.name not in inits for i in model.graph.input) == 1:  # else ir.from_model says what is wrong
        ir.set_input_shape(model, input_shape, origin)
    for step in AFTER_SHAPE:
        model = _step(step, model, applied)
    del model.metadata_props[:]  # (a copy made by the passes) so a second normalize does not stack entries
    model.metadata_props.add(key=NORMALIZED_KEY, value=json.dumps(applied))
    return model


def load(model, *, input_shape: Sequence[int] | None = None) -> gs.Graph:
    """An ONNX path or ModelProto, normalised and loaded; the applied passes annotate the output's producer."""
    origin = "model" if isinstance(model, onnx.ModelProto) else str(model)
    proto = normalize(model if isinstance(model, onnx.ModelProto) else ir.read(model),
                      input_shape=input_shape, origin=origin)
    graph = ir.from_model(proto, origin=origin)
    applied = json.loads(next(p.value for p in proto.metadata_props if p.key == NORMALIZED_KEY))
    if graph.outputs[0].inputs:
        ir.set_ann(graph.outputs[0].inputs[0], "normalized", applied)
    return graph


def _step(step, model: onnx.ModelProto, applied: list[str]) -> onnx.ModelProto:
    out = step(model)
    if _signature(out) != _signature(model):
        applied.append(step.__name__)
    return out


def _signature(model: onnx.ModelProto) -> tuple:
    """Cheap fingerprint of what the normalisation passes change (not a full serialisation: models can be GBs).
    Constant nodes turned into initializers (which the folder does to every TorchScript export) do not count."""
    g = model.graph
    nodes = [n for n in g.node if n.op_type != "Constant"]
    return (tuple((o.domain, o.version) for o in model.opset_import), len(model.functions),
            tuple(n.op_type for n in nodes), tuple(i.name for i in g.input),
            frozenset(t.data_type for t in g.initializer), tuple(str(v.type) for v in [*g.input, *g.output]),
            tuple(len(n.input) for n in nodes))
