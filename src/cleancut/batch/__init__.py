"""Batch background removal past one machine: Ray Data actors, a Parquet manifest, resume.

``cleancut batch SOURCE... -o DEST`` (:mod:`cleancut.cli.batch`) and :func:`run_batch` from
Python. Needs ``pip install 'cleancut[scale]'`` (Ray Data, pyarrow). Modules:

* :mod:`.plan`     sources (folders, patterns, files, list files; paths or URIs) -> rows
* :mod:`.storage`  local paths and pyarrow file systems (S3, GCS, ...), atomic writes
* :mod:`.cluster`  starting or joining Ray; the actor pool (Ray Data ``map_batches``)
* :mod:`.worker`   what one actor does: one ``Remover``, rows in, manifest rows out
* :mod:`.manifest` the manifest, and the journal that survives a killed driver
* :mod:`.driver`   plan, skip what is complete, run, record
"""

from __future__ import annotations

from .driver import Outcome, Reporter, run_batch

__all__ = ["run_batch", "Outcome", "Reporter"]
