"""Cache keys of a run_exits call: input fingerprints, labels, head designs and the training config."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Sequence

import numpy as np

from eecc.data import cache as fcache
from eecc.exits.chance import DROP_RULE, skewed
from eecc.exits.family import HALVING_RULE
from eecc.exits.heads import STATS_RULE, HeadSpec


def run_keys(model_key: str, splits, heads, config) -> tuple[dict[str, str], str, str]:
    """Input fingerprints per split, a digest of the labels and the key of the whole run.

    Features depend on the inputs only; trained heads and scores on the labels too.
    """
    prints = {name: split.fingerprint() for name, split in splits.items()}
    labels = fcache.digest(*(np.ascontiguousarray(split.y, dtype=np.int64).tobytes() for _, split in splits.items()))
    if skewed(splits.val.y):  # heads judged by the balanced rule there (nu13 F3)
        labels = fcache.digest(labels, DROP_RULE)
    run_key = fcache.digest(model_key, json.dumps(prints, sort_keys=True), labels,
                            json.dumps([asdict(h) for h in heads]), config_key(config))
    return prints, labels, run_key


def head_key(head: HeadSpec, heads: Sequence[HeadSpec], config) -> str:
    """A head's design as it enters its cache key; with halving, whether it trains past one epoch depends
    on its location's other designs, so they enter too (a blueprint-only run never reuses a family's)."""
    same = [asdict(h) for h in heads if h.tensor == head.tensor] if config.halving else []
    return json.dumps(asdict(head)) + (json.dumps(same) if len(same) > 1 else "")


def config_key(config) -> str:
    """The training config in cache keys, with the halving rule's version (if on), the standardisation's and the
    features' format."""
    return (repr(config) + (f" halving={HALVING_RULE}" if config.halving else "") + f" stats={STATS_RULE}"
            + f" features={fcache.FORMAT}")
