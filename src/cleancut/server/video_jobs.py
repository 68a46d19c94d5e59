"""Clips over HTTP: ``POST /api/video`` starts a job, ``GET /api/video/{id}`` (or its
``/events``, server-sent events) follows it, ``GET /api/video/{id}/result`` downloads the result
and ``DELETE /api/video/{id}`` cancels it (or removes a finished one).

A job is :func:`cleancut.video.remove_video` (what ``cleancut video`` runs) on the uploaded clip,
with the same options as ``POST /api/remove`` plus ``output`` (``webm``: VP9 with alpha, the
default; ``mov``; ``mp4``) and ``smooth``. Resources are bounded:

* the upload is streamed to disk with a byte cap (``--max-video-mb``; 413 past it), within the
  read timeouts (408 for a client that stalls), and counted as it arrives in a budget of
  ``(max_video_jobs + 1) x --max-video-mb`` for all clips being received (503 past it);
* the clip must be a video FFmpeg reads (415 otherwise), at most ``--max-video-pixels`` per frame
  and at most ``--max-video-seconds`` long (413), its length taken from the container's metadata
  and from its packets counted (so a raw stream that declares no length is measured too), and at
  most 60 frames per second of that (:data:`MAX_FRAME_RATE`); while the job runs, every frame is
  checked against the pixel cap before it is decoded, and the frames are counted against the cap;
* a job takes one of the ``--max-video-jobs`` slots once its upload has arrived and been checked
  (a client that stalls holds none); when all are taken the next upload gets 503 with
  ``Retry-After`` (at once, without being read);
* every job has its own temporary folder. The upload is deleted when the job ends; the folder
  goes when the job fails or is cancelled, when the client vanishes during the upload, when a
  finished job is deleted, and at the latest ``--video-ttl`` seconds after the job ended (a
  sweep on every call to these endpoints and when the server stops).

A clip that turns out truncated keeps what decoded: the job is ``done`` with a ``warning``
saying what was missing. Messages never name the server's files.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from ..errors import CleancutError, ConfigError, ImageTooLargeError, VideoError, VideoTruncatedError
from ..options import RemoveOptions, options_from_mapping
from .errors import ApiError, shown
from .options import api_text, check_names
from .routes import ERROR_RESPONSES, get_state, safe_stem
from .state import ByteBudget, Held, ServerState, api_error
from .uploads import BodyTooLarge, PHOTO_FIELD, capped_stream, check_content_length, client_gone, too_large

log = logging.getLogger("cleancut.server")
OUTPUTS = {"webm": "video/webm", "mov": "video/quicktime", "mp4": "video/mp4"}
JOB_PARAMS = {"output", "smooth"}
_FINISHED = ("done", "failed", "cancelled")
#: a clip may hold at most this many frames per second of ``--max-video-seconds``
MAX_FRAME_RATE = 60


class _Cancelled(Exception):
    """Raised in a job's frame callback to stop it."""


class _TooLong(Exception):
    """Raised in a job's frame callback when the clip holds more frames than its cap."""


@dataclass
class VideoJob:
    id: str
    folder: Path
    options: RemoveOptions
    output: str
    smooth: bool
    status: str = "queued"  # queued | running | done | failed | cancelled
    frames: int = 0
    total: int | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    ended: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    result: Path | None = None
    warning: str | None = None  # what was missing from a truncated clip
    name: str = "clip"  # the upload's file name, made safe: the result downloads as NAME.MODE.OUTPUT

    def public(self) -> dict[str, Any]:
        percent = round(100.0 * self.frames / self.total, 1) if self.total else None
        body = {"id": self.id, "status": self.status, "frames": self.frames, "total_frames": self.total,
                "percent": 100.0 if self.status == "done" else percent, "output": self.output,
                "links": {"self": f"/api/video/{self.id}", "events": f"/api/video/{self.id}/events"}}
        if self.status == "done":
            body["links"]["result"] = f"/api/video/{self.id}/result"
        if self.error:
            body["error"] = self.error
        if self.warning:
            body["warning"] = self.warning
        return body


class VideoJobs:
    """The jobs of one app, their worker threads and their folders."""

    def __init__(self, state: ServerState):
        self.state = state
        self.settings = state.settings
        self.jobs: dict[str, VideoJob] = {}
        self.root = Path(tempfile.mkdtemp(prefix="cleancut-video-"))
        self.pool = ThreadPoolExecutor(max_workers=self.settings.max_video_jobs, thread_name_prefix="cleancut-video")
        self._lock = threading.Lock()
        self.active = 0  # jobs started and not ended: the slots taken (a cancelled job holds its slot until it stops)
        # clips being received, on disk: room for one more than the jobs that can run
        self.uploads = ByteBudget((self.settings.max_video_jobs + 1) * self.settings.max_video_bytes, "clip uploads")
        self.max_frames = int(self.settings.max_video_seconds * MAX_FRAME_RATE)

    # ------------------------------------------------------------ lifecycle

    def running(self) -> int:
        return self.active

    def check_room(self) -> None:
        """503 when every job slot is taken."""
        if self.active >= self.settings.max_video_jobs:
            wait = 10
            raise ApiError(503, f"{self.active} video job(s) are running, the most this server runs at once; "
                                f"retry in {wait} s.", "video_jobs_full", headers={"Retry-After": str(wait)},
                           max_video_jobs=self.settings.max_video_jobs)

    def sweep(self) -> None:
        """Forget the jobs that ended more than the TTL ago, and delete their folders."""
        now = time.time()
        with self._lock:
            expired = [j for j in self.jobs.values() if j.ended and now - j.ended > self.settings.video_ttl_seconds]
            for job in expired:
                del self.jobs[job.id]
        for job in expired:
            shutil.rmtree(job.folder, ignore_errors=True)

    def stop(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()
        self.pool.shutdown(wait=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def get(self, job_id: str) -> VideoJob:
        self.sweep()
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no video job {shown(job_id, 40)} (unknown, deleted, or expired after "
                                f"{self.settings.video_ttl_seconds:g} s)", "no_such_job")
        return job

    # ------------------------------------------------------------ a job

    def new(self, options: RemoveOptions, output: str, smooth: bool) -> VideoJob:
        """A job and its folder, for an upload being received: not yet listed, nor holding a slot."""
        self.sweep()
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir()
        return VideoJob(job_id, folder, options, output, smooth)

    def forget(self, job: VideoJob) -> None:
        with self._lock:
            self.jobs.pop(job.id, None)

    def discard(self, job: VideoJob) -> None:
        self.forget(job)
        shutil.rmtree(job.folder, ignore_errors=True)

    def _public(self, text: str) -> str:
        """A message about a clip without the server's paths in it."""
        text = re.sub(re.escape(str(self.root)) + r"/[0-9a-f]+/(upload|result\.\w+)",
                      lambda m: "the clip" if m.group(1) == "upload" else "the result", text)
        return text.replace(str(self.root), "a temporary folder")

    def check_clip(self, job: VideoJob, upload: Path) -> None:
        """415 for what is not a video, 413 for a clip too long (by its metadata or its packets
        counted) or too large per frame."""
        from ..video.decode import VideoSource

        settings = self.settings
        try:
            with VideoSource(upload) as source:
                width, height = source.width, source.height
                if width * height <= settings.frame_pixels:  # else refused below, without reading it all
                    frames, counted = source.measure()
                    seconds = max(source.expected_seconds or 0.0, counted)
                    job.total = source.expected_frames or frames
        except VideoError as exc:
            raise ApiError(415, f"{self._public(str(exc))} Send a video file (MP4, MOV, WebM, MKV, AVI, GIF).",
                           "not_a_video") from None
        except CleancutError as exc:  # PyAV missing: 501
            raise api_error(exc, "the clip") from None
        if width * height > settings.frame_pixels:
            raise frames_too_large(settings.frame_pixels, f"{width}x{height}")
        if seconds > settings.max_video_seconds or frames > self.max_frames:
            raise ApiError(413, f"the clip is {seconds:.1f} s long and holds {frames} frames; this server takes "
                                f"clips of at most {settings.max_video_seconds:g} s and {self.max_frames} frames "
                                f"(--max-video-seconds, at most {MAX_FRAME_RATE} frames/s).", "video_too_long",
                           limit_seconds=settings.max_video_seconds, limit_frames=self.max_frames)

    def start(self, job: VideoJob, upload: Path) -> None:
        """Take a slot for the checked job (503 when none is left) and run it."""
        self.check_room()
        with self._lock:
            self.active += 1
            self.jobs[job.id] = job
        self.pool.submit(self._run, job, upload)

    def _run(self, job: VideoJob, upload: Path) -> None:
        job.status = "running"
        status, result, error, warning = "failed", None, None, None
        try:
            status, result, error, warning = self._process(job, upload)
        finally:
            upload.unlink(missing_ok=True)
            if status != "done":
                shutil.rmtree(job.folder, ignore_errors=True)
            if status == "cancelled":  # deleted by its client: gone, not kept as a job without a result
                self.forget(job)
            # PyAV leaves reference cycles behind (a frame and its side data, an error's traceback and
            # the stages' frames), which hold decoders and their FFmpeg threads: freed now, not at
            # whatever later collection, so that a server's threads come back to where they were
            gc.collect()
            with self._lock:
                self.active -= 1
            # published once its slot is free: a client that sees "done" can start the next clip at once
            job.result, job.error, job.warning, job.status = result, error, warning, status
            job.ended = time.time()  # its time to live starts when its client can see the end

    def _process(self, job: VideoJob, upload: Path) -> tuple[str, Path | None, str | None, str | None]:
        """Run the job: ``(status, result, error, warning)``."""
        from ..video.remove import remove_video

        target = job.folder / f"result.{job.output}"

        def on_frame(done: int, total: int | None) -> None:
            job.frames, job.total = done, total or job.total
            if job.cancel.is_set():
                raise _Cancelled
            if done > self.max_frames:
                raise _TooLong

        try:
            remove_video(upload, target, job.options, smooth=job.smooth, audio=True, on_frame=on_frame,
                         remover=self.state.remover)
            return "done", target, None, None
        except _Cancelled:
            return "cancelled", None, None, None
        except _TooLong:
            return "failed", None, (
                f"the clip holds more than {self.max_frames} frames, the most this server takes "
                f"({self.settings.max_video_seconds:g} s at {MAX_FRAME_RATE} frames/s); send a shorter clip."), None
        except VideoTruncatedError as exc:  # the frames that decoded were written: a result, with a warning
            return "done", target, None, self._public(str(exc))
        except ImageTooLargeError:
            return "failed", None, frames_too_large(self.settings.frame_pixels).message, None
        except VideoError as exc:  # the clip's fault (damaged past its first frames): said as it is
            return "failed", None, self._public(str(exc)), None
        except CleancutError as exc:
            return "failed", None, self._public(api_error(exc, "the clip").message), None
        except Exception:  # a bug: the details go to the log, the client gets a generic message
            log.exception("video job %s failed", job.id)
            return "failed", None, "internal error; the server log has the details.", None


def frames_too_large(limit: int, size: str | None = None) -> ApiError:
    """413 for a clip whose frames (all, or some from one on) are over the per-frame pixel cap."""
    what = f"the clip's frames are {size}" if size else "the clip has frames"
    return ApiError(413, f"{what} above this server's limit of {limit} pixels per frame "
                         "(--max-video-pixels); scale the clip down first.", "too_many_pixels", limit_pixels=limit)


# ---------------------------------------------------------------- routes

router = APIRouter()


def get_jobs(request: Request) -> VideoJobs:
    return request.app.state.cleancut_video


async def _save_upload(request: Request, path: Path, limit: int, held: Held) -> tuple[dict[str, str], str | None]:
    """The clip, streamed to ``path`` with a byte cap (the image uploads' capped reader, so the
    cap holds while a multipart body is parsed too) and counted in ``held``: the raw body, or the
    multipart field ``file``, whose text fields and file name are returned. A client that
    disconnects leaves nothing behind (the caller removes the folder)."""
    filename = None
    what = "a clip"
    try:
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            parser = MultiPartParser(request.headers, capped_stream(request, limit, held), max_files=1, max_fields=20)
            try:
                form = await parser.parse()
            except MultiPartException as exc:
                raise ApiError(400, f"cannot parse the multipart/form-data body: {exc}", "bad_multipart") from None
            try:
                part = form.get(PHOTO_FIELD)
                if not isinstance(part, UploadFile):
                    raise ApiError(400, f"expected the clip in the multipart file field '{PHOTO_FIELD}'.", "no_file")
                with open(path, "wb") as fh:
                    while chunk := await part.read(1 << 20):
                        fh.write(chunk)
                fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
                filename = part.filename
            finally:
                await form.close()
        else:
            fields = {}
            with open(path, "wb") as fh:
                async for chunk in capped_stream(request, limit, held):
                    fh.write(chunk)
    except BodyTooLarge as exc:
        raise too_large(limit, exc.received, what=what) from None
    except ClientDisconnect:
        raise client_gone() from None
    if path.stat().st_size == 0:
        raise ApiError(400, "the clip is empty; send it as the request body or as the multipart field "
                            f"'{PHOTO_FIELD}'.", "empty_body")
    return fields, filename


def _job_options(state: ServerState, values: dict[str, Any]) -> tuple[RemoveOptions, str, bool]:
    values = dict(values)
    output = str(values.pop("output", "webm")).lower().lstrip(".")
    if output not in OUTPUTS:
        raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}.")
    smooth_text = str(values.pop("smooth", "true")).lower()
    if smooth_text not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"smooth must be true or false, got {smooth_text!r}.")
    check_names(values, "query parameter")
    options = options_from_mapping(values, base=state.base.replace(max_pixels=state.settings.max_video_pixels))
    from ..video.encode import check_options

    check_options(output, options)
    return options, output, smooth_text in ("true", "1", "yes")


@router.post("/api/video", status_code=202, summary="Start a job that removes the background of a clip",
             responses={**ERROR_RESPONSES, 404: {"description": "no such job"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                 "video/*": {"schema": {"type": "string", "format": "binary"}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     PHOTO_FIELD: {"type": "string", "format": "binary", "description": "the clip"}}}}}},
                 "parameters": [
                     {"name": "output", "in": "query", "schema": {"type": "string", "enum": list(OUTPUTS),
                                                                  "default": "webm"},
                      "description": "webm (VP9 with alpha), mov (ProRes 4444 with alpha) or mp4 (no alpha)"},
                     {"name": "smooth", "in": "query", "schema": {"type": "boolean", "default": True},
                      "description": "smooth the matte over time, as cleancut video does"}]})
async def start_video(request: Request, state: ServerState = Depends(get_state),  # noqa: B008
                      jobs: VideoJobs = Depends(get_jobs)):  # noqa: B008
    """The clip is the raw body (or the multipart field ``file``); options are query parameters,
    as for ``/api/remove``. Answers 202 with the job, whose ``links`` say where to follow it."""
    try:
        options, output, smooth = _job_options(state, dict(request.query_params))
    except ConfigError as exc:
        raise ApiError(422, api_text(str(exc)), "invalid_option") from None
    limit = state.settings.max_video_bytes
    check_content_length(request, limit, "a clip")
    jobs.check_room()  # every slot taken: 503 at once, without reading the clip
    job = jobs.new(options, output, smooth)
    upload = job.folder / "upload"
    try:
        with jobs.uploads.hold() as held:  # the clip holds no job slot while it arrives
            fields, filename = await _save_upload(request, upload, limit, held)
        if filename:
            job.name = safe_stem(filename)
        if fields:
            try:
                job.options, job.output, job.smooth = _job_options(state, {**request.query_params, **fields})
            except ConfigError as exc:
                raise ApiError(422, api_text(str(exc)), "invalid_option") from None
        await asyncio.to_thread(jobs.check_clip, job, upload)
        jobs.start(job, upload)
    except (ApiError, asyncio.CancelledError, OSError):
        jobs.discard(job)  # nothing of a refused or abandoned upload is kept
        raise
    return JSONResponse(job.public(), status_code=202, headers={"Location": f"/api/video/{job.id}"})


@router.get("/api/video/{job_id}", summary="A video job's status and progress")
async def video_status(job_id: str, jobs: VideoJobs = Depends(get_jobs)):  # noqa: B008
    return jobs.get(job_id).public()


@router.get("/api/video/{job_id}/events", summary="A video job's progress as server-sent events")
async def video_events(job_id: str, request: Request, jobs: VideoJobs = Depends(get_jobs)):  # noqa: B008
    job = jobs.get(job_id)

    async def events():
        last = None
        while True:
            body = job.public()
            if body != last:
                yield f"event: progress\ndata: {json.dumps(body)}\n\n"
                last = body
            if job.status in _FINISHED or await request.is_disconnected():
                return
            await asyncio.sleep(0.25)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.get("/api/video/{job_id}/result", summary="Download a finished video job's result",
            responses={409: {"description": "the job has not finished (or failed)"}})
async def video_result(job_id: str, jobs: VideoJobs = Depends(get_jobs)):  # noqa: B008
    job = jobs.get(job_id)
    if job.status != "done" or job.result is None:
        raise ApiError(409, f"video job {job.id} is {job.status}; the result can be downloaded once it is done"
                            + (f" (error: {job.error})" if job.error else "."), "not_ready", job_status=job.status)
    return FileResponse(job.result, media_type=OUTPUTS[job.output], filename=f"{job.name}.{job.options.resolved_mode}.{job.output}")


@router.delete("/api/video/{job_id}", summary="Cancel a video job, or delete a finished one and its result")
async def video_delete(job_id: str, jobs: VideoJobs = Depends(get_jobs)):  # noqa: B008
    job = jobs.get(job_id)
    job.cancel.set()  # a running job stops at its next frame and removes its folder
    if job.status in _FINISHED:
        jobs.discard(job)
        return {"id": job.id, "status": "deleted"}
    jobs.forget(job)  # gone for its client at once (404), though it holds its slot until it stops
    return {"id": job.id, "status": "cancelling"}
