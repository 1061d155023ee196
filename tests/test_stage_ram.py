"""The RAM the search and the split check give a Cortex-M program is the RAM its ELF takes (nu11 F7: summing every
live tensor, a Relu's output beside its Conv's, an int8 stage's float hand-off from its start, put int8 stages ~45 %
over what they built in, 150,528 B needed for a program that built in 112,328 B, so a 128 KiB M4 was refused)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eecc.driver import pipeline
from eecc.driver.int8 import per_axis_opset
from eecc.exits.heads import ExitHead, HeadWeights
from eecc.exits.run import plan_exits
from eecc.model import ir
from eecc.model.stage_cost import PROGRAM_BYTES, STACK_BYTES, processor_needs, program_bytes
from eecc.search.memory import StageMemory, plan_costs
from eecc.targets.platform import parse_platform

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed "
                               "(Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi)")


def wide_cnn() -> onnx.ModelProto:
    """28×28 input, 32 then 96 channels at full resolution (an int8 arena of ~100 KB), two pools, GAP, Gemm."""
    n, rng = helper.make_node, np.random.default_rng(0)
    shapes = {"w1": [32, 1, 3, 3], "w2": [96, 32, 3, 3], "w3": [64, 96, 3, 3], "w4": [64, 64, 3, 3], "fw": [10, 64]}
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32), k)
             for k, s in shapes.items()]
    inits += [numpy_helper.from_array(np.zeros(s[0], np.float32), k.replace("w", "b")) for k, s in shapes.items()]
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4), n("Relu", ["c2"], ["r2"]),
             n("MaxPool", ["r2"], ["p2"], **pool), n("Conv", ["p2", "w3", "b3"], ["c3"], pads=[1] * 4),
             n("Relu", ["c3"], ["r3"]), n("MaxPool", ["r3"], ["p3"], **pool),
             n("Conv", ["p3", "w4", "b4"], ["c4"], pads=[1] * 4), n("Relu", ["c4"], ["r4"]),
             n("GlobalAveragePool", ["r4"], ["g"]), n("Flatten", ["g"], ["f"]),
             n("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def one_core(kind: str, ram: int = 131072):
    return parse_platform(f'name = "one"\n[[processors]]\nname = "m"\nkind = "{kind}"\nmacs_per_s = 75e6\n'
                          f'ram_bytes = {ram}\nstorage_bytes = 2097152\nactive_power_w = 0.03\nidle_power_w = 0.001\n')


def test_the_stack_is_the_linker_scripts():
    from eecc.targets.cortex_m import STACK_BYTES as LINKED

    assert STACK_BYTES == LINKED
    assert program_bytes(one_core("cortex-m4")) == {"m": STACK_BYTES + PROGRAM_BYTES}
    assert program_bytes(one_core("cortex-a")) == {"m": 0}


@needs_arm
@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m0plus"])
def test_the_ram_of_an_int8_program_is_sized_as_it_builds(tmp_path, cpu):
    """Both stages of an exit after the last pool in one int8 program (arena 0: the backbone's 32- and 96-channel
    maps; arena 1: the rest), as compile builds it: the search's figure within 0 … +3 % of the ELF's .data + .bss +
    stack, and the same as the check after the split (it was 45 % over on the M4: refused on 128 KiB)."""
    from eecc.model.stage_cost import stage_cost
    from eecc.passes.split_by_target import check_memory
    from eecc.targets.mcu_program import compile_program
    from eecc.targets.quantize import quantize_stages

    path = tmp_path / "wide.onnx"
    onnx.save(wide_cnn(), path)
    plan = plan_exits(path)
    head = plan.design.heads[-1]
    weights, peaks = StageMemory(plan, "int8").figures([head.tensor])
    costs, model = plan_costs(plan)
    handoff = next(c.handoff_bytes for c in costs if c.tensor == head.tensor)
    platform = one_core(cpu)
    need = processor_needs(["m", "m"], weights, peaks, [model.input_bytes, handoff], program_bytes(platform))["m"][1]

    (graph,) = pipeline.exits([ExitHead(head, HeadWeights.zeros(head))]).run([plan.graph])
    stages = pipeline.make_stages(graph, cuts=[head.tensor], processors=["m", "m"], thresholds=[0.5],
                                  platform=platform, numeric="int8")
    assert [stage_cost(s, "int8").peak_activation_bytes for s in stages] == peaks  # gates: nothing the arena sees
    x = np.random.default_rng(1).standard_normal((64, 1, 28, 28)).astype(np.float32)
    models = quantize_stages(per_axis_opset([ir.to_model(s) for s in stages]), x)
    entries = [{"index": 0, "outputs": {"exit": "exit0.exit", "logits": "exit0.logits"}},
               {"index": 1, "outputs": {"logits": "y"}}]
    arts, _ = compile_program(models, entries, cpu=cpu, out_dir=tmp_path / "build", name="stages0-1")
    assert arts.ram_bytes <= need <= 1.03 * arts.ram_bytes, (need, arts.ram_bytes)
    assert 100_000 < arts.ram_bytes < 131072  # a 128 KiB core holds it, and the search and the check say so
    check_memory(stages, platform, "int8")
    with pytest.raises(Exception, match=f"stages 0-1 \\(one program\\) on 'm': activations \\(int8\\) and stack "
                                        f"need {need} bytes"):
        check_memory(stages, one_core(cpu, arts.ram_bytes - 1), "int8")
