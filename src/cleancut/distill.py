"""Pseudo-labelling (``cleancut distill``): a teacher model labels a folder of unlabelled photos and
writes a training set in the DUTS layout that ``cleancut train`` reads through ``data.roots``.

    OUT/im/<stem>.jpg      the photo (upright, sRGB, JPEG q95)
    OUT/gt/<stem>.png      the teacher's soft mask (8-bit, 255 = foreground), same size
    OUT/labels.csv         one row per photo: stem, source, confidence, foreground, uncertain
    OUT/splits.csv         set,stem,split: ``train``, the held-out ``val-pseudo`` share, and
                           ``low-confidence`` (kept on disk, left out of training)

The teacher sees every photo twice: as it is, and mirrored and zoomed out (padded by ``pad`` of
each side). The mask is the mean of the two views brought back into place; ``confidence`` is the
soft IoU of the two views (1 = the teacher says the same thing both times), ``foreground`` the
share of pixels above 0.5 and ``uncertain`` the share between 0.1 and 0.9.

Resumable: a photo whose row is in ``labels.csv`` is done (its files are written atomically before
its row is appended). Re-running with other ``min_confidence`` / ``holdout`` only rewrites
``splits.csv``. numpy, Pillow and ONNX Runtime only: any registered or exported model can teach.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from . import io as cio
from .errors import CleancutError, ConfigError

LABELS = "labels.csv"
FIELDS = ["stem", "source", "confidence", "foreground", "uncertain", "width", "height"]
HOLDOUT_SPLIT = "val-pseudo"
LOW_SPLIT = "low-confidence"


@dataclass
class DistillReport:
    labelled: int = 0
    skipped: int = 0  # already in labels.csv
    failed: list[tuple[str, str]] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)


def find_photos(sources: Iterable[str | os.PathLike]) -> list[tuple[Path, str]]:
    """``(path, stem)`` for every photo under the sources (files or folders, recursive). Stems
    join the path below the source folder with ``__`` so that photos of different folders never
    collide (``caltech101/cup/1.jpg`` -> ``cup__1``)."""
    found: list[tuple[Path, str]] = []
    for src in sources:
        p = Path(src)
        if p.is_file():
            found.append((p, p.stem))
        elif p.is_dir():
            found += [(f, "__".join(f.relative_to(p).with_suffix("").parts)) for f in cio.find_images(p)]
        else:
            raise ConfigError(f"distill: {src} is neither a photo nor a folder")
    stems: dict[str, int] = {}
    out = []
    for path, stem in found:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
        n = stems.get(stem, 0)
        stems[stem] = n + 1
        out.append((path, stem if n == 0 else f"{stem}~{n}"))
    if not out:
        raise ConfigError(f"distill: no photos found in {', '.join(map(str, sources))}")
    return out


class Teacher:
    """Two views of a photo through a model; their mean and their agreement."""

    def __init__(self, model: str | os.PathLike, threads: int | None = None, pad: float = 0.12):
        from .runtime import Session

        self.session = Session(model, threads=threads, spinning=False)  # a long job beside others
        self.pad = pad

    def label(self, image: Image.Image) -> tuple[np.ndarray, dict[str, float]]:
        rgb = image.convert("RGB")
        w, h = rgb.size
        plain = self.session.predict([rgb])[0]
        px, py = int(round(w * self.pad)), int(round(h * self.pad))
        arr = np.pad(np.asarray(rgb), ((py, py), (px, px), (0, 0)), mode="edge")[:, ::-1]
        zoomed = self.session.predict([Image.fromarray(np.ascontiguousarray(arr))])[0]
        other = zoomed[:, ::-1][py:py + h, px:px + w]
        mask = (plain + other) / 2
        inter = np.minimum(plain, other).sum()
        union = np.maximum(plain, other).sum()
        stats = {
            "confidence": float(inter / union) if union > 1e-6 else 1.0,
            "foreground": float((mask > 0.5).mean()),
            "uncertain": float(((mask > 0.1) & (mask < 0.9)).mean()),
        }
        return mask.astype(np.float32), stats


def read_labels(out: Path) -> dict[str, dict[str, str]]:
    path = out / LABELS
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    valid = {}
    for r in rows:  # a row cut short by a kill is dropped: that photo is labelled again
        try:
            if r.get("stem") and float(r["confidence"]) >= 0 and float(r["foreground"]) >= 0 and r.get("height"):
                valid[r["stem"]] = r
        except (TypeError, ValueError):
            continue
    return valid


def _rewrite_labels(out: Path, rows: dict[str, dict]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    for stem in rows:
        writer.writerow(rows[stem])
    cio.write_atomic(out / LABELS, buf.getvalue().encode())


def _split_of(row: dict, min_confidence: float, min_foreground: float, max_foreground: float,
              holdout: float) -> str:
    conf, fg = float(row["confidence"]), float(row["foreground"])
    if conf < min_confidence or not min_foreground <= fg <= max_foreground:
        return LOW_SPLIT
    # a stable pseudo-random share per stem: the same photos are held out whatever the order
    u = int(hashlib.sha256(row["stem"].encode()).hexdigest()[:8], 16) / 16**8
    return HOLDOUT_SPLIT if u < holdout else "train"


def write_splits(out: Path, rows: dict[str, dict], min_confidence: float = 0.8, min_foreground: float = 0.01,
                 max_foreground: float = 0.95, holdout: float = 0.05) -> dict[str, int]:
    counts: dict[str, int] = {}
    lines = ["set,stem,split"]
    for stem in sorted(rows):
        split = _split_of(rows[stem], min_confidence, min_foreground, max_foreground, holdout)
        counts[split] = counts.get(split, 0) + 1
        lines.append(f"{out.name},{stem},{split}")
    cio.write_atomic(out / "splits.csv", ("\n".join(lines) + "\n").encode())
    return counts


def distill(sources: Iterable[str | os.PathLike], out: str | os.PathLike, teacher: str | os.PathLike = "u2netp",
            *, threads: int | None = None, pad: float = 0.12, limit: int | None = None,
            min_confidence: float = 0.8, min_foreground: float = 0.01, max_foreground: float = 0.95,
            holdout: float = 0.05, progress: bool = True,
            on_error: Callable[[str, str], None] | None = None) -> DistillReport:
    """Label every photo under ``sources`` with ``teacher`` into the DUTS folder ``out``."""
    for name, value in (("min_confidence", min_confidence), ("holdout", holdout), ("pad", pad)):
        if not 0 <= value <= 1:
            raise ConfigError(f"distill: {name} must be in [0, 1], got {value}")
    out = Path(out)
    photos = find_photos(sources)
    if limit:
        photos = photos[:limit]
    (out / "im").mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    done = read_labels(out)
    todo = [(p, s) for p, s in photos if s not in done]
    report = DistillReport(skipped=len(photos) - len(todo))
    if todo:
        model = Teacher(teacher, threads=threads, pad=pad)
        _rewrite_labels(out, done)  # a clean file (header, whole rows) to append to
        from tqdm import tqdm

        with open(out / LABELS, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            for path, stem in tqdm(todo, desc="distill", unit="photo", disable=not progress, file=sys.stderr,
                                   initial=report.skipped, total=len(photos)):
                try:
                    image = cio.load_image(path).convert("RGB")
                    mask, stats = model.label(image)
                except CleancutError as exc:
                    report.failed.append((str(path), str(exc)))
                    if on_error:
                        on_error(str(path), str(exc))
                    continue
                cio.save_image(image, out / "im" / f"{stem}.jpg", quality=95)
                cio.save_image(Image.fromarray(np.round(mask * 255).astype(np.uint8)), out / "gt" / f"{stem}.png")
                row = {"stem": stem, "source": str(path), "width": image.width, "height": image.height,
                       **{k: f"{v:.4f}" for k, v in stats.items()}}
                writer.writerow(row)
                fh.flush()
                done[stem] = {k: str(v) for k, v in row.items()}
                report.labelled += 1
    report.splits = write_splits(out, done, min_confidence, min_foreground, max_foreground, holdout)
    return report
