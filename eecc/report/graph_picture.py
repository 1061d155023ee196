"""Block-graph pictures with graphviz `dot`: blocks in network order, candidate and chosen exits, stages.

The picture is built from node annotations only (`block`, `role`, `candidate_exit`, `stage`,
`target`, `exit`, `macs`), so the same code draws an analysed model (one cluster, candidates
marked) and a compiled bundle (one coloured cluster per stage, the chosen exit heads attached).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import onnx_graphsurgeon as gs

from eecc.model import ir
from eecc.errors import EeccError
from eecc.report.units import things

# Shared with the plots so that a stage has one colour everywhere in the report.
STAGE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
TINTS = ("#dbe9f6", "#ffe7cf", "#daf1da", "#f8d9d9", "#ebe2f3", "#ecdfdb", "#fae3f2", "#ececec")


@dataclass
class BlockInfo:
    index: int
    ops: list[str] = field(default_factory=list)
    macs: int = 0
    output: str = ""
    shape: list = field(default_factory=list)
    candidate: bool = False
    head: bool = False
    stage: int = 0


@dataclass
class ExitInfo:
    position: int          # k: exit k of the cascade
    after_block: int
    macs: int
    threshold: float | None = None
    rate: float | None = None


def dot_available() -> bool:
    return shutil.which("dot") is not None


def collect(graphs: Sequence[gs.Graph]) -> tuple[list[BlockInfo], list[ExitInfo]]:
    """Blocks (with the stage that runs them) and exit heads, from annotated graphs in cascade order."""
    blocks: dict[int, BlockInfo] = {}
    exits: dict[int, ExitInfo] = {}
    handoff_block: dict[int, int] = {}  # stage k -> the block whose output stage k hands on
    for k, graph in enumerate(graphs):
        for node in graph.toposort().nodes:
            role = ir.get_ann(node, "role")
            if role in ("exit", "gate"):
                pos = int(ir.get_ann(node, "exit", k))
                info = exits.setdefault(pos, ExitInfo(pos, -1, 0))
                info.macs += int(ir.get_ann(node, "macs", 0) or 0)
                continue
            b = ir.get_ann(node, "block")
            if b is None:
                continue
            info = blocks.setdefault(int(b), BlockInfo(int(b), stage=int(ir.get_ann(node, "stage", k) or 0)))
            info.ops.append(node.op)
            info.macs += int(ir.get_ann(node, "macs", 0) or 0)
            info.head = info.head or role == "head"
            if ir.get_ann(node, "closes_block") and node.outputs:
                info.output = node.outputs[0].name
                info.shape = list(node.outputs[0].shape or [])[1:]
                info.candidate = bool(ir.get_ann(node, "candidate_exit", False))
            if ir.get_ann(node, "handoff") is not None:
                handoff_block[k] = int(b)
    for pos, info in exits.items():
        # without a hand-off annotation (a stage whose closing op the quantiser fused away), the exit still
        # leaves after the last backbone block its stage runs
        last = max((b.index for b in blocks.values() if b.stage == pos and not b.head), default=-1)
        info.after_block = handoff_block.get(pos, last)
    return [blocks[i] for i in sorted(blocks)], [exits[i] for i in sorted(exits)]


def to_dot(blocks: list[BlockInfo], exits: list[ExitInfo], *, stage_labels: Sequence[str] = (),
           title: str = "") -> str:
    """Graphviz source: input → blocks → classifier; one cluster per stage; exits branch to the side."""
    lines = ["digraph eecc {", '  graph [rankdir=TB, bgcolor=white, fontname="Helvetica", fontsize=12, nodesep=0.3, ranksep=0.25'
             + (f', label="{_esc(title)}", labelloc=t' if title else "") + "];",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, fillcolor=white];',
             '  edge [color="#555555", arrowsize=0.6];',
             '  input [label="input", shape=oval, fillcolor="#eeeeee"];']
    head = [b for b in blocks if b.head]
    backbone = [b for b in blocks if not b.head]
    stages = sorted({b.stage for b in blocks})
    chosen = {e.after_block: e for e in exits}
    for s in stages:
        label = stage_labels[s] if s < len(stage_labels) else (f"stage {s}" if len(stages) > 1 else "")
        colour = STAGE_COLOURS[s % len(STAGE_COLOURS)]
        lines += [f"  subgraph cluster_stage{s} {{",
                  f'    label="{_esc(label)}"; style="rounded,filled"; color="{colour}"; '
                  f'fillcolor="{TINTS[s % len(TINTS)]}"; penwidth=2;']
        for b in backbone:
            if b.stage == s:
                lines.append(f'    b{b.index} [label="{_block_label(b)}"'
                             + (', penwidth=2, color="#222222"' if b.candidate else ', color="#999999"') + "];")
                if b.candidate and b.index not in chosen:
                    lines.append(f'    cand{b.index} [label="", shape=diamond, width=0.18, height=0.18, '
                                 'style=filled, fillcolor="#bbbbbb", color="#777777"];')
        for e in exits:
            if e.position == s and e.after_block >= 0:
                lines.append(f'    exit{e.position} [label="{_exit_label(e)}", shape=box, style="filled", '
                             f'fillcolor="{colour}", fontcolor=white];')
        if head and head[0].stage == s:
            macs = sum(b.macs for b in head)
            ops = "+".join(op for b in head for op in b.ops)
            lines.append(f'    head [label="classifier\\n{_esc(ops)}\\n{macs:,} MACs", shape=box, '
                         f'style="filled", fillcolor="#444444", fontcolor=white];')
        lines.append("  }")
    prev = "input"
    for b in backbone:
        lines.append(f"  {prev} -> b{b.index};")
        prev = f"b{b.index}"
        if b.index in chosen:
            lines.append(f'  b{b.index} -> exit{chosen[b.index].position} [style=bold, color="#222222"];')
        elif b.candidate:
            lines.append(f"  b{b.index} -> cand{b.index} [style=dashed, arrowhead=none];")
    if head:
        lines.append(f"  {prev} -> head;")
    lines += ['  legend [shape=plaintext, fillcolor=none, fontsize=9, label="bold outline: candidate exit point; '
              'grey diamond: candidate not chosen\\nfilled box: chosen exit head; cluster colour: processor stage"];',
              "}"]
    return "\n".join(lines) + "\n"


def model_dot(graph: gs.Graph, *, title: str = "") -> str:
    """An analysed model (fuse_blocks annotations): blocks and candidate exits, no stages."""
    blocks, _ = collect([graph])
    return to_dot(blocks, [], title=title)


def bundle_dot(path: str | Path, manifest: dict) -> str:
    """A compiled bundle: one cluster per stage (processor), the chosen exits with threshold and rate."""
    path = Path(path)
    # int8 stages lose block annotations where the quantiser fuses ops (Conv+Relu: the block's closing op and its
    # hand-off mark go); the float stage kept beside each holds the same blocks with every annotation
    graphs = [ir.load(path / (s.get("float_file") or s["file"]), classifier=False) for s in manifest["stages"]]
    blocks, exits = collect(graphs)
    rates = ((manifest.get("placement") or {}).get("metrics") or {}).get("measured", {}).get("exit_rates") or []
    for e in exits:
        stage = manifest["stages"][e.position]
        e.threshold = stage.get("threshold")
        e.macs = int(stage.get("head_macs") or e.macs)
        e.rate = rates[e.position] if e.position < len(rates) else None
    labels = [f"stage {s['index']}: {s['target']} ({s['kind']}), {s['macs']:,} MACs" for s in manifest["stages"]]
    platform = (manifest.get("platform") or {}).get("name", "")
    return to_dot(blocks, exits, stage_labels=labels,
                  title=f"{manifest.get('model') or path.name} on {platform}: {things(len(labels), 'stage')}")


def render_png(source: str, out: str | Path, *, dpi: int = 110) -> Path:
    """Runs `dot -Tpng`; a missing binary is a user error with the install command."""
    exe = shutil.which("dot")
    if exe is None:
        raise EeccError("graphviz 'dot' was not found on PATH; install it (apt-get install graphviz) "
                        "to draw block graphs")
    out = Path(out)
    if not out.parent.is_dir():
        raise EeccError(f"cannot write '{out}': folder '{out.parent}' does not exist; create it or choose another path")
    proc = subprocess.run([exe, "-Tpng", f"-Gdpi={dpi}", "-o", str(out)], input=source.encode(),
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:500]}")
    _opaque(out)
    return out


def _opaque(png: Path) -> None:
    """The picture on white: cairo rounds dot's page size up, and the page's bottom rows stay part-transparent
    whatever bgcolor says (alpha 212-227 on the cnn's cpu → gpu → gpu picture at 110 dpi; a dark page showed a line)."""
    from PIL import Image  # matplotlib's own dependency

    with Image.open(png) as image:
        rgba = image.convert("RGBA")
    page = Image.new("RGBA", rgba.size, "white")
    Image.alpha_composite(page, rgba).convert("RGB").save(png)


def _block_label(b: BlockInfo) -> str:
    ops = "+".join(b.ops)
    ops = ops if len(ops) <= 28 else ops[:25] + "..."
    shape = "×".join(str(d) for d in b.shape)
    return _esc(f"block {b.index}: {ops}") + "\\n" + _esc(f"{shape}  {b.macs:,} MACs" if shape else f"{b.macs:,} MACs")


def _exit_label(e: ExitInfo) -> str:
    parts = [f"exit {e.position}", f"head {e.macs:,} MACs"]
    if e.threshold is not None:
        parts.append(f"threshold {e.threshold:.3f}")
    if e.rate is not None:
        parts.append(f"{100 * e.rate:.1f} % leave here")
    return "\\n".join(_esc(p) for p in parts)


def _esc(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"')
