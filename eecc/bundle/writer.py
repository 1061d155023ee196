"""The bundle folder: stage<k>.<processor>.onnx files and manifest.json (eecc/bundle/manifest.py), written
all or nothing; the single-file model with ONNX If gates. runtime/bundle.py reads it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
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
    """manifest.json, once, when everything it describes is in the folder; its `files` lists every file eecc
    wrote there (paths relative to the bundle), which is all that a later --force may replace."""
    data = {**manifest.to_json(), "files": sorted({*folder_files(folder), MANIFEST})}
    (folder / MANIFEST).write_text(json.dumps(data, indent=2, default=ir.json_default) + "\n")


def folder_files(folder: Path) -> list[str]:
    """Every file (or link) under `folder`, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink() or not p.is_dir())


def foreign_files(out: Path) -> list[str] | None:
    """Files in bundle `out` that eecc did not write (a user's notes, measurements); None when its manifest
    lists no files (a bundle from before 2026-12, or a manifest.json not written by eecc).

    eecc's files: the manifest's `files`; `eecc report`'s report.html and report.*.png; in a folder holding an
    eecc Makefile, what `make` builds there (libeecc.a, lib/*.o; targets/mcu_bundle.py's `clean` rule)."""
    try:
        listed = json.loads((out / MANIFEST).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(listed, list):
        return None
    ours = set(listed)
    made = {str(PurePosixPath(f).parent) for f in listed if PurePosixPath(f).name == "Makefile"}

    def mine(rel: str) -> bool:
        path = PurePosixPath(rel)
        if rel in ours or (len(path.parts) == 1 and (rel == "report.html" or fnmatch(rel, "report.*.png"))):
            return True
        parent = str(path.parent)
        return (parent in made and path.name == "libeecc.a") or (
            path.parent.name == "lib" and str(path.parent.parent) in made and path.suffix == ".o")
    return [rel for rel in folder_files(out) if not mine(rel)]


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
    # --force replaces a bundle (or an empty folder), never a folder of someone's other files nor a file of theirs
    # inside a bundle: said before the --force advice, which could not help here.
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() and not (out / MANIFEST).is_file() else []
    if held:
        raise EeccError(f"output folder '{out}' is not an eecc bundle (no {MANIFEST}) and holds "
                        f"{_entries(held)}; --force replaces only bundles: choose another output folder")
    if out.is_dir() and not held and (out / MANIFEST).is_file():
        foreign = foreign_files(out)
        if foreign is None:
            raise EeccError(f"output folder '{out}' is a bundle whose {MANIFEST} does not list the files eecc wrote "
                            "(an older eecc), so --force cannot tell them from yours: move what you keep, delete the "
                            "folder, or choose another output folder")
        if foreign:
            raise EeccError(f"output folder '{out}' is a bundle that also holds {len(foreign)} "
                            f"{'file' if len(foreign) == 1 else 'files'} eecc did not write "
                            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); --force would delete "
                            "them: move them out of the folder, or choose another output folder")
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


def _entries(names: list[str]) -> str:
    return (f"{len(names)} {'entry' if len(names) == 1 else 'entries'} "
            f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")


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
