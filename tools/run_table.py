"""Print a training run's epochs as a Markdown table, for the MODEL_CARD ledger.

    python tools/run_table.py runs/v11                 # every epoch
    python tools/run_table.py runs/v11 --from 29       # epochs 29 onwards

One row per epoch of ``<run>/log.csv``: training size, photos/s, minutes, and maxF / wF / Boundary
IoU@0.5 % of each validation split (blank where the epoch was not validated), with the photos seen
so far (epochs x steps x batch from the run's config.yaml) and the hours since the start of the leg
that ran the epoch (the log's elapsed_min: it starts again at 0 on each ``--resume``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import yaml

FIGURES = ("maxF", "wF", "BIoU@0.5%")


def _photos_per_epoch(run: Path) -> int:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    return int(cfg["train"]["steps_per_epoch"]) * int(cfg["train"]["batch_size"])


def table(run: Path, first: int = 1) -> str:
    rows = list(csv.DictReader((run / "log.csv").open()))
    splits = [c[: -len("/maxF")] for c in rows[0] if c.endswith("/maxF")] if rows else []
    per_epoch = _photos_per_epoch(run)
    head = ["epoch", "size", "photos/s", "min", "photos seen", "leg hours"] + [
        f"{s} {' / '.join(FIGURES)}" for s in splits]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        epoch = int(float(r["epoch"]))
        if epoch < first:
            continue
        cells = [str(epoch), r["size"], f"{float(r['img_per_s']):.1f}", f"{float(r['epoch_s']) / 60:.1f}",
                 f"{epoch * per_epoch:,}", f"{float(r['elapsed_min']) / 60:.2f}"]
        for s in splits:
            values = [r.get(f"{s}/{f}", "") for f in FIGURES]
            cells.append(" / ".join(f"{float(v):.4f}" for v in values) if all(values) else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run folder (with log.csv and config.yaml)")
    p.add_argument("--from", dest="first", type=int, default=1, metavar="EPOCH", help="first epoch to print")
    args = p.parse_args(argv)
    if not (args.run / "log.csv").is_file() or not (args.run / "config.yaml").is_file():
        print(f"run_table: {args.run} has no log.csv and config.yaml (is it a run folder?)", file=sys.stderr)
        return 2
    print(table(args.run, args.first))
    return 0


if __name__ == "__main__":
    sys.exit(main())
