"""Where live results go: a video file or a stream (PyAV), a virtual camera (pyvirtualcam), a
preview window (OpenCV), or raw frames on stdout.

=====================  ===========================================================================
``-o`` value           sink
=====================  ===========================================================================
``out.webm``           VP9, with alpha when the result is transparent (``.mov``: ProRes 4444 with
                       alpha; ``.mp4``: H.264, no alpha). Written under a hidden name and renamed
                       when the session ends, so a crash never leaves a half-written file
``rtmp://...``         H.264 in FLV; ``udp://``, ``tcp://``, ``srt://``: H.264 in MPEG-TS (no alpha)
``virtualcam``         a virtual camera that video-call programs can pick (pyvirtualcam; on Linux
                       the v4l2loopback kernel module)
``-``                  raw frames on stdout (``rgb24``, or ``rgba`` when transparent), for a pipe
                       into ``ffplay -f rawvideo -pixel_format rgb24 -video_size WxH -``
=====================  ===========================================================================

Frame times are the capture times, so a file written live plays at the pace the frames arrived
(dropped frames make their neighbours last longer, never the clip run fast).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import uuid
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from .._deps import require
from ..errors import ConfigError, MissingDependencyError, VideoError
from ..video.encode import CODECS, FOLDER, output_kind, result_has_alpha
from .sources import STREAM_SCHEMES

if TYPE_CHECKING:  # pragma: no cover
    from ..options import RemoveOptions
    from .session import LiveFrame

TIME_BASE = Fraction(1, 1000)  # frame times in milliseconds since the first frame
VIRTUALCAM = "virtualcam"
STREAM_FORMATS = {"rtmp": "flv", "rtmps": "flv", "udp": "mpegts", "tcp": "mpegts", "srt": "mpegts"}


class Sink:
    """Takes :class:`~cleancut.live.session.LiveFrame` results in order; :meth:`close` once."""

    def write(self, frame: "LiveFrame") -> None:
        raise NotImplementedError

    def close(self, ok: bool = True) -> None:
        """Finish (``ok``) or abandon (after an error) what was written."""


def _pixels(frame: "LiveFrame", alpha: bool, gray: bool = False) -> np.ndarray:
    mode = "L" if gray else ("RGBA" if alpha else "RGB")
    image = frame.result if frame.result.mode == mode else frame.result.convert(mode)
    return np.asarray(image)


class EncodedSink(Sink):
    """A file (by suffix) or a stream URL, encoded with PyAV."""

    def __init__(self, target: str, options: "RemoveOptions", rate: float | None = None):
        from ..video.decode import import_av

        self.av = import_av()
        self.target = target
        self.is_stream = target.lower().startswith(STREAM_SCHEMES)
        if self.is_stream:
            scheme = target.split("://", 1)[0].lower()
            if scheme not in STREAM_FORMATS:
                raise ConfigError(f"cannot stream to {target}: expected an rtmp://, udp://, tcp:// or srt:// URL")
            self.codec = CODECS["mp4"]  # H.264
            self.container_format = STREAM_FORMATS[scheme]
        else:
            kind = output_kind(target)
            if kind == FOLDER:
                raise ConfigError(f"cleancut live writes a video file (.webm, .mov, .mp4) or a stream, not a "
                                  f"folder of frames; got {target}")
            self.codec = CODECS[kind]
            self.container_format = self.codec.container
        self.alpha = result_has_alpha(options)
        if self.alpha and self.codec.alpha_pix_fmt is None:
            raise ConfigError(f"{target}: {self.codec.label} has no alpha channel, so a transparent cut-out "
                              "cannot be stored in it. Add a background (--bg-color, --bg-image or --mode "
                              "blur), use --mode mask, or write .webm or .mov.")
        self.gray = options.resolved_mode == "mask"
        self.rate = rate or 30.0
        self.path = None if self.is_stream else Path(target)
        self.tmp = None if self.is_stream else self.path.with_name(
            f".{self.path.stem}.{uuid.uuid4().hex[:8]}.tmp{self.path.suffix}")
        self._container = None
        self._stream = None
        self._first: float | None = None
        self._last_pts = -1
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        av = self.av
        odd = width % 2 or height % 2
        pix_fmt = (self.codec.alpha_pix_fmt if self.alpha else
                   self.codec.odd_pix_fmt if odd else self.codec.pix_fmt)
        where = self.target if self.is_stream else os.fspath(self.tmp)
        try:
            self._container = av.open(where, mode="w", format=self.container_format)
            options = dict(self.codec.options)
            profile = dict(self.codec.profiles).get(pix_fmt)
            if profile:
                options["profile"] = profile
            if self.codec.codec == "libx264":
                options.update(preset="ultrafast", tune="zerolatency")  # live: no look-ahead
            elif self.codec.codec == "libvpx-vp9":
                # live: VP9's fastest real-time speed; a 480p frame costs 12 ms of CPU instead of 15.5
                # at about the same size (20.5 against 20.2 kB), which the model's threads get back
                options["cpu-used"] = "8"
            name = self.codec.odd_width_codec if width % 2 and self.codec.odd_width_codec else self.codec.codec
            stream = self._container.add_stream(name, rate=Fraction(self.rate).limit_denominator(1001),
                                                options=options)
        except (av.error.FFmpegError, OSError) as exc:
            self.close(ok=False)
            raise VideoError(f"cannot write {self.target}: {exc}") from None
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = TIME_BASE
        self._stream = stream
        self._pix_fmt = pix_fmt

    def write(self, frame: "LiveFrame") -> None:
        av = self.av
        pixels = _pixels(frame, self.alpha, self.gray)
        if self._container is None:
            self._open(pixels.shape[1], pixels.shape[0])
            self._first = frame.captured
        layout = "gray" if self.gray else ("rgba" if self.alpha else "rgb24")
        video = av.VideoFrame.from_ndarray(pixels, format=layout).reformat(format=self._pix_fmt)
        pts = max(self._last_pts + 1, int(round((frame.captured - self._first) / TIME_BASE)))
        video.pts, video.time_base = pts, TIME_BASE
        self._last_pts = pts
        try:
            for packet in self._stream.encode(video):
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(f"cannot write {self.target}: {exc}") from None
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        av = self.av
        container, self._container = self._container, None
        try:
            if container is not None:
                try:
                    if ok and self._stream is not None:
                        for packet in self._stream.encode(None):
                            container.mux(packet)
                finally:
                    container.close()
            if not self.is_stream:
                if ok and self.frames:
                    os.replace(self.tmp, self.path)
                else:
                    self.tmp.unlink(missing_ok=True)
        except (av.error.FFmpegError, OSError) as exc:
            if not self.is_stream:
                self.tmp.unlink(missing_ok=True)
            if ok:
                raise VideoError(f"cannot write {self.target}: {exc}") from None


class RawSink(Sink):
    """Raw frames on a binary stream (stdout): ``rgb24``, or ``rgba`` when transparent, or
    ``gray`` for masks; the layout is printed once to stderr."""

    def __init__(self, options: "RemoveOptions", out: BinaryIO | None = None):
        self.out = out or sys.stdout.buffer
        self.alpha = result_has_alpha(options)
        self.gray = options.resolved_mode == "mask"
        self.announced = False

    def write(self, frame: "LiveFrame") -> None:
        pixels = _pixels(frame, self.alpha, self.gray)
        if not self.announced:
            layout = "gray" if self.gray else ("rgba" if self.alpha else "rgb24")
            print(f"cleancut live: raw {layout} frames of {pixels.shape[1]}x{pixels.shape[0]} on stdout",
                  file=sys.stderr)
            self.announced = True
        self.out.write(np.ascontiguousarray(pixels).tobytes())
        self.out.flush()


class VirtualCamSink(Sink):
    """A virtual camera (pyvirtualcam) showing the results, opaque RGB."""

    def __init__(self, rate: float | None = None):
        try:
            import pyvirtualcam
        except ImportError:
            raise MissingDependencyError("pyvirtualcam", "live", "a virtual camera (-o virtualcam)") from None
        self.module = pyvirtualcam
        self.rate = rate or 30.0
        self.camera = None

    def write(self, frame: "LiveFrame") -> None:
        pixels = _pixels(frame, alpha=False)
        if self.camera is None:
            try:
                self.camera = self.module.Camera(width=pixels.shape[1], height=pixels.shape[0], fps=self.rate)
            except RuntimeError as exc:
                hint = ("on Linux, install and load the v4l2loopback module: sudo apt install v4l2loopback-dkms "
                        "&& sudo modprobe v4l2loopback" if sys.platform.startswith("linux") else
                        "install OBS Studio (its virtual camera is what pyvirtualcam drives)")
                raise VideoError(f"no virtual camera device ({exc}); {hint}") from None
        self.camera.send(pixels)

    def close(self, ok: bool = True) -> None:
        if self.camera is not None:
            self.camera.close()
            self.camera = None


class PreviewSink(Sink):
    """A window showing the results (OpenCV's HighGUI); closing it or pressing q stops the session."""

    WINDOW = "cleancut live"

    def __init__(self):
        cv2 = require("cv2", "the preview window (--preview)")
        self.cv2 = cv2
        self.closed = False

    def write(self, frame: "LiveFrame") -> None:
        cv2 = self.cv2
        pixels = _pixels(frame, alpha=False)
        try:
            cv2.imshow(self.WINDOW, pixels[:, :, ::-1])
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:
            raise VideoError(f"cannot open a preview window ({str(exc).strip().splitlines()[-1]}): it needs "
                             "OpenCV with GUI support (pip install opencv-python, not -headless) and a display") \
                from None
        if key in (ord("q"), 27):
            raise KeyboardInterrupt
        if cv2.getWindowProperty(self.WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            raise KeyboardInterrupt

    def close(self, ok: bool = True) -> None:
        try:
            self.cv2.destroyWindow(self.WINDOW)
        except self.cv2.error:  # the window was never opened (the first frame failed): nothing to close
            return


class BackgroundSinks(Sink):
    """Other sinks fed from a thread of their own, so that encoding a frame overlaps the model's
    work on the next one (on 2 cores: 17 -> 20 frames/s at 480p, see docs/video.md).

    At most ``depth`` frames wait; beyond that :meth:`write` blocks, so a slow encoder slows the
    loop (whose capture then drops frames) instead of piling frames up in memory. An error of a
    sink is raised by the next :meth:`write` or by :meth:`close`; the frames after it are not
    written. The preview window stays on the caller's thread (GUI toolkits want their own)."""

    def __init__(self, sinks: list[Sink], depth: int = 2):
        self.sinks = list(sinks)
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread = threading.Thread(target=self._run, name="cleancut-sinks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            if self.error is not None:
                continue  # a sink failed: the rest is drained unwritten
            try:
                for sink in self.sinks:
                    sink.write(frame)
            except BaseException as exc:  # handed to the caller's thread by write() / close()
                self.error = exc

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def write(self, frame: "LiveFrame") -> None:
        self._raise()
        self._queue.put(frame)

    def close(self, ok: bool = True) -> None:
        """Write what is queued (``ok``), then close every sink; a sink's error is raised."""
        self._queue.put(None)
        self._thread.join()
        failed = self.error is not None
        for sink in self.sinks:
            sink.close(ok=ok and not failed)
        self._raise()


def open_sink(target: str, options: "RemoveOptions", rate: float | None = None) -> Sink:
    """The sink an ``-o`` value names (see the module docstring)."""
    if target == "-":
        return RawSink(options)
    if target == VIRTUALCAM:
        return VirtualCamSink(rate)
    return EncodedSink(target, options, rate)


__all__ = ["Sink", "BackgroundSinks", "EncodedSink", "RawSink", "VirtualCamSink", "PreviewSink", "open_sink", "VIRTUALCAM"]
