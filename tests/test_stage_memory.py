"""The search sizes every stage as the check after the split does (eecc/search/memory.py, passes/split_by_target.py:
the same eecc/model/stage_cost.py functions on the same nodes), so a memory limit is refused before training,
never after it (nu9 item 6: the search pruned on the largest tensor, the check summed the live ones)."""

from __future__ import annotations

import itertools
import types
from pathlib import Path

import numpy as np
import pytest

from eecc.driver import pipeline
from eecc.exits.family import expand
from eecc.exits.heads import ExitHead, HeadWeights
from eecc.exits.run import plan_exits
from eecc.model.stage_cost import stage_cost
from eecc.passes.assign_targets import assign_targets
from eecc.passes.split_by_target import split_by_target
from eecc.search.limits import binding_constraint
from eecc.search.memory import StageMemory

MODELS = Path(__file__).parent / "fixtures" / "models"


def _placements(plan, heads: str):
    """Up to two exits with the blueprint heads, and ("family") one exit with every head of its family."""
    family = {}
    for spec in expand(plan.design, plan.design.heads):
        family.setdefault(spec.tensor, []).append(spec)
    blueprint = {s.tensor: s for s in plan.design.heads}
    for e in range(3):
        for cuts in itertools.combinations(blueprint, e):
            yield [blueprint[t] for t in cuts]
    for specs in family.values() if heads == "family" else ():
        yield from ([s] for s in specs[1:])


@pytest.mark.parametrize("name, numeric, heads", [("cnn", "fp32", "family"), ("cnn", "int8", "family"),
                                                  ("resnet", "fp32", "blueprint"), ("resnet", "int8", "blueprint")])
def test_the_searchs_stage_figures_are_the_checks(name, numeric, heads):
    """resnet: residual blocks keep their input alive beside the branch (the largest tensor is a third of it)."""
    if not (MODELS / f"{name}.onnx").exists():
        pytest.skip("fixtures not generated (python tests/fixtures/make_fixtures.py)")
    plan = plan_exits(MODELS / f"{name}.onnx")
    memory = StageMemory(plan, numeric)
    seen = 0
    for specs in _placements(plan, heads):
        cuts = [s.tensor for s in specs]
        (graph,) = pipeline.exits([ExitHead(s, HeadWeights.zeros(s)) for s in specs]).run([plan.graph])
        stages = split_by_target(assign_targets(graph, cuts=cuts, processors=["m4"] * (len(cuts) + 1)))
        checked = [(c.weight_bytes, c.peak_activation_bytes) for c in (stage_cost(s, numeric) for s in stages)]
        weights, peaks = memory.figures(cuts, [s.design for s in specs])
        assert list(zip(weights, peaks)) == checked, (cuts, [s.design for s in specs])
        seen += 1
    assert seen >= 20
    largest = max(b.activation_bytes for b in plan.blocks.blocks) // (4 if numeric == "int8" else 1)
    assert memory.stage(None, None)[1] > largest  # what the search used to prune on: refused after training


def test_a_limit_every_trained_placement_breaks_names_the_smallest_value_that_works():
    """After training (all placements with the trained heads pruned) the message words the limit as before
    training does, not 'relax max_latency_s in the platform TOML' for every limit."""
    res = types.SimpleNamespace(placements=[], pruned=[
        {"exits": ["a"], "processors": ["m0", "m4"], "reasons": ["worst-case latency 12 ms > max 5 ms"],
         "needs": [["latency", 0.012, 0.005]]},
        {"exits": ["b"], "processors": ["m4", "m4"], "reasons": ["worst-case latency 9.5 ms > max 5 ms"],
         "needs": [["latency", 0.0095, 0.005]]}])
    message = binding_constraint(None, None, res, None)
    assert "with the trained heads" in message and "pass --max-latency-ms 9.51 or more" in message, message
    assert "relax max_latency_s" not in message
    res.pruned = [{"exits": ["a"], "processors": ["m0", "m4"], "reasons": ["stage on 'm0': activations ..."],
                   "needs": [["ram:m0", 70000, 65536]]}]
    message = binding_constraint(None, None, res, None)
    assert "RAM on 'm0' needs 70,000 B but holds 65,536 B" in message and "ram_bytes" in message, message


def test_int8_sizes_follow_what_the_quantiser_makes_int8():
    """The int8 figure sizes a tensor as int8 only where the real quantiser (eecc/targets/quantize.py) quantises it:
    after a LeakyRelu (no int8 op) the activation and the pool after it stay float (nu10: the search sized them
    1 B, the build held 100,352 B of float)."""
    import numpy as np
    import onnx

    from eecc.model import ir
    from eecc.model.stage_cost import ALWAYS_INT8, FOLLOW_INT8, int8_tensors, live_peak
    from eecc.targets.quantize import QUANTIZED_OPS, quantize_stage

    assert set(ALWAYS_INT8) | set(FOLLOW_INT8) == set(QUANTIZED_OPS)
    rng = np.random.default_rng(0)
    w = {f"w{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate([(8, 1, 3, 3), (8, 8, 3, 3), (10, 32)])}
    model = onnx.parser.parse_model('''<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 1, 8, 8] x) => (float[N, 10] y) <float[8, 1, 3, 3] w0, float[8, 8, 3, 3] w1, float[10, 32] w2> {
            c0 = Conv <pads = [1, 1, 1, 1]> (x, w0)
            l0 = LeakyRelu (c0)
            p0 = AveragePool <kernel_shape = [2, 2], strides = [2, 2]> (l0)
            c1 = Conv <pads = [1, 1, 1, 1]> (p0, w1)
            r1 = Relu (c1)
            p1 = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r1)
            f1 = Flatten (p1)
            y = Gemm <transB = 1> (f1, w2)
        }''')
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in w.items())
    quantized = quantize_stage(model, {"x": rng.normal(size=(16, 1, 8, 8)).astype(np.float32)}, per_channel=False)
    # an op the quantised graph runs in int8 sits between Q/DQ pairs: it reads only DequantizeLinear outputs and its
    # output feeds QuantizeLinear only (a Relu after a Conv is folded into it: the Conv then writes r1)
    nodes = quantized.graph.node
    dq = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    readers = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, set()).add(n.op_type)
    made_int8 = {o for n in nodes if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                 and all(i in dq for i in n.input if i) for o in n.output if readers.get(o) == {"QuantizeLinear"}}
    graph = ir.from_model(model, classifier=False)
    ours = int8_tensors(graph.nodes, graph.inputs)
    inner = {"c0", "l0", "p0", "r1", "p1", "f1"}  # r1: c1 and its Relu in one
    assert inner <= {o for n in nodes for o in n.output}
    assert ours & inner == made_int8 & inner == {"c0", "r1", "p1", "f1"}
    floats = live_peak(graph.nodes, graph.inputs, graph.outputs, int8=True)
    assert floats >= 8 * 8 * 8 * 4 + 8 * 8 * 8  # c0 (int8) and l0 (float) alive at once


def test_stages_on_one_core_need_two_arenas_in_the_search_and_in_the_check():
    """nu10 item 4: stages run back to back from one program keep stage k's activations in arena k mod 2
    (targets/mcu_program.py), so three stages that each fit a RAM may not fit it together; the search and the
    check after the split both size a core's stages so (processor_needs)."""
    from eecc.errors import EeccError
    from eecc.model.stage_cost import PROGRAM_BYTES, STACK_BYTES, processor_needs
    from eecc.passes.split_by_target import check_memory
    from eecc.search.memory import plan_costs
    from eecc.search.placement import place
    from eecc.targets.platform import parse_platform

    assert processor_needs(["a", "a", "a"], [1, 2, 3], [100, 30, 50]) == {"a": (6, 130)}
    assert processor_needs(["b", "a", "a"], [1, 2, 3], [100, 30, 50]) == {"b": (1, 100), "a": (5, 80)}
    # each peak counts its stage's input buffer (64 B at least); one program holds the first one, and its stack
    assert processor_needs(["a", "a", "a"], [1, 2, 3], [100, 90, 80], [10, 20, 30], {"a": 7}) == {
        "a": (6, (100 - 64) + (90 - 64) + 64 + 7)}
    plan = plan_exits(MODELS / "cnn.onnx")
    blueprint = plan.design.heads[:2]
    cuts = [s.tensor for s in blueprint]
    memory = StageMemory(plan, "fp32")
    _, peaks = memory.figures(cuts)
    buffers = [4 * 64, *(4 * int(np.prod(plan.graph.tensors()[t].shape[1:])) for t in cuts)]  # float inputs
    arenas = [p - b for p, b in zip(peaks, buffers)]
    program = STACK_BYTES + PROGRAM_BYTES
    need = max(arenas[0::2]) + max(arenas[1::2]) + buffers[0] + program
    platform = parse_platform(f"""name = "one"
[[processors]]
name = "m4"
kind = "cortex-m4"
macs_per_s = 75e6
ram_bytes = {need - 1}
storage_bytes = 1048576
active_power_w = 0.03
idle_power_w = 0.001
clock_hz = 150e6
""")
    assert max(peaks) + program <= need - 1  # every stage fits alone
    costs, model = plan_costs(plan)
    by = {c.tensor: c for c in costs}
    placed = place(platform, [by[t] for t in cuts], ("m4", "m4", "m4"), model, memory=memory)
    assert not placed.fits and ("ram:m4", need, need - 1) in placed.needs
    (graph,) = pipeline.exits([ExitHead(s, HeadWeights.zeros(s)) for s in blueprint]).run([plan.graph])
    stages = split_by_target(assign_targets(graph, cuts=cuts, processors=["m4"] * 3))
    with pytest.raises(EeccError, match=f"stages 0-2 \\(one program\\) on 'm4': activations and stack need {need} "):
        check_memory(stages, platform)
