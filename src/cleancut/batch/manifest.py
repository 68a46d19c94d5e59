"""The manifest of a ``cleancut batch`` run, and the journal that keeps it across a killed driver.

``DEST/manifest.parquet`` has one row per source of the latest run, in the order of the plan:

=========  =======  ==========================================================================
column     type     meaning
=========  =======  ==========================================================================
source     string   the image (absolute local path or URI); for an input that gave nothing
                    (missing file, empty folder, pattern matching nothing) the input as typed
output     string   its result (null when none was planned)
status     string   ``ok`` (written by this run), ``skipped`` (the output existed), ``failed``
error      string   why it failed, one line (null otherwise)
warning    string   what was noticed while reading it, e.g. an animated image (else null)
ms         float64  milliseconds the worker spent on it: read, model, post-processing, encode,
                    write
bytes      int64    size of the output
node       string   id of the Ray node whose worker did it
=========  =======  ==========================================================================

A ``skipped`` row keeps the ``ms`` and ``node`` of the run that wrote its output, when that run's
manifest or journal is still in ``DEST``.

While a job runs, the driver adds every finished row to the journal: small Parquet files in
``DEST/.cleancut-batch/journal/``, each written atomically, at most ``every_s`` seconds apart.
A killed driver leaves its journal behind; the next run folds it into its manifest, then
deletes it.
"""

from __future__ import annotations

import time
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import storage

MANIFEST_NAME = "manifest.parquet"
JOURNAL_FOLDER = ".cleancut-batch/journal"
SCHEMA = pa.schema([
    ("source", pa.string()),
    ("output", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("warning", pa.string()),
    ("ms", pa.float64()),
    ("bytes", pa.int64()),
    ("node", pa.string()),
])
#: the manifest's columns plus the row's position in the plan, while the job runs
ROW_SCHEMA = SCHEMA.append(pa.field("index", pa.int64()))


def rows_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts with :data:`ROW_SCHEMA`'s keys; missing ones are null) as a table."""
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def from_bytes(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def manifest_location(dest: str) -> str:
    return f"{dest}/{MANIFEST_NAME}"


class Journal:
    """The rows finished so far, flushed to ``DEST/.cleancut-batch/journal/<run>-NNNNNN.parquet``."""

    def __init__(self, dest: str, run_id: str, every_s: float = 10.0):
        self.folder = f"{dest}/{JOURNAL_FOLDER}"
        self.run_id = run_id
        self.every_s = every_s
        self.written: list[str] = []
        self._pending: list[pa.Table] = []
        self._last_flush = time.monotonic()

    def add(self, rows: pa.Table) -> None:
        self._pending.append(rows.select(SCHEMA.names))
        if time.monotonic() - self._last_flush >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        location = f"{self.folder}/{self.run_id}-{len(self.written):06d}.parquet"
        storage.write_atomic(location, to_bytes(pa.concat_tables(self._pending)))
        self.written.append(location)
        self._pending = []


def read_previous(dest: str, warn: Callable[[str], None]) -> tuple[pa.Table | None, list[str]]:
    """The rows of earlier runs into ``dest`` (its manifest, then any journal left by a killed
    driver, newer last) and the journal files read. Unreadable files are reported through
    ``warn`` and left out."""
    journal = [loc for loc, _size in storage.files_below(f"{dest}/{JOURNAL_FOLDER}")
               if loc.endswith(".parquet")]
    manifest = manifest_location(dest)
    has_manifest = storage.size(manifest) is not None
    tables = []
    for location in ([manifest] if has_manifest else []) + journal:
        try:
            tables.append(from_bytes(storage.read_bytes(location)).select(SCHEMA.names).cast(SCHEMA))
        except (OSError, ValueError, KeyError) as exc:  # ArrowInvalid is a ValueError
            warn(f"cannot read the earlier record {location} ({exc}); its rows are left out")
    return (pa.concat_tables(tables) if tables else None), journal


def carry_forward(skipped: pa.Table, previous: pa.Table | None) -> pa.Table:
    """``skipped`` rows with the ``ms`` and ``node`` of the latest earlier ``ok`` row of the same
    source and output (row order is not kept: the caller sorts by ``index``)."""
    if previous is None or previous.num_rows == 0 or skipped.num_rows == 0:
        return skipped
    done = previous.filter(pc.equal(previous["status"], "ok"))
    latest = pa.TableGroupBy(done, ["source", "output"], use_threads=False).aggregate(
        [("ms", "last"), ("node", "last")]).rename_columns(["source", "output", "ms", "node"])
    joined = skipped.drop_columns(["ms", "node"]).join(latest, keys=["source", "output"],
                                                       join_type="left outer")
    return joined.select(ROW_SCHEMA.names).cast(ROW_SCHEMA)


def write(dest: str, rows: pa.Table) -> str:
    """Write the manifest (rows sorted by ``index``, which is dropped); returns its location."""
    ordered = rows.sort_by("index").select(SCHEMA.names)
    location = manifest_location(dest)
    storage.write_atomic(location, to_bytes(ordered))
    return location


def clear_journal(dest: str, locations: list[str]) -> None:
    """Delete journal files (their rows are in the manifest now), and the journal's folders once
    empty (object stores have no folders to remove)."""
    for location in locations:
        storage.delete(location)
    storage.remove_empty_folders(f"{dest}/{JOURNAL_FOLDER}", up_to=dest)
