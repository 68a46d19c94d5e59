"""Where live frames come from: a camera, a network stream, or a file played at its own pace.

Every source is opened with PyAV and yields :class:`Captured` frames (an upright RGB picture and
the moment it was captured, ``time.monotonic()``):

* a **camera**: an index (``0``) or a device (``/dev/video0``), through FFmpeg's ``v4l2`` input
  on Linux (``avfoundation`` on macOS, ``dshow`` on Windows);
* a **network stream**: an ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://`` or
  ``srt://`` URL. A stream that drops is reopened with a bounded backoff (0.5 s doubling to 8 s,
  ``retries`` times in a row) before the session ends with a one-line message;
* a **file**, played at its own frame rate (``pacing``): frame ``n`` is released at the moment
  it is due, as a camera would deliver it, so a slow model drops frames exactly as it would live.
  Without pacing every frame is delivered as fast as it is taken (no frame is dropped).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..errors import VideoError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "udp://", "tcp://",
                  "srt://")
BACKOFF_START = 0.5
BACKOFF_MAX = 8.0


class LiveSourceError(VideoError):
    """A live source cannot be opened or was lost for good."""


@dataclass
class Captured:
    """One frame as it arrived: ``image`` upright RGB, ``captured`` in ``time.monotonic()`` seconds."""

    index: int
    image: "Image.Image"
    captured: float


def kind_of(source: str) -> str:
    """``camera``, ``stream`` or ``file`` for what a user typed."""
    text = str(source)
    if text.isdigit() or text.startswith("/dev/video"):
        return "camera"
    if text.lower().startswith(STREAM_SCHEMES):
        return "stream"
    return "file"


def camera_input(source: str) -> tuple[str, str]:
    """(FFmpeg input format, device name) of a camera index or device."""
    text = str(source)
    if sys.platform == "darwin":
        return "avfoundation", text
    if sys.platform == "win32":
        return "dshow", f"video={text}"
    return "v4l2", f"/dev/video{text}" if text.isdigit() else text


def _reason(exc: BaseException) -> str:
    from ..video.decode import reason

    return reason(exc)


class PyAVSource:
    """Frames from anything FFmpeg opens; see the module docstring for the three kinds."""

    def __init__(self, source: str | os.PathLike, *, pacing: bool = True, retries: int = 5,
                 max_pixels: int | None = None, sleep: Callable[[float], None] = time.sleep):
        from ..video.decode import import_av

        self.av = import_av()
        self.source = os.fspath(source)
        self.kind = kind_of(self.source)
        self.pacing = pacing and self.kind == "file"  # cameras and streams pace themselves
        self.retries = retries
        self.max_pixels = max_pixels
        self.sleep = sleep
        self.reconnects = 0
        self.rate: float | None = None
        self._container = self._open()

    # ------------------------------------------------------------ opening

    def _open(self):
        av = self.av
        if self.kind == "file":
            path = Path(self.source)
            if not path.is_file():
                raise LiveSourceError(f"{self.source}: no such file (expected a video file, a camera index "
                                      "such as 0, a /dev/videoN device or a stream URL).")
        try:
            if self.kind == "camera":
                fmt, device = camera_input(self.source)
                if fmt == "v4l2" and not Path(device).exists():
                    raise LiveSourceError(f"no camera at {device}: the device does not exist (is a camera "
                                          "plugged in, and is this user in the 'video' group?).")
                container = av.open(device, format=fmt, options={"framerate": "30"}, timeout=10)
            elif self.kind == "stream":
                options = {"rtsp_transport": "tcp"} if self.source.lower().startswith("rtsp") else {}
                container = av.open(self.source, options=options, timeout=10)
            else:
                container = av.open(self.source)
        except LiveSourceError:
            raise
        except av.error.InvalidDataError:
            raise LiveSourceError(f"{self.source}: not a video FFmpeg can read.") from None
        except (av.error.FFmpegError, OSError) as exc:
            what = {"camera": "cannot open the camera", "stream": "cannot open the stream",
                    "file": "cannot open the video"}[self.kind]
            raise LiveSourceError(f"{self.source}: {what} ({_reason(exc)}).") from None
        if not container.streams.video:
            container.close()
            raise LiveSourceError(f"{self.source}: holds no video stream.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.rate = float(rate) if rate else None
        if self.max_pixels and stream.codec_context.width * stream.codec_context.height > self.max_pixels:
            container.close()
            raise LiveSourceError(f"{self.source}: frames of {stream.codec_context.width}x"
                                  f"{stream.codec_context.height} pixels are above the limit of "
                                  f"{self.max_pixels} pixels.")
        return container

    # ------------------------------------------------------------ reading

    def _decoded(self) -> Iterator["Image.Image"]:
        container = self._container
        if container is None:  # a reconnection failed: counts as one more failure
            raise OSError("not connected")
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            yield frame.to_image()

    def frames(self) -> Iterator[Captured]:
        """Frames until the source ends (a file, a stream that cannot be reopened) or the
        consumer stops; paced for a file unless ``pacing`` is off."""
        av = self.av
        index = 0
        start: float | None = None
        failures = 0
        while True:
            try:
                for image in self._decoded():
                    now = time.monotonic()
                    if self.pacing and self.rate:
                        start = now if start is None else start
                        due = start + index / self.rate
                        if due > now:
                            self.sleep(due - now)
                            now = time.monotonic()
                    failures = 0
                    yield Captured(index, image, now)
                    index += 1
                if self.kind != "stream":
                    return  # a file ends; a camera that stops sending is done too
                error = "the stream ended"
            except (av.error.FFmpegError, OSError) as exc:
                if index == 0 and self.kind != "stream":
                    raise LiveSourceError(f"{self.source}: cannot decode the video ({_reason(exc)}).") from None
                if self.kind != "stream":
                    return  # a damaged file: what could be decoded was played
                error = _reason(exc)
            failures += 1
            if failures > self.retries:
                raise LiveSourceError(f"{self.source}: the stream was lost ({error}) and could not be "
                                      f"reopened after {self.retries} tries.")
            self._reopen(failures, error)

    def _reopen(self, attempt: int, error: str) -> None:
        wait = min(BACKOFF_MAX, BACKOFF_START * 2 ** (attempt - 1))
        print(f"cleancut live: {self.source}: {error}; reconnecting in {wait:g} s "
              f"(try {attempt} of {self.retries})", file=sys.stderr)
        self.close()
        self.sleep(wait)
        try:
            self._container = self._open()
            self.reconnects += 1
        except LiveSourceError:
            self._container = None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> "PyAVSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
