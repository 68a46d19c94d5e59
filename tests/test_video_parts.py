"""The parts of the video path on their own: display orientation, temporal smoothing, the
background-thread stages."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from PIL import Image

from cleancut.video._threads import in_background
from cleancut.video.orientation import Orientation, rotation_degrees
from cleancut.video.smooth import SmoothParams, TemporalSmoother


# ---------------------------------------------------------------- orientation


def display_matrix(clockwise: float, hflip: bool = False, vflip: bool = False) -> tuple[int, ...]:
    """FFmpeg's av_display_rotation_set + av_display_matrix_flip, in Python."""
    radians = -math.radians(clockwise)
    c, s = math.cos(radians), math.sin(radians)
    m = [round(c * 65536), round(-s * 65536), 0, round(s * 65536), round(c * 65536), 0, 0, 0, 1 << 30]
    flip = (-1 if hflip else 1, -1 if vflip else 1, 1)
    return tuple(v * flip[i % 3] for i, v in enumerate(m))


@pytest.mark.parametrize("clockwise", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
def test_orientation_round_trips_every_right_angle_and_mirror(clockwise, hflip):
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    o = Orientation.from_matrix(display_matrix(clockwise, hflip))
    upright = o.upright(pixels)
    assert np.array_equal(o.stored(upright), pixels)
    assert o.upright_size(6, 4) == (upright.shape[1], upright.shape[0])
    assert upright.flags.c_contiguous
    # mirrored or not, the pixel values are the same ones, moved
    assert sorted(upright.ravel()) == sorted(pixels.ravel())
    assert o.is_identity == (clockwise == 0 and not hflip)


def test_ninety_degrees_is_shown_turned_counter_clockwise():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    o = Orientation.from_matrix(display_matrix(-90))  # what PyAV's set_display_rotation(90) stores
    assert rotation_degrees(o.matrix) == pytest.approx(90)
    assert np.array_equal(o.upright(pixels), np.rot90(pixels, 1))


def test_orientation_from_a_decoded_frame(tmp_path):
    import av
    from video_clips import make_clip

    clip = make_clip(tmp_path / "r.mp4", frames=1, rotation=270, audio=None)
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
        o = Orientation.from_frame(frame)
    assert o.degrees == pytest.approx(-90) and o.operations == ("clock",)


def test_odd_angles_are_left_to_the_player():
    o = Orientation.from_matrix(display_matrix(30))
    assert o.is_identity and o.matrix is not None
    assert Orientation.from_matrix(None).matrix is None


# ---------------------------------------------------------------- smoothing


def still_frame(value: int = 90, size=(80, 60), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.clip(value + rng.normal(0, 2, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def smooth_all(smoother, frames, alphas):
    return [a for _, a in smoother.smooth(zip(frames, alphas))]


def test_still_picture_flicker_is_averaged_out():
    rng = np.random.default_rng(1)
    frames = [still_frame(seed=i) for i in range(30)]  # the same picture, fresh sensor noise
    raw = [np.clip(0.5 + rng.normal(0, 0.15, (60, 80)), 0, 1).astype(np.float32) for _ in frames]
    smoothed = smooth_all(TemporalSmoother(SmoothParams(radius=2)), frames, raw)
    assert len(smoothed) == len(raw)
    flicker = lambda seq: np.mean([np.abs(b - a).mean() for a, b in zip(seq, seq[1:])])  # noqa: E731
    assert flicker(smoothed) < 0.5 * flicker(raw)
    assert np.mean(smoothed) == pytest.approx(np.mean(raw), abs=0.01)  # no bias


def test_moving_parts_are_not_blended_with_other_frames():
    frames, alphas = [], []
    for i in range(5):
        pixels = np.zeros((60, 80, 3), np.uint8)
        pixels[20:40, 10 + 15 * i:25 + 15 * i] = 255  # a bright block jumping right
        frames.append(Image.fromarray(pixels))
        alphas.append((pixels[:, :, 0] > 0).astype(np.float32))
    smoothed = smooth_all(TemporalSmoother(SmoothParams(radius=2)), frames, alphas)
    for raw, out in zip(alphas, smoothed):
        # inside the block and far from it the matte is unchanged (only a rim of the scaled
        # weight maps can mix)
        assert out[25:35][raw[25:35] == 1].min() > 0.95
        assert out[:15].max() == 0.0 and out[45:].max() == 0.0


def test_window_is_centred_streamed_and_bounded():
    smoother = TemporalSmoother(SmoothParams(radius=2))
    frame = still_frame()
    ready = [smoother.push(i, frame, np.full((60, 80), float(i), np.float32)) for i in range(6)]
    assert [len(r) for r in ready] == [0, 0, 1, 1, 1, 1]  # each frame waits for 2 later ones
    assert len(smoother._window) == 2  # never more than the window
    first_keys = [r[0][0] for r in ready if r]
    assert first_keys == [0, 1, 2, 3]
    (key, value), = ready[3]  # frame 1: the mean of frames 0..3 on a still picture
    assert key == 1 and value.mean() == pytest.approx(np.mean([0, 1, 2, 3]), abs=1e-3)
    (_, middle), = ready[4]  # frame 2: the mean of frames 0..4
    assert middle.mean() == pytest.approx(2.0, abs=1e-3)
    tail = smoother.flush()
    assert [k for k, _ in tail] == [4, 5] and smoother.flush() == []


def test_scene_cut_is_not_blended():
    smoother = TemporalSmoother()
    dark, bright = still_frame(20), still_frame(230)
    out = smooth_all(smoother, [dark, dark, bright, bright],
                     [np.full((60, 80), v, np.float32) for v in (0.2, 0.2, 0.9, 0.9)])
    assert [round(float(a.mean()), 3) for a in out] == [0.2, 0.2, 0.9, 0.9]


@pytest.mark.parametrize("kwargs", [{"radius": 0}, {"motion_low": 0.2, "motion_high": 0.1},
                                    {"work_side": 4}])
def test_bad_smoothing_parameters(kwargs):
    with pytest.raises(ValueError):
        SmoothParams(**kwargs)


# ---------------------------------------------------------------- background stages


def test_background_stage_keeps_order_and_raises_producer_errors():
    assert list(in_background(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise RuntimeError("decoder broke")

    stage = in_background(failing())
    assert next(stage) == 1
    with pytest.raises(RuntimeError, match="decoder broke"):
        next(stage)


def test_closing_a_stage_stops_and_closes_its_producer():
    produced, closed = [], threading.Event()

    def endless():
        try:
            for i in range(10**9):
                produced.append(i)
                yield i
        finally:
            closed.set()

    stage = in_background(endless(), depth=2)
    assert [next(stage) for _ in range(3)] == [0, 1, 2]
    stage.close()  # joins the worker
    assert closed.is_set() and len(produced) <= 6  # only a bounded read-ahead happened
    before = len(produced)
    time.sleep(0.05)
    assert len(produced) == before
