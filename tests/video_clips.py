"""Small test clips made with PyAV, and a plain-PyAV probe of what a file holds.

``make_clip`` writes a white rectangle moving over a black background (the tiny test model calls
bright pixels foreground), with a sine-tone audio track, in any container/codec PyAV can encode.
``probe`` decodes a video with PyAV alone (libvpx for VP9 with alpha, as FFmpeg's own VP9 decoder
drops the alpha plane), independently of cleancut's reader, and reports frame count, timestamps,
rotation, alpha and audio. Both run in a fraction of a second for the sizes used in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

import av

AUDIO_RATE = 48000


def rectangle_frame(index: int, size=(64, 48)) -> np.ndarray:
    """RGB uint8: black, with a white rectangle (a third of the width, half the height) that
    moves 2 px to the right per frame."""
    w, h = size
    x = w // 8 + (2 * index) % max(1, w // 2)
    frame = np.zeros((h, w, 3), np.uint8)
    frame[h // 4:3 * h // 4, x:x + w // 3] = 255
    return frame


def make_clip(path, *, fmt: str | None = None, codec: str = "libx264", pix_fmt: str = "yuv420p",
              frames: int = 12, size=(64, 48), rate: int = 25, audio: str | None = "aac",
              rotation: int = 0, vfr: bool = False, options: dict | None = None,
              container_options: dict | None = None, alpha: bool = False) -> Path:
    """Write a test clip; returns its path. ``vfr`` alternates frame durations of 1 and 2
    frame periods; ``rotation`` stores a display matrix (counter-clockwise degrees); ``alpha``
    makes everything outside the rectangle half transparent (for codecs with alpha)."""
    path = Path(path)
    tick = Fraction(1, rate * 10)  # time base: a tenth of a frame period
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        stream.codec_context.time_base = tick
        if rotation:
            stream.set_display_rotation(rotation)
        sound = out.add_stream(audio, rate=AUDIO_RATE, layout="mono") if audio else None
        pts = 0
        for i in range(frames):
            rgb = rectangle_frame(i, size)
            if alpha:
                a = np.where(rgb[:, :, 0] > 0, 255, 128).astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(np.dstack([rgb, a]), format="rgba")
            else:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            step = 20 if (vfr and i % 2) else 10
            frame.pts, frame.time_base, frame.duration = pts, tick, step
            pts += step
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            total = int(AUDIO_RATE * pts * tick)
            for start in range(0, total, 960):
                n = min(960, total - start)
                tone = (0.3 * np.sin(np.arange(start, start + n) * 0.05)).astype(np.float32)[None]
                chunk = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


@dataclass
class Probe:
    format: str
    codec: str
    pix_fmt: str
    frames: int = 0
    times: list = field(default_factory=list)  # presentation time of each frame, seconds
    end: float = 0.0  # end of the last frame, seconds
    size: tuple = (0, 0)
    rotation: int = 0
    first: np.ndarray | None = None  # first frame as RGBA (alpha 255 where none)
    audio: str | None = None  # audio codec
    audio_seconds: float = 0.0
    rate: object = None  # the stream's average frame rate
    profile: str | None = None

    @property
    def has_alpha(self) -> bool:
        return self.first is not None and int(self.first[:, :, 3].min()) < 255


def probe(path) -> Probe:
    """Decode every frame of ``path`` with PyAV alone."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = stream.codec_context
        if decoder.name == "vp9" and stream.metadata.get("alpha_mode") == "1":
            decoder = av.CodecContext.create("libvpx-vp9", "r")
        info = Probe(container.format.name, stream.codec_context.name, stream.codec_context.pix_fmt,
                     rate=stream.average_rate, profile=stream.codec_context.profile)
        tb = stream.time_base
        for packet in container.demux(stream):
            for frame in decoder.decode(packet):
                if info.frames == 0:
                    info.first = frame.to_ndarray(format="rgba")
                    info.size = (frame.width, frame.height)
                    info.rotation = _rotation(path)
                    info.pix_fmt = frame.format.name
                start = float(frame.pts * tb)
                info.times.append(start)
                info.end = start + float((frame.duration or 0) * tb)
                info.frames += 1
        if container.streams.audio:
            audio = container.streams.audio[0]
            info.audio = audio.codec_context.name
    if info.audio:
        with av.open(str(path)) as container:
            audio = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(audio))
            info.audio_seconds = samples / audio.codec_context.sample_rate
    return info


def _rotation(path) -> int:
    """The rotation the first frame carries (FFmpeg's decoder attaches the display matrix)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return round(frame.rotation)
