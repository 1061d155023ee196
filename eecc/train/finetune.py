"""Joint fine-tuning: an exit graph run as a torch module, trained, and written back by name.

Why an interpreter and not onnx2torch: onnx2torch fails on opset-18 ReduceMean (dynamo exports) and on
Constant-node weights, and would be a new dependency; eecc's graphs use a dozen ops whose ONNX
semantics map one-to-one onto torch.nn.functional. Every float initializer (and float Constant node)
becomes an `nn.Parameter` keyed by its tensor name, so the trained values go back into the same
tensors and the graph's structure is never touched.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs
import torch
import torch.nn.functional as F
from torch import nn

from eecc.errors import EeccError
from eecc.train.onnx_ops import OPS

# Not weights: BatchNormalization's running statistics (fine-tuning keeps inference-mode semantics), Clip's bounds
# (ReLU6 must stay ReLU6) and Pow's exponent (a decomposed LayerNorm's square stays a square).
_FROZEN_INPUTS = {"BatchNormalization": (3, 4), "Clip": (1, 2), "Pow": (1,)}


def check_supported(graph: gs.Graph) -> None:
    """EeccError naming the first node the ONNX→torch interpreter cannot run (compile checks the model before any
    training: nu10 saw the refusal only after the whole search)."""
    for n in graph.nodes:
        if n.op not in OPS and n.op != "Constant":
            raise EeccError(f"finetune: node '{n.name}' has op {n.op}, which the ONNX→torch interpreter "
                            f"does not support (supported: {', '.join(sorted(OPS))}); drop --finetune-epochs")


class OnnxModule(nn.Module):
    """`forward(x)` returns the graph outputs (list of tensors, in graph order) for a batch `x`."""

    def __init__(self, graph: gs.Graph):
        super().__init__()
        self.graph = graph.copy().toposort()
        if len(self.graph.inputs) != 1:
            raise EeccError(f"finetune: the graph has {len(self.graph.inputs)} inputs; eecc fine-tunes "
                            "single-input classifiers only")
        frozen = {n.inputs[i].name for n in self.graph.nodes for i in _FROZEN_INPUTS.get(n.op, ())
                  if i < len(n.inputs)}
        self.keys: dict[str, str] = {}    # tensor name -> parameter key
        self.params = nn.ParameterDict()
        self.fixed: dict[str, torch.Tensor] = {}
        for t in self.graph.tensors().values():
            if isinstance(t, gs.Constant):
                self._add(t.name, np.asarray(t.values), t.name in frozen)
        for n in self.graph.nodes:
            if n.op == "Constant":
                value = n.attrs.get("value")
                if not isinstance(value, gs.Constant):
                    raise EeccError(f"finetune: Constant node '{n.name}' has no tensor 'value'; "
                                    "fold it into an initializer first")
                self._add(n.outputs[0].name, np.asarray(value.values), False)
        check_supported(self.graph)

    def _add(self, name: str, value: np.ndarray, frozen: bool) -> None:
        if value.dtype.kind == "f" and value.size > 0 and not frozen:
            key = f"p{len(self.keys)}"  # ParameterDict keys may not contain dots
            self.keys[name] = key
            self.params[key] = nn.Parameter(torch.from_numpy(np.array(value, dtype=np.float32)))
        else:
            self.fixed[name] = torch.from_numpy(np.array(value))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        env: dict[str, torch.Tensor] = {self.graph.inputs[0].name: x}
        env.update(self.fixed)
        env.update({name: self.params[key] for name, key in self.keys.items()})
        for n in self.graph.nodes:
            if n.op == "Constant":
                continue
            args = [env[t.name] if t.name else None for t in n.inputs]
            out = OPS[n.op](args, n.attrs)
            outs = out if isinstance(out, tuple) else (out,)
            for t, v in zip(n.outputs, outs):
                env[t.name] = v
        return [env[t.name] for t in self.graph.outputs]

    def weights(self) -> dict[str, np.ndarray]:
        """Trained values by tensor name."""
        return {name: self.params[key].detach().cpu().numpy().copy() for name, key in self.keys.items()}


def write_weights(graph: gs.Graph, weights: dict[str, np.ndarray]) -> gs.Graph:
    """A copy of `graph` whose initializers / Constant nodes named in `weights` hold the new values."""
    graph = graph.copy()
    tensors = graph.tensors()
    for n in graph.nodes:
        if n.op == "Constant" and n.outputs[0].name in weights:
            old = n.attrs["value"]
            n.attrs["value"] = gs.Constant(old.name, weights[n.outputs[0].name].astype(old.values.dtype))
    for name, value in weights.items():
        t = tensors.get(name)
        if isinstance(t, gs.Constant):
            if tuple(t.values.shape) != value.shape:
                raise EeccError(f"finetune: weight '{name}' has shape {value.shape}, the graph holds "
                                f"{tuple(t.values.shape)}")
            t.values = np.ascontiguousarray(value, dtype=t.values.dtype)
    return graph


def finetune_graph(graph: gs.Graph, x: Callable[[int, int], np.ndarray] | np.ndarray, y: np.ndarray, *,
                   epochs: int = 1, lr: float = 1e-4, batch_size: int = 64, seed: int = 0,
                   on_batch: Callable[[], None] | None = None) -> tuple[gs.Graph, dict]:
    """Adam on the sum of the cross-entropies of every graph output (each one is a [N, classes] logit
    tensor: the final classifier and the exits). `x` is an array or `rows(start, stop)`; rows are read
    in shuffled batches. Returns the graph with the trained weights and a summary."""
    if epochs < 1:
        raise EeccError(f"finetune: epochs must be ≥ 1, got {epochs}")
    torch.manual_seed(seed)
    module = OnnxModule(graph)
    rows = x if callable(x) else (lambda a, b: x[a:b])
    y = np.asarray(y, dtype=np.int64)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses, t0 = [], time.perf_counter()
    # Shuffle whole batches of contiguous rows: a memory-mapped x is then read sequentially.
    starts = np.arange(0, len(y), batch_size)
    for _ in range(epochs):
        total, count = 0.0, 0
        for start in rng.permutation(starts):
            stop = min(int(start) + batch_size, len(y))
            batch = np.ascontiguousarray(rows(int(start), stop), dtype=np.float32)
            # A memory-mapped x (an .npz opened read-only) gives read-only rows; torch warns on those on stderr,
            # even under --quiet, though it never writes to an input: give it a copy of such a batch instead.
            xb = torch.from_numpy(batch if batch.flags.writeable else batch.copy())
            yb = torch.from_numpy(y[start:stop])
            loss = sum(F.cross_entropy(o, yb) for o in module(xb))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * (stop - start), count + int(stop - start)
            if on_batch:
                on_batch()
        losses.append(float(total / max(count, 1)))
    info = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "train_samples": int(len(y)),
            "loss_per_epoch": losses, "parameters": int(sum(p.numel() for p in module.parameters())),
            "seconds": time.perf_counter() - t0}
    return write_weights(graph, module.weights()), info


# ---- compile step: fine-tune the chosen exit graph, then search its thresholds again -----------------

FINETUNED = "finetuned.onnx"  # in the bundle: the fine-tuned model with the chosen exits as extra outputs
FINE_GRID = 2 * 13  # twice the NA paper's 13 thresholds per exit: the re-search uses a finer grid


def refit_placement(graph: gs.Graph, splits, logits, chosen, options, *, epochs: int, original: dict,
                    lr: float = 1e-4, batch_size: int = 64):
    """`graph` is the model with the chosen exits inserted (outputs: final, then exit 0, 1, ...).

    Returns (fine-tuned graph, the placement with re-searched thresholds and test figures, ExitLogits of
    the chosen exits on the fine-tuned graph, a summary for the manifest). `original` is the search's
    `SearchResult.original`: the accuracy drop stays measured against the user's model.
    """
    from dataclasses import replace

    from eecc.search.calibration import ece_per_exit
    from eecc.search.intervals import result_intervals
    from eecc.search.policy import evaluate_policy, make_split, oracle, position_costs
    from eecc.search.thresholds import retune
    from eecc.search.types import ExitLogits

    o, idx = options, [logits.tensors.index(t) for t in chosen.exits]  # `logits`: one head per location
    train = splits.train
    tuned, info = finetune_graph(graph, train.rows, train.y, epochs=epochs, lr=lr, batch_size=batch_size)
    outs = {name: _ort_logits(tuned, split) for name, split in
            (("val", splits.val), ("test", splits.test), *([("train", train)] if o.calibrate_on == "train" else []))}
    new = ExitLogits(
        tensors=list(chosen.exits), exit_macs=logits.exit_macs[idx], head_macs=logits.head_macs[idx],
        final_macs=logits.final_macs, val_logits=outs["val"][1:], test_logits=outs["test"][1:],
        final_val_logits=outs["val"][0], final_test_logits=outs["test"][0],
        y_val=splits.val.y, y_test=splits.test.y,
        **({"train_logits": outs["train"][1:], "final_train_logits": outs["train"][0], "y_train": train.y}
           if "train" in outs else {}))
    calib, test = make_split(new, o.calibrate_on, o.metric), make_split(new, "test", o.metric)
    pos, macs = list(range(len(idx))), position_costs(new, range(len(idx)))
    costs, objective, test_obj = _objectives(chosen, macs, logits.final_macs, original, o)
    rt = retune(calib, pos, costs, objective, o, test=test, grid_size=FINE_GRID)  # --no-fine skips its second pass
    th = rt.thresholds
    r = evaluate_policy(test, pos, th, macs)  # the record keeps MACs; the unit's figures go to `extra`
    ece = ece_per_exit(np.concatenate([new.test_logits, new.final_test_logits[None]]), new.y_test)
    extra = {**chosen.extra, "ece": ece, **_unit_means(chosen.extra, rt, costs)}
    if "intervals" in extra:
        extra["intervals"] = result_intervals(r, test)
    refit = replace(chosen, thresholds=th, test=r, oracle=oracle(test, pos, macs),
                    method=rt.method + f"+grid{FINE_GRID}+finetune", extra=extra, **rt.figures(objective, test_obj))

    def accuracies(heads, final, y):
        return [float((z.argmax(-1) == y).mean()) for z in (*heads, final)]

    info.update({
        "val_accuracy_before": accuracies(logits.val_logits[idx], logits.final_val_logits, logits.y_val),
        "val_accuracy_after": accuracies(new.val_logits, new.final_val_logits, new.y_val),
        "test_accuracy_before": accuracies(logits.test_logits[idx], logits.final_test_logits, logits.y_test),
        "test_accuracy_after": accuracies(new.test_logits, new.final_test_logits, new.y_test),
        "thresholds_before": [float(t) for t in chosen.thresholds], "thresholds_after": [float(t) for t in th],
        "cascade_before": {"accuracy": chosen.test.accuracy, "mean_macs": chosen.test.mean_macs},
        "cascade_after": {"accuracy": r.accuracy, "mean_macs": r.mean_macs}, "grid_size": FINE_GRID})
    return tuned, refit, new, info


def _objectives(chosen, macs: np.ndarray, final_macs: float, original: dict, o):
    """The cost of leaving at each position and the validation / test Objectives in the unit the search scored
    `chosen` in: its joules or seconds per exit where the placement has processors (search._one's `extra`),
    else MACs; the re-search then optimises what the user asked for, as the int8 re-search does (eecc/driver/int8.py)."""
    from eecc.search.policy import Objective
    from eecc.search.unit import PER_EXIT, exit_costs

    costs = exit_costs(chosen.extra, macs)
    device = PER_EXIT.get(chosen.extra.get("objective")) in chosen.extra  # costs are joules or seconds
    ref = float(original.get("reference_cost", final_macs)) if device else float(final_macs)
    limit = o.max_mean_macs if device else None  # a MAC limit binds the thresholds in the other unit (nu11 F9)
    objective = Objective(ref, original["val_accuracy"], o.w_eff, o.w_acc, o.max_accuracy_drop,
                          None if device else o.max_mean_macs,
                          position_macs=tuple(float(m) for m in macs) if limit is not None else None, limit_macs=limit)
    return costs, objective, Objective(ref, original["accuracy"], o.w_eff, o.w_acc)


def _unit_means(extra: dict, rt, costs: np.ndarray) -> dict:
    """The means of search._one's `extra` at the re-searched thresholds (validation and test split): without
    them the summary's "search's prediction" kept the figures of the thresholds before fine-tuning (nu13 F9)."""
    from eecc.search.unit import device_means

    sel, test = rt.selected.exit_index, rt.test.exit_index
    out = {"mean_cost": float(costs[test].mean()) if test.size else 0.0, "val_mean_cost": float(rt.selected.mean_macs)}
    out.update(device_means(extra, test))
    if sel.size:
        out.update(device_means(extra, sel, prefix="val_"))
    return out


def _ort_logits(graph: gs.Graph, split, chunk: int = 1024) -> np.ndarray:
    """[outputs, N, C] of every graph output on a data split, with onnxruntime (what the stages will run)."""
    from eecc.data.cache import session

    sess, _ = session(graph)
    name = sess.get_inputs()[0].name
    parts = [sess.run(None, {name: x}) for _, x in split.chunks(chunk)]
    return np.stack([np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]).astype(np.float32)
