"""Removing the background of a whole clip: :func:`remove_video` and :func:`iter_video`.

Every frame goes through the photo path: inference by a :class:`~cleancut.api.Remover`
(``predict_mask``), the same :class:`~cleancut.options.RemoveOptions`, and
:func:`~cleancut.pipeline.process` to compose the output. Between inference and composition the
matte is smoothed over time (:mod:`cleancut.video.smooth`: a motion-gated average over the
neighbouring frames), unless ``smooth=False``.

The work is streamed through four stages, each in its own thread and connected by small bounded
queues, so decoding, inference, composition and encoding overlap and at most a handful of frames
are in memory at any time::

    decode (PyAV) -> inference + smoothing -> process() + conversion -> encode + mux (caller)
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import ConfigError, VideoTruncatedError
from ..options import RemoveOptions, options_from_mapping
from ..pipeline import process
from ._threads import in_background
from .decode import VideoSource, VideoWarning
from .encode import FOLDER, check_options, folder_state, make_writer, output_kind
from .smooth import SmoothParams, TemporalSmoother

__all__ = ["remove_video", "iter_video", "VideoResult", "VideoWarning"]

_DEPTH = 2  # frames queued between two stages


@dataclass
class VideoResult:
    """What :func:`remove_video` did."""

    source: Path
    target: Path
    skipped: bool = False  # the output existed and overwrite was off
    frames: int = 0
    seconds: float = 0.0  # length of the video written
    elapsed: float = 0.0  # wall-clock seconds of the whole run
    audio: str | None = None  # e.g. "aac (copied)", "opus (re-encoded)"; None: no audio
    truncated: str | None = None  # what was missing when the input ended early
    warnings: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames processed per second of wall-clock time."""
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0


def _options(options: RemoveOptions | None, overrides: dict[str, Any]) -> RemoveOptions:
    return options_from_mapping(overrides, base=options) if overrides else (options or RemoveOptions())


def _remover(options: RemoveOptions):
    from ..api import shared_remover

    return shared_remover(options.model, options.providers, options.threads)


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _mattes(source: VideoSource, remover, options: RemoveOptions, smooth: SmoothParams | None):
    """(frame, matte) pairs, in order: the model's matte, smoothed over time. The decoder runs in
    its own thread; this generator is meant to run in another."""
    smoother = TemporalSmoother(smooth) if smooth is not None else None
    for frame in in_background(source.frames(), _DEPTH, "cleancut-decode"):
        alpha = remover.predict_mask(frame.image, max_pixels=options.max_pixels)
        if smoother is None:
            yield frame, alpha
        else:
            yield from smoother.push(frame, frame.image, alpha)
    if smoother is not None:
        yield from smoother.flush()


def _smooth_params(smooth: bool | SmoothParams) -> SmoothParams | None:
    if isinstance(smooth, SmoothParams):
        return smooth
    return SmoothParams() if smooth else None


def iter_video(src: str | os.PathLike, options: RemoveOptions | None = None, *,
               smooth: bool | SmoothParams = True, **overrides: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frame, alpha)`` for every frame of the video ``src``, in order, for people who
    compose or encode themselves.

    ``frame`` is the upright picture, uint8 ``HxWx3`` RGB (``HxWx4`` RGBA when the input has
    transparency); ``alpha`` is the subject's matte, float32 ``HxW`` in [0, 1]: the model's
    output, smoothed over time (``smooth=False`` turns that off), then post-processed as the
    options ask (``threshold``, ``feather``, ``remove_islands``, ``fill_holes``,
    ``alpha_matting``). Options are :class:`~cleancut.options.RemoveOptions` fields.

    Decoding and inference run in background threads, a couple of frames ahead. A truncated
    input yields what could be decoded, then raises :class:`~cleancut.errors.VideoTruncatedError`.
    """
    from .. import refine

    opts = _options(options, overrides)
    remover = _remover(opts)
    with VideoSource(src, max_pixels=opts.max_pixels) as source:
        remover.load()
        for frame, alpha in in_background(_mattes(source, remover, opts, _smooth_params(smooth)),
                                          _DEPTH, "cleancut-infer"):
            rgb = frame.image.convert("RGB") if frame.image.mode != "RGB" else frame.image
            yield np.asarray(frame.image), refine.refine(alpha, rgb, opts)
        if source.truncation:
            raise VideoTruncatedError(f"{source.truncation}.")


def remove_video(src: str | os.PathLike, dst: str | os.PathLike, options: RemoveOptions | None = None, *,
                 smooth: bool | SmoothParams = True, overwrite: bool = False,
                 progress: bool | None = False, audio: bool = True,
                 on_frame: Callable[[int, int | None], None] | None = None, remover: Any = None,
                 **overrides: Any) -> VideoResult:
    """Remove the background of every frame of ``src`` and write ``dst``; what ``cleancut video``
    does. The suffix of ``dst`` picks the output (``.webm``, ``.mov``, ``.mp4``, or a folder of
    frames; see :mod:`cleancut.video.encode`). Options are
    :class:`~cleancut.options.RemoveOptions` fields, applied to every frame; ``crop`` is refused
    (it would change the frame size).

    An existing ``dst`` is left alone (``skipped`` in the result) unless ``overwrite``; ``dst``
    equal to ``src`` raises ConfigError. ``progress=True`` shows a progress bar on stderr (None:
    only on a terminal). Errors raise :class:`~cleancut.errors.VideoError` (one-line messages);
    a truncated input is processed as far as it decodes, written, and then reported by
    :class:`~cleancut.errors.VideoTruncatedError`, whose ``result`` describes the output.

    ``on_frame(done, total)`` is called after each frame is written (``total`` is None when the
    input does not say); an exception it raises stops the run and no output is left (a service
    cancels a job this way). ``remover`` runs the frames instead of the shared Remover of the
    options' model (a server passes its own).
    """
    started = time.perf_counter()
    opts = _options(options, overrides)
    source_path, target = Path(src), Path(dst)
    if _same_file(source_path, target):
        raise ConfigError(f"refusing to write the output over its input {source_path}.")
    kind = output_kind(dst)
    check_options(kind, opts)
    result = VideoResult(source_path, target)
    if kind == FOLDER:
        state = folder_state(target)
        if state == "foreign":
            raise ConfigError(f"{target} exists and holds files that are not frames written by "
                              "cleancut video; frames go into a new or empty folder.")
        exists = state == "frames"
    else:
        exists = target.exists()
        if exists and target.is_dir():
            raise ConfigError(f"{target} is a folder; name a file ending in .{kind}.")
    if exists and not overwrite:
        result.skipped = True
        return result
    remover = remover or _remover(opts)
    with VideoSource(source_path, max_pixels=opts.max_pixels) as source:
        remover.load()  # a broken model fails here, before any output exists
        if not target.parent.exists():
            target.parent.mkdir(parents=True)
        writer = make_writer(target, kind, source, opts, audio)
        try:
            _run(source, writer, remover, opts, _smooth_params(smooth), progress, on_frame)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        result.frames = writer.frames
        result.seconds = source.decoded_seconds
        result.audio = writer.audio_summary
        result.truncated = source.truncation
        if writer.audio_problem:
            result.warnings.append(writer.audio_problem)
            warnings.warn(writer.audio_problem, VideoWarning, stacklevel=2)
    result.elapsed = time.perf_counter() - started
    if result.truncated:
        raise VideoTruncatedError(
            f"{result.truncated}. {target} holds the {result.frames} frames that could be "
            "decoded.", result)
    return result


def _run(source: VideoSource, writer, remover, options: RemoveOptions,
         smooth: SmoothParams | None, progress: bool | None,
         on_frame: Callable[[int, int | None], None] | None = None) -> None:
    from tqdm import tqdm

    def composed():
        for frame, alpha in in_background(_mattes(source, remover, options, smooth), _DEPTH,
                                          "cleancut-infer"):
            prepared = writer.prepare(process(frame.image, alpha, options))
            yield replace(frame, image=None), prepared  # the picture is not needed any more

    total = source.expected_frames or _estimate_frames(source)
    with tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True,
              disable=None if progress is None else not progress,
              desc=source.path.name[:30]) as bar:
        for frame, prepared in in_background(composed(), _DEPTH, "cleancut-compose"):
            writer.write(frame, prepared)
            bar.update(1)
            if on_frame is not None:
                on_frame(writer.frames, total)


def _estimate_frames(source: VideoSource) -> int | None:
    if source.expected_seconds and source.average_rate:
        return max(1, round(source.expected_seconds * float(source.average_rate)))
    return None

