"""Finding and checking image/mask pairs in the DUTS layout (torch-free).

A *dataset folder* holds ``im/<stem>.<ext>`` photos and ``gt/<stem>.png`` masks with matching stems,
or, as the official DUTS download is laid out, ``<NAME>-Image/`` and ``<NAME>-Mask/`` inside a
folder called ``NAME`` (``DUTS-TR/DUTS-TR-Image`` + ``DUTS-TR/DUTS-TR-Mask``).
A *root* is either such a folder, or a folder of them (one per set), optionally with a
``splits.csv`` (``set,stem,split``) that assigns each pair to a split. Without a splits file the
pairs are split at random by ratio with a fixed seed, except for the sets with built-in splits
(:data:`BUILTIN_SPLITS`): DUTS-TR is ``train`` but for the 1,000 photos of ``duts-val`` (a fixed
list shipped with cleancut, for choosing checkpoints and recipes), and DUTS-TE is ``duts-te`` (the
field's test set: report it, never choose on it).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import DatasetError
from .io import IMAGE_SUFFIXES

IMAGE_EXTS = IMAGE_SUFFIXES  # the photos of a dataset are any image cleancut reads (cleancut.io)
MASK_EXTS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
_MAX_LISTED = 20


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path
    set: str
    stem: str


DUTS_VAL_FILE = Path(__file__).resolve().parent / "data" / "duts-val.txt"
DUTS_VAL_SIZE = 1000
DUTS_VAL_SEED = 2017


def duts_val_rule(stems: list[str], size: int = DUTS_VAL_SIZE, seed: int = DUTS_VAL_SEED) -> list[str]:
    """The seeded rule that chose ``duts-val``: ``size`` stems drawn from the sorted DUTS-TR stems
    with ``random.Random(seed)``, returned sorted (the shipped list is this rule's output)."""
    return sorted(random.Random(seed).sample(sorted(stems), size))


@lru_cache(maxsize=1)
def duts_val_stems() -> frozenset[str]:
    """The 1,000 DUTS-TR stems of ``duts-val`` (shipped in ``cleancut/data/duts-val.txt``)."""
    return frozenset(line.strip() for line in DUTS_VAL_FILE.read_text().splitlines() if line.strip())


def _duts_tr_split(stem: str) -> str:
    return "duts-val" if stem in duts_val_stems() else "train"


# Sets whose split is fixed by name, for roots without a splits.csv: set name -> stem -> split.
BUILTIN_SPLITS = {
    "DUTS-TR": _duts_tr_split,
    "DUTS-TE": lambda stem: "duts-te",
}


def _layout(folder: Path) -> tuple[Path, Path] | None:
    """The (photos, masks) folders of a dataset folder, or None if it is not one."""
    for images, masks in ((folder / "im", folder / "gt"),
                          (folder / f"{folder.name}-Image", folder / f"{folder.name}-Mask")):
        if images.is_dir() and masks.is_dir():
            return images, masks
    return None


def _is_duts(folder: Path) -> bool:
    return _layout(folder) is not None


def _files(folder: Path, exts) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in exts and p.is_file()}


def _scan(folder: Path, set_name: str, problems: list[str]) -> list[Pair]:
    image_dir, mask_dir = _layout(folder)
    images = _files(image_dir, IMAGE_EXTS)
    masks = _files(mask_dir, MASK_EXTS)
    for stem in sorted(images.keys() - masks.keys()):
        problems.append(f"{images[stem]}: no mask {mask_dir.name}/{stem}.png")
    for stem in sorted(masks.keys() - images.keys()):
        problems.append(f"{masks[stem]}: no image {image_dir.name}/{stem}.*")
    return [Pair(images[s], masks[s], set_name, s) for s in sorted(images.keys() & masks.keys())]


def _report(problems: list[str], what: str) -> None:
    if not problems:
        return
    shown = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise DatasetError(
        f"{what}: {len(problems)} problem(s) found before training:\n  {shown}{more}\n"
        "Expected the DUTS layout: im/<stem>.jpg photos and gt/<stem>.png masks (or NAME-Image/ and NAME-Mask/) "
        "with matching stems and sizes. Fix or remove the listed files."
    )


def discover(root: str | Path, problems: list[str] | None = None) -> list[Pair]:
    """All pairs under ``root`` (a DUTS folder, or a folder of DUTS folders).

    Unmatched files are raised as one :class:`DatasetError`, or appended to ``problems`` if given.
    """
    collect = problems is not None
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root}: expected a folder with im/ and gt/ (or NAME-Image/ and NAME-Mask/, "
                           "or sub-folders that have them), found no folder")
    problems = problems if collect else []
    if _is_duts(root):
        pairs = _scan(root, root.name, problems)
    else:
        subsets = [d for d in sorted(root.iterdir()) if d.is_dir() and _is_duts(d)]
        if not subsets:
            raise DatasetError(
                f"dataset root {root}: expected im/ and gt/ folders (DUTS layout; the official download's "
                "NAME-Image/ and NAME-Mask/ too), or sub-folders that have them; found neither"
            )
        pairs = [p for d in subsets for p in _scan(d, d.name, problems)]
    if not collect:
        _report(problems, f"dataset {root}")
    if not pairs and not problems:
        raise DatasetError(f"dataset {root}: no image/mask pairs found (expected im/<stem>.jpg + gt/<stem>.png)")
    return pairs


def check_readable(pairs: list[Pair], problems: list[str] | None = None) -> None:
    """Open every header once: unreadable files and image/mask size mismatches in one error."""
    collect = problems is not None
    problems = problems if collect else []
    for pair in pairs:
        sizes = []
        for path in (pair.image, pair.mask):
            try:
                with Image.open(path) as im:
                    sizes.append(im.size)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                problems.append(f"{path}: unreadable ({exc.__class__.__name__}: {exc})")
        if len(sizes) == 2 and sizes[0] != sizes[1]:
            problems.append(f"{pair.mask}: mask is {sizes[1][0]}x{sizes[1][1]}, image is {sizes[0][0]}x{sizes[0][1]}")
    if not collect:
        _report(problems, "dataset check")


def read_splits(csv_path: Path) -> dict[tuple[str, str], str]:
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DatasetError(f"cannot read splits file {csv_path}: {exc}") from None
    if rows and not {"set", "stem", "split"} <= rows[0].keys():
        raise DatasetError(f"splits file {csv_path}: expected columns set,stem,split, found {list(rows[0].keys())}")
    return {(r["set"], r["stem"]): r["split"] for r in rows}


def select(
    roots: list[str | Path],
    splits: list[str],
    *,
    splits_csv: str | Path | None = None,
    val_ratio: float = 0.1,
    seed: int = 0,
    check: bool = True,
) -> dict[str, list[Pair]]:
    """Pairs of each requested split, from one or several roots.

    A root's ``splits.csv`` (or ``splits_csv``) decides the split of each pair; pairs it does not
    list are left out. In roots without one, the sets of :data:`BUILTIN_SPLITS` (DUTS-TR,
    DUTS-TE) get their fixed splits and the other pairs are split at random: ``val_ratio`` of them
    go to split ``val`` and the rest to ``train``. The split name ``all`` selects every pair.
    """
    out: dict[str, list[Pair]] = {s: [] for s in splits}
    problems: list[str] = []
    for root in roots:
        root = Path(root)
        pairs = discover(root, problems)
        if "all" in out:  # every pair of the root, whatever its split
            out["all"].extend(pairs)
        csv_path = Path(splits_csv) if splits_csv else root / "splits.csv"
        if csv_path.is_file():
            assignment = read_splits(csv_path)
            for pair in pairs:
                split = assignment.get((pair.set, pair.stem))
                if split in out:
                    out[split].append(pair)
        else:
            for pair in pairs:
                rule = BUILTIN_SPLITS.get(pair.set)
                if rule is not None and rule(pair.stem) in out:
                    out[rule(pair.stem)].append(pair)
            pairs = [p for p in pairs if p.set not in BUILTIN_SPLITS]
            shuffled = pairs[:]
            random.Random(seed).shuffle(shuffled)
            n_val = max(1, round(len(shuffled) * val_ratio)) if len(shuffled) > 1 else 0
            parts = {"val": sorted(shuffled[:n_val], key=_key), "train": sorted(shuffled[n_val:], key=_key)}
            for split in splits:
                out[split].extend(parts.get(split, []))
    if check:
        check_readable([p for ps in out.values() for p in ps], problems)
    _report(problems, f"dataset {', '.join(str(r) for r in roots)}")
    return out


def _key(pair: Pair) -> tuple[str, str]:
    return (pair.set, pair.stem)
