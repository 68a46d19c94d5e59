"""Every option of background removal, defined once: :class:`RemoveOptions` and its metadata.

:class:`RemoveOptions` is the single definition of what a user can ask for. Each field carries
metadata (help text, kind, choices, bounds, CLI flag, scope, group) that the command line and the
HTTP server are *generated* from, so an option is added, documented and validated in one place:

* the CLI calls :func:`cleancut.cli._options.add_options_to_parser` and
  :func:`cleancut.cli._options.options_from_namespace`;
* the server iterates :func:`option_info` and builds one request parameter per option whose
  ``scope`` is ``"request"`` (type :attr:`OptionInfo.python_type`, default
  :attr:`OptionInfo.default`, description :attr:`OptionInfo.help`, enum :attr:`OptionInfo.choices`),
  then calls :func:`options_from_mapping` with the values it received (strings are fine: every
  value is converted and validated by :class:`RemoveOptions` itself, raising
  :class:`~cleancut.errors.ConfigError`). Options of scope ``"operator"`` (model, providers,
  threads, pixel cap) configure the service and must never be taken from a request; options of
  kind ``"path"`` (``bg_image``) name a local file, so a server must take an upload instead of a
  client-given path;
* ``python -m cleancut.options --markdown`` prints the options table of the documentation.

A leaf module: it imports nothing of cleancut but its errors, so every other module (``io``,
``pipeline``, ``refine``, ``compose``, the front ends) can import it without a cycle.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from .errors import ConfigError

MODES = ("auto", "cutout", "mask", "color", "image", "blur")
# how the network's alpha is brought to the photo (cleancut.edges): "network" (resized and
# sharpened, preprocess.finish_alpha), "guided" (placed on the photo's edges by a guided filter,
# preprocess.guided_alpha), "learned" (redrawn along the uncertain band by the model's refiner,
# edges.EdgeRefiner); "auto": the stage the model's spec names (ModelSpec.edges, by default "network")
EDGE_STAGES = ("auto", "network", "guided", "learned")
FORMATS = ("png", "webp", "jpeg")
_ALIASES = {"format": {"jpg": "jpeg"}, "mode": {"colour": "color", "transparent": "cutout"}}
DEFAULT_MAX_PIXELS = 100_000_000
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_KINDS = ("choice", "bool", "int", "float", "color", "path", "list", "str")


def _option(
    default: Any,
    help: str,
    kind: str,
    *,
    group: str,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    nullable: bool = False,
    scope: str = "request",
    metavar: str | None = None,
) -> Any:
    assert kind in _KINDS, kind
    meta = dict(
        help=help, kind=kind, group=group, choices=choices, minimum=minimum, maximum=maximum,
        nullable=nullable or default is None, scope=scope, metavar=metavar,
    )
    return field(default=default, metadata={"cleancut": meta})


@dataclass(frozen=True)
class RemoveOptions:
    """What to produce from an image. Values are converted (strings like ``"0.5"``, ``"true"``,
    ``"red"`` are accepted) and validated on construction; invalid ones raise ConfigError."""

    # --- output ---
    mode: str = _option(
        "auto", "what to produce: cutout = transparent background (RGBA); mask = the alpha mask "
        "alone (grayscale); color = subject over --bg-color; image = subject over --bg-image; "
        "blur = subject over its own blurred photo; auto = image if --bg-image is given, color if "
        "--bg-color is given, else cutout", "choice", group="output", choices=MODES)
    format: str = _option(
        "png", "encoding of written files and byte results (jpg = jpeg); JPEG has no alpha, so "
        "transparent parts become white", "choice", group="output", choices=FORMATS)
    quality: int = _option(
        90, "JPEG/WebP quality, 1-100 (PNG is lossless and ignores it)", "int", group="output",
        minimum=1, maximum=100)
    bg_color: tuple[int, int, int, int] | None = _option(
        None, "background colour for mode color: a name (white), #rrggbb[aa], or R,G,B[,A] "
        "(default white when mode is color)", "color", group="output", metavar="COLOR")
    bg_image: Any = _option(
        None, "background picture for mode image (a file, or in Python a PIL image), scaled to cover the "
              "photo and centred",
        "path", group="output", metavar="PATH")
    blur_radius: float = _option(
        20.0, "Gaussian blur radius in pixels of the background for mode blur", "float",
        group="output", minimum=0.0, maximum=1000.0)
    crop: bool = _option(
        False, "crop the output to the subject's bounding box", "bool", group="output")
    crop_margin: int = _option(
        0, "pixels kept around the subject when cropping", "int", group="output", minimum=0)
    # --- post-processing of the predicted mask ---
    threshold: float | None = _option(
        None, "binarise the mask: alpha >= threshold becomes opaque, the rest transparent "
        "(0-1; default: keep the soft mask)", "float", group="post-processing", minimum=0.0,
        maximum=1.0)
    remove_islands: float = _option(
        0.0, "remove foreground blobs smaller than this fraction of the image area (e.g. 0.01); "
        "the largest blob is always kept; 0 = off", "float", group="post-processing",
        minimum=0.0, maximum=1.0)
    fill_holes: float = _option(
        0.0, "fill background holes enclosed by the subject that are smaller than this fraction of "
        "the image area; 1 = all holes, 0 = off", "float", group="post-processing", minimum=0.0,
        maximum=1.0)
    feather: float = _option(
        0.0, "soften the mask edge with a Gaussian blur of this radius in pixels; 0 = off",
        "float", group="post-processing", minimum=0.0, maximum=1000.0)
    edges: str = _option(
        "auto", "how the network's mask is brought to the photo's size: network (resized, as the network "
        "drew it), guided (placed on the photo's own edges by a guided filter: less of the old background, "
        "1.3-1.5x the time of the prediction), learned (redrawn along the uncertain band by the model's "
        "learned edge stage, from the photo's pixels); auto = the model's default (docs: Benchmarks, edges)",
        "choice", group="post-processing", choices=EDGE_STAGES)
    # --- alpha matting ---
    alpha_matting: bool = _option(
        False, "refine the mask edge (hair, fur) with closed-form alpha matting (pymatting); "
        "slower", "bool", group="matting")
    matting_erode: int = _option(
        10, "pixels the sure-foreground region is shrunk from the mask edge when building the "
        "matting trimap", "int", group="matting", minimum=1, maximum=1000)
    matting_dilate: int = _option(
        10, "pixels the sure-background region is pushed away from the mask edge when building "
        "the matting trimap", "int", group="matting", minimum=1, maximum=1000)
    matting_max_side: int = _option(
        1024, "alpha matting runs at most at this long side (larger photos are scaled down for "
        "it), which bounds time and memory", "int", group="matting",
        minimum=64, maximum=16384)
    estimate_foreground: bool | None = _option(
        None, "re-estimate the subject's colours at the soft edge (blur-fusion, Forte & Pitié 2021) so "
        "no background colour fringes the cut-out or composite; default: on for cut-outs and "
        "composites (a mask has no colours)", "bool", group="matting")
    # --- model and resources: set by whoever runs the service, never by a request ---
    model: str | None = _option(
        None, "registered model name or path of an exported .onnx (default: cleancut-default)",
        "str", group="model", scope="operator", metavar="NAME_OR_PATH")
    providers: tuple[str, ...] | None = _option(
        None, "ONNX Runtime execution providers in order of preference, comma-separated "
        "(default: CUDAExecutionProvider if available, else CPUExecutionProvider)", "list",
        group="model", scope="operator", metavar="LIST")
    threads: int | None = _option(
        None, "ONNX Runtime intra-op threads (default: ONNX Runtime's choice)", "int",
        group="model", scope="operator", minimum=1, maximum=1024)
    max_pixels: int = _option(
        DEFAULT_MAX_PIXELS, "refuse images with more pixels than this (checked before decoding)",
        "int", group="model", scope="operator", minimum=1)

    def __post_init__(self) -> None:
        for info in option_info():
            object.__setattr__(self, info.name, _convert(info, getattr(self, info.name)))
        self._check_combinations()

    def _check_combinations(self) -> None:
        if self.bg_color is not None and self.bg_image is not None:
            raise ConfigError(
                "bg_color and bg_image were both given; expected one background. Drop one of "
                "--bg-color / --bg-image.")
        if self.bg_color is not None and self.mode not in ("auto", "color"):
            raise ConfigError(
                f"bg_color is only used by mode 'color', but mode is '{self.mode}'. Use mode "
                "'color' (or 'auto') or drop --bg-color.")
        if self.bg_image is not None and self.mode not in ("auto", "image"):
            raise ConfigError(
                f"bg_image is only used by mode 'image', but mode is '{self.mode}'. Use mode "
                "'image' (or 'auto') or drop --bg-image.")
        if self.mode == "image" and self.bg_image is None:
            raise ConfigError("mode 'image' needs a background picture; pass --bg-image PATH.")

    @property
    def resolved_mode(self) -> str:
        """The mode actually produced: ``auto`` resolved from the background options."""
        if self.mode != "auto":
            return self.mode
        if self.bg_image is not None:
            return "image"
        if self.bg_color is not None:
            return "color"
        return "cutout"

    @property
    def foreground_estimation(self) -> bool:
        """Whether edge colours are re-estimated (``estimate_foreground``; by default for every
        mode but ``mask``)."""
        if self.resolved_mode == "mask":
            return False
        return True if self.estimate_foreground is None else self.estimate_foreground

    def replace(self, **changes: Any) -> "RemoveOptions":
        """A copy with some options changed (validated); unknown names raise ConfigError."""
        return options_from_mapping(changes, base=self)

    def to_mapping(self, scope: str | None = None) -> dict[str, Any]:
        """Options as plain JSON-able values (the form :func:`options_from_mapping` accepts)."""
        out = {}
        for info in option_info():
            if scope is None or info.scope == scope:
                out[info.name] = info.external(getattr(self, info.name))
        return out


# ---------------------------------------------------------------- metadata


@dataclass(frozen=True)
class OptionInfo:
    """Everything a front end needs to expose one option of :class:`RemoveOptions`."""

    name: str  # keyword / JSON / form-field name
    kind: str  # choice | bool | int | float | color | path | list | str
    default: Any  # default as a user would write it (None = not set)
    help: str
    group: str  # output | post-processing | matting | model
    scope: str  # "request": per image; "operator": configures the service, never per request
    choices: tuple[str, ...] | None
    minimum: float | None
    maximum: float | None
    nullable: bool  # None is allowed and means "off" / "automatic"
    metavar: str | None

    @property
    def flag(self) -> str:
        """Command-line flag, e.g. ``--bg-color``."""
        return "--" + self.name.replace("_", "-")

    @property
    def python_type(self) -> type:
        """Type of the value on the wire (colours, paths and lists travel as strings)."""
        return {"bool": bool, "int": int, "float": float}.get(self.kind, str)

    def external(self, value: Any) -> Any:
        """A converted value back in the form a user would type it."""
        if value is None:
            return None
        if self.kind == "color":
            return "#" + "".join(f"{c:02x}" for c in value)
        if self.kind == "list":
            return ",".join(value)
        return value

    def text(self, value: Any) -> str:
        """A converted value as a user types it on the command line or in a query string
        (``none`` when unset); :class:`RemoveOptions` reads it back to the same value."""
        if value is None:
            return "none"
        if self.kind == "bool":
            return "true" if value else "false"
        external = self.external(value)
        return repr(external) if isinstance(external, float) else str(external)

    def describe_default(self) -> str:
        if self.default is None:
            return "-"
        if self.kind == "bool":
            return "on" if self.default else "off"
        return str(self.default)


@functools.cache
def option_info() -> tuple[OptionInfo, ...]:
    """Metadata of every option, in definition order."""
    infos = []
    for f in fields(RemoveOptions):
        m = f.metadata["cleancut"]
        infos.append(OptionInfo(name=f.name, default=f.default, **m))
    return tuple(infos)


# ---------------------------------------------------------------- conversion and validation


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a message, shortened: values come from users (and HTTP clients)."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python prints, maybe inside a container
        if isinstance(value, int):
            return f"an integer of {value.bit_length()} bits"
        return f"a {type(value).__name__} holding an integer too long to print"
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(text)} characters)"


def _invalid(info: OptionInfo, expected: str, value: Any) -> ConfigError:
    return ConfigError(
        f"invalid value for '{info.name}' ({info.flag}): expected {expected}, got {_shown(value)}.")


def _range_text(info: OptionInfo, what: str) -> str:
    lo, hi = info.minimum, info.maximum
    if lo is not None and hi is not None:
        return f"{what} between {lo:g} and {hi:g}"
    if lo is not None:
        return f"{what} >= {lo:g}"
    return what


def _convert(info: OptionInfo, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")
                         and info.nullable):
        if info.nullable:
            return None
        raise _invalid(info, _expected(info), value)
    kind = info.kind
    if kind == "choice":
        if not isinstance(value, str):
            raise _invalid(info, _expected(info), value)
        text = value.strip().lower()
        text = _ALIASES.get(info.name, {}).get(text, text)
        if text not in (info.choices or ()):
            raise _invalid(info, _expected(info), value)
        return text
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        text = value.strip().lower() if isinstance(value, str) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _invalid(info, _expected(info), value)
    if kind in ("int", "float"):
        return _convert_number(info, value)
    if kind == "color":
        return parse_color(value, info)
    if kind == "path":
        if _is_pil_image(value):  # an image already in memory (e.g. an HTTP upload): no file needed
            return value
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip() or "\0" in str(value):
            raise _invalid(info, "a file path or a PIL image", value)
        return os.fspath(value)
    if kind == "list":
        items = value.split(",") if isinstance(value, str) else value
        if (not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items)
                or any("," in i for i in items)):  # a name with a comma would not read back
            raise _invalid(info, "a comma-separated list of names", value)
        cleaned = tuple(i.strip() for i in items if i.strip())
        return cleaned or None
    if not isinstance(value, (str, os.PathLike)) or "\0" in str(value):  # no file name holds a NUL
        raise _invalid(info, "a string", value)
    return os.fspath(value)


def _is_pil_image(value: Any) -> bool:
    """Whether ``value`` is a PIL image, without importing Pillow unless one could be."""
    if not type(value).__module__.startswith("PIL."):
        return False
    from PIL import Image

    return isinstance(value, Image.Image)


def _expected(info: OptionInfo) -> str:
    if info.kind == "choice":
        return "one of " + ", ".join(info.choices or ())
    if info.kind == "bool":
        return "true or false"
    if info.kind in ("int", "float"):
        return _range_text(info, "an integer" if info.kind == "int" else "a number")
    return info.kind


def _convert_number(info: OptionInfo, value: Any) -> int | float:
    expected = _expected(info)
    if isinstance(value, bool):
        raise _invalid(info, expected, value)
    number: int | float
    if info.kind == "int" and isinstance(value, int):
        number = value  # exact, however large (the bounds decide)
    elif info.kind == "int" and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        try:
            number = int(value.strip())  # exact too: through float, 33333333333333333330 came back changed
        except ValueError:  # over Python's 4,300 digits for int(str): beyond every bound anyway
            raise _invalid(info, expected, value) from None
    else:
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
            raise _invalid(info, expected, value) from None
        if math.isnan(number) or math.isinf(number):
            raise _invalid(info, expected, value)
        if info.kind == "int":
            if number != int(number):
                raise _invalid(info, expected, value)
            number = int(number)
    if (info.minimum is not None and number < info.minimum) or (
            info.maximum is not None and number > info.maximum):
        raise _invalid(info, expected, value)
    return number


def parse_color(value: Any, info: OptionInfo | None = None) -> tuple[int, int, int, int]:
    """``"white"``, ``"#ff000080"``, ``"255,0,0"``, ``(255, 0, 0)`` ... -> ``(r, g, b, a)``."""
    info = info or next(i for i in option_info() if i.name == "bg_color")
    expected = "a colour name, #rrggbb[aa], or R,G,B[,A] with values 0-255"
    parts: Any = value
    if isinstance(value, str):
        text = value.strip()
        if "," in text and not text.lower().startswith(("rgb", "hsl", "hsv")):
            parts = text.split(",")
        else:
            from PIL import ImageColor

            try:
                parts = ImageColor.getrgb(text)  # unchecked: "hsv(0,101%,100%)" gives -2
            except ValueError:
                raise _invalid(info, expected, value) from None
    if not isinstance(parts, (list, tuple)) or len(parts) not in (3, 4):
        raise _invalid(info, expected, value)
    try:
        channels = [int(str(p).strip()) for p in parts]
    except ValueError:
        raise _invalid(info, expected, value) from None
    if any(c < 0 or c > 255 for c in channels):
        raise _invalid(info, expected, value)
    return tuple(channels + [255] * (4 - len(channels)))  # type: ignore[return-value]


def options_from_mapping(values: Mapping[str, Any], base: RemoveOptions | None = None) -> RemoveOptions:
    """Build (or update ``base`` with) options from a name -> value mapping, e.g. JSON or form
    fields. Unknown names raise ConfigError naming the valid ones."""
    names = {i.name for i in option_info()}
    unknown = [k for k in values if k not in names]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, names, n=1) if isinstance(key, str) else []
            hints.append(_shown(key, 40) + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(
            f"unknown option {', '.join(hints)}; valid options are: {', '.join(sorted(names))}.")
    if base is None:
        return RemoveOptions(**values)
    return replace(base, **values)


def options_markdown() -> str:
    """The options table of the README, generated from the metadata."""
    lines = ["| option (Python / JSON) | CLI flag | default | description |", "| --- | --- | --- | --- |"]
    for info in option_info():
        choices = f" One of: {', '.join(info.choices)}." if info.choices else ""
        scope = " *Operator setting.*" if info.scope == "operator" else ""
        desc = (info.help[0].upper() + info.help[1:] + "." + choices + scope).replace("|", "\\|")
        lines.append(f"| `{info.name}` | `{info.flag}` | {info.describe_default()} | {desc} |")
    return "\n".join(lines)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cleancut.options",
                                     description="Print the background-removal options.")
    parser.add_argument("--markdown", action="store_true", help="print the documentation's options table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(options_markdown())
    else:
        for info in option_info():
            print(f"{info.name:<20} {info.flag:<22} default={info.describe_default():<8} {info.help}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
