"""The user's own models in :func:`~cleancut.models.cache_dir`: installed (``cleancut finetune``),
removed and exported (``cleancut models remove`` / ``export``), every change atomic.

A user model is ``<name>.json`` (its spec, with a ``made_by`` entry) and the ONNX file it names,
``<name>-<sha256 prefix>.onnx``. The spec is what registers the model, so it is written last and
removed first: an interrupted install leaves no model behind, an interrupted removal no spec
pointing at a missing file, and a replaced model is swapped by one rename.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError
from . import (USER_MARK, USER_NAME, ModelSpec, _bundled, cache_dir, file_sha256, load_spec, spec_from_dict,
               user_models, user_spec_path)


def _tmp(folder: Path, name: str) -> Path:
    return folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"


def _yours() -> str:
    return ", ".join(sorted(user_models())) or "none yet (make one with cleancut finetune)"


def check_user_name(name: str, replace: bool = False) -> None:
    """A ConfigError unless ``name`` can be given to a new user model (or, with ``replace``, to
    one that replaces the user's model of that name)."""
    if not isinstance(name, str) or not USER_NAME.fullmatch(name) or name.endswith((".onnx", ".json")):
        raise ConfigError(f"model name {name!r}: expected 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                          "letter or digit (e.g. products)")
    bundled = _bundled()
    if name in bundled:
        raise ConfigError(f"{name!r} is the name of a bundled model; choose another (bundled: "
                          f"{', '.join(sorted(bundled))})")
    if not replace and user_spec_path(name).exists():
        raise ConfigError(f"you already have a model named {name!r} ({user_spec_path(name)}); replace it "
                          f"(cleancut finetune --replace) or choose another name (yours: {_yours()})")


def install_user_model(onnx_path: str | Path, spec: dict[str, Any], name: str) -> Path:
    """Copy ``onnx_path`` into the user model folder and register ``spec`` (a spec's JSON data)
    for it as ``name``, replacing a user model of that name; returns the spec's path."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    digest = file_sha256(Path(onnx_path))
    onnx_name = f"{name}-{digest[:12]}.onnx"
    data = {**spec, "name": name, "file": onnx_name, "sha256": digest}
    data.setdefault(USER_MARK, "cleancut")
    target = user_spec_path(name)
    previous = _own_file(target)
    tmp_onnx, tmp_json = _tmp(folder, onnx_name), _tmp(folder, target.name)
    placed = False
    try:
        shutil.copyfile(onnx_path, tmp_onnx)
        placed = not (folder / onnx_name).exists()
        os.replace(tmp_onnx, folder / onnx_name)
        spec_from_dict(data, folder)  # a spec that would not load registers nothing
        tmp_json.write_text(json.dumps(data, indent=1))
        os.replace(tmp_json, target)
    except BaseException:
        tmp_onnx.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
        if placed:
            (folder / onnx_name).unlink(missing_ok=True)
        raise
    if previous is not None and previous.name != onnx_name:
        previous.unlink(missing_ok=True)
    return target


def _own_file(spec_path: Path) -> Path | None:
    """The ONNX file a user spec names, when it lies in the user model folder."""
    if not spec_path.is_file():
        return None
    try:
        path = load_spec(spec_path).path
    except ModelError:
        return None
    return path if path.parent.resolve() == cache_dir().resolve() else None


def user_model(name: str) -> ModelSpec:
    """The user model ``name``, or a ModelError listing the user's models."""
    mine = user_models()
    if name in mine:
        return mine[name]
    if name in _bundled():
        raise ModelError(f"'{name}' is bundled with cleancut, not one of your models (yours: {_yours()})")
    raise ModelError(f"you have no model named '{name}' (yours: {_yours()})")


def remove_user_model(name: str) -> list[Path]:
    """Unregister the user model ``name`` and delete its files; returns the paths removed."""
    user_model(name)  # a ModelError naming the user's models when there is no such one
    spec_path = user_spec_path(name)
    onnx_file = _own_file(spec_path)
    spec_path.unlink()  # unregistered from here on
    removed = [spec_path]
    if onnx_file is not None and onnx_file.exists():
        onnx_file.unlink()
        removed.append(onnx_file)
    return removed


def export_model(name: str, path: str | Path, force: bool = False) -> Path:
    """Write the user model ``name`` as ``path`` (an ``.onnx`` file, or a folder that gets
    ``<name>.onnx``) with its JSON spec beside it, for ``--model PATH`` on any machine; returns the
    ONNX file's path. Existing files are kept unless ``force``."""
    spec = user_model(name)
    spec.verify()
    path = Path(path)
    if path.suffix != ".onnx":
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: expected a folder or a file name ending in .onnx")
        path = path / f"{name}.onnx"
    if not path.parent.is_dir():
        raise ConfigError(f"{path.parent}: no such folder; create it first")
    spec_out = path.with_suffix(".json")
    existing = [p for p in (path, spec_out) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{' and '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}; "
                          "pass --force to overwrite")
    data = spec.to_json()
    data["file"] = path.name
    tmp_onnx, tmp_json = _tmp(path.parent, path.name), _tmp(path.parent, spec_out.name)
    try:
        shutil.copyfile(spec.path, tmp_onnx)
        tmp_json.write_text(json.dumps(data, indent=1))
        os.replace(tmp_onnx, path)
        os.replace(tmp_json, spec_out)
    finally:
        tmp_onnx.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
    return path
