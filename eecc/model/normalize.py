"""Load-time normalisation of foreign classifier exports: the ordered pass list (DESIGN.md decision 14)."""

from __future__ import annotations

import json
import warnings
from typing import Sequence

import onnx
import onnx_graphsurgeon as gs

from eecc.errors import EeccError, EeccWarning
from eecc.model import ir
from eecc.passes.expand_sum import expand_sum
from eecc.passes.fold_batchnorm import fold_batchnorm
from eecc.passes.flatten_output import flatten_output
from eecc.passes.fold_constants import fold_constants
from eecc.passes.inline_functions import inline_functions
from eecc.passes.normalize_float import normalize_float
from eecc.passes.normalize_opset import normalize_opset
from eecc.passes.remove_dropout import remove_dropout
from eecc.passes.select_probabilities import ML, select_probabilities, selection_note
from eecc.passes.unfix_batch import unfix_batch

# Opset first: the other passes assume opset >= 11; the input shape is fixed before folding so that
# shapes are static; BatchNormalization folds last, when constant subgraphs are initializers. normalize_output (a gs pass) follows in the analysis pipeline (eecc/driver/pipeline.py).
BEFORE_SHAPE = (normalize_opset, inline_functions)
AFTER_SHAPE = (normalize_float, remove_dropout, expand_sum, unfix_batch, flatten_output, fold_constants, fold_batchnorm)
NORMALIZED_KEY = "pkg.eecc.normalized"
QUANTISED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul"}


def normalize(model: onnx.ModelProto, *, input_shape: Sequence[int] | None = None,
              origin: str = "model") -> onnx.ModelProto:
    """A foreign classifier export, rewritten into the form eecc's analysis expects (output values unchanged, but for a
    scikit-learn export's label output, which select_probabilities drops; flatten_output makes an [N, C, 1, 1]
    output [N, C]).

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
    selected = _step(select_probabilities, model, applied)  # first: ZipMap's maps trip every later pass
    _refuse_ml_ops(selected, origin)
    note = selection_note(model, selected, origin)
    if note:  # after the refusal: an error is the one line then
        warnings.warn(note, EeccWarning, stacklevel=2)
    model = selected
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


# ai.onnx.ml ops by what they are in a scikit-learn export, and the way out for each kind.
_PREPROCESSING = {"Scaler", "Normalizer", "Imputer", "Binarizer", "OneHotEncoder", "LabelEncoder", "FeatureVectorizer",
                  "DictVectorizer", "CategoryMapper", "ArrayFeatureExtractor"}
_ESTIMATORS = {"LinearClassifier", "LinearRegressor", "SVMClassifier", "SVMRegressor", "TreeEnsembleClassifier",
               "TreeEnsembleRegressor", "TreeEnsemble"}


def _refuse_ml_ops(model: onnx.ModelProto, origin: str) -> None:
    """An ai.onnx.ml op left after select_probabilities: EeccError naming it and the way out for its kind (nu11:
    the first pass that met one failed with a 108-line traceback)."""
    node = next((n for n in model.graph.node if n.domain == ML), None)
    if node is None:
        return
    if node.op_type in _PREPROCESSING:
        kind, way = "preprocessing", ("apply it to the data (x_* as the network sees them) and export the network "
                                     "alone (of a scikit-learn Pipeline, convert its last step: pipeline[-1])")
    elif node.op_type in _ESTIMATORS:
        kind, way = "a classic machine-learning model", ("eecc adds early exits between the layers of a neural "
                                                         "network: give a network (e.g. an MLPClassifier export, or "
                                                         "a torch/keras model)")
    elif node.op_type == "ZipMap":
        kind = "skl2onnx's probabilities as a sequence of maps"
        way = "export with options={id(clf): {'zipmap': False}} and keep the probabilities output alone"
    else:
        kind, way = "a classic machine-learning op", "export the neural network alone, with standard ONNX ops"
    raise EeccError(f"{origin}: node '{node.name or node.op_type}' is {ML}.{node.op_type} ({kind}), which eecc does "
                    f"not compile; {way}")


def _signature(model: onnx.ModelProto) -> tuple:
    """Cheap fingerprint of what the normalisation passes change (not a full serialisation: models can be GBs).
    Constant nodes turned into initializers (which the folder does to every TorchScript export) do not count."""
    g = model.graph
    nodes = [n for n in g.node if n.op_type != "Constant"]
    return (tuple((o.domain, o.version) for o in model.opset_import), len(model.functions),
            tuple(n.op_type for n in nodes), tuple(i.name for i in g.input),
            frozenset(t.data_type for t in g.initializer), tuple(str(v.type) for v in [*g.input, *g.output]),
            tuple(len(n.input) for n in nodes))
