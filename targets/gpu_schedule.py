"""GPU schedules per kernel with fallback: TVM's dlight rules in their default order, the next rule when one
fails, and a serial one-thread kernel when every rule fails, with what happened recorded per kernel.

TVM's own `dl.ApplyDefaultSchedule` stops the whole compile when one rule raises (EfficientNet-Lite0's
GPU stage: an assertion in `gemv.py normalize`); here a rule that raises, or whose schedule the TIR
lowering then rejects, only moves that kernel on to the next rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eecc import signals
from eecc.errors import EeccError

# The order of relax.backend.gpu_generic.legalize_passes (TVM 0.27): specialised rules first, Fallback last.
RULES = ("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")
SERIAL = "serial"  # eecc's last resort: the kernel's loops run in one GPU thread (correct, slow)


@dataclass
class KernelSchedule:
    """What scheduled one TIR kernel: the rule that won and why the ones before it did not."""

    kernel: str
    rule: str  # one of RULES, or SERIAL
    failed: dict[str, str] = field(default_factory=dict)  # rule -> one-line error (rules that raised)

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "rule": self.rule, "failed": dict(self.failed),
                "fallback": bool(self.failed) or self.rule == SERIAL}


def legalize(mod, target, *, rules: tuple[str, ...] = RULES):
    """relax.backend.gpu_generic's library dispatch + legalize passes with per-kernel rule fallback.

    Returns (module with every PrimFunc scheduled for `target`, [KernelSchedule] in module order).
    `rules` narrows the dlight rules tried (tests use it to force a fallback).
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.gpu_generic import pipeline as gpu

    seq = gpu.library_dispatch_passes(target) + [
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
        relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with target:
        mod = tvm.transform.Sequential(seq)(mod)
    report = []
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or _is_scheduled(func):
            continue
        scheduled, record = schedule_kernel(func, target, gv.name_hint, rules)
        mod[gv] = scheduled
        report.append(record)
    return mod, report


def schedule_kernel(func, target, name: str, rules: tuple[str, ...] = RULES):
    """(scheduled PrimFunc, KernelSchedule): the first rule in `rules` that applies and lowers."""
    from tvm.s_tir import dlight as dl

    failed = {}
    for rule in rules:
        try:
            space = getattr(dl.gpu, rule)().apply(func, target, False)
            if space is None:
                continue
            sch = space[0] if isinstance(space, list) else space
            out = sch.mod["main"].with_attr("tirx.is_scheduled", True)
            _check_lowers(out, target)
            return out, KernelSchedule(name, rule, failed)
        except Exception as exc:  # noqa: BLE001 -- dlight raises bare AssertionError/TVMError on patterns it misreads
            signals.reraise()  # not a rule that failed: a Ctrl-C that TVM turned into an error
            failed[rule] = _one_line(exc)
    try:
        out = serial(func)
        _check_lowers(out, target)
    except Exception as exc:  # noqa: BLE001
        raise EeccError(f"gpu_schedule: no GPU schedule for kernel '{name}' (rules: "
                        f"{'; '.join(f'{r}: {e}' for r, e in failed.items()) or 'none applied'}; serial: "
                        f"{_one_line(exc)}); assign this layer to the CPU") from exc
    return out, KernelSchedule(name, SERIAL, failed)


def serial(func):
    """Every top-level block in its own one-block, one-thread kernel: always valid GPU code."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        loops = sch.get_loops(block)
        top = loops[0] if loops else block
        tx = sch.add_unit_loop(top)
        bx = sch.add_unit_loop(tx)
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _check_lowers(func, target) -> None:
    """Run the TIR lowering up to the host/device split: it rejects schedules that leave global work
    outside a thread binding (VerifyMemory) or a cache stage not inlined."""
    import tvm

    from eecc.targets.gpu_plan import lower_split

    lower_split(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)


def _is_scheduled(func) -> bool:
    return bool(func.attrs is not None and "tirx.is_scheduled" in func.attrs and func.attrs["tirx.is_scheduled"])


def _one_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1][:200] if lines else ''}".rstrip(": ")
