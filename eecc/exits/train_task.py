"""The head-training task that run_exits hands its executor (one per location, or one for all heads), what it
reads, and a side-thread import that warms torch for it while the feature pass runs."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eecc.data import cache as fcache
from eecc.exits.heads import HeadSpec, TrainConfig
from eecc.files import replacing


def import_aside(module: str) -> None:
    """Import `module` on a daemon thread: torch's import then overlaps the feature pass instead of delaying
    the head training. A failure (torch missing) is left to the training's own import, which reports it."""

    def load() -> None:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - reported where the module is needed
            pass

    threading.Thread(target=load, name="eecc-import", daemon=True).start()


@dataclass
class TrainJob:
    """What every head-training task reads: features by cache path, labels, config, where heads are kept, and the
    test split's features (None: no test split), whose logits each task predicts for its heads."""

    heads: list[HeadSpec]
    train: fcache.SplitFeatures
    val: fcache.SplitFeatures
    y_train: np.ndarray
    y_val: np.ndarray
    config: TrainConfig
    store: Path
    keys: list[str]
    test: fcache.SplitFeatures | None = None


def fit_group(job: TrainJob, group: list[int]) -> list:
    """Train heads `group` (reusing any already stored under their key) and store each one as it is done.

    With `job.test`, every kept head's `FitResult.test_logits` is set (not stored with the head: the logits
    follow from it). Predicted here, in the task, rather than after all tasks: a worker done with its
    locations predicts while the others still train, instead of every core waiting for the last location.
    """
    import pickle

    from eecc.exits.family import promising
    from eecc.train.fit import fit_heads, predict_many

    done, todo = {}, []
    for k in group:
        try:
            done[k] = pickle.loads((job.store / f"{job.keys[k]}.pkl").read_bytes())
        except (OSError, EOFError, pickle.UnpicklingError):
            todo.append(k)
    if todo:
        specs = [job.heads[k] for k in todo]

        def keep(acc: list, rung: int) -> list[bool]:  # halving decides on a location's heads, stored ones too
            first = {k: _judged(f, rung) for k, f in done.items()} | dict(zip(todo, acc))
            flags = dict(zip(group, promising([job.heads[k] for k in group], [first[k] for k in group],
                                              len(job.y_val))))
            return [flags[k] for k in todo]

        train, val = ({s.feature_key: f.features(s) for s in specs} for f in (job.train, job.val))
        fits = fit_heads(specs, [train[s.feature_key] for s in specs], job.y_train,  # one array per map: lockstep
                         [val[s.feature_key] for s in specs], job.y_val, job.config,
                         keep=keep if job.config.halving else None)
        job.store.mkdir(parents=True, exist_ok=True)
        for k, fit in zip(todo, fits):
            with replacing(job.store / f"{job.keys[k]}.pkl") as tmp:
                tmp.write_bytes(pickle.dumps(fit))
            done[k] = fit
    alive = [k for k in group if not done[k].dropped]
    if job.test is not None:  # one torch thread per head, as predict_many always predicts: the same bits anywhere
        logits = predict_many([done[k].module for k in alive], [job.test.features(job.heads[k]) for k in alive],
                              workers=1)
        for k, out in zip(alive, logits):
            done[k].test_logits = out
    return [done[k] for k in group]


def _judged(fit, rung: int) -> float | None:
    """The accuracy that halving's rung `rung` judged for a stored head (eecc.train.fit.fit_heads), None when
    the head had finished before it."""
    if rung == 0:
        return fit.rung_accuracy
    return None if fit.dropped or fit.epochs < 1 else fit.first_epoch_accuracy
