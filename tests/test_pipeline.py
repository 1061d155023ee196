"""The compile's pass pipeline: the passes in order, in one place, and the graph check after each."""

from __future__ import annotations

from pathlib import Path

import pytest

from eecc.driver import pipeline
from eecc.driver.pipeline import GraphCheckError, Pipeline, Step, analyse
from eecc.model import ir
from eecc.targets.platform import load_platform
from test_assign_split import model_with_exits

CNN = Path(__file__).parent / "fixtures" / "models" / "cnn.onnx"
PLATFORM = load_platform("rk3588-cuda")


def test_segments_list_the_passes_in_design_order():
    assert pipeline.analysis().names == ["normalize_output", "annotate_cost", "fuse_blocks"]
    assert pipeline.exits([]).names == ["insert_exits"]
    common = dict(cuts=["r1", "a2"], processors=["cpu", "gpu", "cuda"], thresholds=[0.5, 0.5], platform=PLATFORM)
    assert pipeline.stages(**common).names == ["assign_targets", "split_by_target", "insert_gates"]
    assert pipeline.stages(**common, decision="ensemble").names == [
        "assign_targets", "split_by_target", "insert_ensemble", "insert_gates"]
    assert pipeline.stages(**common, metric="learned").names == [
        "assign_targets", "split_by_target", "attach_confidence", "insert_gates"]


def test_stages_pass_every_check_and_keep_annotations():
    stages = pipeline.make_stages(model_with_exits(), cuts=["r1", "a2"], processors=["cpu", "gpu", "cuda"],
                                  thresholds=[0.6, 0.7], platform=PLATFORM)
    assert [s.name.split(".", 1)[1] for s in stages] == ["cpu", "gpu", "cuda"]
    for k, stage in enumerate(stages):
        assert {ir.get_ann(n, "stage") for n in stage.nodes} == {k}


def test_a_pass_that_drops_an_annotation_is_caught_and_named():
    graph, _ = analyse(CNN)

    def forget_macs(graphs):
        g = graphs[0].copy()
        del g.nodes[0].attrs[ir.ANN_PREFIX + "macs"]
        return [g]

    with pytest.raises(GraphCheckError, match=r"after forget_macs: 1 node\(s\) .* lack the 'macs' annotation"):
        Pipeline((Step("forget_macs", forget_macs, ("macs",)),)).run([graph])


def test_a_pass_that_breaks_the_graph_is_caught_and_named():
    graph, _ = analyse(CNN)

    def unshaped_output(graphs):
        g = graphs[0].copy()
        g.outputs[0].dtype, g.outputs[0].shape = None, None
        return [g]

    with pytest.raises(GraphCheckError, match="after unshaped_output: .* has no dtype or shape"):
        Pipeline((Step("unshaped_output", unshaped_output),)).run([graph])

    def bad_op(graphs):
        g = graphs[0].copy()
        g.nodes[0].op = "NoSuchOp"
        return [g]

    with pytest.raises(GraphCheckError, match="after bad_op: .* fails onnx.checker"):
        Pipeline((Step("bad_op", bad_op),)).run([graph])
