"""Carrying the input's audio track into the output.

The track is copied packet by packet when the output container can hold its codec (AAC into MP4
or MOV, Opus into WebM, anything into the Matroska file beside a folder of frames), and otherwise
decoded and re-encoded into the container's own audio codec (e.g. AAC -> Opus for WebM). It is
read through a second demuxer of the input, so it never passes through the frame pipeline;
:meth:`AudioTrack.write_until` is called before each video frame is muxed, which keeps the two
streams interleaved in the file with only a small read-ahead.
"""

from __future__ import annotations

import os
from typing import Iterator

from ..errors import VideoError
from .decode import import_av, reason

#: how far audio is muxed ahead of the video frame being written, in seconds
LEAD_SECONDS = 0.5
#: audio codecs copied as they are, per output container (FFmpeg's muxers accept more in
#: theory, e.g. Opus in MOV, but refuse them when the header is written); None = any codec
COPYABLE = {
    "webm": {"opus", "vorbis"},
    "mp4": {"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"},
    "mov": {"aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"},
    "matroska": None,
}


class AudioTrack:
    """The input's audio stream ``index``, written into ``output`` (an open PyAV output
    container, before its header is written)."""

    def __init__(self, source: str | os.PathLike, index: int, output):
        av = import_av()
        self._av = av
        self.input = av.open(os.fspath(source), mode="r")
        try:
            self._stream = self.input.streams[index]
            ctx = self._stream.codec_context
            copyable = COPYABLE.get(output.format.name.split(",")[0], set())
            self.copied = copyable is None or (ctx is not None and ctx.name in copyable)
            if self.copied:
                self.out = output.add_stream_from_template(self._stream)
            elif ctx is None:
                raise VideoError(f"{os.fspath(source)}: the audio codec has no decoder in this "
                                 "FFmpeg build, and the output container cannot hold it as is")
            else:
                target = output.default_audio_codec
                rate = 48000 if target in ("opus", "libopus") else ctx.sample_rate
                layout = "stereo" if ctx.layout.nb_channels >= 2 else "mono"
                self.out = output.add_stream(target, rate=rate, layout=layout)
            self.codec = self.out.codec_context.name
        except BaseException:
            self.input.close()
            raise
        self._output = output
        self._packets: Iterator | None = self.input.demux(self._stream)
        self._pending = None  # a packet read but not yet due
        self.problem: str | None = None

    def write_until(self, seconds: float | None) -> None:
        """Mux the audio up to ``seconds`` (plus a short lead); None = everything left."""
        limit = None if seconds is None else seconds + LEAD_SECONDS
        av = self._av
        try:
            while self._packets is not None:
                packet = self._pending if self._pending is not None else next(self._packets, None)
                self._pending = None
                if packet is None:
                    self._finish()
                    return
                if limit is not None and packet.pts is not None and packet.time_base is not None \
                        and float(packet.pts * packet.time_base) > limit:
                    self._pending = packet
                    return
                self._write(packet)
        except (av.error.FFmpegError, OSError) as exc:
            # a damaged audio track must not cost the video: keep what was copied
            self.problem = f"the audio track is damaged or truncated ({reason(exc)}); it ends early"
            self._packets = None
            self._flush_encoder()

    def _write(self, packet) -> None:
        if self.copied:
            if packet.dts is None:  # the demuxer's final empty packet
                return
            packet.stream = self.out
            self._output.mux(packet)
            return
        for frame in packet.decode():
            self._output.mux(self.out.encode(frame))

    def _finish(self) -> None:
        self._packets = None
        self._flush_encoder()

    def _flush_encoder(self) -> None:
        if not self.copied:
            self._output.mux(self.out.encode(None))

    def close(self) -> None:
        self.input.close()


def write_audio_file(source: str | os.PathLike, index: int, target: str | os.PathLike) -> str | None:
    """Copy the input's audio stream ``index`` into a Matroska audio file ``target`` (any codec
    fits, so it is never re-encoded); returns a problem message when the track is damaged."""
    av = import_av()
    with av.open(os.fspath(target), mode="w", format="matroska") as output:
        track = AudioTrack(source, index, output)
        try:
            track.write_until(None)
        finally:
            track.close()
    return track.problem
