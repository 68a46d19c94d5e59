"""The driver of ``cleancut batch``: plan, skip what is done, run the rest on Ray, write the manifest.

1. The sources are expanded into (source, output) rows (:mod:`.plan`); inputs that gave nothing
   and jobs that must not run (an output over an input, two sources with one output) are
   ``failed`` rows at once.
2. ``DEST`` is listed once: a planned output that exists is complete (outputs are written
   atomically), so its row is ``skipped`` unless ``overwrite``. Temporary files that a killed
   worker left beside a planned output are deleted.
3. The remaining rows stream through the actor pool (:mod:`.cluster`); finished rows come back
   to the driver (paths and figures, never images), go to the journal and to ``report``.
4. The manifest (:mod:`.manifest`) is written, the journal cleared.

Killing the driver or losing nodes loses no finished output and, thanks to the journal, no
finished row: running the same command again skips every complete output and processes the rest.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import CleancutError
from ..io import FORMAT_SUFFIX, temp_name_target
from ..options import RemoveOptions
from . import cluster, manifest, storage
from .plan import make_plan


class Reporter(Protocol):
    def failed(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def started(self, total: int, actors: int, threads: int) -> None:
        """The pool is about to process ``total`` images."""

    def advanced(self, count: int) -> None:
        """``count`` more images are finished."""


@dataclass
class Outcome:
    written: int
    skipped: int
    failed: int
    manifest: str  # location of the manifest
    nodes: int  # Ray nodes that processed images in this run


def run_batch(sources: list[str], dest: str, options: RemoveOptions, report: Reporter, *,
              address: str | None = None, actors: int | None = None, overwrite: bool = False,
              journal_every_s: float = 10.0) -> Outcome:
    """Cut out every image of ``sources`` into the folder ``dest`` (a path or URI)."""
    address = cluster.parse_address(address)
    cluster.check_reachable(address)  # before listing what may be millions of sources
    threads = options.threads or 1
    options = options.replace(threads=threads)
    plan = make_plan(sources, dest, FORMAT_SUFFIX[options.format])
    if not storage.is_uri(plan.dest):
        try:
            os.makedirs(plan.dest, exist_ok=True)
        except OSError as exc:
            raise CleancutError(f"cannot create the output folder {plan.dest}: {exc.strerror or exc}") from None
    previous, journal_read = manifest.read_previous(plan.dest, report.warning)
    known, todo = _classify(plan, overwrite, report)
    journal = manifest.Journal(plan.dest, f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}",
                               journal_every_s)
    rows = [known]
    if todo.num_rows:
        rows += _run_pool(todo, journal, options, address, actors, threads, report)
    table = pa.concat_tables(rows)
    is_skipped = pc.equal(table["status"], "skipped")
    table = pa.concat_tables([table.filter(pc.invert(is_skipped)),
                              manifest.carry_forward(table.filter(is_skipped), previous)])
    location = manifest.write(plan.dest, table)
    manifest.clear_journal(plan.dest, journal_read + journal.written)
    counts = {c["values"]: c["counts"] for c in pc.value_counts(table["status"]).to_pylist()}
    worked = table.filter(pc.invert(is_skipped))["node"]
    return Outcome(counts.get("ok", 0), counts.get("skipped", 0), counts.get("failed", 0), location,
                   len(pc.unique(worked.drop_null())))


def _classify(plan, overwrite: bool, report: Reporter) -> tuple[pa.Table, pa.Table]:
    """(rows known before any work: failures and skipped outputs, rows to process)."""
    existing = dict(storage.files_below(plan.dest))
    _remove_stale_temps(existing, {job.target for job in plan.jobs})
    known: list[dict] = []
    todo: dict[str, list] = {"index": [], "source": [], "output": []}
    for index, (item, message) in enumerate(plan.failures):
        known.append({"source": item, "status": "failed", "error": message, "index": index})
    for index, job in enumerate(plan.jobs, start=len(plan.failures)):
        row = {"source": job.source, "output": job.target, "index": index}
        if job.problem:
            known.append({**row, "status": "failed", "error": f"{job.source}: {job.problem}"})
        elif job.target in existing and not overwrite:
            known.append({**row, "status": "skipped", "bytes": existing[job.target]})
        else:
            for key, value in row.items():
                todo[key].append(value)
    for row in known:  # known before any work: reported first, as by cleancut remove
        if row["status"] == "failed":
            report.failed(row["error"])
    return manifest.rows_table(known), pa.table(todo, schema=pa.schema(
        [("index", pa.int64()), ("source", pa.string()), ("output", pa.string())]))


def _remove_stale_temps(existing: dict[str, int], targets: set[str]) -> None:
    """Delete temporary files of :func:`cleancut.io.write_atomic` that a killed worker left
    beside an output of this plan (only local folders have them)."""
    for location in list(existing):
        folder, _, name = location.rpartition("/")
        target = temp_name_target(name)
        if target and f"{folder}/{target}" in targets:
            storage.delete(location)
            del existing[location]


def _run_pool(todo: pa.Table, journal: manifest.Journal, options: RemoveOptions, address: str,
              actors: int | None, threads: int, report: Reporter) -> list[pa.Table]:
    """Process ``todo`` on the cluster; returns the finished rows (also kept in ``journal``)."""
    finished: list[pa.Table] = []
    with cluster.connected(address) as ray:
        cpus = cluster.cluster_cpus()
        actors, block_rows = cluster.pool_size(todo.num_rows, actors or max(1, cpus // threads))
        if actors * threads > cpus:
            report.warning(f"{actors} actors x {threads} threads need {actors * threads} CPUs, the "
                           f"cluster has {cpus}; the job waits up to {cluster.ACTOR_START_TIMEOUT_S // 60} "
                           "minutes for more (an autoscaler may add nodes)")
        report.started(todo.num_rows, actors, threads)
        try:
            for batch in cluster.remove_all(todo, options.to_mapping(), actors, threads, block_rows):
                journal.add(batch)
                finished.append(batch)
                _report_rows(batch, report)
                report.advanced(batch.num_rows)
        except (ray.exceptions.RayError, *cluster.ray_data_errors()) as exc:
            raise CleancutError(
                f"the Ray job stopped: {cluster.error_message(exc).rstrip('.')}. Finished outputs are kept; run "
                "the same command again to do the rest.") from None
        finally:
            journal.flush()
    return finished


def _report_rows(batch: pa.Table, report: Reporter) -> None:
    for status, error, warning in zip(batch["status"].to_pylist(), batch["error"].to_pylist(),
                                      batch["warning"].to_pylist()):
        if warning:
            report.warning(warning)
        if status == "failed":
            report.failed(error)
