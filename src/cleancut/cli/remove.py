"""``cleancut remove``: remove the background of files, folders, glob patterns or stdin.

Where results go:

* ``-o FILE.png|.webp|.jpg`` with one input: that file (its suffix picks the format);
* ``-o FOLDER``: ``FOLDER/<stem>.<ext>``; a folder input's sub-folders are mirrored under it,
  as are the sub-folders below the fixed part of a glob pattern;
* no ``-o``: next to each input as ``<stem>.cutout.<ext>``. Scanning folders and patterns skips
  ``*.cutout.*`` files, so running the same command again does not process its own results;
* input ``-``: read stdin, write stdout (or ``-o FILE``).

Inputs are never overwritten; existing outputs are skipped unless ``--overwrite`` (so an
interrupted batch resumes where it stopped); every file is written atomically. A file that fails
is reported on one line and the others are still processed; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import warnings
from pathlib import Path

from ..errors import CleancutError, ConfigError
from ..jobs import LOCAL, Job, plan_jobs, run_one, summary_line
from ._options import add_options_to_parser, options_from_namespace
from ._notes import notes_to

EPILOG = """examples:
  cleancut remove photo.jpg                      # -> photo.cutout.png beside it
  cleancut remove photos/ -o cutouts/            # recursive, sub-folders mirrored
  cleancut remove 'shots/**/*.jpg' -o out/ --jobs 2
  cleancut remove photo.jpg -o photo.webp --mode color --bg-color white
  cat photo.jpg | cleancut remove - > photo.png
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "remove", help="remove the background of images",
        description="Remove the background of image files, folders (recursively), glob "
                    "patterns, or stdin ('-').",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image file, folder (searched recursively), glob pattern, or - for stdin")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="output file (one input; suffix .png/.webp/.jpg picks the format) or "
                             "folder (created if missing). Default: beside each input as "
                             "<stem>.cutout.<ext>, or stdout for -")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo outputs that already exist (default: skip them, so an interrupted "
                             "batch resumes)")
    parser.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                        help="images processed in parallel, sharing one loaded model (default: 1)")
    add_options_to_parser(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import io as cio

    options = options_from_namespace(args)
    if args.jobs < 1:
        raise ConfigError(f"--jobs expects a number >= 1, got {args.jobs}.")
    output = Path(args.output) if args.output else None
    single_file_output = bool(output and cio.format_from_suffix(output) and not output.is_dir())
    if single_file_output:
        suffix_format = cio.format_from_suffix(output)
        if "format" in vars(args) and options.format != suffix_format:
            raise ConfigError(f"--format {options.format} contradicts the output file {output} "
                              f"({suffix_format}); drop --format or change the suffix.")
        options = options.replace(format=suffix_format)
    if "-" in args.inputs:
        if len(args.inputs) > 1:
            raise ConfigError("'-' (stdin) must be the only input; got "
                              f"{len(args.inputs)} inputs.")
        return _run_stdin(options, output)

    if output is not None and not single_file_output and output.exists() and not output.is_dir():
        raise ConfigError(f"-o {output} is an existing file; expected a folder (or, for one input, "
                          "a .png/.webp/.jpg file name).")
    remover, options = _make_remover(options, args.jobs)
    ext = cio.FORMAT_SUFFIX[options.format]
    jobs, failures = plan_jobs(args.inputs, None if single_file_output else output, ext)
    if single_file_output:
        if len(jobs) + len(failures) != 1:
            raise ConfigError(
                f"-o {output} names one file, but the inputs give {len(jobs) + len(failures)} "
                "images; pass a folder to -o.")
        for job in jobs:
            job.target = output  # type: ignore[assignment]
            if LOCAL.same_file(job.source, job.target):
                job.problem = f"refusing to write the output over its input {job.source}"
    return _run_jobs(jobs, failures, remover, options, args.overwrite, args.jobs)


# ---------------------------------------------------------------- running


def _make_remover(options, jobs: int):
    """The shared Remover (an unknown model fails here, before any file is looked at) and the
    options to pass it."""
    from ..api import Remover

    threads = options.threads
    if threads is None and jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)  # avoid oversubscribing the cores
    remover = Remover(options.model, options.providers, threads)
    return remover, options.replace(threads=threads) if threads != options.threads else options


def _run_stdin(options, output: Path | None) -> int:
    from .. import io as cio

    if output is None and sys.stdout.isatty():
        raise ConfigError("refusing to write binary image data to a terminal; redirect stdout "
                          "(cleancut remove - > out.png) or pass -o FILE.")
    if output is not None and (cio.format_from_suffix(output) is None or output.is_dir()):
        raise ConfigError(f"with input '-', -o must name a file ending in .png, .webp or .jpg; "
                          f"got {output}.")
    remover, options = _make_remover(options, 1)
    data = sys.stdin.buffer.read()
    image = cio.load_image(data, max_pixels=options.max_pixels, name="<stdin>")
    with notes_to(lambda line: print(f"cleancut remove: {line}", file=sys.stderr)):
        result = cio.encode_image(remover.remove(image, options), options.format, options.quality)
    try:
        if output is None:
            sys.stdout.buffer.write(result)
            sys.stdout.buffer.flush()
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            cio.write_atomic(output, result)
    except OSError as exc:  # disk full, permissions, closed pipe ...
        raise CleancutError(f"cannot write {output or 'stdout'}: {exc.strerror or exc}") from None
    return 0


def _run_jobs(jobs: list[Job], failures: list[str], remover, options, overwrite: bool, n_jobs: int) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    failed = list(failures)
    skipped = 0
    todo: list[Job] = []
    for job in jobs:
        if job.problem:
            failed.append(f"{job.source}: {job.problem}")
        elif job.target.exists() and not overwrite:
            skipped += 1
        else:
            todo.append(job)
    for line in failed:  # known before any work: report them first
        print(f"cleancut remove: failed: {line}", file=sys.stderr)

    bar = tqdm(total=len(todo), unit="img", file=sys.stderr, disable=None if len(todo) > 1 else True,
               dynamic_ncols=True)
    lock = threading.Lock()

    def report(line: str) -> None:
        with lock:
            tqdm.write(f"cleancut remove: {line}", file=sys.stderr)

    previous_showwarning = warnings.showwarning
    warnings.showwarning = lambda message, *a, **k: report(f"warning: {message}")
    written = 0
    targets: list[Path] = []
    started = time.perf_counter()
    try:
        with notes_to(report):  # e.g. "preparing the alpha-matting kernels ..."
            if todo:
                remover.load()  # a broken model fails once, here, not once per file

                def work(job: Job):
                    return run_one(remover, options, job.source, job.target)

                with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                    futures = [pool.submit(work, job) for job in todo]
                    try:
                        for future in as_completed(futures):
                            result = future.result()
                            if result.ok:
                                written += 1
                                targets.append(Path(result.target))
                            else:
                                failed.append(result.error)
                                report(f"failed: {failed[-1]}")
                            bar.update(1)
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
    finally:
        bar.close()
        warnings.showwarning = previous_showwarning

    if targets:
        print(f"cleancut remove: {where_written(targets)}", file=sys.stderr)
    print(summary_line("remove", written, skipped, len(failed), time.perf_counter() - started),
          file=sys.stderr)
    return 1 if failed else 0


def where_written(targets: list[Path]) -> str:
    """Where the results went: the file, or the folder that holds them all."""
    if len(targets) == 1:
        return f"wrote {targets[0]}"
    folder = Path(os.path.commonpath([t.parent for t in targets]))
    return f"wrote {len(targets)} files under {folder}{os.sep}"
