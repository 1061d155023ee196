"""Platform descriptions: processors in cascade order, the links between them, a latency budget (TOML)."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from eecc.errors import EeccError
from eecc.targets.plausible import warn_implausible

KINDS = ("cortex-m0plus", "cortex-m4", "cortex-m7", "cortex-a", "mali", "cuda", "x86")


@dataclass(frozen=True)
class Processor:
    name: str
    kind: str
    macs_per_s: float
    ram_bytes: int
    storage_bytes: int
    active_power_w: float
    idle_power_w: float
    clock_hz: float | None = None  # core clock; turns emulated instruction counts into seconds
    # A GPU driven from the host pays per kernel and per byte besides its MACs (eecc/cost/segments.py
    # `overhead_s`); 0 for cores that run a stage as one program.
    launch_s: float = 0.0              # seconds per kernel launch (enqueue + dispatch)
    transfer_s_per_byte: float = 0.0   # seconds per byte of a stage's inputs and outputs moved to/from it


@dataclass(frozen=True)
class Link:
    src: str
    dst: str
    bandwidth_bps: float  # bits per second
    latency_s: float
    # The link's own energy per byte moved (a radio's or NIC's datasheet figure), when the platform states one; the
    # processors' idle power while they wait for a transfer is counted apart (estimate_exits)
    energy_j_per_byte: float = 0.0


@dataclass(frozen=True)
class Platform:
    name: str
    processors: tuple[Processor, ...]
    links: tuple[Link, ...]
    max_latency_s: float | None
    shared_memory: bool

    def link(self, src: str, dst: str) -> Link | None:
        return next((lk for lk in self.links if lk.src == src and lk.dst == dst), None)

    def processor(self, name: str) -> Processor:
        for proc in self.processors:
            if proc.name == name:
                return proc
        names = ", ".join(p.name for p in self.processors)
        raise EeccError(f"platform '{self.name}' has no processor '{name}'; choose one of: {names}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def builtin_platforms() -> list[str]:
    folder = resources.files("eecc.targets") / "platforms"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_platform(name_or_path: str | Path) -> Platform:
    """A built-in name ("psoc6", "rk3588", "rk3588-cuda") or the path of a user's .toml file."""
    text_name = str(name_or_path)
    if text_name in builtin_platforms():
        text = (resources.files("eecc.targets") / "platforms" / f"{text_name}.toml").read_text()
        return warn_implausible(parse_platform(text, origin=f"built-in platform '{text_name}'"), text_name)
    path = Path(name_or_path)
    if path.suffix != ".toml" or not path.is_file():
        names = ", ".join(builtin_platforms())
        raise EeccError(f"target '{text_name}' is neither a built-in platform ({names}) nor an existing "
                        ".toml file; pass one of those names or the path of a platform TOML file")
    return warn_implausible(parse_platform(path.read_text(), origin=str(path)), str(path))  # unit slips (nu13 F5)


def parse_platform(text: str, *, origin: str = "platform") -> Platform:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EeccError(f"{origin}: not valid TOML ({exc}); fix the syntax") from None
    _no_unknown(doc, {"name", "description", "processors", "links", "max_latency_s", "shared_memory"},
                origin, "")
    name = _field(doc, "name", str, origin, "")
    procs_doc = doc.get("processors")
    if not isinstance(procs_doc, list) or not procs_doc:
        raise EeccError(f"{origin}: field 'processors' must be a non-empty array of tables "
                        "([[processors]] sections), in the order the cascade runs on them")
    processors = tuple(_processor(p, origin, f"processors[{i}].") for i, p in enumerate(procs_doc))
    names = [p.name for p in processors]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EeccError(f"{origin}: processor name '{dup[0]}' is used twice; give each processor a unique name")
    links = tuple(_link(lk, names, origin, f"links[{i}].") for i, lk in enumerate(doc.get("links", [])))
    for i in range(len(names) - 1):
        if not any(lk.src == names[i] and lk.dst == names[i + 1] for lk in links):
            raise EeccError(f"{origin}: no link from '{names[i]}' to '{names[i + 1]}'; add a [[links]] "
                            f"section with src = \"{names[i]}\", dst = \"{names[i + 1]}\"")
    max_latency = doc.get("max_latency_s")
    if max_latency is not None:
        max_latency = _positive(doc, "max_latency_s", origin, "")
    shared = doc.get("shared_memory", False)
    if not isinstance(shared, bool):
        raise EeccError(f"{origin}: field 'shared_memory' must be true or false, got {shared!r}")
    return Platform(name, processors, links, max_latency, shared)


def compute_time_s(proc: Processor, macs: int | float) -> float:
    return float(macs) / proc.macs_per_s


def transfer_time_s(link: Link, nbytes: int | float) -> float:
    return link.latency_s + 8.0 * float(nbytes) / link.bandwidth_bps


def transfer_energy_j(link: Link, nbytes: int | float) -> float:
    return link.energy_j_per_byte * float(nbytes)


def input_latency_s(platform: Platform, first: str, input_bytes: int) -> float:
    """Seconds the model input takes from the platform's first processor, where it arrives, to `first`, the
    processor of stage 0 (0 when they are the same); EeccError when no link joins them."""
    link = _input_link(platform, first)
    return 0.0 if link is None else transfer_time_s(link, input_bytes)


def _input_link(platform: Platform, first: str) -> Link | None:
    home = platform.processors[0].name
    if first == home:
        return None
    link = platform.link(home, first)
    if link is None:
        raise EeccError(f"platform '{platform.name}' has no link from '{home}', where the input arrives, to "
                        f"'{first}'; add one to the platform TOML or start on '{home}'")
    return link


def return_links(platform: Platform, path: Sequence[str]) -> list[Link]:
    """The links a result takes from the last processor of `path` (the processors a sample went through, from the
    platform's first) back to the first, where the input arrived and the answer is wanted: the link between the two
    if the platform declares one (either direction: a declared link is taken to carry data both ways at its stated
    bandwidth and latency, an assumption), else back along `path`, hop by hop."""
    home, here = platform.processors[0].name, path[-1]
    if here == home:
        return []
    direct = platform.link(here, home) or platform.link(home, here)
    if direct is not None:
        return [direct]
    hops = [(a, b) for a, b in zip(path, path[1:]) if a != b]
    return [platform.link(b, a) or platform.link(a, b) for a, b in reversed(hops)]


def estimate_exits(platform: Platform, processors: Sequence[str], stage_macs: Sequence[int],
                   handoff_bytes: Sequence[int], compute_s: Sequence[float] | None = None,
                   input_bytes: int = 0, result_bytes: int = 0) -> list[dict[str, float]]:
    """Latency and energy of one sample that leaves at stage k, for every k.

    Energy model (stated, not measured): the processor running a stage draws active power for its
    compute time (`compute_s[k]` when given, e.g. from the measured cost model, else macs/macs_per_s);
    every other processor of the placement draws idle power for the rest of the sample's latency, the
    transfers included (a processor waiting for data idles); a link adds its own energy_j_per_byte per byte
    moved when the platform states one (none of the built-in platforms does: their hand-offs are buffers in
    memory the processors share, or, on rk3588-cuda, a network link with no stated figure). Consecutive stages
    on the same processor run back to back: no transfer, and the processor counts once. The model input
    (`input_bytes` per sample) arrives on the platform's first processor, where the data is sampled
    (eecc/search/placement.py): when stage 0 runs on another one, it crosses that link first (input_latency_s),
    as a hand-off does; and the result (`result_bytes`: the exit's logits) of a sample that leaves on another
    processor goes back there (return_links), its latency and energy counted as a hand-off's. The first processor
    is therefore part of every placement: where it runs no stage (the original alone on rk3588's GPU, whose host CPU
    sends the input, launches the kernels and receives the logits), it draws idle power for the whole latency, as it
    does in a cascade that left it (nu14 F1: the GPU-alone baseline was charged 18 % less than that accounting).
    """
    names = list(dict.fromkeys([platform.processors[0].name, *processors]))
    procs = [platform.processor(p) for p in names]
    link = _input_link(platform, processors[0])
    out, busy = [], [0.0] * len(procs)
    latency = 0.0 if link is None else transfer_time_s(link, input_bytes)
    moved_j = 0.0 if link is None else transfer_energy_j(link, input_bytes)
    for k, (name, macs) in enumerate(zip(processors, stage_macs)):
        proc, slot = procs[names.index(name)], names.index(name)
        if k > 0 and processors[k - 1] != name:
            link = platform.link(processors[k - 1], proc.name)
            if link is None:
                raise EeccError(f"platform '{platform.name}' has no link from '{processors[k - 1]}' to "
                                f"'{proc.name}'; add one to the platform TOML or choose other processors")
            latency += transfer_time_s(link, handoff_bytes[k - 1])
            moved_j += transfer_energy_j(link, handoff_bytes[k - 1])
        t = compute_time_s(proc, macs) if compute_s is None else float(compute_s[k])
        latency += t
        busy[slot] += t
        back = return_links(platform, [platform.processors[0].name, *processors[:k + 1]])
        done = latency + sum(transfer_time_s(lk, result_bytes) for lk in back)
        active = sum(p.active_power_w * b for p, b in zip(procs, busy))
        idle = sum(p.idle_power_w * (done - b) for p, b in zip(procs, busy))
        links_j = moved_j + sum(transfer_energy_j(lk, result_bytes) for lk in back)
        out.append({"compute_s": t, "latency_s": done, "energy_j": active + idle + links_j})
    return out


def _processor(doc: Any, origin: str, where: str) -> Processor:
    if not isinstance(doc, dict):
        raise EeccError(f"{origin}: {where[:-1]} must be a table with name, kind, macs_per_s, ...")
    fields = {"name", "kind", "macs_per_s", "ram_bytes", "storage_bytes", "active_power_w", "idle_power_w",
              "clock_hz", "launch_s", "transfer_s_per_byte", "note"}
    _no_unknown(doc, fields, origin, where)
    kind = _field(doc, "kind", str, origin, where)
    if kind not in KINDS:
        raise EeccError(f"{origin}: field '{where}kind' is '{kind}'; use one of: {', '.join(KINDS)}")
    return Processor(
        name=_name(doc, origin, where), kind=kind,
        macs_per_s=_positive(doc, "macs_per_s", origin, where),
        ram_bytes=int(_positive(doc, "ram_bytes", origin, where, integer=True)),
        storage_bytes=int(_positive(doc, "storage_bytes", origin, where, integer=True)),
        active_power_w=_positive(doc, "active_power_w", origin, where),
        idle_power_w=_positive(doc, "idle_power_w", origin, where, zero_ok=True),
        clock_hz=_positive(doc, "clock_hz", origin, where) if "clock_hz" in doc else None,
        **{k: _positive(doc, k, origin, where, zero_ok=True) for k in ("launch_s", "transfer_s_per_byte") if k in doc})


# A processor's name is a file-name part of the bundle (its folder, stage<k>.<name>.onnx): nu13's '../hostesc' wrote
# a folder outside -o, '../../escape' on two stages gave both one file (a traceback), 'mcu/m4' nested folders.
SAFE_NAME = re.compile(r"[\w #()+.-]+")
SAFE_CHARS = "letters, digits, spaces and _ - . # ( ) +, not starting with '.'"


def _name(doc: dict, origin: str, where: str) -> str:
    name = _field(doc, "name", str, origin, where)
    if not SAFE_NAME.fullmatch(name) or name.startswith(".") or name != name.strip():
        fixed = re.sub(r"[^\w #()+.-]", "_", name).strip().lstrip(".") or "cpu"
        raise EeccError(f"{origin}: field '{where}name' is {name!r}, which names the processor's bundle folder and "
                        f"stage files: use {SAFE_CHARS} (e.g. {fixed!r})")
    return name


def _link(doc: Any, names: list[str], origin: str, where: str) -> Link:
    if not isinstance(doc, dict):
        raise EeccError(f"{origin}: {where[:-1]} must be a table with src, dst, bandwidth_bps, latency_s")
    _no_unknown(doc, {"src", "dst", "bandwidth_bps", "latency_s", "energy_j_per_byte", "note"}, origin, where)
    ends = []
    for key in ("src", "dst"):
        value = _field(doc, key, str, origin, where)
        if value not in names:
            raise EeccError(f"{origin}: field '{where}{key}' names processor '{value}', which is not "
                            f"declared; declared processors: {', '.join(names)}")
        ends.append(value)
    energy = {"energy_j_per_byte": _positive(doc, "energy_j_per_byte", origin, where, zero_ok=True)} \
        if "energy_j_per_byte" in doc else {}
    return Link(ends[0], ends[1], _positive(doc, "bandwidth_bps", origin, where),
                _positive(doc, "latency_s", origin, where, zero_ok=True), **energy)


def _field(doc: dict, key: str, typ: type, origin: str, where: str) -> Any:
    if key not in doc:
        raise EeccError(f"{origin}: missing field '{where}{key}'; add it")
    value = doc[key]
    if not isinstance(value, typ) or (typ is str and not value.strip()):
        raise EeccError(f"{origin}: field '{where}{key}' must be a non-empty {typ.__name__}, got {value!r}")
    return value


def _positive(doc: dict, key: str, origin: str, where: str, *, zero_ok: bool = False,
              integer: bool = False) -> float:
    if key not in doc:
        raise EeccError(f"{origin}: missing field '{where}{key}'; add it")
    value = doc[key]
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) \
            or (integer and value != int(value)):
        need = "a whole number" if integer else "a number"
        bound = ">= 0" if zero_ok else "> 0"
        raise EeccError(f"{origin}: field '{where}{key}' must be {need} {bound}, got {value!r}")
    return float(value)


def _no_unknown(doc: dict, allowed: set[str], origin: str, where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise EeccError(f"{origin}: unknown field '{where}{unknown[0]}'; allowed: {', '.join(sorted(allowed))}")
