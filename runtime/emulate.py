"""Run a compiled stage under QEMU (Cortex-M: qemu-system-arm, Cortex-A: qemu-aarch64) on test inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# With -icount shift=5 one instruction takes 2**5 ns of virtual time (31.25 MHz) and SysTick counts
# the mps2 boards' 25 MHz CPU clock, so ticks = 0.8 x instructions.
ICOUNT_SHIFT = 5
TICKS_PER_INSTRUCTION = 25e6 / (1e9 / 2**ICOUNT_SHIFT)
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"
CDRIVER = Path(__file__).resolve().parents[1] / "targets" / "cdriver"


class EmulationError(RuntimeError):
    """The emulator is missing, the stage crashed, or it produced no output."""


@dataclass
class EmulationResult:
    outputs: dict[str, np.ndarray]  # output name -> [N, ...] (batch restored)
    instructions: int  # per inference, mean over the inputs (0 where the emulator cannot count)
    samples: int
    ticks: int = 0  # SysTick ticks over all inferences
    workspace_peak: int = 0
    stack_used: int = 0


def _manifest(artifacts) -> tuple[Path, dict]:
    path = Path(getattr(artifacts, "manifest", artifacts))
    if path.is_dir():
        path = path / "stage.json"
    return path.parent, json.loads(path.read_text())


def emulate_stage(artifacts, inputs, *, timeout_s: float = 600.0) -> EmulationResult:
    """`artifacts`: a StageArtifacts, a stage directory or its stage.json. `inputs`: one array [N, ...]
    for a single-input stage, or a dict name -> array. Each of the N samples is one inference."""
    stage_dir, man = _manifest(artifacts)
    if not isinstance(inputs, dict):
        if len(man["inputs"]) != 1:
            raise EmulationError(f"stage has inputs {[i['name'] for i in man['inputs']]}: pass a dict")
        inputs = {man["inputs"][0]["name"]: inputs}
    blobs, n = [], None
    for spec in man["inputs"]:
        arr = np.asarray(inputs[spec["name"]], dtype=spec["dtype"])
        per = int(np.prod(spec["shape"]))
        samples = arr.size // per
        if arr.size != samples * per or (n is not None and samples != n):
            raise EmulationError(f"input '{spec['name']}' of shape {arr.shape} does not hold whole "
                                 f"samples of shape {spec['shape']}")
        n = samples
        blobs.append(np.ascontiguousarray(arr).reshape(samples, -1).view(np.uint8).reshape(samples, -1))
    data = np.concatenate(blobs, axis=1).tobytes()
    with tempfile.TemporaryDirectory(prefix="eecc-emu-") as tmp:
        Path(tmp, "input.bin").write_bytes(data)
        cmd, env = _command(stage_dir, man, Path(tmp))
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired as exc:
            raise EmulationError(f"emulation of {stage_dir} ran past {timeout_s:.0f} s") from exc
        log = proc.stdout + proc.stderr
        out_path = Path(tmp, "output.bin")
        if proc.returncode != 0 or not out_path.exists():
            raise EmulationError(f"emulation of {stage_dir} failed (exit {proc.returncode}): {log.strip()[-1500:]}")
        raw = out_path.read_bytes()
    return _parse(raw, man, n, log)


def _command(stage_dir: Path, man: dict, work: Path) -> tuple[list[str], dict | None]:
    run = man["run"]
    if man["kind"] == "mcu":
        qemu = _tool("qemu-system-arm")
        return [qemu, "-M", run["board"], "-nographic", "-monitor", "none", "-serial", "none",
                "-semihosting-config", "enable=on,target=native", "-icount", f"shift={ICOUNT_SHIFT}",
                "-kernel", str((stage_dir / run["elf"]).resolve())], None
    if man["kind"] == "linux-aarch64":
        qemu = _tool("qemu-aarch64")
        env = dict(os.environ, QEMU_LD_PREFIX=AARCH64_SYSROOT)
        plugin = insn_plugin(work)
        count = ["-plugin", str(plugin), "-d", "plugin"] if plugin else []
        return [qemu, "-cpu", run.get("cpu", "cortex-a76"), "-L", AARCH64_SYSROOT, *count,
                "-E", f"LD_LIBRARY_PATH={stage_dir.resolve()}",
                str((stage_dir / run["harness"]).resolve())], env
    raise EmulationError(f"no emulator for stage kind '{man['kind']}'")


def insn_plugin(work: Path) -> Path | None:
    """The instruction-counting TCG plugin built for this host into `work`, or None where QEMU or the host
    C compiler cannot load/build one (then the stage still runs, uncounted)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    out = Path(work) / "insn_count.so"
    proc = subprocess.run([gcc, "-O2", "-shared", "-fPIC", str(CDRIVER / "insn_count.c"), "-o", str(out)],
                          capture_output=True, text=True)
    return out if proc.returncode == 0 else None


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EmulationError(f"'{name}' is not installed (Debian: qemu-system-arm / qemu-user)")
    return path


def _parse(raw: bytes, man: dict, n: int, log: str) -> EmulationResult:
    sizes = [int(np.prod(o["shape"])) * np.dtype(o["dtype"]).itemsize for o in man["outputs"]]
    if len(raw) != n * sum(sizes):
        raise EmulationError(f"expected {n * sum(sizes)} output bytes for {n} samples, got {len(raw)}: {log[-500:]}")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(n, sum(sizes))
    outputs, col = {}, 0
    for spec, size in zip(man["outputs"], sizes):
        shape = spec["shape"][1:] if spec["shape"] and spec["shape"][0] == 1 else spec["shape"]
        chunk = np.ascontiguousarray(rows[:, col:col + size])
        outputs[spec["name"]] = chunk.view(np.dtype(spec["dtype"])).reshape(n, *shape)
        col += size
    stats = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", log)}
    ticks = stats.get("ticks", 0)
    if man["kind"] == "mcu":
        instructions = round(ticks / TICKS_PER_INSTRUCTION / max(n, 1))
    else:  # the TCG plugin counted eecc_run() alone, `runs` times
        instructions = round(stats["instructions"] / stats["runs"]) if stats.get("runs") else 0
    return EmulationResult(outputs, instructions, n, ticks, stats.get("workspace_peak", 0),
                           stats.get("stack_used", 0))
