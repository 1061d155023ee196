"""assign_targets + split_by_target: golden stage graphs, numerics, annotations and the errors users see."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from eecc.model import ir
from eecc.errors import EeccError
from eecc.exits.heads import ExitHead, HeadSpec, HeadWeights
from eecc.passes.annotate_cost import annotate_cost
from eecc.passes.assign_targets import assign_targets
from eecc.passes.fuse_blocks import fuse_blocks
from eecc.passes.insert_exits import insert_exits
from eecc.passes.split_by_target import split_by_target, stage_cost
from eecc.targets.platform import load_platform, parse_platform
from golden import assert_same_graph, canonical
from golden import run as golden_run

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N,1,8,8] x) => (float[N,5] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1]> (r1, w2)
  r2 = Relu (c2)
  a2 = Add (r2, r1)
  c3 = Conv <pads=[1,1,1,1], strides=[2,2]> (a2, w3)
  r3 = Relu (c3)
  g = GlobalAveragePool (r3)
  f = Flatten (g)
  y = Gemm <transB=1> (f, fw, fb)
}
"""

STAGE0 = """
<ir_version: 8, opset_import: ["" : 17]>
stage0 (float[N,1,8,8] x) => (float[N,4,8,8] r1, float[N,5] "exit0.logits") {
  c1 = Conv <pads=[1,1,1,1]> (x, w1)
  r1 = Relu (c1)
  hg = GlobalAveragePool (r1)
  hf = Flatten <axis=1> (hg)
  "exit0.logits" = Gemm <transB=1> (hf, h0w, h0b)
}
"""

STAGE1 = """
<ir_version: 8, opset_import: ["" : 17]>
stage1 (float[N,4,8,8] r1) => (float[N,4,8,8] a2, float[N,5] "exit1.logits") {
  c2 = Conv <pads=[1,1,1,1]> (r1, w2)
  r2 = Relu (c2)
  a2 = Add (r2, r1)
  hg = GlobalAveragePool (a2)
  hf = Flatten <axis=1> (hg)
  "exit1.logits" = Gemm <transB=1> (hf, h1w, h1b)
}
"""

STAGE2 = """
<ir_version: 8, opset_import: ["" : 17]>
stage2 (float[N,4,8,8] a2) => (float[N,5] y) {
  c3 = Conv <pads=[1,1,1,1], strides=[2,2]> (a2, w3)
  r3 = Relu (c3)
  g = GlobalAveragePool (r3)
  f = Flatten (g)
  y = Gemm <transB=1> (f, fw, fb)
}
"""

RNG = np.random.default_rng(0)
WEIGHTS = {"w1": RNG.normal(size=(4, 1, 3, 3)), "w2": 0.3 * RNG.normal(size=(4, 4, 3, 3)),
           "w3": 0.3 * RNG.normal(size=(8, 4, 3, 3)), "fw": RNG.normal(size=(5, 8)), "fb": RNG.normal(size=5)}
HEADS = {"h0w": RNG.normal(size=(5, 4)), "h0b": RNG.normal(size=5),
         "h1w": RNG.normal(size=(5, 4)), "h1b": RNG.normal(size=5)}
TINY = """
name = "tiny"
[[processors]]
name = "a"
kind = "cortex-m0plus"
macs_per_s = 1e6
ram_bytes = RAM
storage_bytes = STORAGE
active_power_w = 0.01
idle_power_w = 0.001
[[processors]]
name = "b"
kind = "cortex-m4"
macs_per_s = 4e6
ram_bytes = 1000000
storage_bytes = 1000000
active_power_w = 0.04
idle_power_w = 0.002
[[links]]
src = "a"
dst = "b"
bandwidth_bps = 8e6
latency_s = 0.001
"""


def parse(text: str, inits: dict) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items())
    return model


def model_with_exits(cuts=("r1", "a2"), heads: dict | None = None, opset: int = 17):
    """The test net, costed and blocked, with a bare blueprint head (GAP → Flatten → Gemm) on each cut."""
    heads = heads or HEADS
    graph = fuse_blocks(annotate_cost(ir.from_model(parse(MODEL.replace('"" : 17', f'"" : {opset}'), WEIGHTS))))
    specs = [ExitHead(HeadSpec(t, (4, 8, 8), (1, 1), None, 5, backbone_macs=0),
                      HeadWeights(fc_w=heads[f"h{i}w"], fc_b=heads[f"h{i}b"])) for i, t in enumerate(cuts)]
    return insert_exits(graph, heads=specs)


def split(graph, processors=("cpu", "gpu", "cuda"), cuts=("r1", "a2"), platform="rk3588-cuda"):
    platform = load_platform(platform) if isinstance(platform, str) else platform
    return split_by_target(assign_targets(graph, cuts=list(cuts), processors=list(processors), platform=platform),
                           platform=platform)


def test_golden_stages_and_input_untouched():
    graph = model_with_exits()
    before = canonical(ir.to_model(graph))
    stages = split(graph)
    assert [s.name for s in stages] == ["stage0.cpu", "stage1.gpu", "stage2.cuda"]
    for stage, text in zip(stages, (STAGE0, STAGE1, STAGE2)):
        model = ir.to_model(stage)
        assert_same_graph(model, parse(text, WEIGHTS | HEADS))
        onnx.checker.check_model(model, full_check=True)
    assert canonical(ir.to_model(graph)) == before, "assign/split mutated their input"
    assert all(ir.get_ann(n, "stage") is None for n in graph.nodes)


def test_annotations_record_stage_and_target_on_disk():
    stages = split(model_with_exits())
    for k, (stage, proc) in enumerate(zip(stages, ("cpu", "gpu", "cuda"))):
        assert {(ir.get_ann(n, "stage"), ir.get_ann(n, "target")) for n in stage.nodes} == {(k, proc)}
        metas = [{p.key: p.value for p in n.metadata_props} for n in ir.to_model(stage).graph.node]
        assert all(m["pkg.eecc.target"] == f'"{proc}"' for m in metas)


def test_chained_stages_reproduce_every_output_of_the_unsplit_graph():
    graph = model_with_exits()
    x = RNG.normal(size=(6, 1, 8, 8)).astype(np.float32)
    whole = golden_run(ir.to_model(graph), {"x": x})
    s0, s1, s2 = (ir.to_model(s) for s in split(graph))
    o0 = golden_run(s0, {"x": x})
    o1 = golden_run(s1, {"r1": o0["r1"]})
    o2 = golden_run(s2, {"a2": o1["a2"]})
    np.testing.assert_allclose(o0["exit0.logits"], whole["r1.exit0.logits"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(o1["exit1.logits"], whole["a2.exit1.logits"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(o2["y"], whole["y"], atol=1e-5, rtol=0)


def test_stage_costs_count_macs_weights_and_peak_activation():
    c0, c1, c2 = (stage_cost(s) for s in split(model_with_exits()))
    assert (c0.macs, c0.head_macs) == (4 * 64 * 9 + 20, 20)          # conv 1→4 on 8×8 + Gemm 4→5
    assert (c1.macs, c1.head_macs) == (4 * 64 * 36 + 20, 20)
    assert (c2.macs, c2.head_macs) == (8 * 16 * 36 + 40, 0)
    assert c0.weight_bytes == 4 * (36 + 20 + 5) and c2.params == 288 + 40 + 5
    assert c0.handoff_bytes == c1.handoff_bytes == 4 * 256 and c2.handoff_bytes == 0
    # stage 1: its input buffer r1 and, in the arena at the Add, c2 (the Relu runs in the Conv: r2 is c2's buffer)
    # and a2: 3 maps of 4×8×8 floats; the Conv's scratch (64 + 320 B) lies beside a2's place, freed by the Add
    assert c1.peak_activation_bytes == 3 * 1024


def test_two_stage_split_on_psoc6():
    stages = split(model_with_exits(cuts=("a2",)), processors=("m0plus", "m4"), cuts=("a2",), platform="psoc6")
    assert [s.name for s in stages] == ["stage0.m0plus", "stage1.m4"]
    assert [o.name for o in stages[0].outputs] == ["a2", "exit0.logits"]


def test_cut_inside_a_residual_block_names_the_crossing_tensor():
    graph = model_with_exits(cuts=("r2",))
    with pytest.raises(EeccError, match="stage 1 needs tensor 'r1' of stage 0 besides the hand-off"):
        split(graph, processors=("cpu", "gpu"), cuts=("r2",))


@pytest.mark.parametrize("ram, storage, message", [
    # 256 B input buffer + 1,216 B arena (r1 = c1, 1,024 B; the Conv's scratch 192 B) + 8,192 B stack + 512 B statics
    (1000, 1000000, r"stage 0 on 'a': activations and stack need 10176 bytes but its RAM holds 1000"),
    (1000000, 100, r"stage 0 on 'a': weights need 244 bytes but its storage holds 100"),
])
def test_memory_checks_name_the_stage(ram, storage, message):
    platform = parse_platform(TINY.replace("RAM", str(ram)).replace("STORAGE", str(storage)))
    graph = model_with_exits(cuts=("r1",))
    with pytest.raises(EeccError, match=message):
        split(graph, processors=("a", "b"), cuts=("r1",), platform=platform)


def test_int8_stage_costs_are_the_int8_builds_sizes():
    c0, c1, c2 = (stage_cost(s, "int8") for s in split(model_with_exits()))
    assert c0.weight_bytes == 36 + 20 + 4 * 5                        # w1, h0w int8; h0b int32
    assert c2.weight_bytes == 288 + 40 + 4 * 5 and c2.params == 288 + 40 + 5
    # the float input buffer, then the arena (64-B aligned buffers): int8 activations 1 B per value, an output also
    # its float copy. Stage 0, after c1: r1 (= c1, 256 B) and its float copy (1,024 B), the head's pooled 4 B at
    # 1,280; stage 1 at the Add: r1's int8 copy, c2 (= r2) and a2 (256 B each), then a2's float copy (1,024 B)
    # where the Add's inputs were: at most 1,024 + 64 B beside it (the head's 4-B pool and a2's int8 rows)
    assert c0.peak_activation_bytes == 4 * 64 + 1024 + 256 + 64
    assert c1.peak_activation_bytes == 1024 + 1024 + 256 + 64
    assert c0.handoff_bytes == c1.handoff_bytes == 4 * 256 and c0.input_bytes == 4 * 64  # what crosses: float
    with pytest.raises(ValueError, match="numeric"):
        stage_cost(split(model_with_exits())[0], "int4")


@pytest.mark.parametrize("ram, numeric, message", [  # the last stage on 'b' (a Cortex-M4: + 8,192 B stack + 512 B)
    (11000, "fp32", r"stage 1 on 'b': activations and stack need 11776 bytes but its RAM holds 11000; .*"
                    r"or compile with --quantize int8 \(the int8 stages fit\)$"),  # 3,072 B of float
    (11000, "int8", None),                                          # 1,792 B in int8: it fits
    (10000, "int8", r"stage 1 on 'b': activations \(int8\) and stack need 10496 bytes but its RAM holds 10000; "
                    r"cut elsewhere or use a processor with more RAM \(or a smaller input resolution\)$"),
])
def test_memory_check_sizes_the_stages_in_the_numerics_they_are_built_in(ram, numeric, message):
    text = TINY.replace("RAM", "1000000").replace("STORAGE", "1000000")
    platform = parse_platform(text.replace("ram_bytes = 1000000\nstorage_bytes = 1000000\nactive_power_w = 0.04",
                                           f"ram_bytes = {ram}\nstorage_bytes = 1000000\nactive_power_w = 0.04"))
    graph = assign_targets(model_with_exits(cuts=("r1",)), cuts=["r1"], processors=["a", "b"], platform=platform)
    if message is None:
        assert len(split_by_target(graph, platform=platform, numeric=numeric)) == 2
    else:
        with pytest.raises(EeccError, match=message):
            split_by_target(graph, platform=platform, numeric=numeric)


def test_shared_storage_must_hold_all_stages():
    text = "shared_memory = true\n" + TINY.replace("RAM", "1000000").replace("STORAGE", "2000")
    with pytest.raises(EeccError, match="weights need .* together"):
        split(model_with_exits(cuts=("r1",)), processors=("a", "b"), cuts=("r1",), platform=parse_platform(text))


@pytest.mark.parametrize("cuts, processors, message", [
    (("r1", "a2"), ("cpu", "gpu"), "2 exit\\(s\\) need 3 processors"),
    (("r1", "a2"), ("gpu", "cpu", "cuda"), "must follow the platform's order"),
    (("r1", "a2"), ("cpu", "npu", "cuda"), "has no processor 'npu'"),
    (("a2", "r1"), ("cpu", "gpu", "cuda"), "does not come after cut 'a2'"),
    (("r1", "r3"), ("cpu", "gpu", "cuda"), "cut 'r3' has no exit head"),
    (("r1", "nope"), ("cpu", "gpu", "cuda"), "cut tensor 'nope' is not produced"),
])
def test_assign_targets_rejects_bad_placements(cuts, processors, message):
    with pytest.raises(EeccError, match=message):
        assign_targets(model_with_exits(), cuts=list(cuts), processors=list(processors),
                       platform=load_platform("rk3588-cuda"))


def test_heads_of_unchosen_candidates_are_dropped():
    stages = split(model_with_exits(), processors=("cpu", "gpu"), cuts=("a2",), platform="rk3588")
    assert [[o.name for o in s.outputs] for s in stages] == [["a2", "exit0.logits"], ["y"]]
    assert sum(ir.get_ann(n, "role") == "exit" for n in stages[0].nodes) == 3  # only a2's GAP/Flatten/Gemm
    x = RNG.normal(size=(3, 1, 8, 8)).astype(np.float32)
    whole = golden_run(ir.to_model(model_with_exits()), {"x": x})
    out = golden_run(ir.to_model(stages[0]), {"x": x})
    np.testing.assert_allclose(out["exit0.logits"], whole["a2.exit1.logits"], atol=1e-5, rtol=0)
