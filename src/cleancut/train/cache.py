"""Decode once: training photos and masks as memory-mapped uint8 arrays at a training size.

A cache is a folder with three files:

- ``images.u8``: every photo's RGB pixels, one after another (``h * w * 3`` bytes each);
- ``masks.u8``: every mask's pixels (``h * w`` bytes each), at its photo's size;
- ``index.json``: the pairs it holds (paths, sizes and modification times of the sources), the
  long side it was stored at, and each pair's offsets and shape.

Photos are shrunk (Lanczos; masks bilinear, both antialiased) so that their long side is at most ``side`` and are never
enlarged. A training run maps the two files read-only: loader workers share the same pages, a run
starts in a second, and the photos are not decoded again. The folder's name is a digest of the
pairs and the side, so a change of data or size builds a new cache instead of reading a stale one;
building writes into a temporary folder that is renamed when complete, so a kill leaves no half
cache behind.

    cleancut train --config configs/v11-duts.yaml --build-cache     # the one command that (re)builds it
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..datasets import Pair
from ..errors import DatasetError

VERSION = 1


def _source_key(pair: Pair) -> list:
    out = []
    for p in (pair.image, pair.mask):
        st = p.stat()
        out += [str(p.resolve()), st.st_size, int(st.st_mtime)]
    return out


def cache_folder(root: str | Path, pairs: list[Pair], side: int, erode: dict[str, int] | None = None) -> Path:
    """The folder under ``root`` that holds (or will hold) the cache of ``pairs`` at ``side``
    (with the masks of the sets in ``erode`` eroded: :func:`erode_mask`)."""
    key = [VERSION, side, [_source_key(p) for p in pairs]]
    used = {name: int(px) for name, px in sorted((erode or {}).items()) if px and any(p.set == name for p in pairs)}
    if used:  # caches made before label erosion existed keep their names
        key.append(used)
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()
    return Path(root) / f"pairs-{len(pairs)}-{side}px-{digest[:16]}"


def erode_mask(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` (uint8) with its object shrunk by ``px`` pixels: the smallest value within a disc
    of radius ``px`` (grey erosion, so an antialiased edge stays antialiased, ``px`` further in).

    For labels whose edge sits outside the object: Oxford-IIIT Pet's masks are the pet *plus* its
    trimap border, a band of background colour all round the animal (docs/benchmarks.md, "The
    training labels"), which a model trained on them learns as a fringe."""
    if px <= 0:
        return mask
    import cv2

    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.erode(mask, disc, borderType=cv2.BORDER_REPLICATE)


def _decode(pair: Pair, side: int, erode: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(pair.image) as im:
        image = im.convert("RGB")
    with Image.open(pair.mask) as m:
        mask = m.convert("L")
    if mask.size != image.size:
        raise DatasetError(f"{pair.mask}: mask is {mask.size[0]}x{mask.size[1]}, its photo {pair.image} is "
                           f"{image.size[0]}x{image.size[1]}; a mask must match its photo's size")
    if (erode or {}).get(pair.set):  # at the label's own resolution, before any shrinking
        mask = Image.fromarray(erode_mask(np.asarray(mask), int(erode[pair.set])))
    w, h = image.size
    scale = side / max(w, h)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)  # Pillow's filters widen when shrinking
        mask = mask.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image), np.asarray(mask)


@contextlib.contextmanager
def building(folder: Path) -> Iterator[Path]:
    """A temporary folder beside ``folder`` to build into: renamed to ``folder`` when the block
    ends (or dropped, when another process built ``folder`` meanwhile: that one is kept), removed
    on any error or interrupt, so a kill never leaves a half-built ``folder``."""
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build(pairs: list[Pair], folder: Path, side: int, progress: bool = True, erode: dict[str, int] | None = None) -> Path:
    """Decode ``pairs`` into ``folder`` (atomically: a temporary folder renamed at the end)."""
    from tqdm import tqdm

    if not pairs:
        raise DatasetError("no pairs to cache")
    entries = []
    img_off = mask_off = 0
    with building(Path(folder)) as tmp:
        with open(tmp / "images.u8", "wb") as fi, open(tmp / "masks.u8", "wb") as fm:
            for pair in tqdm(pairs, desc=f"caching {len(pairs)} pairs at {side} px", unit="pair", disable=not progress):
                image, mask = _decode(pair, side, erode)
                h, w = mask.shape
                fi.write(np.ascontiguousarray(image).tobytes())
                fm.write(np.ascontiguousarray(mask).tobytes())
                entries.append([img_off, mask_off, h, w])
                img_off += h * w * 3
                mask_off += h * w
        index = {"version": VERSION, "side": side, "pairs": [[str(p.image), str(p.mask), p.set, p.stem] for p in pairs],
                 "entries": entries}
        (tmp / "index.json").write_text(json.dumps(index))
    return Path(folder)


class PairCache:
    """Read-only view of a built cache: ``cache[i]`` is ``(image HxWx3, mask HxW)`` uint8 arrays."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            index = json.loads((self.folder / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{self.folder} is not a complete training cache ({exc}); rebuild it with "
                               "cleancut train --config CONFIG --build-cache") from None
        if index.get("version") != VERSION:
            raise DatasetError(f"{self.folder}: cache version {index.get('version')}, expected {VERSION}; rebuild it")
        self.side = index["side"]
        self.entries = np.asarray(index["entries"], dtype=np.int64).reshape(-1, 4)
        self.stems = [(s, st) for _, _, s, st in index["pairs"]]
        self._images = np.memmap(self.folder / "images.u8", dtype=np.uint8, mode="r")
        self._masks = np.memmap(self.folder / "masks.u8", dtype=np.uint8, mode="r")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        io, mo, h, w = (int(v) for v in self.entries[i])
        return (self._images[io:io + h * w * 3].reshape(h, w, 3), self._masks[mo:mo + h * w].reshape(h, w))

    @property
    def nbytes(self) -> int:
        return int(self._images.size + self._masks.size)


def open_cache(pairs: list[Pair], root: str | Path, side: int, progress: bool = True,
               erode: dict[str, int] | None = None) -> PairCache:
    """The cache of ``pairs`` at ``side`` under ``root`` (masks eroded per set: ``erode``), built
    first if it does not exist."""
    folder = cache_folder(root, pairs, side, erode)
    if not (folder / "index.json").is_file():
        build(pairs, folder, side, progress, erode)
    cache = PairCache(folder)
    if cache.stems != [(p.set, p.stem) for p in pairs]:
        raise DatasetError(f"{folder} holds other pairs than this config selects; delete it and rebuild")
    return cache
