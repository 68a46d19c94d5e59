"""What ``cleancut batch`` has to do: sources -> (source, output) rows, and which outputs exist.

Folders, glob patterns and files, local or URIs, expand by the rules of ``cleancut remove``
(:mod:`cleancut.jobs`). A list file names the images itself:

* ``.txt``: one path or URI per line (blank lines and lines starting with ``#`` are skipped);
* ``.csv`` / ``.parquet``: a ``path`` column.

Relative entries are relative to the list's folder. A list's images are mirrored below the
deepest folder they share (so ``s3://shop/a/1.jpg`` and ``s3://shop/b/1.jpg`` become ``a/1.png``
and ``b/1.png``). They are not checked here, so planning a list of a million URIs costs no
request per image: one that is missing or not an image becomes a ``failed`` row.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..errors import ConfigError
from ..jobs import Job, Pair, assign_targets, expand_inputs
from . import storage

LIST_SUFFIXES = (".txt", ".csv", ".parquet")


@dataclass
class Plan:
    dest: str  # the output folder: absolute local path or URI
    jobs: list[Job] = field(default_factory=list)  # sources and targets as location strings
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, why it gave nothing)


def is_list_file(item: str) -> bool:
    return os.path.splitext(item.rstrip("/"))[1].lower() in LIST_SUFFIXES


def make_plan(sources: list[str], dest: str, ext: str) -> Plan:
    """Expand ``sources`` into jobs writing below ``dest`` with suffix ``ext``."""
    dest = storage.local_path(dest)
    dest_tree = storage.tree_for(dest)
    dest_location = dest_tree.locate(dest)
    pairs: list[Pair] = []
    failures: list[tuple[str, str]] = []
    for item in map(storage.local_path, sources):
        try:
            if is_list_file(item):
                found, problem = _list_pairs(item)
            else:
                found, problems = expand_inputs([item], dest_location, False, storage.tree_for)
                problem = problems[0] if problems else None
        except OSError as exc:  # a store refusing the listing (permissions, network ...)
            found, problem = [], f"{item}: cannot list it ({exc.strerror or exc})"
        pairs += found
        if problem:
            failures.append((item, problem))
    jobs = assign_targets(pairs, dest_location, ext, dest_tree)
    for job in jobs:
        job.source, job.target = storage.location_text(job.source), storage.location_text(job.target)
    return Plan(storage.location_text(dest_location), jobs, failures)


def _list_pairs(item: str) -> tuple[list[Pair], str | None]:
    """The images a list file names, each with its path below their common folder."""
    tree = storage.tree_for(item)
    if tree.kind(item) != "file":
        return [], f"{item}: no such file or folder"
    location = storage.location_text(tree.locate(item))
    entries = [storage.local_path(entry) for entry in read_list(location)]
    if not entries:
        return [], f"{item}: the list names no images"
    folder = location.rsplit("/", 1)[0]
    locations = [storage.location_text(storage.tree_for(loc).locate(loc)) for loc in
                 (entry if storage.is_uri(entry) or os.path.isabs(entry) else f"{folder}/{entry}"
                  for entry in entries)]
    split = [loc.split("/") for loc in locations]
    common = _common_folder(split)
    pairs: list[Pair] = []
    for loc, parts in zip(locations, split):
        tree = storage.tree_for(loc)
        pairs.append((tree, tree.locate(loc), PurePosixPath(*parts[common:] if common else parts[-1:])))
    return pairs, None


def _common_folder(split: list[list[str]]) -> int:
    """How many leading components all paths share, not counting their file names."""
    if not split:
        return 0
    shortest = min(len(parts) for parts in split) - 1
    count = 0
    while count < shortest and all(parts[count] == split[0][count] for parts in split):
        count += 1
    return count


def read_list(location: str) -> list[str]:
    """The entries of a ``.txt``, ``.csv`` or ``.parquet`` list. Raises ConfigError for a list
    that has no ``path`` column or cannot be parsed, OSError when it cannot be read."""
    data = storage.read_bytes(location)
    suffix = os.path.splitext(location)[1].lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(data))
        except ValueError as exc:  # ArrowInvalid: not a Parquet file
            raise ConfigError(f"{location}: cannot read it as Parquet ({exc}).") from None
        names = table.column_names
        column = table.column("path").to_pylist() if "path" in names else None
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError(f"{location}: expected UTF-8 text, found binary data.") from None
        if suffix == ".txt":
            return [line.strip() for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
        reader = csv.DictReader(io.StringIO(text))
        names = reader.fieldnames or []
        column = [row["path"] for row in reader] if "path" in names else None
    if column is None:
        raise ConfigError(f"{location}: expected a 'path' column; found columns "
                          f"{', '.join(map(str, names)) or '(none)'}.")
    return [str(entry).strip() for entry in column if entry is not None and str(entry).strip()]
