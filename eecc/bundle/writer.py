"""The bundle folder: stage<k>.<processor>.onnx files and manifest.json (eecc/bundle/manifest.py), written
all or nothing; the single-file model with ONNX If gates. runtime/bundle.py reads it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from eecc import signals
from eecc.files import as_umask_allows
from eecc.bundle.manifest import Manifest
from eecc.errors import EeccError
from eecc.model import ir
from eecc.runtime.bundle import MANIFEST

SINGLE_FILE = "cascade.single.onnx"


def write_bundle(out: str | os.PathLike, stages: Sequence[gs.Graph], manifest: Manifest, *, force: bool = False,
                 protect: Sequence[str | os.PathLike] = (), single_file: bool = False) -> Path:
    """All or nothing: stages and manifest appear at `out` together, or `out` is left as it was."""
    with open_bundle(out, force=force, protect=protect) as tmp:
        models = write_stages(tmp, stages, manifest)
        if single_file:
            ir.save(single_file_model(models), tmp / SINGLE_FILE)
            manifest.single_file = SINGLE_FILE
        write_manifest(tmp, manifest)
    return Path(out)


def write_stages(folder: Path, stages: Sequence[gs.Graph], manifest: Manifest) -> list[onnx.ModelProto]:
    """Each stage graph saved under its manifest entry's file name; returns the stage models."""
    models = [ir.to_model(s) for s in stages]
    for entry, model in zip(manifest.stages, models):
        ir.save(model, folder / entry.file)
    return models


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """manifest.json, once, when everything it describes is in the folder."""
    (folder / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2, default=ir.json_default) + "\n")


def check_output(out: str | os.PathLike, *, force: bool = False, protect: Sequence[str | os.PathLike] = ()) -> Path:
    """The output checks of open_bundle, callable up front so that a bad -o fails before any training."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EeccError(f"output '{out}' exists and is not a folder; choose another output path")
    # the nearest existing ancestor must be a folder we may write in, or making the folder fails late
    above = next(p for p in out.absolute().parents if p.exists())
    if not above.is_dir():
        raise EeccError(f"output '{out}' lies under '{above}', which is a file, not a folder; "
                        "choose an output path under a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise EeccError(f"output '{out}' cannot be created: '{above}' is not writable; choose another output path")
    for path in protect:
        path = Path(path).resolve()
        if path == out.resolve() or out.resolve() in path.parents:
            raise EeccError(f"input '{path}' lies inside output folder '{out}', which would be replaced; "
                            "choose another output folder")
    # --force replaces a bundle (or an empty folder), never a folder of someone's other files: said
    # before the --force advice, which could not help here.
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() and not (out / MANIFEST).is_file() else []
    if held:
        raise EeccError(f"output folder '{out}' is not an eecc bundle (no {MANIFEST}) and holds {len(held)} "
                        f"{'entry' if len(held) == 1 else 'entries'} ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); --force replaces "
                        "only bundles: choose another output folder")
    if out.exists() and not force:
        raise EeccError(f"output folder '{out}' already exists; pass --force to replace it")
    return out


@contextmanager
def open_bundle(out: str | os.PathLike, *, force: bool = False,
                protect: Sequence[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yields an empty staging folder beside `out`; on success it replaces `out`, on error it vanishes.

    Ctrl-C or SIGTERM wait while the staging folder is created and while it is moved into place (an old bundle
    swapped out first), then arrive inside the cleanup: a signal right after mkdtemp left `.OUT.*.partial/`
    behind, one between the two moves would have lost the old bundle."""
    out = check_output(out, force=force, protect=protect)
    tmp = None
    try:
        with signals.held():
            tmp = _staging_folder(out)
        yield tmp
        with signals.held():
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                os.replace(out, old / "bundle")
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _staging_folder(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return as_umask_allows(Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)))
    except OSError as exc:  # e.g. a pseudo file system that accepts no folders (/proc)
        raise EeccError(f"output '{out}' cannot be created ({exc.strerror}); choose another output path") from None


def single_file_model(stages: Sequence[onnx.ModelProto]) -> onnx.ModelProto:
    """One model for batch 1: stage k runs inside the else-branch of an `If` on exit{k-1}.exit.

    Input: stage 0's, with its batch dim declared 1 (an `If` condition must hold one element, so onnxruntime
    refuses any larger batch). Outputs `logits` [1, C] and `exit_stage` [1] (int64). Stage k's tensors keep
    their names; a name already used by an earlier stage (a copied constant) gets the suffix `.s<k>`.
    """
    first = stages[0]
    used = {v.name for v in first.graph.input}
    for stage in stages:
        _rename_clashes(stage, used)
    classes = stages[-1].graph.output[0].type.tensor_type.shape.dim[-1].dim_value or None
    outs = [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, classes]),
            onnx.helper.make_tensor_value_info("exit_stage", onnx.TensorProto.INT64, [1])]

    def body(k: int, names: tuple[str, str]) -> tuple[list, list]:
        """Nodes and initializers of stage k onwards, ending in tensors `names`."""
        g = stages[k].graph
        nodes, inits = list(g.node), list(g.initializer)
        if k == len(stages) - 1:
            nodes.append(onnx.helper.make_node("Identity", [g.output[0].name], [names[0]]))
            nodes.append(_const(names[1], k))
            return nodes, inits
        then = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", [f"exit{k}.logits"], [f"exit{k}.taken.logits"]),
             _const(f"exit{k}.taken.stage", k)],
            f"exit{k}.taken", [], [_vi(f"exit{k}.taken.logits", classes), _vi(f"exit{k}.taken.stage", None)])
        inner, inner_inits = body(k + 1, (f"stage{k + 1}.result.logits", f"stage{k + 1}.result.stage"))
        other = onnx.helper.make_graph(inner, f"stage{k + 1}", [],
                                       [_vi(f"stage{k + 1}.result.logits", classes),
                                        _vi(f"stage{k + 1}.result.stage", None)], initializer=inner_inits)
        nodes.append(onnx.helper.make_node("If", [f"exit{k}.exit"], list(names), name=f"exit{k}.if",
                                           then_branch=then, else_branch=other))
        return nodes, inits

    nodes, inits = body(0, ("logits", "exit_stage"))
    graph = onnx.helper.make_graph(nodes, "eecc.cascade", [_batch_one(v) for v in first.graph.input], outs,
                                   initializer=inits)
    model = onnx.helper.make_model(graph, opset_imports=list(first.opset_import), ir_version=first.ir_version)
    model.producer_name = "eecc"
    onnx.checker.check_model(model)
    return model


def _batch_one(value: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    out = onnx.ValueInfoProto()
    out.CopyFrom(value)
    dims = out.type.tensor_type.shape.dim
    if dims:
        dims[0].Clear()
        dims[0].dim_value = 1
    return out


def _rename_clashes(model: onnx.ModelProto, used: set[str]) -> None:
    g = model.graph
    k = g.name.split(".")[0].removeprefix("stage") or "0"
    outer_inputs = {v.name for v in g.input}
    mine = ({i.name for i in g.initializer} | {o for n in g.node for o in n.output}) - outer_inputs
    rename = {name: f"{name}.s{k}" for name in mine if name in used}
    for n in g.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    for init in g.initializer:
        init.name = rename.get(init.name, init.name)
    for v in list(g.output) + list(g.value_info):
        v.name = rename.get(v.name, v.name)
    used.update(rename.get(name, name) for name in mine)


def _const(name: str, value: int) -> onnx.NodeProto:
    return onnx.helper.make_node("Constant", [], [name],
                                 value=onnx.numpy_helper.from_array(np.array([value], dtype=np.int64)))


def _vi(name: str, classes: int | None) -> onnx.ValueInfoProto:
    if classes is None:
        return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [1])
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, classes])
