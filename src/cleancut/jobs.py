"""From command-line inputs to (source, target) jobs, and one job run: the rules ``cleancut
remove`` and ``cleancut batch`` share, :func:`run_one` (remove, encode, atomic write, failure
classified) that both run for each image, and the summary line both print.

* A folder is searched recursively for images (hidden files and folders, and files without an
  image suffix, are skipped); its sub-folders are mirrored under the output folder.
* A glob pattern (``shots/**/*.jpg``) is mirrored below its fixed part (``shots/``).
* A file gives ``<output>/<stem>.<ext>``, or ``<stem>.cutout.<ext>`` beside it without an output
  folder; scanning then skips ``*.cutout.*`` files so a re-run does not process its own results.
* An output folder inside an input folder is not scanned.
* Inputs are never overwritten, and two sources never share an output: such jobs carry a
  ``problem`` and are reported as failures.

Where files live is behind :class:`Tree`: :data:`LOCAL` (``os`` and ``glob``, locations are
``pathlib.Path``) here; :mod:`cleancut.batch.storage` adds one for URIs (``s3://...``) whose
locations are strings. The rules above are written once, against that interface.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, Callable, Iterable, Protocol

CUTOUT_TAG = ".cutout"
GLOB_CHARS = frozenset("*?[")


@dataclass
class Job:
    source: Any  # a Path for local files, a URI string for remote ones
    target: Any
    problem: str | None = None  # set when the job must not run (reported as a failure)


def is_image_name(name: str, skip_cutouts: bool) -> bool:
    """Whether a file name is picked up when scanning folders or patterns."""
    from .io import IMAGE_SUFFIXES

    stem, suffix = os.path.splitext(name)
    if name.startswith(".") or suffix.lower() not in IMAGE_SUFFIXES:
        return False
    return not (skip_cutouts and stem.endswith(CUTOUT_TAG))


def glob_match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Path components against pattern components, as :func:`glob.glob` with
    ``recursive=True`` matches them: ``**`` stands for zero or more folders, other wildcards
    stay within one component."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(glob_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and glob_match(parts[1:], pattern[1:])


def fixed_parts(parts: Iterable[str]) -> list[str]:
    """The leading components of a glob pattern that hold no wildcard."""
    fixed = []
    for part in parts:
        if GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return fixed


class Tree(Protocol):
    """Where sources and outputs live. ``Loc`` is the tree's own location type."""

    def kind(self, item: str) -> str | None:
        """``"dir"``, ``"file"`` or None (nothing there) for an input as the user typed it."""

    def locate(self, item: str) -> Any:
        """The location of an input as the user typed it."""

    def scan(self, folder: Any, exclude: Any, skip_cutouts: bool) -> list[Any]:
        """Images below ``folder`` (recursive, sorted; hidden entries and anything inside the
        folder ``exclude`` skipped)."""

    def glob(self, pattern: str, exclude: Any, skip_cutouts: bool) -> tuple[list[Any], Any]:
        """Images matching ``pattern`` (sorted, same skipping as :meth:`scan`) and the location
        of the pattern's fixed part."""

    def relative(self, location: Any, folder: Any) -> PurePath | None:
        """``location`` relative to ``folder``; None when it is not inside it."""

    def name(self, location: Any) -> str: ...

    def join(self, folder: Any, relative: PurePath) -> Any: ...

    def beside(self, location: Any, name: str) -> Any:
        """The location named ``name`` in the folder of ``location``."""

    def key(self, location: Any) -> str:
        """A string that is equal for equal locations, across trees."""

    def same_file(self, a: Any, b: Any) -> bool: ...


class LocalTree:
    """This machine's file system; locations are :class:`pathlib.Path`."""

    def kind(self, item: str) -> str | None:
        path = Path(item)
        return "dir" if path.is_dir() else "file" if path.exists() else None

    def locate(self, item: str) -> Path:
        return Path(item)

    def scan(self, folder: Path, exclude: Any, skip_cutouts: bool) -> list[Path]:
        found = []
        for root, dirs, files in os.walk(folder):
            root_path = Path(root)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and not (exclude is not None and self._same_path(root_path / d, exclude)))
            found += [root_path / f for f in sorted(files) if is_image_name(f, skip_cutouts)]
        return found

    def glob(self, pattern: str, exclude: Any, skip_cutouts: bool) -> tuple[list[Path], Path]:
        found = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
        found = [p for p in found if p.is_file() and is_image_name(p.name, skip_cutouts)
                 and not (exclude is not None and self.relative(p, exclude) is not None)]
        fixed = fixed_parts(Path(pattern).parts)
        return found, Path(*fixed) if fixed else Path(".")

    def relative(self, location: Path, folder: Any) -> PurePath | None:
        try:
            return Path(os.path.abspath(location)).relative_to(os.path.abspath(folder))
        except ValueError:
            return None

    def name(self, location: Path) -> str:
        return location.name

    def join(self, folder: Path, relative: PurePath) -> Path:
        return Path(folder) / relative

    def beside(self, location: Path, name: str) -> Path:
        return location.with_name(name)

    def key(self, location: Any) -> str:
        return os.path.normcase(os.path.abspath(location))

    def same_file(self, a: Path, b: Path) -> bool:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return self._same_path(a.resolve(), b.resolve())

    @staticmethod
    def _same_path(a: Any, b: Any) -> bool:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


LOCAL = LocalTree()

#: (tree, source location, path of the output relative to the output folder)
Pair = tuple[Tree, Any, PurePath]


def expand_inputs(inputs: Iterable[str], output: Any, skip_cutouts: bool,
                  tree_for: Callable[[str], Tree] = lambda item: LOCAL) -> tuple[list[Pair], list[str]]:
    """Expand files, folders and glob patterns into pairs; the inputs that gave nothing (missing
    files, empty folders, patterns matching nothing) come back as failure messages."""
    pairs: list[Pair] = []
    failures: list[str] = []
    for item in inputs:
        tree = tree_for(item)
        kind = tree.kind(item)
        if kind == "dir":
            folder = tree.locate(item)
            found = tree.scan(folder, output, skip_cutouts)
            if not found:
                failures.append(f"{item}: no images found in this folder")
            pairs += [(tree, f, tree.relative(f, folder)) for f in found]
        elif kind == "file":
            location = tree.locate(item)
            pairs.append((tree, location, PurePosixPath(tree.name(location))))
        elif GLOB_CHARS & set(item):
            found, base = tree.glob(item, output, skip_cutouts)
            if not found:
                failures.append(f"{item}: no images match this pattern")
            pairs += [(tree, p, tree.relative(p, base) or PurePosixPath(tree.name(p))) for p in found]
        else:
            failures.append(f"{item}: no such file or folder")
    return pairs, failures


def assign_targets(pairs: Iterable[Pair], output: Any, ext: str, output_tree: Tree = LOCAL) -> list[Job]:
    """One job per distinct source: ``output/<relative folder>/<stem><ext>``, or beside the
    source as ``<stem>.cutout<ext>`` when ``output`` is None. Jobs that would overwrite an input
    or share an output with an earlier job get a ``problem``."""
    jobs: list[Job] = []
    trees: list[tuple[Tree, Tree]] = []  # (source tree, target tree) of each job
    source_keys: set[str] = set()
    for tree, source, relative in pairs:
        key = tree.key(source)
        if key in source_keys:
            continue  # the same file named twice (e.g. a file and its folder)
        source_keys.add(key)
        name = PurePosixPath(relative.name)
        if output is None:
            target, target_tree = tree.beside(source, name.stem + CUTOUT_TAG + ext), tree
        else:
            target, target_tree = output_tree.join(output, relative.parent / (name.stem + ext)), output_tree
        jobs.append(Job(source, target))
        trees.append((tree, target_tree))

    claimed: dict[str, Any] = {}
    for job, (tree, target_tree) in zip(jobs, trees):
        key = target_tree.key(job.target)
        if key in source_keys or (tree is target_tree and tree.same_file(job.source, job.target)):
            job.problem = f"refusing to write {job.target}: it is an input image, which is never overwritten"
        elif key in claimed:
            job.problem = (f"output {job.target} would also be written from {claimed[key]}; process "
                           "one of them separately or rename it")
        else:
            claimed[key] = job.source
    return jobs


def plan_jobs(inputs: list[str], output: Path | None, ext: str) -> tuple[list[Job], list[str]]:
    """Local inputs into (source, target) jobs; returns the jobs and the inputs that gave nothing
    as failure messages."""
    pairs, failures = expand_inputs(inputs, output, skip_cutouts=output is None)
    return assign_targets(pairs, output, ext), failures


@dataclass
class Result:
    """What became of one job: ``error`` is None when ``target`` was written (``bytes`` long)."""

    source: Any
    target: Any
    error: str | None = None
    bytes: int = 0
    ms: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def write_local(target: Any, data: bytes) -> None:
    """Write an output file atomically, creating its folder."""
    from .io import write_atomic

    Path(target).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)


def run_one(remover: Any, options: Any, source: Any, target: Any, *, read: Callable[[Any], Any] = lambda s: s,
            write: Callable[[Any, bytes], None] = write_local, capture_warnings: bool = False) -> Result:
    """Remove the background of ``source`` into ``target``: the one path of every image job.

    ``remover.remove(read(source), options)``, encoded in ``options.format`` / ``options.quality``,
    then ``write(target, data)``, which must be atomic (the default writes a local file through a
    temporary file and ``os.replace``). A bad image, an unreadable source or a failed write is
    a :class:`Result` with an ``error`` message, never an exception; anything else (a bug, Ctrl-C)
    propagates. ``capture_warnings`` records the warnings the job raised in ``Result.warnings``
    (single-threaded callers only: :func:`warnings.catch_warnings` is process-wide)."""
    from .errors import CleancutError
    from .io import encode_image

    result = Result(source, target)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) if capture_warnings else _no_capture() as caught:
        if capture_warnings:
            warnings.simplefilter("always")
        try:
            data = encode_image(remover.remove(read(source), options), options.format, options.quality)
        except CleancutError as exc:
            result.error = failure_message(source, exc)
        except FileNotFoundError:  # a remote source that is not there (local ones raise ImageError)
            result.error = f"{source}: no such file."
        except OSError as exc:  # reading a remote source
            result.error = f"{source}: cannot read the file ({exc.strerror or exc})."
        else:
            try:
                write(target, data)
                result.bytes = len(data)
            except OSError as exc:  # disk full, permissions, a store refusing the upload ...
                result.error = f"{source}: cannot write {target}: {exc.strerror or exc}"
    result.warnings = [str(w.message) for w in caught or ()]
    result.ms = (time.perf_counter() - started) * 1000.0
    return result


class _no_capture:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def failure_message(source: Any, exc: BaseException) -> str:
    """The one-line report of a source that failed: the error's message, led by the source
    unless the message already names it."""
    text = str(exc)
    return text if str(source) in text else f"{source}: {text}"


def summary_line(command: str, written: int, skipped: int, failed: int, seconds: float) -> str:
    """``cleancut <command>: N written, N skipped (...), N failed in Xs``: the last line of a run."""
    summary = f"cleancut {command}: {written} written, {skipped} skipped"
    if skipped:
        summary += " (output exists; --overwrite redoes them)"
    return summary + f", {failed} failed in {seconds:.1f}s"
