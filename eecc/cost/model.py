"""The fitted cost model: instructions of a segment on a Cortex-M kind or the Cortex-A (eecc/cost/aarch64.py) in
fp32 or int8, from measured units.

  instructions(segment) ≈ w[cpu, format] · features(segment)          (eecc/cost/features.py)
  cycles = instructions × CPI,  seconds = cycles / clock_hz           (CPI: targets/calibration.py, stated there)

w is fitted by non-negative least squares on relative error (each measured unit's row divided by its own
count, so a 50k-instruction unit weighs as much as a 20M one) over units measured by eecc/cost/measure.py:
every fixture model cut at every candidate exit, with its head and gate, compiled with TVM and counted
under QEMU. The measurements ship in `eecc/cost/measured.json` (Cortex-M) and `eecc/cost/measured_cortex_a.json`
(Cortex-A), each with the hash of the code they came from; `python -m eecc.cost refit [--group cortex-a]` measures
again with this checkout's. Without a fit for a processor kind (GPUs, a kind with no backend) the platform's
nominal MAC/s is used instead and labelled so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from eecc.cost import aarch64
from eecc.cost.features import BASE, FEATURES, block
from eecc.targets.calibration import CPI

MEASURED = Path(__file__).with_name("measured.json")
# Instructions per cycle are not measured (QEMU counts instructions): the one stated figure per kind is
# targets/calibration.py's CPI, which `--emulate` calibrates with too, so the search and the emulated figures agree.
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
    """The rows file at `path`, each row's features put by name into this checkout's FEATURES (columns added since
    it was written are 0: a group added later, e.g. the Cortex-A's, leaves the Cortex-M rows valid); no rows when it
    names features this checkout does not compute."""
    if not Path(path).is_file():
        return {"rows": [], "kernels": ""}
    data = json.loads(Path(path).read_text())
    names = data.get("features", list(FEATURES))
    if names != list(FEATURES):
        if not set(names) <= set(FEATURES):
            return {**data, "rows": []}
        at = {n: i for i, n in enumerate(FEATURES)}
        cols = [at[n] for n in names]
        for r in data["rows"]:
            r["features"], values = [0.0] * len(FEATURES), r["features"]
            for c, v in zip(cols, values):
                r["features"][c] = v
        data["features"] = list(FEATURES)
    return data


@lru_cache(maxsize=1)
def default_model() -> CostModel | None:
    """The model fitted on the shipped measurements (load_default), once per process."""
    return load_default(MEASURED, aarch64.MEASURED_A)


def load_default(path: Path, a_path: Path = aarch64.MEASURED_A) -> CostModel | None:
    """The model fitted on the Cortex-M measurements at `path` and the Cortex-A ones at `a_path`; None when `path`
    holds none (or of other features). Marked stale, with a note, when this checkout's code differs from the code
    either group was measured with."""
    data = load_rows(path)
    if not data["rows"] or list(data.get("features", FEATURES)) != list(FEATURES):
        return None
    a_rows, a_notes = aarch64.load_rows(a_path)
    model = fit(data["rows"] + a_rows, kernels=data["kernels"],
                source=" + ".join([Path(path).name] + ([Path(a_path).name] if a_rows else [])))
    from eecc.cost.measure import kernels_id

    model.stale = kernels_id() != data["kernels"] or bool(a_notes)
    if kernels_id() != data["kernels"]:  # recorded in every manifest and printed by `compile`, not on stderr
        model.notes.append("cost model: the shipped measurements came from other kernels than this checkout's "
                           "(eecc/targets changed); predictions may be off: run `python -m eecc.cost refit`")
    model.notes += a_notes
    return model
