"""Render docs/samples-cutout.png: each sample photo beside its cut-out (bundled model) on a checkerboard.

    python tools/docs_samples.py [--model cleancut-default] [-o docs/samples-cutout.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from cleancut import Remover

ROOT = Path(__file__).resolve().parents[1]


def checkerboard(size: tuple[int, int], cell: int = 12) -> Image.Image:
    board = Image.new("RGB", size, (255, 255, 255))
    grey = Image.new("RGB", (cell, cell), (204, 204, 204))
    for y in range(0, size[1], cell):
        for x in range((y // cell) % 2 * cell, size[0], 2 * cell):
            board.paste(grey, (x, y))
    return board


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cleancut-default")
    p.add_argument("--height", type=int, default=240, help="row height in pixels")
    p.add_argument("-o", "--out", default=str(ROOT / "docs" / "samples-cutout.png"))
    args = p.parse_args(argv)

    remover = Remover(model=args.model)
    rows = []
    for path in sorted((ROOT / "samples").glob("*.jpg")):
        with Image.open(path) as im:
            photo = im.convert("RGB")
        cut = remover.remove(photo)
        w = round(photo.width * args.height / photo.height)
        photo, cut = photo.resize((w, args.height), Image.LANCZOS), cut.resize((w, args.height), Image.LANCZOS)
        board = checkerboard(cut.size)
        board.paste(cut, (0, 0), cut)
        row = Image.new("RGB", (2 * w + 8, args.height), (255, 255, 255))
        row.paste(photo, (0, 0))
        row.paste(board, (w + 8, 0))
        rows.append(row)
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows) + 8 * (len(rows) - 1)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 8
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({len(rows)} samples, model {args.model})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
