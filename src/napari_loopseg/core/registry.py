"""Model registry: bundled and user models as safetensors weights with a JSON model card (the
``models/`` folder beside this package holds the bundled files; this module finds, reads and writes them).

A model is one ``<name>.safetensors`` file: the weights (half precision) and, in its metadata,
the model card (architecture, normalisation, decode thresholds, training summary, metrics,
parent). One file is easy to share; a ``<name>.json`` copy of the card sits beside it for people
to read. Loading never unpickles and validates both the card and every tensor's shape.
Bundled models live read-only in the package; user models in the user data directory.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelError
from .instances import DecodeParams
from .normalize import Normalization
from .options import DEFAULT_MODEL
from .sizing import Diameters

if TYPE_CHECKING:  # torch loads lazily: napari imports plugins at start-up
    from .unet import UNet, UNetConfig

FORMAT = "loopseg-model"
FORMAT_VERSION = 1
CARD_KEY = "loopseg_card"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Model:
    """A loaded model: the torch module plus what is needed to use it as it was trained."""

    name: str
    net: UNet
    card: dict
    path: Path | None = None

    @property
    def normalization(self) -> Normalization:
        return Normalization.from_dict(self.card.get("normalization", {}))

    @property
    def decode_params(self) -> DecodeParams:
        return DecodeParams.from_dict(self.card.get("decode", {}))

    @property
    def diameters(self) -> Diameters | None:
        """Diameters of the objects it was trained on (None for cards without them)."""
        data = self.card.get("object_diameters")
        return Diameters.from_dict(data) if data else None

    @property
    def parent(self) -> str | None:
        return self.card.get("parent")


def bundled_dir() -> Path:
    return Path(str(resources.files("napari_loopseg") / "models"))


def user_dir() -> Path:
    """Where user models live; ``LOOPSEG_MODEL_DIR`` overrides (tests, shared installs)."""
    override = os.environ.get("LOOPSEG_MODEL_DIR")
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir("loopseg", appauthor=False)) / "models"


def model_paths() -> dict[str, Path]:
    """Every known model by name; bundled names win over user files of the same name."""
    found: dict[str, Path] = {}
    for folder in (user_dir(), bundled_dir()):
        if folder.is_dir():
            for path in sorted(folder.glob("*.safetensors")):
                found[path.stem] = path
    return found


def readable_models() -> dict[str, Path]:
    """The models whose header reads as a LoopSeg model card: what model lists offer.

    A stray or corrupt ``.safetensors`` file in the user folder is left out, never offered.
    """
    found = {}
    for name, path in model_paths().items():
        try:
            _read_card(path)
        except ModelError:
            continue
        found[name] = path
    return found


def check_writable(folder: Path | None = None) -> Path:
    """The folder new versions go to, created and writable; else :class:`ModelError` saying so.

    Called before training, so an unusable folder fails in a second, not after the whole run.
    """
    folder = Path(folder) if folder is not None else user_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise ModelError(
            f"cannot save model versions in {folder} ({reason}); "
            "set LOOPSEG_MODEL_DIR to a folder you can write to"
        ) from err
    return folder


def check_new_name(name: str, folder: Path | None = None) -> Path:
    """Where a new model ``name`` would be written; :class:`ModelError` if the name is invalid or taken."""
    if not _NAME.match(name):
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-'")
    folder = Path(folder) if folder is not None else user_dir()
    path = folder / f"{name}.safetensors"
    if path.exists() or (folder != bundled_dir() and name in model_paths()):
        raise ModelError(f"a model named {name!r} already exists")
    return path


def make_card(
    name: str,
    config: UNetConfig,
    normalization: Normalization,
    decode: DecodeParams,
    parent: str | None = None,
    training: dict | None = None,
    metrics: dict | None = None,
    diameters: Diameters | None = None,
    weak_spots: list[str] | None = None,
) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "parent": parent,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": {"type": "unet", **config.to_dict()},
        "outputs": ["foreground", "boundary", "distance"],
        "normalization": normalization.to_dict(),
        "decode": decode.to_dict(),
        "object_diameters": diameters.to_dict() if diameters else None,
        "training": training or {},
        "metrics": metrics or {},
        "known_weak_spots": weak_spots or [],
    }


def read_card(path: Path) -> dict:
    """The model card from a file's header, without reading the weights (fast, for listings)."""
    return _read_card(Path(path))


def _read_card(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:  # the header only: no torch import
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a readable safetensors model file ({err})") from err
    if CARD_KEY not in meta:
        raise ModelError(f"{path}: safetensors file has no LoopSeg model card; it is not a LoopSeg model")
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: model card is not valid JSON ({err})") from err
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ModelError(f"{path}: model card has the wrong format")
    if int(card.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"{path}: made by a newer LoopSeg (card version {card['format_version']}); upgrade")
    return card


def load_path(path: str | Path) -> Model:
    """Load and validate a model file; raises :class:`ModelError` with the reason."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .unet import UNet, UNetConfig

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    card = _read_card(path)
    try:
        arch = card["architecture"]
        if arch.get("type") != "unet":
            raise ValueError(f"unknown architecture type {arch.get('type')!r}")
        config = UNetConfig.from_dict(arch)
        Normalization.from_dict(card.get("normalization", {}))
        DecodeParams.from_dict(card.get("decode", {}))
        if card.get("object_diameters") is not None:
            Diameters.from_dict(card["object_diameters"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{path}: invalid model card ({err})") from err
    net = UNet(config)
    try:
        state = load_file(str(path))
        expected = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
        if set(state) != expected:
            wrong = sorted(set(state) ^ expected)[:3]
            raise RuntimeError(f"tensor names differ from the architecture's: {wrong}")
        bad = [k for k, v in state.items() if not v.float().isfinite().all()]
        if bad:
            raise RuntimeError(f"non-finite values in {bad[:3]}")
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise ModelError(f"{path}: weights do not match the card's architecture ({err})") from err
    return Model(name=str(card.get("name") or path.stem), net=net.eval(), card=card, path=path)


def load_model(name_or_path: str | Path = DEFAULT_MODEL) -> Model:
    """A model by registry name (``nuclei``, a fine-tuned version) or by file path."""
    if isinstance(name_or_path, Model):
        return name_or_path
    text = str(name_or_path)
    paths = model_paths()
    if text in paths:
        return load_path(paths[text])
    if Path(text).suffix == ".safetensors" or os.sep in text or Path(text).is_file():
        return load_path(text)
    known = ", ".join(sorted(paths)) or "none"
    raise ModelError(f"unknown model {text!r}; known models: {known}")


@lru_cache(maxsize=4)
def load_model_once(name_or_path: str) -> Model:
    """:func:`load_model`, once per process: dask tasks ship a model's name, not its weights, and
    each worker process loads it on first use."""
    return load_model(name_or_path)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; model files are meant to be read and shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(net: UNet, card: dict, folder: Path | None = None) -> Path:
    """Write ``<name>.safetensors`` (+ ``.json`` card) atomically; refuses to overwrite."""
    import torch
    from safetensors.torch import save_file

    name = card["name"]
    folder = check_writable(folder)
    path = check_new_name(name, folder)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in net.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    text = json.dumps(card, indent=2, sort_keys=True)
    try:
        _atomic_write(path, lambda tmp: save_file(state, tmp, metadata={CARD_KEY: text}))
        try:
            _atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    except OSError as err:  # disk full, folder removed meanwhile: nothing half-written stays
        raise ModelError(f"cannot write {path} ({err.strerror or err})") from err
    return path


def _user_path(name: str) -> Path:
    """The file of a user model; bundled models are read-only."""
    path = model_paths().get(name)
    if path is None:
        raise ModelError(f"unknown model {name!r}")
    if path.parent == bundled_dir():
        raise ModelError(f"{name!r} is a bundled model and cannot be changed")
    return path


def next_version_name(parent: str) -> str:
    """``nuclei`` -> ``nuclei-ft-1``, ``nuclei-ft-1`` -> ``nuclei-ft-2`` (first free number)."""
    stem = re.sub(r"-ft-\d+$", "", parent)
    taken = model_paths()
    number = 1
    while f"{stem}-ft-{number}" in taken:
        number += 1
    return f"{stem}-ft-{number}"


def rewrite_card(path: Path, card: dict, new_path: Path | None = None) -> None:
    """The same weights with another card, written atomically to ``new_path`` (default: in place)."""
    from safetensors.torch import load_file, save_file

    new_path = path if new_path is None else new_path
    state = load_file(str(path))
    text = json.dumps(card, indent=2, sort_keys=True)
    _atomic_write(new_path, lambda tmp: save_file(state, tmp, metadata={CARD_KEY: text}))
    _atomic_write(new_path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))


def rename_model(old: str, new: str) -> Path:
    """Rename a user model; its children's ``parent`` follows so lineage stays intact."""
    path = _user_path(old)
    if not _NAME.match(new):
        raise ModelError(f"invalid model name {new!r}: use letters, digits, '.', '_' or '-'")
    if new in model_paths():
        raise ModelError(f"a model named {new!r} already exists")
    card = load_path(path).card
    new_path = path.with_name(f"{new}.safetensors")
    rewrite_card(path, {**card, "name": new}, new_path)
    path.unlink()
    path.with_suffix(".json").unlink(missing_ok=True)
    for child in model_paths().values():
        if child.parent != bundled_dir():
            child_card = _read_card(child)
            if child_card.get("parent") == old:
                rewrite_card(child, {**child_card, "parent": new}, child)
    return new_path


def delete_model(name: str) -> None:
    """Remove a user model (its children keep their weights and their parent's name)."""
    path = _user_path(name)
    path.unlink()
    path.with_suffix(".json").unlink(missing_ok=True)


def export_model(name: str, destination: str | Path) -> Path:
    """Copy a model to one shareable ``.safetensors`` file (weights and card together)."""
    source = load_model(name).path
    assert source is not None  # load_model reads a file, so it knows where from
    destination = Path(destination)
    if destination.is_dir():
        destination = destination / source.name
    if destination.suffix != ".safetensors":
        raise ModelError(f"{destination}: model files end in .safetensors")
    _atomic_write(destination, lambda tmp: Path(tmp).write_bytes(source.read_bytes()))
    return destination


def import_model(path: str | Path, name: str | None = None) -> Path:
    """Validate a shared model file, then register a copy under ``name`` (default: its card's)."""
    model = load_path(path)
    card = {**model.card, "name": name or model.name}
    return save_model(model.net, card)
