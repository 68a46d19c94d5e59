"""The worker side of ``cleancut batch``: what one Ray actor does with its share of the images.

Ray Data creates one :class:`RemoveWorker` per actor of the pool; it loads one
:class:`cleancut.Remover` (the class ``cleancut remove --jobs`` shares between its threads) once,
then turns each batch of ``(index, source, output)`` rows into manifest rows. Reading, decoding,
the model, post-processing, encoding and the atomic write all happen here, so only paths and
manifest rows travel through Ray's object store, never image data, and the driver never holds
an image. A bad image is a ``failed`` row, as in ``cleancut remove``; only a broken model or
options stop the job (in the constructor, before any image).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..jobs import run_one
from ..options import RemoveOptions, options_from_mapping
from . import manifest, storage


def process_one(remover: Any, options: RemoveOptions, source: str, output: str) -> dict:
    """Cut out ``source`` into ``output`` (:func:`cleancut.jobs.run_one`, reading and writing
    local paths or URIs); returns its manifest row (without ``node``/``index``)."""
    result = run_one(remover, options, source, output, read=storage.open_source, write=storage.write_atomic,
                     capture_warnings=True)
    row: dict[str, Any] = {"source": source, "output": output, "status": "ok" if result.ok else "failed"}
    if result.ok:
        row["bytes"] = result.bytes
    else:
        row["error"] = result.error
    if result.warnings:
        row["warning"] = " ".join(result.warnings)
    row["ms"] = result.ms
    return row


class RemoveWorker:
    """A Ray Data callable class: one per actor, holding one loaded model."""

    def __init__(self, options: dict):
        import ray

        from ..api import Remover

        options = options_from_mapping(options)
        self.remover = Remover(options.model, options.providers, options.threads)
        self.remover.load()  # a broken model fails here, once, not once per image
        self.options = options.replace(model=None)  # the Remover holds it: no look-up per image
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for index, source, output in zip(batch["index"].to_pylist(), batch["source"].to_pylist(),
                                         batch["output"].to_pylist()):
            row = process_one(self.remover, self.options, source, output)
            rows.append({**row, "node": self.node, "index": index})
        return manifest.rows_table(rows)
