"""``cleancut video`` and ``cleancut.remove_video`` / ``iter_video`` on small clips made with PyAV
(tests/video_clips.py): every output kind, what is kept from the input, errors, safety."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_clips import make_clip, probe

import cleancut
from cleancut.cli import main
from cleancut.errors import ConfigError, VideoTruncatedError

SIZE = (64, 48)  # width, height
CENTRE = (24, 26)  # (row, column) inside the rectangle of frame 0
CORNER = (2, 2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames of a white rectangle moving on black, 25 fps, H.264 + AAC in MP4."""
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


@pytest.fixture(scope="module")
def source(clip):
    return probe(clip)


@pytest.fixture
def run(tiny_model, capsys):
    """Run ``cleancut video ARGS --model tiny``; returns (exit code, stderr)."""
    def _run(*args) -> tuple[int, str]:
        code = main(["video", *map(str, args), "--model", str(tiny_model)])
        return code, capsys.readouterr().err
    return _run


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or folders left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("cleancut video: error: "), err
    return lines[0]


# ---------------------------------------------------------------- every output kind


@pytest.mark.parametrize("name, extra, alpha, audio, profile", [
    ("cut.webm", [], True, "opus", "Profile 0"),  # AAC is re-encoded: WebM only holds Opus / Vorbis
    ("cut.mov", [], True, "aac", "4444"),  # copied
    ("cut.mov", ["--bg-color", "red"], False, "aac", "HQ"),
    ("cut.mp4", ["--bg-color", "red"], False, "aac", "High"),  # copied
])
def test_video_outputs_keep_frames_timing_and_audio(run, clip, source, tmp_path, name, extra, alpha,
                                                    audio, profile):
    out = tmp_path / name
    code, err = run(clip, "-o", out, *extra)
    assert code == 0, err
    assert f"wrote {out}: 12 frames" in err
    got = probe(out)
    assert got.frames == source.frames == 12
    assert got.rate == source.rate == 25 and got.profile == profile
    assert got.times == pytest.approx(source.times, abs=1e-3)
    assert got.end == pytest.approx(source.end, abs=1e-3)
    assert got.size == SIZE
    assert got.audio == audio
    assert got.audio_seconds == pytest.approx(source.audio_seconds, abs=0.03)
    assert got.has_alpha is alpha
    first = got.first.astype(int)
    assert first[CENTRE][:3].min() > 200 and first[CENTRE][3] == 255  # the subject, opaque
    if alpha:
        assert first[CORNER][3] < 10  # the background, transparent
    else:
        assert first[CORNER][0] > 200 and first[CORNER][1:3].max() < 60  # red background
    assert leftovers(tmp_path) == []


def test_folder_output_one_png_per_frame_with_timestamps_and_audio(run, clip, source, tmp_path):
    out = tmp_path / "frames"
    code, err = run(clip, "-o", out)
    assert code == 0, err
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(1, 13)]
    first = np.asarray(Image.open(pngs[0]))
    assert first.shape == (48, 64, 4) and first[CENTRE][3] == 255 and first[CORNER][3] == 0
    # frames really are in order: the rectangle moves right by 2 px per frame
    left_edges = [int(np.argmax(np.asarray(Image.open(p))[24, :, 3] > 128)) for p in pngs]
    assert left_edges == sorted(left_edges) and left_edges[-1] > left_edges[0]
    with open(out / "timestamps.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == [p.name for p in pngs]
    assert [float(r["seconds"]) for r in rows] == pytest.approx(source.times, abs=1e-5)
    assert probe_audio_seconds(out / "audio.mka") == pytest.approx(source.audio_seconds, abs=0.03)
    assert leftovers(tmp_path) == []


def probe_audio_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate


def test_a_trailing_slash_names_a_folder(run, clip, tmp_path):
    code, err = run(clip, "-o", f"{tmp_path / 'take.v2'}/", "--mode", "mask")
    assert code == 0, err
    assert len(list((tmp_path / "take.v2").glob("frame_*.png"))) == 12


def test_mask_mode_writes_a_grayscale_matte(run, clip, tmp_path):
    out = tmp_path / "matte.mp4"
    code, err = run(clip, "-o", out, "--mode", "mask")
    assert code == 0, err
    got = probe(out)
    assert got.frames == 12 and not got.has_alpha
    rgb = got.first[:, :, :3].astype(int)
    assert np.abs(rgb[:, :, 0] - rgb[:, :, 1]).max() <= 3  # grey: R = G = B
    assert rgb[CENTRE].min() > 230 and rgb[CORNER].max() < 25


def test_variable_frame_rate_and_rotation_are_kept(run, tmp_path):
    clip = make_clip(tmp_path / "phone.mp4", frames=10, vfr=True, rotation=90)
    source = probe(clip)
    assert source.rotation == 90 and len(set(np.diff(source.times).round(3))) == 2  # really VFR
    out = tmp_path / "phone.webm"
    code, err = run(clip, "-o", out)
    assert code == 0, err
    got = probe(out)
    assert got.times == pytest.approx(source.times, abs=1e-3)
    assert got.end == pytest.approx(source.end, abs=1e-3)
    assert got.rotation == 90 and got.size == SIZE  # stored as the input, shown rotated


def test_rotated_frames_are_processed_and_written_upright(run, tmp_path):
    clip = make_clip(tmp_path / "phone.mp4", frames=3, rotation=90, audio=None)
    code, err = run(clip, "-o", tmp_path / "frames", "--mode", "mask")
    assert code == 0, err
    frame = np.asarray(Image.open(tmp_path / "frames" / "frame_000001.png"))
    assert frame.shape == (64, 48)  # upright: the 64x48 stored frame turned by 90 degrees
    from video_clips import rectangle_frame

    expected = np.rot90(rectangle_frame(0, SIZE)[:, :, 0], 1)  # as a player shows it
    assert np.mean((frame > 128) == (expected > 128)) > 0.95


@pytest.mark.parametrize("name, extra", [("anim.webm", []), ("anim.mov", []),
                                         ("anim.mp4", ["--bg-color", "white"])])
def test_animated_gif_with_odd_size(run, tmp_path, name, extra):
    gif = make_clip(tmp_path / "anim.gif", codec="gif", pix_fmt="rgb8", frames=6, rate=10,
                    audio=None, size=(63, 47))  # odd: 4:2:0 chroma and ProRes need care
    out = tmp_path / name
    code, err = run(gif, "-o", out, *extra)
    assert code == 0, err
    got = probe(out)
    assert (got.frames, got.size, got.audio) == (6, (63, 47), None)
    assert got.has_alpha is (not extra)
    assert got.end == pytest.approx(probe(gif).end, abs=0.011)


def test_transparent_input_stays_transparent(run, tmp_path):
    clip = make_clip(tmp_path / "alpha.webm", codec="libvpx-vp9", pix_fmt="yuva420p",
                     audio="libopus", alpha=True, frames=4)
    assert probe(clip).has_alpha
    code, err = run(clip, "-o", tmp_path / "frames")
    assert code == 0, err
    frame = np.asarray(Image.open(tmp_path / "frames" / "frame_000001.png"))
    assert frame[CENTRE][3] == 255
    # the model sees the half-transparent black background flattened over white (grey, so the
    # tiny model says 0.5); the result is never more opaque than the input: 0.5 x 0.5
    assert 0.2 * 255 < frame[CORNER][3] < 0.3 * 255, frame[CORNER]


# ---------------------------------------------------------------- Python API


def test_remove_video_api_and_skip(clip, tiny_model, tmp_path):
    out = tmp_path / "api.webm"
    result = cleancut.remove_video(clip, out, model=str(tiny_model))
    assert (result.frames, result.skipped, result.audio) == (12, False, "libopus (re-encoded)")
    assert result.seconds == pytest.approx(probe(clip).end, abs=1e-3) and result.fps > 0
    again = cleancut.remove_video(clip, out, model=str(tiny_model))
    assert again.skipped and again.frames == 0


def test_iter_video_yields_frames_and_mattes(clip, tiny_model):
    pairs = list(cleancut.iter_video(clip, model=str(tiny_model), threshold=0.5))
    assert len(pairs) == 12
    frame, alpha = pairs[0]
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert alpha.shape == (48, 64) and alpha.dtype == np.float32
    assert set(np.unique(alpha)) <= {0.0, 1.0}  # threshold applied
    assert alpha[CENTRE] == 1.0 and alpha[CORNER] == 0.0
    assert not np.array_equal(pairs[0][1], pairs[-1][1])  # the subject moved


def test_iter_video_smoothing_can_be_turned_off(clip, tiny_model, remover):
    pairs = list(cleancut.iter_video(clip, model=str(tiny_model), smooth=False))
    smooth = [a for _, a in cleancut.iter_video(clip, model=str(tiny_model))]
    # without smoothing: exactly the photo path's matte of each decoded frame
    for frame, alpha in pairs[:3]:
        assert np.array_equal(alpha, remover.predict_mask(frame))
    # with it: the same number of mattes, blended with the neighbours where the picture is still
    assert len(smooth) == len(pairs)
    assert any(not np.array_equal(a, s) for (_, a), s in zip(pairs, smooth))
    assert all(np.abs(a - s).mean() < 0.05 for (_, a), s in zip(pairs, smooth))


def test_api_refuses_crop_and_alpha_in_mp4(clip, tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="--crop"):
        cleancut.remove_video(clip, tmp_path / "x.webm", model=str(tiny_model), crop=True)
    with pytest.raises(ConfigError, match="no alpha"):
        cleancut.remove_video(clip, tmp_path / "x.mp4", model=str(tiny_model))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- errors and safety


def test_not_a_video(run, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello, this is not a video")
    code, err = run(bad, "-o", tmp_path / "out.webm")
    assert code == 1 and "not a video" in one_error_line(err) and "hello" in err
    assert not (tmp_path / "out.webm").exists()


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file"),
    (None, "no such file"),
])
def test_empty_or_missing_input(run, tmp_path, content, expected):
    path = tmp_path / "in.mp4"
    if content is not None:
        path.write_bytes(content)
    code, err = run(path, "-o", tmp_path / "out.webm")
    assert code == 1 and expected in one_error_line(err)


def test_no_video_stream(run, tmp_path):
    import av

    sound = tmp_path / "sound.m4a"
    with av.open(str(sound), "w") as out:
        stream = out.add_stream("aac", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    code, err = run(sound, "-o", tmp_path / "out.webm")
    assert code == 1 and "no video stream" in one_error_line(err) and "1 audio stream" in err


def test_unsupported_codec(run, tmp_path):
    avi = make_clip(tmp_path / "clip.avi", fmt="avi", codec="mpeg4", frames=3, audio=None)
    data = avi.read_bytes()
    assert data.count(b"FMP4") == 2
    avi.write_bytes(data.replace(b"FMP4", b"ZZZZ"))  # a FourCC no decoder knows
    code, err = run(avi, "-o", tmp_path / "out.webm")
    assert code == 1 and "unsupported video codec" in one_error_line(err)


def test_still_image_is_refused(run, tmp_path, square):
    square(SIZE).save(tmp_path / "photo.jpg")
    code, err = run(tmp_path / "photo.jpg", "-o", tmp_path / "out.webm")
    assert code == 1 and "cleancut remove" in one_error_line(err)


def test_truncated_input_keeps_and_reports_what_decodes(run, tmp_path):
    full = make_clip(tmp_path / "full.mp4", frames=40, container_options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 6 // 10])
    out = tmp_path / "cut.webm"
    code, err = run(cut, "-o", out)
    line = [x for x in err.splitlines() if "error:" in x]
    assert code == 1 and len(line) == 1 and "Traceback" not in err, err
    assert "truncated" in line[0] and "of 40 frames" in line[0]
    decoded = int(line[0].split("decoded ")[1].split(" of")[0])
    assert 0 < decoded < 40 and f"holds the {decoded} frames" in line[0]
    assert probe(out).frames == decoded


def test_truncated_input_via_api(tmp_path, tiny_model):
    full = make_clip(tmp_path / "full.webm", fmt="webm", codec="libvpx-vp9", audio="libopus", frames=30)
    cut = tmp_path / "cut.webm"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(VideoTruncatedError, match="truncated") as caught:
        cleancut.remove_video(cut, tmp_path / "out.mov", model=str(tiny_model))
    assert 0 < caught.value.result.frames < 30 == probe(full).frames
    assert probe(tmp_path / "out.mov").frames == caught.value.result.frames


@pytest.mark.parametrize("output, extra, message", [
    ("out.webm", ["--crop"], "--crop"),
    ("out.mp4", [], "no alpha channel"),
    ("out.avi", [], "expected .webm"),
    ("out.webm", ["--format", "webp"], "apply to a folder"),
])
def test_refused_options_exit_2(run, clip, tmp_path, output, extra, message):
    code, err = run(clip, "-o", tmp_path / output, *extra)
    assert code == 2 and message in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_output_equal_to_input_is_refused(run, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=3)
    before = clip.read_bytes()
    code, err = run(clip, "-o", clip, "--bg-color", "white", "--overwrite")
    assert code == 2 and "over its input" in one_error_line(err)
    assert clip.read_bytes() == before


def test_existing_output_is_skipped_unless_overwrite(run, clip, tmp_path):
    out = tmp_path / "out.webm"
    out.write_bytes(b"precious")
    code, err = run(clip, "-o", out)
    assert code == 0 and "skipped" in err and out.read_bytes() == b"precious"
    code, err = run(clip, "-o", out, "--overwrite")
    assert code == 0 and probe(out).frames == 12


def test_foreign_folder_is_never_replaced(run, clip, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"mine")
    code, err = run(clip, "-o", folder, "--overwrite")
    assert code == 2 and "not frames written by cleancut video" in one_error_line(err)
    assert [p.name for p in folder.iterdir()] == ["holiday.jpg"]


@pytest.mark.parametrize("output", ["out.webm", "frames"])
def test_interrupted_run_leaves_no_partial_output(run, clip, tmp_path, monkeypatch, output):
    from cleancut.video import remove as video_remove

    real_process = video_remove.process
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_process(*args, **kwargs)

    monkeypatch.setattr(video_remove, "process", interrupted)
    code, err = run(clip, "-o", tmp_path / output)
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


def test_replacing_a_frames_folder_keeps_nothing_stale(run, tmp_path):
    long, short = make_clip(tmp_path / "long.mp4", frames=6), make_clip(tmp_path / "short.mp4", frames=3)
    out = tmp_path / "frames"
    assert run(long, "-o", out)[0] == 0
    assert run(short, "-o", out, "--overwrite")[0] == 0
    assert len(list(out.glob("frame_*.png"))) == 3
    assert leftovers(tmp_path) == []


def test_video_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "video" in capsys.readouterr().out



def test_without_pyav_the_error_names_the_extra(run, clip, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    code, err = run(clip, "-o", tmp_path / "out.webm")
    assert code == 1 and "pip install 'cleancut[video]'" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []
