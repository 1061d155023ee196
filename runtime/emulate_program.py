"""Run a multi-stage Cortex-M program (targets/mcu_program.py) under QEMU: the cascade as deployed, sample by
sample through its exit gates, and each stage alone on given hand-offs, with SysTick ticks per stage."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eecc.runtime.emulate import TICKS_PER_INSTRUCTION, EmulationError, _command, _manifest


@dataclass
class CascadeRun:
    exit_stage: np.ndarray    # [N] position of the stage each sample left at (0 = the program's first stage)
    logits: np.ndarray        # [N, C] that stage's class scores
    instructions: np.ndarray  # [N, K] per stage and sample (0 where the stage did not run)


@dataclass
class StageRun:
    outputs: dict[str, np.ndarray]  # output name -> [N, ...]
    instructions: int               # per inference, mean over the N samples
    samples: int


def _records(man: dict, mode: int, inputs: dict[str, np.ndarray]) -> tuple[bytes, int]:
    specs = man["run"]["stages"][max(mode, 0)]["inputs"]
    n, blobs = None, []
    for spec in specs:
        arr = np.asarray(inputs[spec["name"]], dtype=spec["dtype"])
        per = int(np.prod(spec["shape"]))
        if arr.size % per or (n is not None and arr.size // per != n):
            raise EmulationError(f"input '{spec['name']}' of shape {arr.shape} does not hold whole samples "
                                 f"of shape {spec['shape']}")
        n = arr.size // per
        blobs.append(np.ascontiguousarray(arr).reshape(n, -1).view(np.uint8).reshape(n, -1))
    head = np.full((n, 1), mode, dtype="<i4").view(np.uint8)
    return np.concatenate([head, *blobs], axis=1).tobytes(), n


def _run(stage_dir: Path, man: dict, data: bytes, timeout_s: float) -> bytes:
    with tempfile.TemporaryDirectory(prefix="eecc-emu-") as tmp:
        Path(tmp, "input.bin").write_bytes(data)
        cmd, env = _command(stage_dir, {**man, "kind": "mcu"}, Path(tmp))
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired as exc:
            raise EmulationError(f"emulation of {stage_dir} ran past {timeout_s:.0f} s") from exc
        out = Path(tmp, "output.bin")
        if proc.returncode != 0 or not out.exists():
            raise EmulationError(f"emulation of {stage_dir} failed (exit {proc.returncode}): "
                                 f"{(proc.stdout + proc.stderr).strip()[-1500:]}")
        return out.read_bytes()


def _parse(raw: bytes, man: dict, n: int) -> list[tuple[int, np.ndarray, dict]]:
    stages, rows, pos = man["run"]["stages"], [], 0
    for _ in range(n):
        left, = np.frombuffer(raw, "<i4", 1, pos)
        ticks = np.frombuffer(raw, "<u4", len(stages), pos + 4)
        pos += 4 + 4 * len(stages)
        outs = {}
        for spec in stages[left]["outputs"]:
            dtype, shape = np.dtype(spec["dtype"]), spec["shape"][1:] if spec["shape"][:1] == [1] else spec["shape"]
            size = int(np.prod(shape)) * dtype.itemsize
            outs[spec["name"]] = np.frombuffer(raw, np.uint8, size, pos).view(dtype).reshape(shape)
            pos += size
        rows.append((int(left), ticks / TICKS_PER_INSTRUCTION, outs))
    if pos != len(raw):
        raise EmulationError(f"program output holds {len(raw)} bytes, expected {pos} for {n} samples")
    return rows


def emulate_cascade(program, inputs, *, timeout_s: float = 600.0) -> CascadeRun:
    """`inputs`: the first stage's inputs (one array [N, ...] or a dict name -> array); every sample runs
    the stages as deployed, leaving at the first stage whose gate says exit."""
    stage_dir, man = _manifest(program)
    if not isinstance(inputs, dict):
        inputs = {man["run"]["stages"][0]["inputs"][0]["name"]: inputs}
    data, n = _records(man, -1, inputs)
    rows = _parse(_run(stage_dir, man, data, timeout_s), man, n)
    logits = [outs[man["run"]["stages"][left]["logits"]].reshape(-1) for left, _, outs in rows]
    return CascadeRun(np.array([r[0] for r in rows], dtype=np.int64), np.stack(logits),
                      np.stack([r[1] for r in rows]))


def emulate_program_stage(program, k: int, inputs: dict[str, np.ndarray], *, timeout_s: float = 600.0) -> StageRun:
    """Stage k of the program (position in it) alone on `inputs` (name -> [N, ...]), e.g. onnxruntime's hand-off."""
    stage_dir, man = _manifest(program)
    data, n = _records(man, k, inputs)
    rows = _parse(_run(stage_dir, man, data, timeout_s), man, n)
    outputs = {name: np.stack([outs[name] for _, _, outs in rows]) for name in rows[0][2]} if rows else {}
    return StageRun(outputs, round(float(np.mean([r[1][k] for r in rows]))) if rows else 0, n)
