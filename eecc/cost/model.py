"""The fitted cost model: instructions of a segment on a Cortex-M kind in fp32 or int8, from measured units.

  instructions(segment) ≈ w[cpu, format] · features(segment)          (eecc/cost/features.py)
  cycles = instructions × CPI,  seconds = cycles / clock_hz           (CPI: targets/codegen.py, 1.0)

w is fitted by non-negative least squares on relative error (each measured unit's row divided by its own
count, so a 50k-instruction unit weighs as much as a 20M one) over units measured by eecc/cost/measure.py:
every fixture model cut at every candidate exit, with its head and gate, compiled with TVM and counted
under QEMU. The measurements ship in `eecc/cost/measured.json` (with the hash of the kernels they came
from); `python -m eecc.cost refit` measures again with the kernels of this checkout. Without a fit for a
processor kind (Cortex-A, GPUs, a kind with no backend) the platform's nominal MAC/s is used instead and
labelled so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from eecc.cost.features import BASE, FEATURES, block

MEASURED = Path(__file__).with_name("measured.json")
# Instructions per cycle are not measured: QEMU counts instructions. CPI 1.0 is the optimistic bound
# (both cores issue most ALU ops in one cycle; loads, taken branches and VFMA take 2-3), so cycles and
# energy derived here are floors, the same assumption as targets/codegen.py's calibration.
CPI = {"cortex-m0plus": 1.0, "cortex-m4": 1.0}
# Single-layer units (eecc/cost/layers.py) in the fit weigh this much of a fixture stage: they give each kernel
# variant data, but are many small one-kernel graphs (per-call overheads dominate) and the fixture-like stages
# are what is predicted. Chosen by the leave-one-fixture-out check (closing note of the cost model).
LAYER_WEIGHT = 0.3


@dataclass
class CostModel:
    """Per (cpu, format): NNLS weights over FEATURES. `source` says where the rows came from."""

    weights: dict[tuple[str, str], np.ndarray]
    kernels: str
    source: str
    rows: int = 0
    held_out: tuple[str, ...] = ()
    stale: bool = False
    notes: list[str] = field(default_factory=list)

    def covers(self, cpu: str, fmt: str) -> bool:
        return (cpu, fmt) in self.weights

    def instructions(self, features: np.ndarray, cpu: str, fmt: str) -> float:
        """Predicted instructions per inference of a segment whose features are `features` [F] (or [N, F])."""
        return np.asarray(features, dtype=np.float64) @ self.weights[(cpu, fmt)]

    def cycles(self, features: np.ndarray, cpu: str, fmt: str) -> float:
        return self.instructions(features, cpu, fmt) * CPI.get(cpu, 1.0)

    def to_json(self) -> dict:
        return {"method": "NNLS fit of instructions on per-kernel loop counts and per-op-kind features of measured units (relative error)",
                "features": list(FEATURES), "cpi": dict(CPI), "kernels": self.kernels, "source": self.source,
                "rows": self.rows, "held_out": list(self.held_out), "stale": self.stale, "notes": self.notes,
                "weights": {f"{c}/{f}": dict(zip(BASE, map(float, w[block(c, f)]))) for (c, f), w in self.weights.items()}}


def nnls_relative(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """w ≥ 0 minimising Σ weight² (x·w / y − 1)²; x [N, F] features, y [N] instructions, weight [N] (1)."""
    weight = np.ones(len(y)) if weight is None else weight
    scale = np.maximum(x.max(axis=0), 1.0)  # columns of ~1 so NNLS is well conditioned
    w, _ = nnls((x / scale) / y[:, None] * weight[:, None], weight, maxiter=50 * x.shape[1])
    return w / scale


def fit(rows: list[dict], *, exclude: tuple[str, ...] = (), kernels: str = "", source: str = "") -> CostModel:
    """NNLS per (cpu, format) over `rows` (measure.measure_units), leaving out the models in `exclude`; a
    (cpu, format) is priced by its own block of features only (features.block)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["model"] not in exclude:
            groups.setdefault((r["cpu"], r["format"]), []).append(r)
    weights = {}
    for key, group in groups.items():
        cols = block(*key)
        x = np.array([r["features"] for r in group], dtype=np.float64)[:, cols]
        y = np.array([r["instructions"] for r in group], dtype=np.float64)
        weights[key] = np.zeros(len(FEATURES))
        weight = np.array([LAYER_WEIGHT if r["model"].startswith("layer:") else 1.0 for r in group])
        weights[key][cols] = nnls_relative(x, y, weight)
    n = sum(len(g) for g in groups.values())
    return CostModel(weights, kernels, source, rows=n, held_out=tuple(exclude))


def held_out(rows: list[dict]) -> list[dict]:
    """Leave one fixture out: every unit of fixture m predicted by fit(rows, exclude=(m,)) (the layer units are
    always in). One dict per fixture unit: model, index, cpu, format, instructions, predicted, error (relative)."""
    out = []
    for m in sorted({r["model"] for r in rows if not r["model"].startswith("layer:")}):
        model = fit(rows, exclude=(m,))
        for r in (r for r in rows if r["model"] == m):
            p = float(model.instructions(np.asarray(r["features"], dtype=np.float64), r["cpu"], r["format"]))
            out.append({**{k: r[k] for k in ("model", "index", "cpu", "format", "instructions")},
                        "predicted": p, "error": p / r["instructions"] - 1})
    return out


def load_rows(path: Path = MEASURED) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else {"rows": [], "kernels": ""}


@lru_cache(maxsize=1)
def default_model() -> CostModel | None:
    """The model fitted on the shipped measurements (load_default), once per process."""
    return load_default(MEASURED)


def load_default(path: Path) -> CostModel | None:
    """The model fitted on the measurements at `path`; None when there are none (or of other features).
    Marked stale, with a note, when this checkout's kernels differ from those measured."""
    data = load_rows(path)
    if not data["rows"] or list(data.get("features", FEATURES)) != list(FEATURES):
        return None
    model = fit(data["rows"], kernels=data["kernels"], source=Path(path).name)
    from eecc.cost.measure import kernels_id

    model.stale = kernels_id() != data["kernels"]
    if model.stale:  # recorded in every manifest and printed by `compile`, not a warning on stderr
        model.notes.append("cost model: the shipped measurements came from other kernels than this checkout's "
                           "(eecc/targets changed); predictions may be off: run `python -m eecc.cost refit`")
    return model
