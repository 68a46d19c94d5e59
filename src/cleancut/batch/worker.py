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

import time
import warnings
from typing import Any

import pyarrow as pa

from .. import io as cio
from ..errors import CleancutError
from ..jobs import failure_message
from ..options import RemoveOptions, options_from_mapping
from . import manifest, storage


def process_one(remover: Any, options: RemoveOptions, source: str, output: str) -> dict:
    """Cut out ``source`` into ``output``; returns its manifest row (without ``node``/``index``)."""
    row: dict[str, Any] = {"source": source, "output": output, "status": "ok"}
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = cio.encode_image(remover.remove(storage.open_source(source), options),
                                    options.format, options.quality)
        except CleancutError as exc:
            row.update(status="failed", error=failure_message(source, exc))
        except FileNotFoundError:  # a remote source that is not there (local ones: ImageError)
            row.update(status="failed", error=f"{source}: no such file.")
        except OSError as exc:  # reading a remote source
            row.update(status="failed", error=f"{source}: cannot read the file ({exc.strerror or exc}).")
        else:
            try:
                storage.write_atomic(output, data)
                row["bytes"] = len(data)
            except OSError as exc:  # disk full, permissions, the store refusing the upload ...
                row.update(status="failed", error=f"{source}: cannot write {output}: {exc.strerror or exc}")
    if caught:
        row["warning"] = " ".join(str(w.message) for w in caught)
    row["ms"] = (time.perf_counter() - started) * 1000.0
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
