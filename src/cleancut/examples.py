"""Example sets: photos with their corrected masks, in the layout ``cleancut train`` and
``cleancut finetune`` read (torch-free).

A set is a folder with ``im/<stem>.jpg`` (the photo, upright and sRGB) and ``gt/<stem>.png`` (its
mask: 8-bit gray, 255 = foreground, the photo's size), or a zip of the same: the zip export
format, which the web page's "Save as example" set downloads as and ``cleancut serve
--examples DIR`` serves from ``/api/examples/zip``, holds ``im/`` and ``gt/`` at its root (a zip
with one folder around them is read too).

:func:`add_example` adds a pair to a folder atomically and never overwrites: each file is
written under a temporary name and linked to a name no other file has; the mask is placed
first, then the photo, so a pair is complete once its photo is there.
"""

from __future__ import annotations

import os
import re
import time
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from PIL import Image

from . import datasets
from .errors import ConfigError, DatasetError
from .io import IMAGE_SUFFIXES, encode_image

#: the zip export format's folders
PHOTOS, MASKS = "im", "gt"
PHOTO_QUALITY = 95  # JPEG quality of a stored photo
ZIP_MAX_BYTES = 4 * 1024**3  # what a zip may unpack to
ZIP_MAX_FILES = 20_000
_STEM = re.compile(r"[^A-Za-z0-9_-]+")


def examples_folder(path: str | os.PathLike) -> Path:
    """``path`` as an example-set folder: created (with ``im/`` and ``gt/``) if missing, and
    checked to be writable; a ConfigError says why not."""
    folder = Path(path).expanduser()
    try:
        for sub in (PHOTOS, MASKS):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{uuid.uuid4().hex[:8]}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--examples {path}: expected a folder this server can write photos into, but "
                          f"{exc.strerror or exc} ({exc.filename or folder})") from None
    return folder.resolve()


def mask_from_image(image: Image.Image) -> Image.Image:
    """A corrected mask as 8-bit gray: the alpha channel of a picture that has one (a cut-out),
    else its gray levels."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return image.convert("L")


def _stem(hint: str | None) -> str:
    base = _STEM.sub("-", Path(hint or "").stem).strip("-_")[:40] or "example"
    return f"{base}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _claim(tmp: Path, target: Path) -> bool:
    """Give the complete file ``tmp`` the name ``target`` unless that name exists (never replaced)."""
    try:
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: claim the name, then fill it in one rename
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        os.close(fd)
        os.replace(tmp, target)
        return True


def _temp(folder: Path, data: bytes) -> Path:
    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    with open(tmp, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def add_example(folder: str | os.PathLike, photo: Image.Image, mask: Image.Image, name: str | None = None) -> str:
    """Store ``photo`` and ``mask`` as a new pair of the set in ``folder``; returns its stem.

    The mask must have the photo's size (:func:`mask_from_image` makes it gray). ``name`` (e.g.
    the uploaded file's name) starts the stem, which a time and random suffix make new."""
    folder = Path(folder)
    if photo.size != mask.size:
        raise DatasetError(f"the mask is {mask.size[0]}x{mask.size[1]} pixels but the photo is "
                           f"{photo.size[0]}x{photo.size[1]}: send the mask at the photo's size")
    photo_data = encode_image(photo.convert("RGB"), "jpeg", PHOTO_QUALITY)
    mask_data = encode_image(mask_from_image(mask), "png")
    temps = [_temp(folder, mask_data), _temp(folder, photo_data)]
    try:
        for _ in range(100):
            stem = _stem(name)
            gt, im = folder / MASKS / f"{stem}.png", folder / PHOTOS / f"{stem}.jpg"
            if not _claim(temps[0], gt):
                continue
            if _claim(temps[1], im):
                return stem
            gt.unlink()  # ours: the photo's name was taken by another file
        raise DatasetError(f"{folder}: could not find a free name for a new example")
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def count_examples(folder: str | os.PathLike) -> int:
    """Complete pairs in the set (a photo and its mask)."""
    folder = Path(folder)
    if not (folder / PHOTOS).is_dir() or not (folder / MASKS).is_dir():
        return 0
    masks = {p.stem for p in (folder / MASKS).glob("*.png")}
    return sum(1 for p in (folder / PHOTOS).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in masks)


def write_zip(folder: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write the complete pairs of the set in ``folder`` to the zip ``out`` (the zip export
    format), atomically; returns the number of pairs."""
    folder, out = Path(folder), Path(out)
    pairs = datasets.discover(folder, problems=[]) if count_examples(folder) else []
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:  # JPEG and PNG are compressed already
            for pair in pairs:
                zf.write(pair.image, f"{PHOTOS}/{pair.image.name}")
                zf.write(pair.mask, f"{MASKS}/{pair.mask.name}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(pairs)


def _member_target(name: str) -> PurePosixPath | None:
    """``im/x.jpg`` or ``gt/x.png`` (possibly inside one top folder) as a relative path, None for
    entries that are no part of a set (folders, macOS metadata, hidden files); a DatasetError
    for a path that would leave the folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise DatasetError(f"the zip holds {name!r}, a path outside its folder: not an example set")
    parts = [p for p in path.parts if p not in ("", ".")]
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    if len(parts) == 3:
        parts = parts[1:]
    if len(parts) != 2 or parts[0] not in (PHOTOS, MASKS):
        return None
    return PurePosixPath(*parts)


def unpack_zip(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack the example set in zip ``archive`` into the (new, empty) folder ``dest``; returns it.

    Only ``im/`` and ``gt/`` files are taken; paths that leave the folder, more than
    :data:`ZIP_MAX_FILES` files or :data:`ZIP_MAX_BYTES` bytes are refused."""
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{archive}: expected a zip of im/ and gt/ folders, but it cannot be read as a zip "
                           f"({exc})") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > ZIP_MAX_FILES or sum(i.file_size for i in infos) > ZIP_MAX_BYTES:
            raise DatasetError(f"{archive}: more than {ZIP_MAX_FILES} files or {ZIP_MAX_BYTES >> 30} GiB unpacked; "
                               "not an example set (unpack it yourself and pass the folder)")
        taken = 0
        for info in infos:
            target = _member_target(info.filename)
            if target is None:
                continue
            out = dest / target
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(out, "xb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            except FileExistsError:
                raise DatasetError(f"{archive}: {target} is in the zip twice") from None
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DatasetError(f"{archive}: {info.filename} cannot be unpacked ({exc})") from None
            taken += 1
    if not taken:
        raise DatasetError(f"{archive}: expected im/<stem>.jpg photos and gt/<stem>.png masks in the zip, found "
                           "neither folder")
    return dest


def read_examples(data: str | os.PathLike, workdir: str | os.PathLike | None = None) -> list[datasets.Pair]:
    """The pairs of the example set ``data`` (a folder, or a zip unpacked into ``workdir``), every
    file checked: missing partners, unreadable files and masks whose size is not their photo's are
    reported together in one DatasetError."""
    data = Path(data)
    if data.is_file():
        if workdir is None:
            raise DatasetError(f"{data}: a zip needs a folder to unpack into")
        root = unpack_zip(data, Path(workdir) / "examples")
    elif data.is_dir():
        root = data
    else:
        raise DatasetError(f"{data}: no such folder or zip; expected a folder with im/ and gt/ (or the zip the "
                           "web page exports)")
    if datasets._layout(root) is None:
        raise DatasetError(f"{data}: expected im/ (photos) and gt/ (masks) folders in it, found "
                           f"{', '.join(sorted(p.name + '/' for p in root.iterdir() if p.is_dir())) or 'none'}")
    problems: list[str] = []
    pairs = datasets.discover(root, problems)
    datasets.check_readable(pairs, problems)
    if root != data:  # name the zip's members, not the temporary folder they were unpacked into
        problems = [p.replace(f"{root}{os.sep}", f"{data}:") for p in problems]
    datasets._report(problems, f"example set {data}")
    return pairs
