"""Writing the result: a video file chosen by its suffix, or a folder of frames.

=========  ===================================================================================
output     what is written
=========  ===================================================================================
``.webm``  VP9 (libvpx), ``yuva420p`` when the result is transparent, else ``yuv420p``; audio
           Opus (copied when the input's is Opus or Vorbis, else re-encoded)
``.mov``   ProRes 4444 (``yuva444p10le``) when transparent, else ProRes 422 HQ; audio copied
``.mp4``   H.264 (libx264, CRF 18), no alpha: needs a background (colour, picture, blur) or
           ``--mode mask``; audio copied (re-encoded to AAC when MP4 cannot hold it)
folder     one image per frame, ``frame_000001.png`` ... (names sort in frame order; ``format``
           and ``quality`` apply), ``timestamps.csv`` (each frame's time, so a variable frame
           rate is kept) and the audio track as ``audio.mka`` (copied, never re-encoded)
=========  ===================================================================================

Every output is written under a hidden temporary name in the destination folder and renamed when
complete, so an interruption or a crash never leaves a half-written file (or folder) under the
output name. Frames keep their presentation timestamps, the frame rate and the display matrix
(rotation) of the input.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, VideoError
from .decode import VideoSource, import_av, reason, yuv_matrix

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..options import RemoveOptions
    from .decode import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Codec:
    """How one video container is encoded."""

    container: str  # FFmpeg muxer
    codec: str  # FFmpeg encoder
    alpha_pix_fmt: str | None  # pixel format for transparent results (None: no alpha possible)
    pix_fmt: str  # pixel format for opaque results
    odd_pix_fmt: str  # for odd frame sizes, where chroma subsampling needs even ones
    options: tuple[tuple[str, str], ...] = ()
    label: str = ""
    odd_width_codec: str | None = None  # an encoder for odd widths, where ``codec`` needs even
    profiles: tuple[tuple[str, str], ...] = ()  # pixel format -> the encoder's profile option


CODECS = {
    "webm": Codec("webm", "libvpx-vp9", "yuva420p", "yuv420p", "yuv420p",
                  # lag-in-frames 0: no look-ahead queue (200 MB less at 1080p with alpha)
                  (("deadline", "realtime"), ("cpu-used", "6"), ("crf", "30"), ("b", "0"),
                   ("row-mt", "1"), ("lag-in-frames", "0")), "VP9"),
    # FFmpeg's "prores" (prores_aw) is ~5x faster than prores_ks but needs an even width
    "mov": Codec("mov", "prores", "yuva444p10le", "yuv422p10le", "yuv444p10le", (), "ProRes",
                 odd_width_codec="prores_ks",  # 3 = 422 HQ, 4 = 4444 (its default would be 422 LT)
                 profiles=(("yuv422p10le", "3"), ("yuv444p10le", "4"), ("yuva444p10le", "4"))),
    "mp4": Codec("mp4", "libx264", None, "yuv420p", "yuv444p",
                 (("preset", "veryfast"), ("crf", "18")), "H.264"),
}
FOLDER = "folder"
#: files a folder of frames may hold (anything else means it is someone else's folder)
TIMESTAMPS_FILE = "timestamps.csv"
AUDIO_FILE = "audio.mka"
FRAME_PREFIX = "frame_"
_IMAGE_SUFFIXES = (".png", ".webp", ".jpg")


def output_kind(path: str | os.PathLike) -> str:
    """``webm``, ``mov``, ``mp4`` or ``folder`` for an output path (a folder: an existing one, a
    name without suffix, or any name ending in a slash); ConfigError otherwise."""
    text = os.fspath(path)
    if text.endswith(("/", os.sep)):
        return FOLDER
    suffix = Path(text).suffix.lower()
    if suffix.lstrip(".") in CODECS:
        return suffix.lstrip(".")
    if Path(text).is_dir() or not suffix:
        return FOLDER
    raise ConfigError(f"cannot write video to {path}: the suffix picks the output, expected .webm "
                      "(VP9 with alpha), .mov (ProRes 4444 with alpha), .mp4 (H.264, no alpha) or "
                      "a folder (one PNG per frame).")


def result_has_alpha(options: "RemoveOptions") -> bool:
    """Whether the frames ``options`` produce are transparent (need an alpha channel)."""
    mode = options.resolved_mode
    if mode == "cutout":
        return True
    return mode == "color" and options.bg_color is not None and options.bg_color[3] < 255


def check_options(kind: str, options: "RemoveOptions") -> None:
    """Refuse options the output kind cannot honour, before any work."""
    if options.crop:
        raise ConfigError("--crop changes the frame size, which a video cannot do from frame to "
                          "frame; drop --crop (--crop-margin too).")
    if kind == FOLDER:
        return
    if options.format != "png" or options.quality != 90:
        raise ConfigError(f"--format and --quality apply to a folder of frames; a .{kind} file is "
                          f"encoded with {CODECS[kind].label}, chosen by the suffix. Drop them or "
                          "write to a folder.")
    if result_has_alpha(options) and CODECS[kind].alpha_pix_fmt is None:
        raise ConfigError(f".{kind} ({CODECS[kind].label}) has no alpha channel, so a transparent "
                          "cut-out cannot be stored in it. Add a background (--bg-color, "
                          "--bg-image or --mode blur), use --mode mask, or write .webm or .mov "
                          "for transparency.")


def folder_state(path: Path) -> str:
    """``absent`` (missing or empty), ``frames`` (written by cleancut video) or ``foreign``."""
    if not path.exists():
        return "absent"
    if not path.is_dir():
        return "foreign"
    names = [p.name for p in path.iterdir()]
    if not names:
        return "absent"
    ours = all(n in (TIMESTAMPS_FILE, AUDIO_FILE) or (n.startswith(FRAME_PREFIX) and
               n.lower().endswith(_IMAGE_SUFFIXES)) for n in names)
    return "frames" if ours else "foreign"


@contextlib.contextmanager
def writing(target: Path):
    """Turn FFmpeg and file-system errors while writing ``target`` into one-line VideoErrors."""
    av = import_av()
    try:
        yield
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot write {target}: {reason(exc)}.") from None


def _hidden_sibling(target: Path, tag: str) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.{tag}")


class FileWriter:
    """Encodes frames into a ``.webm`` / ``.mov`` / ``.mp4`` file, with the input's audio.

    :meth:`prepare` (thread-safe, no state) converts a result image to an encoder frame, so it can
    run in a worker thread; :meth:`write` encodes and muxes, in frame order; :meth:`commit`
    finishes the file and renames it to the target; :meth:`abort` deletes the temporary file.
    """

    def __init__(self, target: Path, kind: str, source: VideoSource, options: "RemoveOptions",
                 audio: bool = True):
        self.av = import_av()
        self.target = target
        self.codec = CODECS[kind]
        self.source = source
        self.audio_wanted = audio and source.audio_index is not None
        self.gray = options.resolved_mode == "mask"
        odd = source.width % 2 or source.height % 2
        if result_has_alpha(options):
            self.pix_fmt = self.codec.alpha_pix_fmt or self.codec.pix_fmt
        else:
            self.pix_fmt = self.codec.odd_pix_fmt if odd else self.codec.pix_fmt
        self.matrix = yuv_matrix(source.colorspace, source.height)
        self.tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.tmp{target.suffix}")
        self._container = None
        self._stream = None
        self.audio = None
        self.audio_problem: str | None = None
        self.frames = 0
        self._durations: dict[int, int] = {}  # pts -> duration of frames in the encoder

    def prepare(self, image: "Image.Image"):
        """A result image (upright) -> an encoder frame (stored orientation, encoder pixels)."""
        mode = "L" if self.gray else ("RGBA" if self.pix_fmt.startswith("yuva") else "RGB")
        if image.mode != mode:
            image = image.convert(mode)
        pixels = self.source.orientation.stored(np.asarray(image))
        layout = {"L": "gray", "RGB": "rgb24", "RGBA": "rgba"}[mode]
        frame = self.av.VideoFrame.from_ndarray(pixels, format=layout)
        return frame.reformat(format=self.pix_fmt, dst_colorspace=self.matrix,
                              dst_color_range="MPEG")

    def _open(self) -> None:
        av, source = self.av, self.source
        self._container = av.open(os.fspath(self.tmp), mode="w", format=self.codec.container)
        rate = source.average_rate or None
        name = self.codec.codec
        if source.width % 2 and self.codec.odd_width_codec:
            name = self.codec.odd_width_codec
        options = dict(self.codec.options)
        profile = dict(self.codec.profiles).get(self.pix_fmt)
        if profile:
            options["profile"] = profile
        stream = self._container.add_stream(name, rate=rate, options=options)
        stream.width, stream.height = source.width, source.height
        stream.pix_fmt = self.pix_fmt
        ctx = stream.codec_context
        ctx.time_base = source.time_base
        ctx.colorspace = 1 if self.matrix == "itu709" else 6  # AVCOL_SPC_BT709 / SMPTE170M
        ctx.color_range = 1  # limited ("MPEG") range, as converted in prepare()
        if source.color_primaries not in (0, 2):
            ctx.color_primaries = source.color_primaries
        if source.color_trc not in (0, 2):
            ctx.color_trc = source.color_trc
        ctx.thread_count = min(os.cpu_count() or 1, 8)
        if source.orientation.matrix is not None:
            stream.set_display_matrix(list(source.orientation.matrix))
        self._stream = stream
        if self.audio_wanted:
            from .audio import AudioTrack

            try:
                self.audio = AudioTrack(source.path, source.audio_index, self._container)
            except VideoError as exc:
                self.audio_problem = f"{exc}; the output has no audio"

    def write(self, frame: "Frame", prepared) -> None:
        with writing(self.target):
            if self._container is None:
                self._open()
            prepared.pts = frame.pts
            prepared.time_base = self.source.time_base
            if frame.duration:
                self._durations[frame.pts] = frame.duration
            if self.audio is not None:
                self.audio.write_until(frame.time)
            self._mux(self._stream.encode(prepared))
        self.frames += 1

    def _mux(self, packets) -> None:
        # Encoders leave packet durations at 0 (the muxer then guesses the last frame's from the
        # average rate); each frame's own duration is restored here, matched by timestamp.
        for packet in packets:
            duration = self._durations.pop(packet.pts, None)
            if duration:
                packet.duration = duration
            self._container.mux(packet)

    def commit(self) -> None:
        if self._container is None:
            raise VideoError(f"no frame to write to {self.target}")
        with writing(self.target):
            try:
                self._mux(self._stream.encode(None))
                if self.audio is not None:
                    self.audio.write_until(None)
                    self.audio_problem = self.audio.problem
            finally:
                self._close()
            os.replace(self.tmp, self.target)

    def _close(self) -> None:
        if self.audio is not None:
            self.audio.close()
        if self._container is not None:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        try:
            self._close()
        except Exception:  # the file is deleted anyway; the error that led here is what matters
            log.debug("closing %s after an error failed", self.tmp, exc_info=True)
        self.tmp.unlink(missing_ok=True)

    @property
    def audio_summary(self) -> str | None:
        if self.audio is None:
            return None
        how = "copied" if self.audio.copied else "re-encoded"
        return f"{self.audio.codec} ({how})"


class FolderWriter:
    """Writes one image per frame into a folder (built under a temporary name, then renamed)."""

    def __init__(self, target: Path, source: VideoSource, options: "RemoveOptions", audio: bool = True):
        from ..io import FORMAT_SUFFIX

        self.target = target
        self.source = source
        self.format, self.quality = options.format, options.quality
        self.suffix = FORMAT_SUFFIX[options.format]
        self.digits = max(6, len(str(source.expected_frames or 0)))
        self.audio_wanted = audio and source.audio_index is not None
        self.tmp = _hidden_sibling(target, "tmp")
        with writing(target):
            self.tmp.mkdir(parents=True)
            self._timestamps = open(self.tmp / TIMESTAMPS_FILE, "w", newline="")
        self._csv = csv.writer(self._timestamps, lineterminator="\n")
        self._csv.writerow(["frame", "file", "pts", "time_base", "seconds"])
        tb = source.time_base
        self._time_base = f"{tb.numerator}/{tb.denominator}"
        self.audio_problem: str | None = None
        self.audio_summary: str | None = None
        self.frames = 0

    def prepare(self, image: "Image.Image") -> bytes:
        from ..io import encode_image

        return encode_image(image, self.format, self.quality)

    def write(self, frame: "Frame", prepared: bytes) -> None:
        name = f"{FRAME_PREFIX}{frame.index + 1:0{self.digits}d}{self.suffix}"
        with writing(self.target):
            (self.tmp / name).write_bytes(prepared)
            self._csv.writerow([frame.index + 1, name, frame.pts, self._time_base, f"{frame.time:.6f}"])
        self.frames += 1

    def commit(self) -> None:
        with writing(self.target):
            self._timestamps.close()
            if self.audio_wanted:
                from .audio import write_audio_file

                try:
                    self.audio_problem = write_audio_file(self.source.path, self.source.audio_index,
                                                          self.tmp / AUDIO_FILE)
                    self.audio_summary = f"{AUDIO_FILE} (copied)"
                except VideoError as exc:
                    self.audio_problem = f"{exc}; no {AUDIO_FILE} written"
            _replace_folder(self.tmp, self.target)

    def abort(self) -> None:
        self._timestamps.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _replace_folder(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``; an existing frames folder there (checked
    by the caller) is moved aside first and deleted only once the new one is in place."""
    if folder_state(target) == "absent":
        if target.exists():
            target.rmdir()  # empty
        os.replace(new, target)
        return
    old = _hidden_sibling(target, "old")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def make_writer(target: Path, kind: str, source: VideoSource, options: "RemoveOptions",
                audio: bool = True) -> Any:
    """The writer for ``kind`` (see :func:`output_kind`)."""
    if kind == FOLDER:
        return FolderWriter(target, source, options, audio)
    return FileWriter(target, kind, source, options, audio)
