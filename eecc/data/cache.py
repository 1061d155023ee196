"""Feature cache: one onnxruntime pass writes every head's pooled input (fp32) to chunked .npy files.

Layout: <root>/<model hash>/<split>-<data hash>/{f-<feature hash>.npy, final.npy, progress.json}. Each
feature file is preallocated [N, *pooled] and filled chunk by chunk; progress.json lists the finished
chunks per file and is rewritten atomically after the chunk's data is written, so an interrupted run
resumes at the first unfinished chunk and a warm run computes nothing. Rows are written with pwrite
into files opened once per pass (a memmap store faulted every fresh page in: 2-6x slower) and not
fsync'ed per chunk: the page cache keeps them when the process dies, only a power cut mid-pass could
leave a chunk marked done that never reached the disk.

Maps are stored as float32, what onnxruntime returns and the heads compute in: fp16 halved the disk but
cost a Cast per map in the pass and a conversion per training batch (a quarter of the head-training
CPU on the ResNet fixture of bench/exits.py, cProfile). They are stored channels-last, [N, *pooled, C],
as onnxruntime gives them cheapest (cache_io.feature_graph), and read as [N, C, *pooled] views
(`SplitFeatures.features`; eecc.train.modules.stored_layout finds the stored order back). `FORMAT` enters
the file names and progress keys (and the trained heads' keys, eecc/exits/run.py), so a cache written in
another format is recomputed, never read as this one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from eecc.errors import EeccError
from eecc.model import ir
from eecc.data.splits import Split
from eecc.exits.heads import HeadSpec
from eecc.data.cache_io import RowFile, Runner, feature_graph, stored_shape
from eecc.files import replacing
from eecc.passes.insert_exits import feature_name

FINAL = "final"
DEFAULT_ROOT = ".eecc-cache"
CHUNK_BYTES = 64 << 20
# Activations of one onnxruntime run of the feature graph (cache_io.Runner): its maps stay in a core's cache
# for the pools that read them. 8 MB = 116 rows of the ResNet fixture, where 64-128 rows took 12-18 % less
# CPU than 933 (one thread; 256 rows: 10 %); per-run overhead grows below that.
RUN_BYTES = 8 << 20
MAX_LANES = 4  # feature-pass threads of one session each (FeatureCache._fill_lanes)
FORMAT = "fp32-channels-last"  # of the cached maps: in their file names and progress keys


def default_root() -> Path:
    return Path(os.environ.get("EECC_CACHE_DIR", DEFAULT_ROOT))


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $EECC_CACHE_DIR, else ./.eecc-cache; EeccError (one line, before any work) when it or a
    folder above it is a file: the cache writes folders under it. Creates nothing."""
    root = Path(cache_dir) if cache_dir else default_root()
    origin = ("--cache-dir" if cache_dir else "$EECC_CACHE_DIR" if "EECC_CACHE_DIR" in os.environ
              else "the default cache folder")
    for folder in (root, *root.parents):
        if folder.exists() and not folder.is_dir():
            what = "is a file" if folder == root else f"lies under '{folder}', which is a file"
            raise EeccError(f"{origin} '{root}' {what}; give a folder (it is made if missing), e.g. "
                            f"--cache-dir {folder.parent / '.eecc-cache'}")
        if folder.exists():
            break
    return root


def digest(*parts: str | bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()


def model_digest(graph: gs.Graph) -> str:
    return digest(ir.to_model(graph).SerializeToString(deterministic=True))


def chunk_rows_for(per_sample_bytes: int, budget: int = CHUNK_BYTES) -> int:
    """Rows per chunk so that one chunk's activations stay near `budget` bytes (memory bound)."""
    return int(min(4096, max(32, budget // max(1, per_sample_bytes))))


@dataclass
class SplitFeatures:
    """Read side of one split's cache: features and final logits as float32 memmaps."""

    path: Path
    length: int

    def features(self, spec: HeadSpec) -> np.ndarray:
        """The map [N, C, *pooled]: a view of the channels-last file."""
        # copy-on-write: torch wraps it without a copy (it refuses read-only arrays) and the file stays intact
        stored = np.load(self.path / _file(_stored(spec.feature_key)), mmap_mode="c")
        return np.moveaxis(stored, -1, 1) if stored.ndim >= 3 else stored

    def final_logits(self) -> np.ndarray:
        return np.asarray(np.load(self.path / _file(FINAL), mmap_mode="r"), dtype=np.float32)


class FeatureCache:
    def __init__(self, root: str | Path, graph: gs.Graph, heads: Sequence[HeadSpec], *,
                 model_key: str | None = None, chunk_rows: int = 512, threads: int | None = None,
                 run_rows: int | None = None):
        """`chunk_rows`: rows per chunk (the unit of the files' progress) of a new split; `run_rows`: at most
        this many rows per onnxruntime run (cache_io.Runner; None: a chunk per run)."""
        self.graph, self.heads, self.run_rows = graph, list(heads), run_rows
        self.model_key = model_key or model_digest(graph)
        self.dir = Path(root) / self.model_key[:20]
        self.chunk_rows, self.threads = chunk_rows, threads
        self._sessions: list = []
        self.computed_chunks = 0

    def fill(self, split: Split, *, on_chunk: Callable[[int, int], None] | None = None,
             fingerprint: str | None = None, executor=None) -> SplitFeatures:
        """Compute whatever is missing for `split`; returns the read side. Idempotent and resumable.

        With an `executor` of several workers, shards of chunks run as tasks that write disjoint rows
        of the preallocated files and mark each finished chunk (done-<chunk>.json) as they go.
        """
        path = self.dir / f"{split.name}-{(fingerprint or split.fingerprint())[:20]}"
        path.mkdir(parents=True, exist_ok=True)
        meta = _read_json(path / "meta.json") or {"rows": len(split), "chunk_rows": self.chunk_rows}
        write_json(path / "meta.json", meta)
        rows, step = meta["rows"], meta["chunk_rows"]
        n_chunks = math.ceil(rows / step)
        progress = _read_progress(path)
        wanted = {FINAL: (FINAL, self._final_shape(), np.float32)}
        for i, spec in enumerate(self.heads):
            wanted[_stored(spec.feature_key)] = (feature_name(spec.tensor, i), stored_shape(spec.pooled_shape),
                                                 np.float32)
        todo = [(c, [k for k in wanted if c not in progress.get(k, ())]) for c in range(n_chunks)]
        todo = [(c, keys) for c, keys in todo if keys]
        if on_chunk:
            on_chunk(n_chunks - len(todo), n_chunks)
        if not todo:
            return SplitFeatures(path, rows)
        for key, (_, shape, dtype) in wanted.items():  # preallocated here: tasks only write their rows
            _open(path / _file(key), (rows, *shape), dtype)
        outputs = {k: name for k, (name, _, _) in wanted.items()}
        if executor is None or executor.workers == 1:
            self._fill_lanes(_ShardJob(self, split, path, outputs, step, rows, run_rows=self.run_rows), todo,
                             lambda done: on_chunk and on_chunk(n_chunks - len(todo) + done, n_chunks))
        else:
            # Each worker process builds its own session: one intra-op thread each, the workers fill the cores.
            model = ir.to_model(feature_graph(self.graph, self.heads)).SerializeToString()
            job = _ShardJob(model, split, path, outputs, step, rows, threads=1, run_rows=self.run_rows)
            for part in executor.map(_fill_shard, _split_evenly(todo, 2 * executor.workers), shared=job):
                self.computed_chunks += part
            if on_chunk:
                on_chunk(n_chunks, n_chunks)
        write_json(path / "progress.json", _read_progress(path))
        for marker in path.glob("done-*.json"):
            marker.unlink(missing_ok=True)
        return SplitFeatures(path, rows)

    def _final_shape(self) -> tuple[int, ...]:
        return tuple(ir.per_sample_shape(self.graph.outputs[0]))

    def _fill_lanes(self, job: "_ShardJob", todo: list, progress: Callable[[int], None]) -> None:
        """Chunks `todo` on this process: with `threads` unset, in lanes (threads) of one session each, a lane
        taking every n-th chunk; else one session of `threads` intra-op threads. Lanes beat one session on
        all cores because the pools and reorders of the feature graph leave the cores waiting at barriers
        (feature pass CPU -30 % on 2 cores, measured). A failing lane (an interrupt from `progress`) stops
        the others after their current chunk; finished chunks stay marked either way.
        """
        from concurrent.futures import ThreadPoolExecutor

        lanes = 1 if self.threads else max(1, min(len(todo), os.cpu_count() or 1, MAX_LANES))
        lock, stop = threading.Lock(), threading.Event()

        def chunk_done(_: int) -> None:
            with lock:  # reported under the lock too: lanes reporting outside it could end a bar at 3/4
                self.computed_chunks += 1
                progress(self.computed_chunks - first)

        first = self.computed_chunks
        if lanes == 1:
            _fill_shard(job, todo, chunk_done, sess=self.session(0))
            return
        sessions = [self.session(k) for k in range(lanes)]  # built here: the lanes only run them

        def lane(k: int) -> None:
            try:
                _fill_shard(job, todo[k::lanes], chunk_done, sessions[k], stop)
            except BaseException:
                stop.set()  # the other lanes end after their current chunk
                raise

        with ThreadPoolExecutor(lanes, thread_name_prefix="eecc-features") as pool:
            tasks = [pool.submit(lane, k) for k in range(lanes)]
            try:
                for task in tasks:
                    task.result()
            finally:
                stop.set()

    def session(self, lane: int = 0):
        """The feature graph's session of `lane` and the model output's name. Every lane runs one intra-op
        thread unless `threads` is set (then there is one lane of that many)."""
        if len(self._sessions) <= lane:
            model = ir.to_model(feature_graph(self.graph, self.heads))
            while len(self._sessions) <= lane:
                self._sessions.append(session(model, self.threads or 1))
        return self._sessions[lane]


@dataclass
class _ShardJob:
    """What a feature task needs: the feature-exposing model (or the in-process cache), data, file layout."""

    model: "bytes | FeatureCache"  # bytes: a worker process builds its session from them
    split: Split
    path: Path
    outputs: dict[str, str]   # cache key -> graph output name (FINAL: the model's own output)
    step: int
    rows: int
    threads: int | None = None
    run_rows: int | None = None  # rows per onnxruntime run (cache_io.Runner)


def _fill_shard(job: _ShardJob, shard: list[tuple[int, list[str]]],
                chunk_done: Callable[[int], None] | None = None, sess=None,
                stop: threading.Event | None = None) -> int:
    """Run chunks `shard`, write their rows into the cache files, mark each chunk done; returns the count.

    `chunk_done(i)` after the i-th chunk of the shard is marked (in-process runs: progress, interrupts);
    `sess`: (session, output name) to run on; `stop`: when set, the shard ends before its next chunk.
    """
    if sess is not None:
        sess, final = sess
    else:
        sess, final = session(onnx.load_from_string(job.model), job.threads)
    files: dict[str, RowFile] = {}
    runner = Runner(sess, job.run_rows)
    try:
        for i, (c, keys) in enumerate(shard):
            if stop is not None and stop.is_set():
                break
            start, stop_row = c * job.step, min(job.rows, (c + 1) * job.step)
            names = [final if job.outputs[k] == FINAL else job.outputs[k] for k in keys]
            outs = runner.run(names, job.split.rows(start, stop_row))
            for key, out in zip(keys, outs):
                if key not in files:
                    files[key] = RowFile(job.path / _file(key))
                files[key].write(start, out)
            # Written after the rows: a marker never names a chunk whose data is missing.
            write_json(job.path / f"done-{c}.json", keys)
            if chunk_done:
                chunk_done(i)
    finally:
        for f in files.values():
            f.close()
    return len(shard)


def _read_progress(path: Path) -> dict[str, list[int]]:
    """Finished chunks per key: progress.json plus the markers of chunks finished since it was written."""
    progress = _read_json(path / "progress.json") or {}
    for marker in path.glob("done-*.json"):
        keys = _read_json(marker)
        c = int(marker.stem.split("-")[1])
        for key in keys or ():
            if c not in progress.setdefault(key, []):
                progress[key].append(c)
    return progress


def _split_evenly(items: list, parts: int) -> list[list]:
    from eecc.driver.executor import chunks

    return chunks(items, parts)


def session(graph_or_model: gs.Graph | onnx.ModelProto, threads: int | None = None):
    """An onnxruntime CPU session with default optimisations (an int8 model's without int8 fusions,
    runtime/sessions.py); returns it and the first output's name."""
    import onnxruntime as ort

    model = graph_or_model if isinstance(graph_or_model, onnx.ModelProto) else ir.to_model(graph_or_model)
    from eecc.runtime.sessions import session_options

    sess = ort.InferenceSession(model.SerializeToString(), session_options(threads, model=model),
                                providers=["CPUExecutionProvider"])
    return sess, sess.get_outputs()[0].name


def _stored(feature_key: str) -> str:
    """A map's key in progress.json and its file name: the feature key and the storage format."""
    return f"{feature_key}|{FORMAT}"


def _file(key: str) -> str:
    return FINAL + ".npy" if key == FINAL else f"f-{digest(key)[:20]}.npy"


def _open(path: Path, shape: tuple[int, ...], dtype) -> np.ndarray:
    if path.exists():
        mm = np.load(path, mmap_mode="r+")
        if mm.shape == shape and mm.dtype == dtype:
            return mm
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, value) -> None:
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(value))
