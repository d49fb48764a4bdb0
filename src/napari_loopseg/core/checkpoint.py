"""Training state on disk and back, never pickled: training that survives the end of a session.

A checkpoint is one safetensors file. Its tensors: the model's state (and its moving average's),
the optimizer's per-parameter state (AdamW moments and step counts) and torch's RNG; its
metadata, as JSON: the step, the learning-rate schedule, the optimizer's hyper-parameters and
whatever the caller adds (configuration, scores, seconds trained). Crops need no state: batch k
depends only on the seed and k (``core.crops``). A readable ``.json`` copy of the
metadata sits beside it. Files are written atomically (temporary file, then rename), so a run
killed while saving leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .registry import _atomic_write

META_KEY = "loopseg_checkpoint"
FORMAT = "loopseg-checkpoint"
#: Entries of a training state that are a module's tensors by name.
WEIGHTS = ("model", "ema")


def _flatten(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors by flat name, and the JSON-able rest of a :func:`~.train.train_iter` state."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict = {}
    for key, value in state.items():
        if key in WEIGHTS:
            tensors |= {f"{key}/{k}": v for k, v in value.items()}
        elif key == "optimizer":
            per_param: dict[str, dict] = {}
            for index, slots in value["state"].items():
                for name, v in slots.items():
                    if isinstance(v, torch.Tensor):
                        tensors[f"optimizer/{index}/{name}"] = v
                    else:
                        per_param.setdefault(str(index), {})[name] = v
            rest["optimizer"] = {"param_groups": value["param_groups"], "scalars": per_param}
        elif isinstance(value, torch.Tensor):
            tensors[key] = value
        else:
            rest[key] = value
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return tensors, rest


def _unflatten(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state = {k: v for k, v in rest.items() if k != "optimizer"}
    for name in WEIGHTS:
        if weights := {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{name}/")}:
            state[name] = weights
    if "optimizer" in rest:
        slots: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                slots.setdefault(int(index), {})[name] = value
        for index, scalars in rest["optimizer"]["scalars"].items():
            slots.setdefault(int(index), {}).update(scalars)
        state["optimizer"] = {"state": slots, "param_groups": rest["optimizer"]["param_groups"]}
    state |= {k: v for k, v in tensors.items() if "/" not in k}
    return state


def save_checkpoint(path: str | Path, state: dict, meta: dict | None = None) -> Path:
    """Write ``state`` (a training state, or any part of one: ``{"model": ...}``) and ``meta``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, rest = _flatten(state)
    text = json.dumps({"format": FORMAT, "state": rest, "meta": meta or {}}, indent=1, sort_keys=True)
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: text}))
    _atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(training state, meta) as :func:`save_checkpoint` wrote them."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    with safe_open(str(path), framework="pt") as handle:
        data = json.loads((handle.metadata() or {}).get(META_KEY, "{}"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a LoopSeg training checkpoint")
    return _unflatten(load_file(str(path)), data["state"]), data["meta"]
