"""``cleancut live`` and ``cleancut.live.iter_live``: paced file sources, dropped frames, causal
smoothing, the sinks, and clear errors for missing cameras, bad URLs and lost streams."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from video_clips import make_clip, probe  # noqa: E402

from cleancut.api import Remover  # noqa: E402
from cleancut.cli import main  # noqa: E402
from cleancut.live import LiveSourceError, iter_live  # noqa: E402
from cleancut.live.session import LiveSession  # noqa: E402
from cleancut.live.sources import PyAVSource, kind_of  # noqa: E402
from cleancut.video.smooth import CausalParams, CausalSmoother  # noqa: E402

SIZE = (64, 48)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """30 frames at 30 fps of a white rectangle moving on black (no audio)."""
    return make_clip(tmp_path_factory.mktemp("live") / "clip.mp4", frames=30, rate=30, audio=None)


class SlowRemover:
    """A Remover that takes at least ``seconds`` per frame (a model slower than the source)."""

    def __init__(self, model, seconds: float):
        self.inner = Remover(model=str(model))
        self.seconds = seconds

    def load(self):
        return self.inner.load()

    def predict_mask(self, image, max_pixels=None):
        time.sleep(self.seconds)
        return self.inner.predict_mask(image, max_pixels=max_pixels)


# -- causal smoothing --------------------------------------------------------------------------------


def test_causal_smoothing_averages_a_still_scene_and_follows_motion_at_once():
    rng = np.random.default_rng(0)
    still = Image.new("RGB", (40, 30), (90, 90, 90))
    truth = np.zeros((30, 40), np.float32)
    truth[10:20, 10:30] = 1.0
    smoother = CausalSmoother()
    raw, smoothed = [], []
    for _ in range(30):
        noisy = np.clip(truth + rng.normal(0, 0.2, truth.shape), 0, 1).astype(np.float32)
        raw.append(noisy)
        smoothed.append(smoother.push(still, noisy))
    flicker = lambda xs: float(np.mean([np.abs(a - b).mean() for a, b in zip(xs, xs[1:])]))  # noqa: E731
    assert flicker(smoothed[5:]) < 0.6 * flicker(raw[5:])
    # a new picture (the scene changed everywhere): the new matte is taken as it is, no lag
    moved = Image.new("RGB", (40, 30), (250, 250, 250))
    new = np.ones((30, 40), np.float32) * 0.25
    assert np.allclose(smoother.push(moved, new), new)


def test_causal_smoothing_has_no_look_ahead_and_can_be_off():
    frames = [Image.new("RGB", (16, 16), (100, 100, 100)) for _ in range(3)]
    mattes = [np.full((16, 16), v, np.float32) for v in (0.2, 0.8, 0.5)]
    a, b = CausalSmoother(), CausalSmoother()
    first_two = [a.push(f, m) for f, m in zip(frames[:2], mattes[:2])]
    all_three = [b.push(f, m) for f, m in zip(frames, mattes)]
    assert all(np.array_equal(x, y) for x, y in zip(first_two, all_three[:2]))  # the future changes nothing
    assert np.allclose(all_three[1], 0.5)  # memory 1: equal weight to the new matte and the past
    off = CausalSmoother(CausalParams(memory=0))
    assert [float(off.push(f, m).mean()) for f, m in zip(frames, mattes)] == pytest.approx([0.2, 0.8, 0.5])
    with pytest.raises(ValueError, match="memory"):
        CausalParams(memory=-1)


# -- the loop ------------------------------------------------------------------------------------------


def test_iter_live_without_pacing_processes_every_frame(clip, tiny_model):
    frames = list(iter_live(clip, model=str(tiny_model), bg_color="green", pacing=False))
    assert [f.index for f in frames] == list(range(30))
    f = frames[3]
    assert f.result.mode == "RGB" and f.result.size == SIZE and f.alpha.shape == (SIZE[1], SIZE[0])
    assert f.result.getpixel((1, 1))[1] > 100  # the background is green
    assert all(x.latency >= 0 for x in frames)


def test_a_slow_model_drops_frames_instead_of_falling_behind(clip, tiny_model):
    session = LiveSession(clip, remover=SlowRemover(tiny_model, 0.1), model=str(tiny_model))
    started = time.monotonic()
    frames = list(session)
    elapsed = time.monotonic() - started
    stats = session.stats
    # 30 frames at 30 fps is one second of video; at 0.1 s a frame about 10 can be processed
    assert 5 <= stats.frames <= 16 and stats.dropped >= 10, stats.to_dict()
    assert stats.frames + stats.dropped <= 30
    assert elapsed < 2.5  # it kept pace with the source: about one second, not three
    assert max(f.latency for f in frames) < 0.5  # no backlog builds up
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    assert stats.latency_ms(95) >= stats.latency_ms(50) >= 100


def test_closing_the_generator_stops_the_capture_thread(clip, tiny_model):
    before = threading.active_count()
    gen = iter_live(clip, model=str(tiny_model))
    next(gen)
    gen.close()
    assert threading.active_count() == before


# -- sources -------------------------------------------------------------------------------------------


def test_source_kinds():
    assert [kind_of(s) for s in ("0", "/dev/video2", "rtsp://cam/x", "HTTP://h/s.m3u8", "clip.mp4")] == [
        "camera", "camera", "stream", "stream", "file"]


def test_a_lost_stream_reconnects_with_backoff_then_gives_up(clip, tmp_path):
    copy = tmp_path / "stream.mp4"
    copy.write_bytes(clip.read_bytes())
    waits = []
    source = PyAVSource(copy, sleep=waits.append, retries=3, pacing=False)
    source.kind = "stream"  # a 'stream' that ends after 30 frames each time it is opened
    frames = source.frames()
    got = [next(frames) for _ in range(45)]  # the end of the first play, then a reconnection
    assert source.reconnects == 1 and waits == [0.5]
    assert got[40].index == 40  # frame numbering carries on
    copy.unlink()  # now the stream cannot be reopened
    with pytest.raises(LiveSourceError, match="could not be reopened after 3 tries"):
        for _ in frames:
            pass
    assert waits == [0.5, 0.5, 1.0, 2.0]  # the backoff doubles, bounded by the number of tries


@pytest.mark.parametrize("source, message", [
    ("/dev/video97", "no camera at /dev/video97"),
    ("97", "no camera at /dev/video97"),
    ("rtsp://127.0.0.1:9/none", "cannot open the stream"),
    ("missing.mp4", "no such file"),
])
def test_bad_sources_are_one_line_errors(source, message, tiny_model, tmp_path, capsys):
    code = main(["live", source, "-o", str(tmp_path / "out.webm"), "--model", str(tiny_model)])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_file_that_is_not_a_video(tmp_path, tiny_model, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello")
    assert main(["live", str(bad), "--preview", "--model", str(tiny_model)]) == 1
    assert "not a video" in capsys.readouterr().err


# -- the command and its sinks ------------------------------------------------------------------------


def test_cli_file_source_with_pacing_into_webm(clip, tiny_model, tmp_path, capsys):
    out = tmp_path / "out.webm"
    stats = tmp_path / "stats.json"
    code = main(["live", str(clip), "-o", str(out), "--bg-color", "green", "--model", str(tiny_model),
                 "--stats-json", str(stats)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "frames/s" in err and "latency p50" in err and "dropped" in err
    info = probe(out)
    assert info.frames >= 20  # most of the 30 frames (the tiny model keeps up; a busy machine drops a few)
    assert 0.8 <= info.end <= 1.3  # it plays for about as long as the source
    import json

    figures = json.loads(stats.read_text())
    assert figures["frames"] == info.frames and figures["frames"] + figures["dropped"] <= 30
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_cli_transparent_webm_keeps_alpha_and_mp4_refuses_it(clip, tiny_model, tmp_path, capsys):
    out = tmp_path / "cut.webm"
    assert main(["live", str(clip), "--no-pacing", "-o", str(out), "--model", str(tiny_model)]) == 0
    got = probe(out)
    assert got.frames == 30 and got.size == SIZE
    alpha = got.first[:, :, 3]
    assert alpha[24, 26] > 200 and alpha[2, 2] < 60  # the rectangle kept, the corner transparent
    capsys.readouterr()
    assert main(["live", str(clip), "-o", str(tmp_path / "x.mp4"), "--model", str(tiny_model)]) == 2
    assert "no alpha channel" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_cli_raw_frames_on_stdout(clip, tiny_model):
    proc = subprocess.run([sys.executable, "-m", "cleancut", "live", str(clip), "--no-pacing", "-o", "-",
                           "--mode", "mask", "--model", str(tiny_model)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(proc.stdout) == 30 * SIZE[0] * SIZE[1]  # 30 gray frames
    assert b"raw gray frames of 64x48" in proc.stderr
    masks = np.frombuffer(proc.stdout, np.uint8).reshape(30, SIZE[1], SIZE[0])
    assert masks[0, 24, 26] > 128 and masks[0, 2, 2] < 128  # the rectangle, not the corner


def test_virtual_camera_without_a_device_says_what_to_install(clip, tiny_model, capsys):
    code = main(["live", str(clip), "-o", "virtualcam", "--max-frames", "2", "--model", str(tiny_model)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert ("pyvirtualcam" in err and "pip install" in err) or "v4l2loopback" in err or "OBS" in err, err


def test_nowhere_to_send_and_crop_are_refused(clip, tiny_model, capsys):
    assert main(["live", str(clip), "--model", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert "nowhere to send the results" in err
    assert main(["live", str(clip), "--preview", "--crop", "--model", str(tiny_model)]) == 2
    assert "--crop" in capsys.readouterr().err


def test_max_frames_is_exact_although_the_model_runs_ahead(clip, tiny_model):
    session = LiveSession(clip, pacing=False, max_frames=7, model=str(tiny_model))
    assert [f.index for f in session] == list(range(7)) and session.stats.frames == 7


class _Recording:
    def __init__(self, fail_at: int | None = None, delay: float = 0.0):
        self.written: list[int] = []
        self.closed: list[bool] = []
        self.fail_at, self.delay = fail_at, delay
        self.thread: str | None = None

    def write(self, frame) -> None:
        self.thread = threading.current_thread().name
        time.sleep(self.delay)
        if frame == self.fail_at:
            raise RuntimeError(f"disk full at frame {frame}")
        self.written.append(frame)

    def close(self, ok: bool = True) -> None:
        self.closed.append(ok)


def test_background_sinks_write_every_frame_in_order_off_the_callers_thread():
    from cleancut.live.sinks import BackgroundSinks

    a, b = _Recording(delay=0.002), _Recording()
    writer = BackgroundSinks([a, b], depth=2)
    for i in range(20):
        writer.write(i)
    writer.close()
    assert a.written == b.written == list(range(20))
    assert a.closed == b.closed == [True]
    assert a.thread == "cleancut-sinks" != threading.current_thread().name


def test_background_sinks_raise_a_sinks_error_and_abandon_the_output():
    from cleancut.live.sinks import BackgroundSinks

    sink = _Recording(fail_at=3)
    writer = BackgroundSinks([sink], depth=1)
    with pytest.raises(RuntimeError, match="disk full at frame 3"):
        for i in range(50):
            writer.write(i)
            time.sleep(0.001)
    writer.close(ok=False)
    assert sink.written == [0, 1, 2]  # nothing after the failure
    assert sink.closed == [False]  # the half-written output is abandoned, not finished

    late = _Recording(fail_at=1)
    writer = BackgroundSinks([late])
    writer.write(0)
    writer.write(1)  # fails on the thread; close() reports it
    with pytest.raises(RuntimeError, match="frame 1"):
        writer.close()
    assert late.closed == [False]


def test_cli_streams_h264_over_tcp_to_a_listening_player(clip, tiny_model, capsys):
    """``-o tcp://host:port``: H.264 in MPEG-TS, received here by a PyAV reader that listens the
    way ``ffplay tcp://...?listen`` does, decoded frame by frame."""
    import socket

    import av

    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    received: list[np.ndarray] = []
    errors: list[BaseException] = []
    listening = threading.Event()

    def player() -> None:
        try:
            listening.set()
            with av.open(f"tcp://127.0.0.1:{port}?listen=1&listen_timeout=20000", format="mpegts",
                         timeout=20) as container:
                for frame in container.decode(video=0):
                    received.append(frame.to_ndarray(format="rgb24"))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=player, daemon=True)
    thread.start()
    listening.wait()
    time.sleep(0.5)  # the reader's listen() has been called
    code = main(["live", str(clip), "--no-pacing", "-o", f"tcp://127.0.0.1:{port}", "--bg-color", "green",
                 "--model", str(tiny_model)])
    thread.join(timeout=30)
    assert code == 0, capsys.readouterr().err
    assert not errors, errors
    assert len(received) == 30 and received[0].shape == (SIZE[1], SIZE[0], 3)
    corner, inside = received[0][2, 2].astype(int), received[0][24, 26].astype(int)
    assert np.abs(corner - (0, 128, 0)).max() <= 12  # background composited over CSS green
    assert inside.min() >= 200  # the white rectangle kept


def test_live_leaves_edge_colours_off_unless_asked():
    from cleancut.live.session import _options
    from cleancut.options import RemoveOptions

    assert RemoveOptions().foreground_estimation  # photos and clips: on by default
    assert not _options(None, {}).foreground_estimation  # live keeps its frame rate
    assert not _options(RemoveOptions(bg_color="white"), {}).foreground_estimation
    assert _options(RemoveOptions(estimate_foreground=True), {}).foreground_estimation  # asked for: it runs
    assert _options(None, {"estimate_foreground": True}).foreground_estimation
