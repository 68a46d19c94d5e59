"""The shared state of one server app: the Remover, the worker pool, the admission counters and
the byte budget of request bodies, and the work one request hands to a worker thread."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from .. import io as cio
from ..api import Remover
from ..errors import (CleancutError, ConfigError, ImageError, ImageTooLargeError, MissingDependencyError,
                      ModelError)
from ..options import RemoveOptions
from .errors import ApiError
from .options import api_text
from .settings import ServerSettings

log = logging.getLogger("cleancut.server")


@dataclass
class RemoveTask:
    """One request's work, run in a worker thread: the photo's bytes and the options (uploaded
    pictures, such as a background, are in the options as decoded images)."""

    data: bytes
    name: str  # how messages call the photo
    options: RemoveOptions


class ByteBudget:
    """The bytes of request bodies held at once, for one kind of upload: counted as they arrive
    (not as declared), so a client that stalls holds only what it sent. Past ``limit`` the
    request that brought the excess is answered 503. Touched on the event loop only."""

    def __init__(self, limit: int, what: str):
        self.limit = limit
        self.what = what
        self.used = 0
        self.bodies = 0  # bodies being received or held

    @contextlib.contextmanager
    def hold(self) -> Iterator["Held"]:
        """A body's share of the budget, released when the request is answered."""
        held = Held(self)
        self.bodies += 1
        try:
            yield held
        finally:
            self.bodies -= 1
            self.used -= held.bytes


class Held:
    """The bytes one request body holds of a :class:`ByteBudget`."""

    def __init__(self, budget: ByteBudget):
        self.budget = budget
        self.bytes = 0

    def add(self, n: int) -> None:
        budget = self.budget
        self.bytes += n
        budget.used += n
        if budget.used > budget.limit:
            raise ApiError(
                503, f"the server is busy: the {self.budget.what} being received or waiting hold "
                     f"{budget.used} bytes, above its limit of {budget.limit}; retry in a moment.",
                "uploads_full", headers={"Retry-After": "2"}, limit_bytes=budget.limit, retry_after=2)


class ServerState:
    """The shared Remover, the worker pool and the admission counters of one app."""

    def __init__(self, settings: ServerSettings, remover: Remover):
        self.settings = settings
        self.remover = remover
        # requests start from the library defaults plus the operator's pixel cap; model,
        # providers and threads are the Remover's own
        self.base = RemoveOptions(max_pixels=settings.options.max_pixels)
        self.pool: Any = None
        # photo bodies in memory: as much as a full queue of the largest uploads
        self.uploads = ByteBudget(settings.capacity * settings.max_upload_bytes, "photo uploads")
        self.admitted = 0  # touched on the event loop only (requests and stream frames)
        self.stream_frames = 0  # stream frames admitted (at most ``workers``)
        self.streams = 0  # WebSocket connections open
        self._lock = threading.Lock()  # for the counters the workers update
        self.running = 0
        self.completed = 0
        self.avg_seconds = 1.0  # moving average of a job's time, for Retry-After

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.remover.load()  # a broken model fails here, before the first request
        if self.settings.warm_up:  # first-use costs paid now, before the server reports ready
            from ..refine import matting_available

            matting = matting_available()
            log.info("warming up: one inference%s ...", " and alpha matting (the first start on a machine "
                     "compiles its kernels, about a minute)" if matting else "")
            seconds = self.remover.warm_up(alpha_matting=matting)
            log.info("warm-up done in %.1f s (%s)", sum(seconds.values()),
                     ", ".join(f"{step} {s:.2f} s" for step, s in seconds.items()))
        self.pool = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="cleancut-worker")
        # start every worker thread now: left alone, the pool creates them one by one as jobs first
        # overlap, so the server's thread count would still be rising long after the start
        started = threading.Barrier(self.settings.workers)
        for future in [self.pool.submit(started.wait, 30) for _ in range(self.settings.workers)]:
            future.result()

    def stop(self) -> None:
        """Refuse new work and finish every job already submitted."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # ------------------------------------------------------------ admission

    @property
    def queued(self) -> int:
        return max(0, self.admitted - self.running)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead divided by the workers."""
        ahead = max(1, self.admitted - self.settings.workers + 1)
        return max(1, math.ceil(self.avg_seconds * ahead / self.settings.workers))

    def check_room(self) -> None:
        """503 when no request can be admitted now (full, starting or stopping): called before a
        body is read, so that a busy server does not read it, and again after."""
        settings = self.settings
        if self.pool is None:
            raise ApiError(503, "the server is starting or shutting down; retry in a moment.",
                           "not_ready", headers={"Retry-After": "1"})
        if self.admitted >= settings.capacity:
            wait = self.retry_after()
            raise ApiError(
                503, f"the server is busy: {self.admitted} requests are being processed or waiting "
                     f"({settings.workers} workers + a queue of {settings.max_queue}); retry in "
                     f"{wait} s.", "queue_full", headers={"Retry-After": str(wait)},
                workers=settings.workers, max_queue=settings.max_queue, retry_after=wait)

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """A request's place among the ``workers + max_queue`` admitted at once, from when its
        body has arrived until its answer is ready."""
        self.check_room()
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    @contextlib.contextmanager
    def frame_slot(self) -> Iterator[bool]:
        """Admission for one live frame: yields False (the frame is to be dropped) when the server
        is full or ``workers`` stream frames are already admitted, so that streams, which drop
        rather than queue, never fill the queue that requests wait in."""
        ok = (self.pool is not None and self.admitted < self.settings.capacity
              and self.stream_frames < self.settings.workers)
        if ok:
            self.admitted += 1
            self.stream_frames += 1
        try:
            yield ok
        finally:
            if ok:
                self.admitted -= 1
                self.stream_frames -= 1

    # ------------------------------------------------------------ work (worker threads)

    def run(self, job: RemoveTask) -> tuple[bytes, float]:
        with self._lock:
            self.running += 1
        started = time.perf_counter()
        try:
            return self._process(job), time.perf_counter() - started
        finally:
            seconds = time.perf_counter() - started
            with self._lock:
                self.running -= 1
                self.completed += 1
                self.avg_seconds = 0.8 * self.avg_seconds + 0.2 * seconds

    def _process(self, job: RemoveTask) -> bytes:
        try:
            source = io.BytesIO(job.data)
            source.name = job.name  # how cleancut's messages name the source
            image = self.remover.remove(source, job.options)
            return cio.encode_image(image, job.options.format, job.options.quality)
        except CleancutError as exc:
            raise api_error(exc, job.name) from exc


def api_error(exc: CleancutError, name: str) -> ApiError:
    """The HTTP answer to a cleancut error met while processing the upload called ``name``."""
    message = str(exc)
    if isinstance(exc, ImageTooLargeError):
        return ApiError(413, message, "too_many_pixels")
    if isinstance(exc, MissingDependencyError):
        return ApiError(501, f"this server cannot do that: {message}", "missing_dependency", module=exc.module)
    if isinstance(exc, ImageError):
        return ApiError(400, message, "corrupt_image")
    if isinstance(exc, ConfigError):
        return ApiError(422, api_text(message), "invalid_option")
    # server-side failures: the details (which may name server files) go to the log only
    if isinstance(exc, ModelError):
        log.error("model failure on %s: %s", name, message)
        return ApiError(500, "the model failed on this image; the server log has the details.", "model_error")
    log.error("unexpected cleancut error on %s: %s", name, message)
    return ApiError(500, "internal server error; the server log has the details.", "internal_error")
