"""Platform TOML: built-ins, validation that names the field, cost estimates, `eecc targets`."""

from __future__ import annotations

import json
import re

import pytest

from eecc.cli import main
from eecc.errors import EeccError
from eecc.targets.platform import builtin_platforms, estimate_exits, load_platform, parse_platform

USER = """
name = "two-mcus"
max_latency_s = 0.5
shared_memory = false

[[processors]]
name = "small"
kind = "cortex-m0plus"
macs_per_s = 1e6
ram_bytes = 65536
storage_bytes = 262144
active_power_w = 0.01
idle_power_w = 0.001

[[processors]]
name = "big"
kind = "cortex-m4"
macs_per_s = 4e6
ram_bytes = 131072
storage_bytes = 524288
active_power_w = 0.04
idle_power_w = 0.002

[[links]]
src = "small"
dst = "big"
bandwidth_bps = 8e6
latency_s = 0.001
"""


def test_builtins_load_with_the_documented_values():
    assert builtin_platforms() == ["psoc6", "rk3588", "rk3588-cuda"]
    psoc6 = load_platform("psoc6")
    assert [p.name for p in psoc6.processors] == ["m0plus", "m4"]
    m0, m4 = psoc6.processors
    assert (m0.macs_per_s, m4.macs_per_s) == (10e6, 75e6)
    assert m0.active_power_w == pytest.approx(18.53e-3 / 0.96799, rel=1e-3)
    assert m4.active_power_w == pytest.approx(16.65e-3 / 0.521, rel=1e-3)
    assert m0.ram_bytes == 1 << 20 and m0.storage_bytes == 2 << 20 and psoc6.shared_memory
    assert psoc6.link("m0plus", "m4") is not None and psoc6.link("m4", "m0plus") is None
    rk = load_platform("rk3588-cuda")
    assert [p.kind for p in rk.processors] == ["cortex-a", "mali", "cuda"]
    assert rk.link("gpu", "cuda").bandwidth_bps == 50e6 and rk.processor("cpu").ram_bytes == 16 << 30
    assert [p.name for p in load_platform("rk3588").processors] == ["cpu", "gpu"]


def test_user_toml_from_a_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(USER)
    platform = load_platform(str(path))
    assert platform.name == "two-mcus" and platform.max_latency_s == 0.5 and not platform.shared_memory
    assert platform.processor("big").ram_bytes == 131072


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('macs_per_s = 4e6', 'macs_per_s = -4e6'), r"'processors\[1\]\.macs_per_s' must be"),
    (lambda t: t.replace('ram_bytes = 65536\n', ''), r"missing field 'processors\[0\]\.ram_bytes'"),
    (lambda t: t.replace('"cortex-m4"', '"cortex-m99"'), r"'processors\[1\]\.kind' is 'cortex-m99'"),
    (lambda t: t.replace('dst = "big"', 'dst = "huge"'), r"'links\[0\]\.dst' names processor 'huge'"),
    (lambda t: t.replace('bandwidth', 'bandwith'), r"unknown field 'links\[0\]\.bandwith_bps'"),
    (lambda t: t.replace('max_latency_s = 0.5', 'max_latency_s = "fast"'), r"'max_latency_s' must be a number"),
    (lambda t: t.replace('storage_bytes = 262144', 'storage_bytes = 2.5'), r"'processors\[0\]\.storage_bytes' "
                                                                             "must be a whole number"),
    (lambda t: t.split("[[links]]")[0], r"no link from 'small' to 'big'"),
    (lambda t: t.replace('name = "big"', 'name = "small"'), r"'small' is used twice"),
    (lambda t: t.replace('[[processors]]', '[processors', 1), r"not valid TOML"),
])
def test_validation_names_the_field(edit, message):
    with pytest.raises(EeccError, match=message):
        parse_platform(edit(USER), origin="mine.toml")


def test_unknown_target_lists_the_builtins():
    with pytest.raises(EeccError, match="psoc6, rk3588, rk3588-cuda"):
        load_platform("jetson")


def test_estimates_follow_the_stated_model():
    platform = parse_platform(USER)
    est = estimate_exits(platform, ["small", "big"], [1000, 8000], [500, 0], result_bytes=40)
    assert est[0]["latency_s"] == pytest.approx(1e-3)  # leaves where the input arrived: nothing goes back
    transfer = 1e-3 + 8 * 500 / 8e6
    back = 1e-3 + 8 * 40 / 8e6  # the logits' trip back to 'small' over the small -> big link (no big -> small one)
    assert est[1]["latency_s"] == pytest.approx(1e-3 + transfer + 2e-3 + back)
    # active power while computing, idle power of the other processor for the rest of the latency (transfers too)
    assert est[0]["energy_j"] == pytest.approx(0.01 * 1e-3 + 0.002 * 1e-3)
    lat = est[1]["latency_s"]
    assert est[1]["energy_j"] == pytest.approx(0.01 * 1e-3 + 0.04 * 2e-3 + 0.001 * (lat - 1e-3) + 0.002 * (lat - 2e-3))


def test_a_link_that_states_its_energy_per_byte_adds_it_for_every_byte_it_moves():
    """The input, a hand-off and the result going back each cross the small <-> big link (nu11: links cost no
    energy of their own, and the result's trip back was not counted); the latency is the same either way."""
    priced = parse_platform(USER.replace("latency_s = 0.001", "latency_s = 0.001\nenergy_j_per_byte = 2e-8"))
    plain = parse_platform(USER)
    for procs, moved in ((["big", "big"], 300 + 40), (["small", "big"], 500 + 40)):  # input + result; hand-off + result
        a, b = (estimate_exits(p, procs, [1000, 8000], [500, 0], input_bytes=300, result_bytes=40)[-1]
                for p in (priced, plain))
        assert a["latency_s"] == b["latency_s"]
        assert a["energy_j"] - b["energy_j"] == pytest.approx(2e-8 * moved)
    with pytest.raises(EeccError, match=r"links\[0\]\.energy_j_per_byte' must be a number >= 0"):
        parse_platform(USER.replace("latency_s = 0.001", "latency_s = 0.001\nenergy_j_per_byte = -1"))


def test_cli_lists_builtins_as_json_and_validates_a_user_file(tmp_path, capsys):
    assert main(["targets", "--json"]) == 0
    names = [p["name"] for p in json.loads(capsys.readouterr().out)["platforms"]]
    assert names == builtin_platforms()
    bad = tmp_path / "bad.toml"
    bad.write_text(USER.replace("idle_power_w = 0.001", "idle_power_w = -1"))
    assert main(["targets", "--target", str(bad)]) == 2
    assert "processors[0].idle_power_w" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["../hostesc", "../../escape", "mcu/m4", "a\\\\b", "..", ".hidden", " m4", "m4:0"])
def test_a_processor_name_that_is_not_a_file_name_part_is_refused_and_the_advice_works(bad, tmp_path, capsys):
    """nu13 F2: a processor's name names its bundle folder and stage files; '../hostesc' wrote a folder outside -o,
    '../../escape' on two stages gave both one file (a traceback), 'mcu/m4' nested folders. Refused in one line
    naming the field and the characters allowed; the suggested name, used instead (links too), loads."""
    toml = tmp_path / "board.toml"
    toml.write_text(USER.replace('"small"', json.dumps(bad)))
    assert main(["targets", "--target", str(toml)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "processors[0].name" in err and "letters, digits, spaces and _ - . # ( ) +" in err
    fixed = re.search(r"\(e\.g\. '(.*)'\)$", err.strip()).group(1)
    toml.write_text(USER.replace('"small"', json.dumps(fixed)))
    assert main(["targets", "--target", str(toml)]) == 0, capsys.readouterr().err
    assert load_platform(str(toml)).processors[0].name == fixed


def test_names_with_spaces_and_hashes_stay_accepted():
    """nu13: "Sensor Core #0" builds (make, make lib) in a folder of that name."""
    assert parse_platform(USER.replace('"small"', '"Sensor Core #0"')).processors[0].name == "Sensor Core #0"


def test_cli_shows_the_clock_and_the_link_energy(tmp_path, capsys):
    """nu12: `eecc targets --target FILE.toml` did not show clock_hz or a link's energy_j_per_byte."""
    toml = tmp_path / "board.toml"
    toml.write_text(USER.replace("idle_power_w = 0.002", "idle_power_w = 0.002\nclock_hz = 64e6")
                    .replace("latency_s = 0.001", "latency_s = 0.001\nenergy_j_per_byte = 2e-8"))
    assert main(["targets", "--target", str(toml)]) == 0
    out = capsys.readouterr().out
    assert "64 MHz" in out and "2e-08 J per byte moved" in out and "small: no clock_hz in the TOML" in out, out
    assert main(["targets", "--target", "rk3588-cuda"]) == 0
    out = capsys.readouterr().out
    assert "2.4 GHz" in out and "1 GHz" in out and "no clock_hz" not in out, out


def test_clock_hz_is_optional_and_set_on_the_builtins():
    m0, m4 = load_platform("psoc6").processors
    assert (m0.clock_hz, m4.clock_hz) == (100e6, 150e6)
    cpu, gpu = load_platform("rk3588").processors
    assert (cpu.clock_hz, gpu.clock_hz) == (2.4e9, 1e9)
    assert parse_platform(USER).processor("small").clock_hz is None
    text = USER.replace("idle_power_w = 0.002", "idle_power_w = 0.002\nclock_hz = 64e6")
    assert parse_platform(text).processor("big").clock_hz == 64e6
    with pytest.raises(EeccError, match=r"'processors\[1\]\.clock_hz' must be a number > 0"):
        parse_platform(USER.replace("idle_power_w = 0.002", "idle_power_w = 0.002\nclock_hz = 0"))


def test_gpu_launch_and_transfer_overheads_are_optional_validated_and_priced():
    """A host-driven GPU pays launch_s per kernel and transfer_s_per_byte per byte of its stage's edges."""
    from pathlib import Path

    from eecc.cost.features import named
    from eecc.cost.segments import DeviceCost, SegmentTable
    from eecc.exits.run import plan_exits

    cpu, gpu = load_platform("rk3588").processors
    assert (cpu.launch_s, cpu.transfer_s_per_byte) == (0.0, 0.0) and (gpu.launch_s, gpu.transfer_s_per_byte) == (20e-6, 8e-11)
    assert parse_platform(USER).processor("big").launch_s == 0.0
    with pytest.raises(EeccError, match=r"'processors\[1\]\.launch_s' must be a number >= 0"):
        parse_platform(USER.replace("idle_power_w = 0.002", "idle_power_w = 0.002\nlaunch_s = -1e-6"))
    plan = plan_exits(Path(__file__).parent / "fixtures" / "models" / "cnn.onnx")
    device = DeviceCost(load_platform("rk3588"), SegmentTable.from_plan(plan))
    f = named(device.table.features(None, None), "cortex-m4", "fp32")
    macs = plan.blocks.total_macs
    overhead = 20e-6 * f["kernels"] + 8e-11 * 4 * (8 * 8 + 10)  # the 1x8x8 input and the 10 logits
    assert f["kernels"] >= 4 and f["in_work"] == 64 and f["io_out"] == 10
    assert device.seconds("gpu", None, None, macs) == pytest.approx(macs / 40e9 + overhead)
    # the CPU pays no overhead: priced by the Cortex-A fit (eecc/cost/aarch64.py), none of the GPU's terms
    n = device.model.instructions(device.table.features(None, None), "cortex-a", "fp32")
    assert device.seconds("cpu", None, None, macs) == pytest.approx(n * 0.5 / 2.4e9)


@pytest.mark.parametrize("edit, field, advice", [
    (("idle_power_w = 0.002", "idle_power_w = 0.002\nclock_hz = 48"), "processors[1].clock_hz' = 48 is 48 Hz",
     "if 48 meant MHz, write 4.8e+07"),
    (("active_power_w = 0.01", "active_power_w = 10"), "processors[0].active_power_w' = 10 is 10 W",
     "if 10 meant mW, write 0.01"),
    (("bandwidth_bps = 8e6", "bandwidth_bps = 1"), "links[0].bandwidth_bps' = 1 is 1 bit/s", "bandwidth_bps is in bit/s"),
    (("ram_bytes = 65536", "ram_bytes = 64"), "processors[0].ram_bytes' = 64 is 64 bytes", "ram_bytes is in bytes"),
    (("latency_s = 0.001", "latency_s = 50"), "links[0].latency_s' = 50 is 50 s", "if 50 meant ms, write 0.05"),
    (("idle_power_w = 0.001", "idle_power_w = 0.5"), "idle_power_w = 0.5 W is above active_power_w = 0.01 W",
     "swapped"),
    (("macs_per_s = 4e6", "macs_per_s = 4e8\nclock_hz = 16e6"), "macs_per_s = 4e+08 is 25 MACs per cycle at "
     "clock_hz = 1.6e+07, more than 8 a cortex-m4 can issue", "check both units"),
])
def test_implausible_units_are_warned_in_one_line_and_the_advice_silences_them(tmp_path, capsys, edit, field, advice):
    """nu13 F5: clock_hz = 48 (48 MHz meant), 10 W on a Cortex-M0+ (10 mW meant) and a 1 bit/s link were accepted
    silently; the M0+ was then priced at 7,840,179 s per sample. Each is one warning line naming the field, its value
    in its unit and the unit; the TOML as written with the advised value loads without one."""
    toml = tmp_path / "board.toml"
    toml.write_text(USER.replace(*edit, 1))
    assert main(["targets", "--target", str(toml)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"warning: {toml}: " in err and field in err and advice in err, err
    if "write " in advice:
        fixed = advice.split("write ")[1]
        key, value = edit[1].rsplit("\n", 1)[-1].split(" = ")
        toml.write_text(USER.replace(*edit, 1).replace(f"{key} = {value}", f"{key} = {fixed}"))
        assert main(["targets", "--target", str(toml)]) == 0
        assert "warning" not in capsys.readouterr().err


def test_the_builtins_are_plausible():
    from eecc.targets.plausible import platform_warnings

    for name in builtin_platforms():
        assert platform_warnings(load_platform(name), name) == [], name
