"""Built-in examples: a committed ONNX model plus the data it was trained on, built on first use."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eecc.errors import EeccError

HERE = Path(__file__).resolve().parent
EXAMPLES = ("kws",)


def example(name: str) -> tuple[Path, dict[str, np.ndarray]]:
    """(model path, {x_train, y_train, x_val, y_val, x_test, y_test}) for a built-in example.

    `kws`: DS-CNN keyword spotter on SYNTHETIC espeak-ng speech (needs `apt-get install espeak-ng`);
    the data is synthesised once (about 2 min on 2 cores) and cached under $EECC_CACHE_DIR or ~/.cache/eecc.
    """
    if name not in EXAMPLES:
        raise EeccError(f"unknown example '{name}'; built-in examples: {', '.join(EXAMPLES)}")
    model = HERE / f"{name}.onnx"
    if not model.exists():
        raise EeccError(f"example '{name}': {model} is missing from this installation; "
                        f"regenerate it with `python tests/fixtures/make_{name}.py`")
    from eecc.examples import kws

    return model, kws.load(**_data_args(name))


def info(name: str) -> dict:
    """The example's recorded facts (classes, feature spec, test accuracy, data generator)."""
    import json

    if name not in EXAMPLES:
        raise EeccError(f"unknown example '{name}'; built-in examples: {', '.join(EXAMPLES)}")
    return json.loads((HERE / f"{name}.json").read_text())


def _data_args(name: str) -> dict:
    """Regenerate exactly the data the committed model was trained and scored on."""
    data = info(name)["data"]
    return {"seed": data["seed"], "sizes": data["clips_per_class"]}
