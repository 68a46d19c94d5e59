"""A contact sheet of the photos where one model does worst, with other models beside it.

    python benchmarks/worst_cases.py --data datasets --split duts-val --rank-by cleancut-v9 \
        --models v9=cleancut-v9 v10=cleancut-default u2net --count 20 --out docs/duts-val-worst.jpg

Every photo of the split is run through the ``--rank-by`` model (cleancut's runtime, the product
path); the photos are ranked by that model's per-photo mean absolute error against the ground
truth (the MAE of the field's protocol: mask and truth in [0, 1], at the truth's size), and the
``--count`` worst are drawn one per row: the photo, its ground truth, then each ``--models`` entry
as a cut-out over a grey checkerboard with its own MAE on that photo. Models are registered names
or exported ``.onnx`` paths, optionally labelled ``label=model``. The ranking and every cell's MAE
are also written as JSON beside the sheet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cleancut.datasets import select
from cleancut.models import get_model
from cleancut.runtime import Session

CELL = 168  # width of one column, px
LABEL = 18  # height of the text band under each cell


def _entry(text: str) -> tuple[str, str]:
    label, sep, model = text.partition("=")
    return (label, model) if sep else (Path(text).stem, text)


def _truth(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), np.float32) / 255.0


def per_photo_mae(session: Session, pairs, batch: int = 8) -> list[float]:
    out: list[float] = []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        images = [Image.open(p.image).convert("RGB") for p in chunk]
        for pair, alpha in zip(chunk, session.predict(images)):
            truth = _truth(pair.mask)
            out.append(float(np.abs(alpha - (truth >= 0.5)).mean()))
        print(f"\r  ranked {len(out)}/{len(pairs)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def _checker(size: tuple[int, int], step: int = 8) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // step) + (xx // step)) % 2 == 0, 200, 150).astype(np.uint8)
    return Image.fromarray(board).convert("RGB")


def _cell(image: Image.Image, caption: str) -> Image.Image:
    thumb = image.copy()
    thumb.thumbnail((CELL, CELL))
    cell = Image.new("RGB", (CELL, CELL + LABEL), "white")
    cell.paste(thumb, ((CELL - thumb.width) // 2, (CELL - thumb.height) // 2))
    ImageDraw.Draw(cell).text((4, CELL + 3), caption, fill="black")
    return cell


def _caption(rank: int, stem: str, width: int = 27) -> str:
    text = f"#{rank} {stem}"
    return text if len(text) <= width else f"#{rank} ..{stem[-(width - len(str(rank)) - 4):]}"


def cutout_cell(photo: Image.Image, alpha: np.ndarray, caption: str) -> Image.Image:
    board = _checker(photo.size)
    mask = Image.fromarray(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8))
    return _cell(Image.composite(photo, board, mask), caption)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True, help="dataset root(s)")
    p.add_argument("--split", default="duts-val")
    p.add_argument("--rank-by", required=True, help="the model whose worst photos are shown")
    p.add_argument("--models", nargs="+", required=True, help="columns: model or label=model")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--limit", type=int, default=None, help="rank only the first N photos (a quick check)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, required=True, help="the sheet (.jpg or .png); JSON beside it")
    args = p.parse_args(argv)

    pairs = select(args.data, [args.split])[args.split][:args.limit]
    if not pairs:
        p.error(f"split {args.split!r} is empty in {args.data}")
    print(f"ranking {len(pairs)} photos of {args.split} by {args.rank_by}", file=sys.stderr)
    errors = per_photo_mae(Session(get_model(args.rank_by), threads=args.threads), pairs)
    worst = sorted(range(len(pairs)), key=lambda i: -errors[i])[:args.count]

    entries = [_entry(m) for m in args.models]
    sessions = {label: Session(get_model(model), threads=args.threads) for label, model in entries}
    rows, record = [], []
    for rank, i in enumerate(worst, 1):
        pair = pairs[i]
        photo = Image.open(pair.image).convert("RGB")
        truth = _truth(pair.mask)
        cells = [_cell(photo, _caption(rank, pair.stem)), _cell(Image.fromarray((truth * 255).astype(np.uint8)), "ground truth")]
        maes = {}
        for label, session in sessions.items():
            alpha = session.predict([photo])[0]
            maes[label] = float(np.abs(alpha - (truth >= 0.5)).mean())
            cells.append(cutout_cell(photo, alpha, f"{label}  MAE {maes[label]:.3f}"))
        row = Image.new("RGB", (CELL * len(cells), CELL + LABEL), "white")
        for k, cell in enumerate(cells):
            row.paste(cell, (k * CELL, 0))
        rows.append(row)
        record.append({"rank": rank, "set": pair.set, "stem": pair.stem, "mae": maes,
                       "rank_by_mae": errors[i]})
        print(f"  #{rank} {pair.stem}: " + ", ".join(f"{k} {v:.3f}" for k, v in maes.items()), file=sys.stderr)

    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), "white")
    for k, row in enumerate(rows):
        sheet.paste(row, (0, k * row.height))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=80) if args.out.suffix.lower() in (".jpg", ".jpeg") else sheet.save(args.out)
    means = {label: float(np.mean([r["mae"][label] for r in record])) for label, _ in entries}
    args.out.with_suffix(".json").write_text(json.dumps({
        "split": args.split, "data": args.data, "rank_by": args.rank_by, "photos_ranked": len(pairs),
        "models": dict(entries), "mean_mae_on_these": means, "rows": record}, indent=1) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json').name}; mean MAE on these "
          + ", ".join(f"{k} {v:.3f}" for k, v in means.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
