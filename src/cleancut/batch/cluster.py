"""Ray for ``cleancut batch``: starting or joining a cluster, and the actor pool that does the work.

``--address`` (:func:`parse_address`): none starts a private Ray on this machine with its cores
(stopped when the job ends); ``auto`` joins the cluster that ``ray start`` runs on this machine;
``HOST:PORT`` joins the cluster whose head ``ray start --head`` printed that address;
``ray://HOST:PORT`` goes through Ray Client. Every node needs ``cleancut[scale]`` installed
(and the model, when ``--model`` is a path).

:func:`remove_all` streams the planned rows through Ray Data: ``map_batches`` over a fixed
pool of actors (``ActorPoolStrategy``), each a :class:`~cleancut.batch.worker.RemoveWorker`
holding one model. Ray Data dispatches blocks to idle actors, applies backpressure, restarts an
actor whose process or node died and retries its tasks on the others.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from contextlib import contextmanager
from typing import Any, Iterator

import pyarrow as pa

from .._deps import require
from ..errors import CleancutError, ConfigError

_HOST_PORT = re.compile(r"(?P<client>ray://)?(?P<host>[^:/\s]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})")
#: images per Ray task: small, so work spreads evenly and a lost node costs little to redo
BLOCK_ROWS = 16
#: how long the pool may take to start (an autoscaler may have to add nodes) before the job fails
ACTOR_START_TIMEOUT_S = 600


def parse_address(text: str | None) -> str:
    """``None`` -> ``"local"``; ``auto``, ``HOST:PORT`` and ``ray://HOST:PORT`` as they are."""
    if text is None or text == "local":
        return "local"
    text = text.strip()
    match = _HOST_PORT.fullmatch(text)
    if text == "auto" or (match and 0 < int(match["port"]) < 65536):
        return text
    raise ConfigError(f"--address expects auto, HOST:PORT or ray://HOST:PORT (the address "
                      f"`ray start --head` prints), got {text!r}.")


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """For a HOST:PORT address: fail fast, in one line, when nothing listens there (ray.init
    would retry for a minute, then raise a traceback-sized error)."""
    match = _HOST_PORT.fullmatch(address)
    if match is None:  # local or auto
        return
    host = match["host"].strip("[]")
    try:
        socket.create_connection((host, int(match["port"])), timeout=timeout_s).close()
    except OSError as exc:
        raise CleancutError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}). Start one with "
            "`ray start --head` and pass the address it prints, or drop --address to run on this "
            "machine alone.") from None


@contextmanager
def connected(address: str) -> Iterator[Any]:
    """Ray, initialised for ``address`` (see :func:`parse_address`); shut down (or, for a
    joined cluster, disconnected) on exit."""
    ray = require("ray", "cleancut batch")
    require("ray.data", "cleancut batch")
    # Workers print nothing we need: an image's problems come back in its row, a failure that
    # stops the job as one line (error_message). Their logs stay in Ray's session folder.
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address == "local":
        kwargs.update(num_cpus=os.cpu_count() or 1, include_dashboard=False)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private instance: nothing to report
        # its notice that token authentication is on (the safe default) is not for our users
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # Ray raises bare Exceptions too (e.g. "node timed out during startup")
        ray.shutdown()  # stops whatever part of a private instance did start
        if address == "local":
            raise CleancutError(f"cannot start Ray on this machine: {_first_line(exc)}") from None
        hint = ""
        if address != "auto" and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            # Ray sends its token to an explicit address only when told to (auto finds it itself)
            hint = (". If the cluster uses token authentication (Ray's default), set RAY_AUTH_MODE=token "
                    "and give its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token copied from the head)")
        raise CleancutError(f"cannot join the Ray cluster at {address}: {_first_line(exc)}{hint}") from None
    try:
        _configure_ray_data()
        yield ray
    finally:
        ray.shutdown()


def _configure_ray_data() -> None:
    """Start work once the whole pool is up (so the actors share it evenly and a cluster that
    cannot host the pool fails with a message instead of waiting forever); no Ray Data progress
    bars or execution banners: the command prints its own progress."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    logging.getLogger("ray.data.exceptions").setLevel(logging.CRITICAL)  # the stack trace of an
    # error we report in one line (error_message); Ray Data also writes it to its log file


def cluster_cpus() -> int:
    """CPUs of the cluster Ray is connected to."""
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def pool_size(images: int, actors: int) -> tuple[int, int]:
    """(actors, rows per block) for ``images``: blocks of :data:`BLOCK_ROWS`, smaller when that
    leaves actors idle, and no more actors than blocks (an actor costs a process and a model)."""
    block_rows = max(1, min(BLOCK_ROWS, math.ceil(images / actors)))
    return min(actors, math.ceil(images / block_rows)), block_rows


def remove_all(rows: pa.Table, options: dict, actors: int, threads: int, block_rows: int) -> Iterator[pa.Table]:
    """Process ``rows`` (``index``, ``source``, ``output``) on ``actors`` actors of ``threads``
    CPUs each; yields manifest rows as batches finish, in no particular order.

    The rows are cut into blocks of ``block_rows``; each block is one Ray task. Only these
    small tables and the returned rows go through the object store."""
    import ray.data

    from .worker import RemoveWorker

    blocks = [rows.slice(start, block_rows) for start in range(0, rows.num_rows, block_rows)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        RemoveWorker,
        fn_constructor_kwargs={"options": options},
        batch_size=None,  # a whole block per call
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
    )
    yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")


def ray_data_errors() -> tuple[type[BaseException], ...]:
    """Ray Data's exceptions that stop a job and are not ``RayError``s."""
    from ray.data.exceptions import ExecutionTimeoutError, SystemException

    return ExecutionTimeoutError, SystemException


_CLEANCUT_ERROR_LINE = re.compile(r"^cleancut\.errors\.\w+: (?P<message>.+)$", re.MULTILINE)


def error_message(exc: BaseException) -> str:
    """One line for an error that stopped the Ray job: the message of the cleancut error behind
    it (e.g. the model failing to load on a worker node: Ray passes it on only as text, inside
    its own error's message), else the first line of Ray's."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, CleancutError):
            return str(seen)
        seen = seen.__cause__
    found = _CLEANCUT_ERROR_LINE.findall(str(exc))
    if found:
        return found[-1]
    return (f"{type(exc).__name__}: {_first_line(exc)} (details in Ray's logs, "
            "/tmp/ray/session_latest/logs on the nodes)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
