"""Reads a bundle's manifest.json (stdlib only: a device host runs bundles without the compiler)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "eecc-bundle"
VERSION = 1
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle folder that is missing, incomplete or from an incompatible eecc."""


@dataclass(frozen=True)
class StageSpec:
    index: int
    path: Path
    target: str
    input: str
    handoff: str | None       # None for the last stage
    logits: str
    exit: str | None
    confidence: str | None
    threshold: float | None
    macs: int                 # per sample, this stage's backbone part plus its exit head
    exit_macs: int            # per sample leaving here: all stages up to and including this one
    exit_latency_s: float
    exit_energy_j: float
    inputs: tuple[str, ...] = ()  # every input, `input` first; ensemble stages also take earlier exits' logits


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    stages: tuple[StageSpec, ...]

    @property
    def input_name(self) -> str:
        return self.manifest["input"]["name"]

    @property
    def input_dtype(self) -> str:
        return self.manifest["input"].get("dtype") or "float32"

    @property
    def input_scale(self) -> float | None:
        """The factor uint8 inputs were multiplied by at compile time (`eecc compile --scale`), or None."""
        return self.manifest["input"].get("scale")

    @property
    def single_file(self) -> Path | None:
        name = self.manifest.get("single_file")
        return self.path / name if name else None


def load_bundle(path: str | os.PathLike) -> Bundle:
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise BundleError(f"'{path}' is not an eecc bundle (no {MANIFEST}); pass the output folder of eecc compile")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"'{file}' is not valid JSON ({exc}); recompile the bundle") from None
    return bundle_from(path, manifest)


def bundle_from(path: str | os.PathLike, manifest: dict[str, Any]) -> Bundle:
    """A bundle whose stage files are in `path` and whose manifest is given (the compiler measures the
    cascade before it writes manifest.json)."""
    path = Path(path)
    file = path / MANIFEST
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise BundleError(f"'{file}' has format {manifest.get('format')!r} version {manifest.get('version')!r}; "
                          f"this runtime reads {FORMAT!r} version {VERSION}: recompile with this eecc")
    stages = []
    for k, entry in enumerate(manifest.get("stages") or []):
        try:
            stages.append(_stage(path, k, entry, last=k == len(manifest["stages"]) - 1))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"'{file}': stage {k} entry is incomplete ({exc!r}); recompile the bundle") from None
    if not stages:
        raise BundleError(f"'{file}' lists no stages; recompile the bundle")
    for stage in stages:
        if not stage.path.is_file():
            raise BundleError(f"bundle '{path}' lacks '{stage.path.name}' listed in {MANIFEST}; recompile it")
    return Bundle(path, manifest, tuple(stages))


def _stage(root: Path, k: int, entry: dict, *, last: bool) -> StageSpec:
    outs = entry["outputs"]
    spec = StageSpec(
        index=k, path=root / entry["file"], target=entry["target"], input=entry["inputs"][0]["name"],
        handoff=outs.get("handoff"), logits=outs["logits"], exit=outs.get("exit"),
        confidence=outs.get("confidence"),
        threshold=None if entry.get("threshold") is None else float(entry["threshold"]),
        macs=int(entry["macs"]), exit_macs=int(entry["exit_macs"]),
        exit_latency_s=float(entry["exit_latency_s"]), exit_energy_j=float(entry["exit_energy_j"]),
        inputs=tuple(i["name"] for i in entry["inputs"]))
    if not last and (spec.handoff is None or spec.exit is None):
        raise ValueError("a stage before the last needs 'handoff' and 'exit' outputs")
    return spec
