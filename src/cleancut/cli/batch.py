"""``cleancut batch``: remove the backgrounds of many images on a Ray cluster, resumable, with a
Parquet manifest (``pip install 'cleancut[scale]'``). The work is in :mod:`cleancut.batch`.

Sources and output names follow ``cleancut remove`` (folders and patterns mirrored under DEST),
plus list files and URIs; existing outputs are skipped unless ``--overwrite``; each failure is
one line; the summary and the exit code (1 if anything failed, 2 for an invalid option) are
those of ``cleancut remove``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from ..errors import ConfigError
from ..jobs import summary_line
from ._options import add_options_to_parser, options_from_namespace

EPILOG = """examples:
  cleancut batch photos/ -o cutouts/                    # a private Ray on this machine's cores
  cleancut batch 's3://shop/shots/**/*.jpg' -o s3://shop/cutouts/ --address auto
  cleancut batch list.csv -o /shared/out --address 10.0.0.5:6379 --actors 16
  cleancut batch photos/ -o cutouts/                    # again: skips what is done

SOURCE: a folder (searched recursively), a glob pattern (quote it), an image, or a list file
(.txt: one path or URI per line; .csv / .parquet: a 'path' column), each local or a URI
(s3://, gs://, ...). DEST receives the results and manifest.parquet (one row per source:
source, output, status ok/skipped/failed, error, warning, ms, bytes, node).
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch", help="remove the backgrounds of many images on a Ray cluster, with a manifest",
        description="Remove the backgrounds of folders, patterns or lists of images, local or "
                    "in object storage, on a Ray cluster (or this machine), resumably, recording "
                    "what happened to each image in DEST/manifest.parquet.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="folder, glob pattern, image, or list file (.txt/.csv/.parquet); path or URI")
    parser.add_argument("-o", "--output", required=True, metavar="DEST",
                        help="output folder, path or URI (created if missing); also holds manifest.parquet")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo outputs that already exist (default: skip them, so a re-run resumes)")
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--address", metavar="ADDRESS",
                         help="Ray cluster to join: auto (the one `ray start` runs on this machine), "
                              "HOST:PORT or ray://HOST:PORT (default: start a private Ray on this "
                              "machine's cores)")
    cluster.add_argument("--actors", type=int, metavar="N",
                         help="workers, each holding one loaded model (default: the cluster's CPUs "
                              "divided by --threads-per-actor)")
    cluster.add_argument("--threads-per-actor", type=int, metavar="N",
                         help="ONNX Runtime threads, and Ray CPUs, of each worker (default: 1)")
    add_options_to_parser(parser, exclude=("threads",))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import io as cio
    from .._deps import require
    from ..api import Remover

    options = options_from_namespace(args)
    for flag, value in (("--actors", args.actors), ("--threads-per-actor", args.threads_per_actor)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} expects a number >= 1, got {value}.")
    if args.threads_per_actor is not None:
        options = options.replace(threads=args.threads_per_actor)
    dest = args.output
    if "-" in args.sources:
        raise ConfigError("cleancut batch reads no stdin ('-'); use cleancut remove - for one image.")
    if cio.format_from_suffix(dest):
        raise ConfigError(f"-o {dest} looks like an image file; cleancut batch writes into a folder "
                          "(DEST/<name>.<ext> and DEST/manifest.parquet). Use cleancut remove for one file.")
    # An unknown model, or a file that is not the spec's, fails here, once (the workers check
    # the model again when they load it).
    Remover(options.model, options.providers, options.threads).spec.verify()
    options = _absolute_paths(options)
    require("ray", "cleancut batch")
    require("pyarrow", "cleancut batch")
    from ..batch import run_batch

    reporter = _Reporter()
    started = time.perf_counter()
    try:
        outcome = run_batch(args.sources, dest, options, reporter, address=args.address,
                            actors=args.actors, overwrite=args.overwrite)
    finally:
        reporter.close()
    print(f"cleancut batch: manifest {outcome.manifest} ({outcome.written + outcome.skipped + outcome.failed} "
          f"rows; {outcome.nodes} node{'s' if outcome.nodes != 1 else ''} worked)", file=sys.stderr)
    print(summary_line("batch", outcome.written, outcome.skipped, outcome.failed,
                       time.perf_counter() - started), file=sys.stderr)
    return 1 if outcome.failed else 0


def _absolute_paths(options):
    """The options with the files they name as absolute paths: workers run in other folders, or
    on other machines (which need the same files at the same paths, e.g. a shared file system)."""
    from ..models import is_model_path

    changes = {}
    if options.bg_image is not None:
        changes["bg_image"] = os.path.abspath(options.bg_image)
    if options.model is not None and is_model_path(options.model):
        changes["model"] = os.path.abspath(options.model)
    return options.replace(**changes) if changes else options


class _Reporter:
    """Failure and warning lines on stderr, and a progress bar on a terminal."""

    def __init__(self):
        self._bar = None
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        from tqdm import tqdm

        with self._lock:
            tqdm.write(f"cleancut batch: {text}", file=sys.stderr)

    def failed(self, message: str) -> None:
        self._line(f"failed: {message}")

    def warning(self, message: str) -> None:
        self._line(f"warning: {message}")

    def started(self, total: int, actors: int, threads: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="img", file=sys.stderr, disable=None if total > 1 else True,
                         dynamic_ncols=True, desc=f"{actors} actor{'s' if actors != 1 else ''}")

    def advanced(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
