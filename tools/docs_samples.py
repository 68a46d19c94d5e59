"""Render the documentation's pictures of cut-outs.

    python tools/docs_samples.py [--model cleancut-default] [-o docs/samples-cutout.png]
    python tools/docs_samples.py --edges --data datasets [-o docs/edges-200.jpg]

The first is the README's picture: each sample photo (samples/*.jpg) beside its cut-out (bundled
model, default options) on a checkerboard. ``--edges`` renders the contact sheet of edges at
200 %: the README's samples and the ``--count`` photos of ``duts-val`` where the default model
leaves the most fringe (``fringe@0.5%``, :mod:`cleancut.metrics`), each cropped around its softest
edge and shown, over white and over black, with the photo's colours at the edge (as cut-outs were
made until now), as the default makes them now (foreground colours re-estimated), with the edge
stage (``edges="guided"``) as well, and as U²-Net gives them (rembg's way: the photo's colours).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cleancut import Remover
from cleancut.options import RemoveOptions

ROOT = Path(__file__).resolve().parents[1]
CROP = 112  # photo pixels of an edge crop, shown at 200 %
LABEL = 18  # pixels of the header row


def checkerboard(size: tuple[int, int], cell: int = 12) -> Image.Image:
    board = Image.new("RGB", size, (255, 255, 255))
    grey = Image.new("RGB", (cell, cell), (204, 204, 204))
    for y in range(0, size[1], cell):
        for x in range((y // cell) % 2 * cell, size[0], 2 * cell):
            board.paste(grey, (x, y))
    return board


def samples() -> list[Path]:
    return sorted((ROOT / "samples").glob("*.jpg"))


def readme_picture(model: str, height: int, out: str) -> None:
    remover = Remover(model=model)
    rows = []
    for path in samples():
        with Image.open(path) as im:
            photo = im.convert("RGB")
        cut = remover.remove(photo)
        w = round(photo.width * height / photo.height)
        photo, cut = photo.resize((w, height), Image.LANCZOS), cut.resize((w, height), Image.LANCZOS)
        board = checkerboard(cut.size)
        board.paste(cut, (0, 0), cut)
        row = Image.new("RGB", (2 * w + 8, height), (255, 255, 255))
        row.paste(photo, (0, 0))
        row.paste(board, (w + 8, 0))
        rows.append(row)
    sheet = _stack(rows)
    sheet.save(out, optimize=True)
    print(f"wrote {out} ({len(rows)} samples, model {model})")


def _stack(rows: list[Image.Image], gap: int = 8) -> Image.Image:
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows) + gap * (len(rows) - 1)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + gap
    return sheet


def worst_fringe(remover: Remover, data: list[str], split: str, count: int) -> list[tuple[Path, float]]:
    """The ``count`` photos of ``split`` with the highest fringe@0.5% under ``remover``'s default."""
    from cleancut import datasets
    from cleancut.metrics import edge_figures

    scored = []
    for pair in datasets.select(data, [split])[split]:
        with Image.open(pair.mask) as m:
            gt = np.asarray(m.convert("L"))
        fringe = edge_figures(remover.predict_mask(pair.image), gt)["fringe@0.5%"]
        if not np.isnan(fringe):
            scored.append((pair.image, float(fringe)))
    return sorted(scored, key=lambda s: -s[1])[:count]


def _crop_box(photo: Image.Image, alpha: np.ndarray) -> tuple[int, int, int, int]:
    """A ``CROP``-pixel square around the place where the soft edge holds the most alpha beside
    the subject (the densest half-transparent pixels, a box-sum of ``alpha (1 - alpha)``)."""
    from cleancut.preprocess import box_mean

    soft = box_mean((alpha * (1 - alpha)).astype(np.float32), CROP // 4)
    y, x = np.unravel_index(int(np.argmax(soft)), soft.shape)
    half = min(CROP, photo.width, photo.height) // 2
    left = int(np.clip(x - half, 0, photo.width - 2 * half))
    top = int(np.clip(y - half, 0, photo.height - 2 * half))
    return left, top, left + 2 * half, top + 2 * half


def edges_sheet(model: str, data: list[str], split: str, count: int, out: str) -> None:
    default, peer = Remover(model=model), Remover(model="u2net")
    photos = [(p, None) for p in samples()] + worst_fringe(default, data, split, count)
    columns = [("until now: photo colours", default, RemoveOptions(estimate_foreground=False)),
               ("now: colours re-estimated", default, RemoveOptions()),
               ("+ edge stage", default, RemoveOptions(edges="guided")),
               ("U²-Net (photo colours)", peer, RemoveOptions(estimate_foreground=False))]
    side = 2 * CROP
    header = Image.new("RGB", ((1 + 2 * len(columns)) * (side + 4), LABEL), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    draw.text((2, 3), "photo (200 %)", fill=(0, 0, 0))
    for i, (name, _, _) in enumerate(columns):
        draw.text(((1 + 2 * i) * (side + 4) + 2, 3), f"{name}, over white | black", fill=(0, 0, 0))
    rows, listed = [header], []
    for path, fringe in photos:
        with Image.open(path) as im:
            photo = im.convert("RGB")
        box = _crop_box(photo, default.predict_mask(photo))
        row = Image.new("RGB", ((1 + 2 * len(columns)) * (side + 4), side), (255, 255, 255))
        row.paste(photo.crop(box).resize((side, side), Image.NEAREST), (0, 0))
        for i, (_, remover, options) in enumerate(columns):
            cut = remover.remove(photo, options).crop(box).resize((side, side), Image.NEAREST)
            for j, colour in enumerate(((255, 255, 255), (0, 0, 0))):
                tile = Image.new("RGB", (side, side), colour)
                tile.paste(cut, (0, 0), cut)
                row.paste(tile, ((1 + 2 * i + j) * (side + 4), 0))
        rows.append(row)
        listed.append({"photo": str(Path(path).relative_to(ROOT) if Path(path).is_relative_to(ROOT) else path),
                       "fringe@0.5%": fringe, "crop": box})
    _stack(rows, gap=4).save(out, quality=88, optimize=True)
    Path(out).with_suffix(".json").write_text(json.dumps({"model": model, "split": split, "rows": listed}, indent=1))
    print(f"wrote {out} ({len(listed)} rows) and {Path(out).with_suffix('.json')}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cleancut-default")
    p.add_argument("--height", type=int, default=240, help="README picture: row height in pixels")
    p.add_argument("--edges", action="store_true", help="render the contact sheet of edges at 200 %% instead")
    p.add_argument("--data", nargs="+", default=["datasets"], help="--edges: dataset roots holding --split")
    p.add_argument("--split", default="duts-val")
    p.add_argument("--count", type=int, default=20, help="--edges: photos of --split with the worst fringe")
    p.add_argument("-o", "--out", default=None,
                   help="default: docs/samples-cutout.png, with --edges docs/edges-200.jpg")
    args = p.parse_args(argv)
    if args.edges:
        edges_sheet(args.model, args.data, args.split, args.count, args.out or str(ROOT / "docs" / "edges-200.jpg"))
    else:
        readme_picture(args.model, args.height, args.out or str(ROOT / "docs" / "samples-cutout.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
