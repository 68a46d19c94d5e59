"""Fuzz target ``options``: :class:`cleancut.options.RemoveOptions` from what users type.

The first byte picks the front end, the rest is UTF-8 text:

* 0: a query string (``mode=mask&threshold=0.5``), the server's and the web page's form;
* 1: a JSON object, the typed values a Python or JSON caller passes (numbers of any size, lists,
  ``null``, nested objects ...);
* 2: a command line, one argument per line, through the parser ``cleancut remove`` builds;
* 3: a colour, through :func:`~cleancut.options.parse_color`.

Properties: the only exception is ``ConfigError`` (a command line may also be refused by
argparse with a usage message); options that are accepted survive the round trips value -> JSON
value -> value and value -> text -> value unchanged.
"""

from __future__ import annotations

import argparse
import json
from urllib.parse import parse_qsl

NAME = "options"
INSTRUMENT = ("cleancut", "PIL")  # top-level packages: atheris instruments whole packages
HOOKS = ("str", "RegEx")
MAX_LEN = 4096
MEMORY_BUDGET = 32 * 2**20

FRONT_ENDS = ("query", "json", "argv", "color")


class UsageError(Exception):
    """argparse refused the command line (the CLI prints its usage and exits 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # raise instead of printing and exiting
        raise UsageError(message)


def prepare() -> None:
    """Import everything the target runs (inside atheris' instrumentation when fuzzing)."""
    from PIL import ImageColor  # noqa: F401

    import cleancut.cli._options  # noqa: F401
    import cleancut.options  # noqa: F401


def _case(front_end: str, text: str) -> bytes:
    return bytes([FRONT_ENDS.index(front_end)]) + text.encode()


def seeds() -> dict[str, bytes]:
    cases = {
        "query": ["mode=mask&threshold=0.5", "format=jpg&quality=80", "mode=color&bg_color=%23ff000080",
                  "bg_color=255,0,0,128", "crop=true&crop_margin=12", "threshold=none&feather=2.5",
                  "alpha_matting=yes&matting_erode=5&matting_dilate=7&matting_max_side=512",
                  "remove_islands=0.01&fill_holes=1&estimate_foreground=off", "mode=blur&blur_radius=12",
                  "mdoe=mask", "providers=CPUExecutionProvider&threads=2&max_pixels=1000",
                  "model=cleancut-default", "mode=image&bg_image=/tmp/bg.png", "quality=1e400", ""],
        "json": ['{"quality": 90, "crop": true, "threshold": 0.5, "bg_color": [255, 0, 0]}',
                 '{"providers": ["CPUExecutionProvider"], "threads": null, "max_pixels": 1e6}',
                 '{"quality": 123456789012345678901234567890}', '{"bg_color": "hsl(120, 100%, 50%)"}',
                 '{"mode": "colour", "format": "JPG", "crop_margin": 3.0}', '{"feather": -0.0}',
                 '{"matting_erode": true}', '{"bg_image": ["a"]}', '{"threshold": "0x10"}'],
        "argv": ["--mode\nmask\n--threshold\n0.5", "--crop\n--crop-margin\n3", "--no-alpha-matting",
                 "--bg-color\nwhite", "--format=webp\n--quality=50", "--providers\nA,B\n--threads\n4",
                 "--estimate-foreground\n--matting-max-side\n64"],
        "color": ["white", "#ff000080", "#abc", "rgb(10%, 20%, 30%)", "hsv(0,100%,100%)", "255,0,0",
                  " 1, 2, 3, 4 ", "rgba(1,2,3,4)", "hsl(360, 0%, 100%)"],
    }
    return {f"{kind}-{i:02d}": _case(kind, text) for kind, texts in cases.items() for i, text in enumerate(texts)}


def check(data: bytes) -> None:
    from cleancut.errors import ConfigError
    from cleancut.options import options_from_mapping, parse_color

    if not data:
        return
    front_end = FRONT_ENDS[data[0] % len(FRONT_ENDS)]
    text = data[1:].decode("utf-8", "replace")
    try:
        if front_end == "color":
            rgba = parse_color(text)
            if len(rgba) != 4 or not all(isinstance(c, int) and 0 <= c <= 255 for c in rgba):
                raise AssertionError(f"parse_color({text!r}) = {rgba!r}, expected 4 integers 0-255")
            return
        if front_end == "query":
            options = options_from_mapping(dict(parse_qsl(text, keep_blank_values=True)))
        elif front_end == "json":
            try:
                values = json.loads(text)
            except ValueError:
                return
            if not isinstance(values, dict):
                return
            options = options_from_mapping(values)
        else:
            options = _from_command_line(text.split("\n"))
            if options is None:
                return
    except ConfigError:
        return
    check_round_trips(options)


def _from_command_line(argv: list[str]):
    from cleancut.cli._options import add_options_to_parser, options_from_namespace

    parser = _Parser(prog="cleancut remove", add_help=False)
    add_options_to_parser(parser)
    try:
        namespace = parser.parse_args(argv)
    except UsageError:
        return None
    return options_from_namespace(namespace)


def check_round_trips(options) -> None:
    """Accepted options read back equal from their JSON values and from their text."""
    from cleancut.options import option_info, options_from_mapping

    as_json = json.loads(json.dumps(options.to_mapping()))
    if options_from_mapping(as_json) != options:
        raise AssertionError(f"JSON round trip changed {options!r} (via {as_json!r})")
    as_text = {info.name: info.text(getattr(options, info.name)) for info in option_info()}
    if options_from_mapping(as_text) != options:
        raise AssertionError(f"text round trip changed {options!r} (via {as_text!r})")
