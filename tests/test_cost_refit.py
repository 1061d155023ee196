"""`python -m eecc.cost refit --jobs N`: the groups measured in parallel processes give the serial rows file."""

from __future__ import annotations

import shutil

import pytest

from eecc.cost.__main__ import refit
from eecc.cost.layers import layer_models
from eecc.cost.measure import Unit

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                               reason="needs gcc-arm-none-eabi and qemu-system-arm")


@needs_arm
def test_parallel_refit_writes_the_serial_rows_file_byte_for_byte(tmp_path):
    layers = layer_models()
    # group "b" is larger, so --jobs submits it first: the rows must still come back in the serial order
    units = [Unit("a", 0, layers["layer:gemm-20-o5"]),
             Unit("b", 0, layers["layer:residual-8x8x8"]), Unit("b", 1, layers["layer:avgpool-8x8-k2r2"])]
    serial, parallel = tmp_path / "serial.json", tmp_path / "parallel.json"
    refit(tmp_path / "cache1", serial, units=units, quiet=True)
    doc = refit(tmp_path / "cache2", parallel, jobs=2, units=units, quiet=True)  # a cold cache: measured anew
    assert parallel.read_bytes() == serial.read_bytes()
    assert [(r["format"], r["cpu"], r["model"], r["index"]) for r in doc["rows"]] == [
        (f, c, m, i) for f in ("fp32", "int8") for c in ("cortex-m0plus", "cortex-m4")
        for m, i in (("a", 0), ("b", 0), ("b", 1))]
    assert len({r["instructions"] for r in doc["rows"]}) > 6  # real counts, not one placeholder
