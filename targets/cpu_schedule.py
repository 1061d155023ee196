"""TIR schedule applied to TVM's fused CPU kernels before they are built for a microcontroller."""

from __future__ import annotations


def shrink_intermediates(func):
    """Inline injective producers and move epilogues under the reduction loop, so a fused kernel
    keeps no full-size intermediate tensor (pad_temp, conv output before bias/ReLU) in RAM."""
    from tvm import s_tir

    sch = s_tir.Schedule(func, error_render_level="none")
    root = sch.get_sblock("root") if _has_root(sch) else None
    if root is None:
        return func
    for block in sch.get_child_blocks(root):
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass
    for block in reversed(sch.get_child_blocks(root)):
        try:
            sch.reverse_compute_inline(block)
        except s_tir.ScheduleError:
            pass
    for block in sch.get_child_blocks(root):
        iters = sch.get(block).iter_vars
        spatial = 0
        while spatial < len(iters) and iters[spatial].iter_type == 0:  # kDataPar
            spatial += 1
        if spatial == len(iters) or spatial == 0:
            continue
        for consumer in sch.get_consumers(block):
            try:
                sch.reverse_compute_at(consumer, sch.get_loops(block)[spatial - 1], preserve_unit_loops=True)
            except (s_tir.ScheduleError, IndexError):
                pass
    return sch.mod["main"].with_attrs(dict(func.attrs)) if func.attrs else sch.mod["main"]


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:
        return False
