"""The command line's adapter of :class:`~cleancut.options.RemoveOptions`: one flag per option,
generated from its metadata (the server's adapter is :mod:`cleancut.server.options`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..options import RemoveOptions, option_info, options_from_mapping


_GROUP_TITLES = {
    "output": "output options",
    "post-processing": "mask post-processing",
    "matting": "alpha matting",
    "model": "model and resources",
}


def add_options_to_parser(parser: argparse.ArgumentParser, scopes: tuple[str, ...] = ("request", "operator"),
                          exclude: tuple[str, ...] = ()) -> None:
    """Add one flag per option of ``scopes`` (except the names in ``exclude``). Flags left out
    are absent from the namespace (default ``argparse.SUPPRESS``), so
    :func:`options_from_namespace` only sees what the user typed."""
    groups: dict[str, Any] = {}
    for info in option_info():
        if info.scope not in scopes or info.name in exclude:
            continue
        if info.group not in groups:
            groups[info.group] = parser.add_argument_group(_GROUP_TITLES.get(info.group, info.group))
        help_text = info.help if "default" in info.help else f"{info.help} (default: {info.describe_default()})"
        help_text = help_text.replace("%", "%%")
        kwargs: dict[str, Any] = dict(dest=info.name, default=argparse.SUPPRESS, help=help_text)
        if info.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif info.kind == "choice":
            kwargs["metavar"] = "{" + ",".join(info.choices or ()) + "}"
        else:
            kwargs["metavar"] = info.metavar or info.kind.upper()
        flags = [info.flag]
        if "color" in info.flag:  # the page and the docs say "colour": both spellings are taken
            flags.append(info.flag.replace("color", "colour"))
        groups[info.group].add_argument(*flags, **kwargs)


def options_from_namespace(namespace: argparse.Namespace, base: RemoveOptions | None = None) -> RemoveOptions:
    """Options from a namespace parsed by a parser set up with :func:`add_options_to_parser`."""
    values = {i.name: getattr(namespace, i.name) for i in option_info() if hasattr(namespace, i.name)}
    return options_from_mapping(values, base=base)
