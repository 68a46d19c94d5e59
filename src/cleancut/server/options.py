"""The request parameters of ``POST /api/remove``, generated from :func:`cleancut.options.option_info`.

Nothing here names an option: every request-scope option of
:class:`~cleancut.options.RemoveOptions` becomes

* a query parameter, through a FastAPI dependency whose signature is built from the metadata
  (so ``/docs`` shows each option's help, type, bounds, default and enum), and
* a form field of the multipart body (its schema is generated from the same metadata).

Values travel as text and are converted and validated by ``RemoveOptions`` itself (through
:func:`~cleancut.options.options_from_mapping`), exactly like the command line's, so the
server accepts what the CLI accepts (``jpg``, ``colour``, ``none`` ...) with the same messages.
Operator-scope options are never request parameters; path-kind options (``bg_image``) are file
uploads, never a client-given path.
"""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Annotated, Any, Callable, Optional

from fastapi import Query, Request
from pydantic import WithJsonSchema

from ..errors import ConfigError
from ..options import OptionInfo, option_info

_JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number"}
_FLAG = re.compile(r"--([a-z][a-z-]*)")
COLOR_EXAMPLES = ["white", "#00b140", "255,0,0,128"]


def request_options() -> tuple[OptionInfo, ...]:
    """Options a request may set (scope "request"), uploads included."""
    return tuple(i for i in option_info() if i.scope == "request")


def value_options() -> tuple[OptionInfo, ...]:
    """Request options given as values (query or form), i.e. all but the uploads."""
    return tuple(i for i in request_options() if i.kind != "path")


def upload_options() -> tuple[OptionInfo, ...]:
    """Request options given as a file upload (kind "path", e.g. ``bg_image``)."""
    return tuple(i for i in request_options() if i.kind == "path")


def operator_names() -> frozenset[str]:
    return frozenset(i.name for i in option_info() if i.scope == "operator")


def api_text(text: str) -> str:
    """A message or help text written for the command line, reworded for the HTTP API: upload
    flags (``--bg-image PATH``) become the multipart file field, other flags (``--bg-color``)
    the parameter name (``bg_color``)."""
    names = {i.name for i in request_options()}  # operator flags stay flags: they are CLI settings
    for info in upload_options():
        text = text.replace(f"{info.flag} {info.metavar or 'PATH'}", f"the multipart file field '{info.name}'")
    text = re.sub(r" \(--[a-z][a-z-]*\)", "", text)  # "'quality' (--quality)" -> "'quality'"

    def repl(match: re.Match) -> str:
        name = match.group(1).replace("-", "_")
        return name if name in names else match.group(0)

    return _FLAG.sub(repl, text)


def api_help(info: OptionInfo) -> str:
    """The option's help as a sentence, with API names instead of CLI flags."""
    text = api_text(info.help)
    return text[0].upper() + text[1:] + "."


def json_schema(info: OptionInfo, with_default: bool = True) -> dict[str, Any]:
    """OpenAPI schema of one option as it travels on the wire."""
    if info.kind == "path":
        schema: dict[str, Any] = {"type": "string", "format": "binary"}
    else:
        schema = {"type": _JSON_TYPES.get(info.kind, "string")}
    if info.choices:
        schema["enum"] = list(info.choices)
    if info.minimum is not None:
        schema["minimum"] = info.minimum
    if info.maximum is not None:
        schema["maximum"] = info.maximum
    if info.kind == "color":
        schema["examples"] = COLOR_EXAMPLES
    if with_default and info.default is not None:
        schema["default"] = info.external(info.default)
    return schema


def describe(info: OptionInfo) -> dict[str, Any]:
    """JSON description of one request option (``GET /api/options``, used by the web page)."""
    return {
        "name": info.name, "kind": info.kind, "group": info.group, "help": api_help(info),
        "default": info.external(info.default), "choices": list(info.choices) if info.choices else None,
        "minimum": info.minimum, "maximum": info.maximum, "nullable": info.nullable,
        "upload": info.kind == "path",
    }


def form_schema(file_help: str) -> dict[str, Any]:
    """Schema of the multipart body: ``file``, the uploads, and every value option."""
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary", "description": file_help}}
    for info in upload_options():
        properties[info.name] = {**json_schema(info), "description": api_help(info) + " Upload the picture."}
    for info in value_options():
        properties[info.name] = {**json_schema(info), "description": api_help(info)}
    return {"type": "object", "required": ["file"], "properties": properties}


def query_dependency() -> Callable[..., dict[str, str]]:
    """A FastAPI dependency with one query parameter per value option; returns the options the
    request's query string gives (name -> text, not yet validated).

    Each parameter is typed ``str`` for FastAPI (so it does not reject what ``RemoveOptions``
    accepts, like ``format=jpg``) but documented with the option's real JSON schema through
    ``WithJsonSchema``; its default is the option's default, shown by ``/docs``.
    """
    infos = value_options()
    params = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    for info in infos:
        annotation = Annotated[
            Optional[str],
            WithJsonSchema(json_schema(info, with_default=False)),
            Query(description=api_help(info)),
        ]
        default = info.external(info.default)
        params.append(inspect.Parameter(info.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                        default=default))

    async def remove_options(request: Request, **values: Any) -> dict[str, str]:
        # async: a few dictionary look-ups, run on the event loop (FastAPI would give a plain
        # function a thread of its pool for every request)
        given = request.query_params
        check_names(given.keys(), "query parameter")
        for name in given.keys():
            if len(given.getlist(name)) > 1:
                raise ConfigError(f"query parameter '{name}' was given {len(given.getlist(name))} times; "
                                  "expected it once.")
        return {name: given[name] for name in values if name in given}

    remove_options.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return remove_options


def check_names(names: Any, where: str, extra: tuple[str, ...] = ()) -> None:
    """Refuse unknown names (suggesting the closest option), operator options and client-given
    paths, each with a message saying why. ``extra`` names settings the caller takes besides the
    options (a stream's ``smooth``): accepted, suggested and listed like them."""
    operator = operator_names()
    uploads = {i.name for i in upload_options()}
    values = {i.name for i in value_options()} | set(extra)
    for name in names:
        if name in operator:
            raise ConfigError(
                f"{where} '{name}' is a server setting chosen by whoever runs the service "
                f"(option --{name.replace('_', '-')} of cleancut serve); a request cannot set it.")
        if name in uploads:
            if where != "form field":
                raise ConfigError(
                    f"{where} '{name}' must be uploaded as the multipart file field '{name}'; the "
                    "server never reads a path given by a client.")
            continue
        if name not in values:
            close = difflib.get_close_matches(name, sorted(values | uploads), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown {where} '{name}'{hint}; valid options are: {', '.join(sorted(values))}; "
                f"file uploads: file (the photo), {', '.join(sorted(uploads))}.")
