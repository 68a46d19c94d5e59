"""Reading a video with PyAV: validate the input, then yield its frames upright, one at a time.

:class:`VideoSource` opens anything FFmpeg reads (MP4, MOV, WebM, MKV, AVI, animated GIF ...),
checks it before any work starts (a missing file, a file that is not a video, a file with no
video stream, a codec this FFmpeg cannot decode, a frame size above the pixel cap all raise
:class:`~cleancut.errors.VideoError` with one line naming the file), and :meth:`VideoSource.frames`
decodes lazily, so a clip of any length is never held in memory.

A file that ends early (cut off while copying or downloading) still yields every frame that could
be decoded; afterwards :attr:`VideoSource.truncation` says what was missing, so the caller can
finish its output and report it instead of silently dropping the rest.

The pixel cap holds for every frame, not only for the size the stream declares up front: a
stream whose frames grow mid-clip (a raw H.264 stream can change size at any keyframe) is stopped
with :class:`~cleancut.errors.ImageTooLargeError` before a larger frame is allocated by FFmpeg
(its decoder's ``max_pixels`` option) or converted to a picture. :meth:`VideoSource.measure`
counts a clip's frames and time from its packets, without decoding, for streams whose container
declares no length.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .._deps import require
from ..errors import ImageTooLargeError, VideoError
from .orientation import Orientation

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

#: container formats FFmpeg uses for single pictures: refused with a hint to ``cleancut remove``
_STILL_FORMATS = ("image2", "image2pipe")


def import_av():
    """PyAV, or MissingDependencyError with the install hint for the ``video`` extra."""
    return require("av", "Video processing (cleancut video)")


class VideoWarning(UserWarning):
    """The output is less complete than the input (e.g. a damaged audio track, an alpha channel
    that cannot be decoded)."""


@dataclass
class Frame:
    """One decoded frame: ``image`` is upright, RGB (RGBA when the input had transparency);
    ``pts`` and ``duration`` are in the source stream's ``time_base``."""

    index: int
    pts: int
    duration: int | None
    time: float  # presentation time in seconds (pts x time_base)
    image: "Image.Image"


class VideoSource:
    """An opened input video. Use as a context manager; iterate :meth:`frames` once."""

    def __init__(self, path: str | os.PathLike, max_pixels: int | None = None):
        self.path = Path(path)
        self.name = os.fspath(path)
        self._check_file()
        av = import_av()
        self._av = av
        try:
            self.container = av.open(self.name, mode="r")
        except av.error.InvalidDataError:
            raise VideoError(f"{self.name}: not a video: FFmpeg cannot read this file (found "
                             f"{_sniff(self.path)}).") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(f"{self.name}: cannot open the video ({reason(exc)}).") from None
        try:
            self._inspect(max_pixels)
        except BaseException:
            self.container.close()
            raise
        self.max_pixels = max_pixels
        self.orientation = Orientation()  # known after the first frame (it travels with frames)
        self.decoded = 0
        self.decoded_seconds = 0.0  # end of the last decoded frame, from the stream's start
        self.truncation: str | None = None  # set by frames() when the input ended early

    # ------------------------------------------------------------ checks before any work

    def _check_file(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise VideoError(f"{self.name}: no such file.") from None
        except OSError as exc:
            raise VideoError(f"{self.name}: cannot read the file ({exc.strerror or exc}).") from None
        if self.path.is_dir():
            raise VideoError(f"{self.name}: expected a video file, found a folder.")
        if size == 0:
            raise VideoError(f"{self.name}: expected a video file, found an empty file (0 bytes).")

    def _inspect(self, max_pixels: int | None) -> None:
        container = self.container
        fmt = container.format.name
        if not container.streams.video:
            found = ", ".join(f"{len(s)} {kind} stream{'s' * (len(s) > 1)}" for kind, s in (
                ("audio", container.streams.audio), ("subtitle", container.streams.subtitles),
                ("data", container.streams.data)) if s) or "no streams"
            raise VideoError(f"{self.name}: no video stream in this {fmt} file (found {found}).")
        if fmt in _STILL_FORMATS or fmt.endswith("_pipe"):
            raise VideoError(f"{self.name}: this is a still image ({fmt}), not a video; use "
                             "'cleancut remove' for photos.")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise VideoError(f"{self.name}: unsupported video codec: this FFmpeg build (PyAV) has "
                             f"no decoder for the codec of its video stream ({fmt} file). Convert "
                             "the clip to H.264, VP9 or ProRes first.")
        self.stream = stream
        self.codec = stream.codec_context.name
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        if self.width <= 0 or self.height <= 0:
            raise VideoError(f"{self.name}: the video stream has no frame size ({self.width}x"
                             f"{self.height}); the file is damaged.")
        if max_pixels is not None and self.width * self.height > max_pixels:
            raise ImageTooLargeError(
                f"{self.name}: frames are {self.width}x{self.height} = "
                f"{self.width * self.height / 1e6:.1f} megapixels, above the limit of "
                f"{max_pixels / 1e6:.1f} megapixels. Raise it with --max-pixels / max_pixels=.")
        self.time_base: Fraction = stream.time_base or Fraction(1, 1000)
        self.average_rate: Fraction | None = stream.average_rate or stream.guessed_rate or None
        self.expected_frames: int | None = stream.frames or None
        self.expected_seconds = _stream_seconds(stream)
        ctx = stream.codec_context
        self.colorspace, self.color_primaries, self.color_trc = (
            ctx.colorspace, ctx.color_primaries, ctx.color_trc)
        self._matrix = yuv_matrix(self.colorspace, self.height)
        self.audio_index: int | None = container.streams.audio[0].index if container.streams.audio else None
        self._decoder = self._make_decoder()

    def _make_decoder(self):
        """The stream's decoder; for VP9 with an alpha channel (a WebM made by a cut-out tool)
        libvpx's decoder, because FFmpeg's own VP9 decoder drops the alpha plane."""
        stream = self.stream
        if self.codec == "vp9" and stream.metadata.get("alpha_mode") == "1":
            try:
                return self._av.CodecContext.create("libvpx-vp9", "r")
            except (self._av.error.FFmpegError, ValueError) as exc:
                warnings.warn(f"{self.name}: this FFmpeg build has no libvpx decoder ({exc}); the "
                              "input's alpha channel is ignored.", VideoWarning, stacklevel=4)
        stream.codec_context.thread_type = "AUTO"
        return stream.codec_context

    def measure(self) -> tuple[int, float]:
        """The video stream's frames and seconds counted from its packets (read, not decoded):
        the number of packets, and the time from the first packet's start to the last one's end
        (or the packets' durations summed, or their number over the frame rate: the longest).
        Reads the whole file: call it on a source opened for that, not before :meth:`frames`."""
        av = self._av
        count, first, end, durations = 0, None, None, 0
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                count += 1
                durations += packet.duration or 0
                if packet.pts is not None:
                    first = packet.pts if first is None else min(first, packet.pts)
                    stop = packet.pts + (packet.duration or 0)
                    end = stop if end is None else max(end, stop)
        except (av.error.FFmpegError, OSError):  # damaged: what was read so far is what decodes
            pass
        span = float((end - first) * self.time_base) if first is not None and end is not None else 0.0
        by_rate = count / float(self.average_rate) if self.average_rate else 0.0
        return count, max(span, float(durations * self.time_base), by_rate)

    # ------------------------------------------------------------ decoding

    def frames(self) -> Iterator[Frame]:
        """Decode frame after frame (upright). Stops early, setting :attr:`truncation`, when the
        input is damaged or cut off after at least one frame; raises VideoError when not a
        single frame can be decoded."""
        av = self._av
        last_pts: int | None = None
        error: str | None = None
        step = _frame_step(self.average_rate, self.time_base)
        start = self.stream.start_time or 0
        if self.max_pixels is not None and not self._decoder.is_open:
            # FFmpeg refuses to allocate a frame above the cap, whatever size the stream switches to
            self._decoder.options = {**self._decoder.options, "max_pixels": str(self.max_pixels)}
        try:
            for packet in self.container.demux(self.stream):
                for frame in self._decoder.decode(packet):
                    self._check_size(frame.width, frame.height)
                    pts = frame.pts if frame.pts is not None else (
                        last_pts + step if last_pts is not None else 0)
                    if last_pts is not None and pts <= last_pts:  # broken timestamps
                        pts = last_pts + 1
                    if self.decoded == 0:
                        self.orientation = Orientation.from_frame(frame)
                    image = self._to_image(frame)
                    duration = frame.duration or None
                    yield Frame(self.decoded, pts, duration, float(pts * self.time_base), image)
                    self.decoded += 1
                    last_pts = pts
                    self.decoded_seconds = float((pts + (duration or step) - start) * self.time_base)
        except (av.error.FFmpegError, OSError) as exc:
            self._check_size(self._decoder.width, self._decoder.height)  # FFmpeg refused a larger frame
            error = reason(exc)
            if self.decoded == 0:
                raise VideoError(f"{self.name}: cannot decode the video stream ({self.codec}): "
                                 f"{error}. The file is damaged or truncated.") from None
        if self.decoded == 0:
            raise VideoError(f"{self.name}: the video stream ({self.codec}) holds no frame that "
                             "can be decoded.")
        self.truncation = self._truncation(error, step)

    def _check_size(self, width: int, height: int) -> None:
        """ImageTooLargeError when a frame of ``width`` x ``height`` is over the pixel cap."""
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise ImageTooLargeError(
                f"{self.name}: frame {self.decoded + 1} is {width}x{height} = {width * height / 1e6:.1f} "
                f"megapixels (the video's frames grow from {self.width}x{self.height}), above the limit of "
                f"{self.max_pixels / 1e6:.1f} megapixels. Raise it with --max-pixels / max_pixels=.")

    def _to_image(self, frame) -> "Image.Image":
        from PIL import Image

        from ..io import to_rgb_or_rgba

        kwargs: dict = {"src_colorspace": self._matrix}
        if frame.color_range:
            kwargs["src_color_range"] = frame.color_range
        rgba = _has_alpha(frame.format.name)
        pixels = frame.to_ndarray(format="rgba" if rgba else "rgb24", **kwargs)
        pixels = self.orientation.upright(pixels)
        image = Image.fromarray(pixels, "RGBA" if rgba else "RGB")
        return to_rgb_or_rgba(image) if rgba else image

    def _truncation(self, error: str | None, step: int) -> str | None:
        """What is missing when the input ended before its declared length, else None."""
        missing = []
        if self.expected_frames and self.decoded < self.expected_frames:
            missing.append(f"{self.decoded} of {self.expected_frames} frames")
        tolerance = 1.5 * float(step * self.time_base) + 0.05
        if (self.expected_seconds and not missing
                and self.decoded_seconds < self.expected_seconds - tolerance):
            missing.append(f"{self.decoded_seconds:.2f} of {self.expected_seconds:.2f} s")
        elif missing and self.expected_seconds:
            missing[-1] += f", {self.decoded_seconds:.2f} of {self.expected_seconds:.2f} s"
        if error is None and not missing:
            return None
        what = "; ".join(missing) if missing else f"{self.decoded} frames"
        cause = f" ({error})" if error else ""
        return f"{self.name}: the video is truncated or damaged: decoded {what}{cause}"

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def yuv_matrix(colorspace: int, height: int) -> str:
    """The YUV <-> RGB matrix for a stream's colorspace tag (FFmpeg's AVColorSpace): BT.709 when
    tagged so, BT.601 when tagged so, and for untagged streams what players assume: BT.709 from
    720 lines up, else BT.601."""
    if colorspace == 1:  # AVCOL_SPC_BT709
        return "itu709"
    if colorspace in (5, 6):  # BT470BG, SMPTE170M
        return "itu601"
    return "itu709" if height >= 720 else "itu601"


@functools.lru_cache(maxsize=64)
def _has_alpha(pix_fmt: str) -> bool:
    """Whether frames in this pixel format carry transparency (an alpha plane or a palette)."""
    from av import VideoFormat

    try:
        fmt = VideoFormat(pix_fmt)
    except (ValueError, TypeError):
        return False
    return fmt.has_palette or any(c.is_alpha for c in fmt.components)


def _frame_step(rate: Fraction | None, time_base: Fraction) -> int:
    """One frame's duration in ``time_base`` units (1 when the rate is unknown)."""
    if not rate:
        return 1
    return max(1, round(1 / (Fraction(rate) * time_base)))


def _stream_seconds(stream) -> float | None:
    """The video stream's declared length in seconds: its duration, or Matroska's DURATION tag."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")
    if tag:
        try:
            h, m, s = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
        except ValueError:
            return None
    return None


def reason(exc: BaseException) -> str:
    """The short text of an FFmpeg or OS error, for one-line messages."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.rstrip(".")


def _sniff(path: Path) -> str:
    """What a file that is not a video starts with, for the error message."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return "data of an unknown kind"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data starting with {head[:8].hex(' ')}"
    return f"text starting with {text[:24]!r}"
