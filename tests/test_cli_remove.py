"""``cleancut remove`` and ``cleancut models``: naming, folders, patterns, failures, resume,
never overwriting inputs, stdin/stdout."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cleancut.cli import main
from cleancut.testing import write_bad_images

SIZE = (64, 48)


@pytest.fixture
def run(tiny_model, capsys):
    """Run ``cleancut remove ARGS --model tiny``; returns (exit code, stderr)."""
    def _run(*args: str, model: bool = True) -> tuple[int, str]:
        argv = ["remove", *map(str, args)] + (["--model", str(tiny_model)] if model else [])
        code = main(argv)
        return code, capsys.readouterr().err
    return _run


@pytest.fixture
def photos(tmp_path, square) -> Path:
    """photos/a.jpg, photos/b.png, photos/sub/c.webp, plus files that must be ignored."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    square(SIZE).save(root / "a.jpg", quality=95)
    square(SIZE).save(root / "b.png")
    square(SIZE).save(root / "sub" / "c.webp", lossless=True)
    square(SIZE).save(root / ".hidden" / "d.png")
    (root / "notes.txt").write_text("not an image")
    return root


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def alpha_ok(path: Path) -> None:
    a = np.asarray(Image.open(path))
    assert a.shape == (48, 64, 4) and a[24, 32, 3] == 255 and a[2, 2, 3] == 0


def test_single_file_goes_beside_the_input(run, photos):
    code, err = run(photos / "a.jpg")
    assert code == 0, err
    alpha_ok(photos / "a.cutout.png")
    assert "1 written, 0 skipped, 0 failed" in err
    assert f"wrote {photos / 'a.cutout.png'}\n" in err  # says where it went


def test_several_results_say_the_folder_that_holds_them(run, photos, tmp_path):
    code, err = run(photos, "-o", tmp_path / "out")
    assert code == 0 and f"wrote 3 files under {tmp_path / 'out'}/" in err
    code, err = run(photos, "-o", tmp_path / "out")  # nothing written: nothing to point at
    assert code == 0 and "wrote" not in err


def test_colour_is_spelled_either_way(run, photos, tmp_path):
    code, err = run(photos / "a.jpg", "-o", tmp_path / "a.png", "--bg-colour", "red")
    assert code == 0, err
    assert Image.open(tmp_path / "a.png").convert("RGB").getpixel((1, 1)) == (255, 0, 0)


def test_single_file_to_named_output_picks_the_format(run, photos, tmp_path):
    code, err = run(photos / "a.jpg", "-o", tmp_path / "deep" / "x.webp")
    assert code == 0, err
    assert Image.open(tmp_path / "deep" / "x.webp").format == "WEBP"
    code, err = run(photos / "a.jpg", "-o", tmp_path / "x.webp", "--format", "jpeg")
    assert code == 2 and "--format jpeg contradicts the output file" in err
    code, err = run(photos / "a.jpg", photos / "b.png", "-o", tmp_path / "y.png")
    assert code == 2 and "names one file, but the inputs give 2 images" in err


def test_folder_is_searched_recursively_and_mirrored(run, photos, tmp_path):
    out = tmp_path / "out"
    code, err = run(photos, "-o", out)
    assert code == 0, err
    assert files(out) == ["a.png", "b.png", "sub/c.png"]
    for name in files(out):
        alpha_ok(out / name)
    assert "3 written, 0 skipped, 0 failed" in err


def test_mask_mode_and_jpeg_format_flags(run, photos, tmp_path):
    out = tmp_path / "out"
    assert run(photos, "-o", out, "--mode", "mask", "--format", "jpg")[0] == 0
    assert files(out) == ["a.jpg", "b.jpg", "sub/c.jpg"]
    mask = Image.open(out / "b.jpg")
    assert mask.mode == "L" and mask.getpixel((32, 24)) > 240 and mask.getpixel((2, 2)) < 15


def test_glob_pattern_mirrors_below_its_fixed_part(run, photos, tmp_path):
    out = tmp_path / "out"
    code, err = run(f"{photos}/**/*.png", f"{photos}/**/*.webp", "-o", out)
    assert code == 0, err
    assert files(out) == ["b.png", "sub/c.png"]  # .hidden/d.png is not picked


def test_pattern_matching_nothing_and_missing_file_fail_but_others_run(run, photos, tmp_path):
    out = tmp_path / "out"
    code, err = run(photos / "a.jpg", tmp_path / "missing.jpg", f"{tmp_path}/*.tif", "-o", out)
    assert code == 1
    assert files(out) == ["a.png"]
    assert f"failed: {tmp_path / 'missing.jpg'}: no such file or folder" in err
    assert "no images match this pattern" in err
    assert "1 written, 0 skipped, 2 failed" in err


def test_bad_files_are_reported_one_line_each_and_the_rest_is_done(run, photos, tmp_path):
    bad = write_bad_images(photos)
    out = tmp_path / "out"
    code, err = run(photos, "-o", out, "--max-pixels", 10_000)
    assert code == 1
    assert files(out) == ["a.png", "b.png", "sub/c.png"]
    failed = [line for line in err.splitlines() if "failed:" in line]
    assert len(failed) == 5, err
    for name, text in bad:
        assert any(name in line and text in line for line in failed), (name, err)
    assert "Traceback" not in err
    assert "3 written, 0 skipped, 5 failed" in err


def test_resume_skips_existing_outputs_and_overwrite_redoes_them(run, photos, tmp_path):
    out = tmp_path / "out"
    assert run(photos, "-o", out)[0] == 0
    (out / "b.png").unlink()  # as if the batch had been interrupted before b
    (out / "a.png").write_bytes(b"marker")  # proves a.png is not rewritten
    code, err = run(photos, "-o", out)
    assert code == 0 and "1 written, 2 skipped (output exists; --overwrite redoes them)" in err
    assert (out / "a.png").read_bytes() == b"marker"
    alpha_ok(out / "b.png")
    code, err = run(photos, "-o", out, "--overwrite")
    assert code == 0 and "3 written, 0 skipped" in err
    alpha_ok(out / "a.png")
    assert not [p for p in out.rglob("*.tmp")]


def test_inputs_are_never_overwritten(run, photos):
    before = (photos / "b.png").read_bytes()
    code, err = run(photos, "-o", photos)  # b.png would map onto itself, a.jpg onto a.png
    assert code == 1
    assert (photos / "b.png").read_bytes() == before
    assert "it is an input image, which is never overwritten" in err
    alpha_ok(photos / "a.png")
    code, err = run(photos / "b.png", "-o", photos / "b.png")
    assert code == 1 and "refusing to write the output over its input" in err
    assert (photos / "b.png").read_bytes() == before


def test_two_inputs_with_the_same_output_name(run, photos, tmp_path, square):
    square(SIZE).save(photos / "a.png")
    out = tmp_path / "out"
    code, err = run(photos / "a.jpg", photos / "a.png", "-o", out)
    assert code == 1 and f"output {out / 'a.png'} would also be written from" in err
    assert files(out) == ["a.png"]


def test_rerun_without_output_folder_does_not_process_its_own_results(run, photos):
    assert run(photos)[0] == 0
    assert {"a.cutout.png", "b.cutout.png", "sub/c.cutout.png"} <= set(files(photos))
    code, err = run(photos)
    assert code == 0 and "0 written, 3 skipped" in err
    assert not [f for f in files(photos) if ".cutout.cutout" in f]


def test_output_folder_inside_the_input_folder_is_not_rescanned(run, photos):
    assert run(photos, "-o", photos / "out")[0] == 0
    code, err = run(photos, "-o", photos / "out")
    assert code == 0 and "0 written, 3 skipped" in err
    assert not (photos / "out" / "out").exists()


def test_parallel_jobs_give_the_same_files(run, photos, tmp_path):
    assert run(photos, "-o", tmp_path / "one", "--jobs", 1)[0] == 0
    assert run(photos, "-o", tmp_path / "two", "--jobs", 2)[0] == 0
    for name in files(tmp_path / "one"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / name)),
                              np.asarray(Image.open(tmp_path / "two" / name)))


def test_unknown_model_fails_once_with_the_valid_names(run, photos, tmp_path, tiny_registry):
    code, err = run(photos, "-o", tmp_path / "out", "--model", "nope", model=False)
    assert code == 1
    assert err.strip().splitlines() == [
        "cleancut remove: error: unknown model 'nope'. Valid names: cleancut-default, tiny-gray; or pass "
        "the path of an exported .onnx file with its .json spec beside it."]
    assert not (tmp_path / "out").exists()


def test_default_model_is_used_without_model_flag(run, photos, tiny_registry, tmp_path):
    assert run(photos / "a.jpg", "-o", tmp_path / "a.png", model=False)[0] == 0
    alpha_ok(tmp_path / "a.png")


def test_invalid_option_value_exits_2(run, photos):
    code, err = run(photos, "--threshold", "2")
    assert code == 2 and "invalid value for 'threshold' (--threshold)" in err
    code, err = run(photos, "--jobs", "0")
    assert code == 2 and "--jobs expects a number >= 1" in err


def test_animated_input_warns_in_one_line(run, photos, tmp_path, square):
    path = photos / "anim.gif"
    square(SIZE).convert("P").save(path, save_all=True, append_images=[Image.new("P", SIZE)])
    code, err = run(path, "-o", tmp_path / "out")
    assert code == 0
    assert f"cleancut remove: warning: {path}: animated image with 2 frames" in err
    alpha_ok(tmp_path / "out" / "anim.png")


def test_stdin_must_be_alone(run, photos):
    code, err = run("-", photos / "a.jpg")
    assert code == 2 and "'-' (stdin) must be the only input" in err


def test_stdin_to_stdout_in_a_subprocess(tiny_model, photos, tmp_path):
    data = (photos / "b.png").read_bytes()
    cmd = [sys.executable, "-m", "cleancut", "remove", "-", "--model", str(tiny_model)]
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    out = Image.open(io.BytesIO(proc.stdout))
    assert out.format == "PNG"
    a = np.asarray(out)
    assert a[24, 32, 3] == 255 and a[2, 2, 3] == 0
    # stdin to a file; and a bad stdin gives a clean one-line error
    proc = subprocess.run(cmd + ["-o", str(tmp_path / "s.jpg")], input=data, capture_output=True, timeout=120)
    assert proc.returncode == 0 and Image.open(tmp_path / "s.jpg").format == "JPEG"
    proc = subprocess.run(cmd, input=b"garbage", capture_output=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode().strip() == (
        "cleancut remove: error: <stdin>: expected an image (JPEG, PNG, WebP, GIF, BMP, TIFF ...), "
        "found text starting with 'garbage'.")


def test_models_command_with_none_registered(tmp_path, monkeypatch, capsys):
    from cleancut import models

    monkeypatch.setattr(models, "BUNDLED_DIR", tmp_path)
    assert main(["models"]) == 0
    assert "No models are registered" in capsys.readouterr().out


def test_models_command_lists_registered_models(tiny_registry, capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "INPUT", "SIZE", "MB", "LICENCE", "ARCHITECTURE"]
    assert lines[1].split()[:3] == ["*", "cleancut-default", "32x32"]
    assert lines[2].split()[:2] == ["tiny-gray", "24x24"] and "Apache-2.0" in lines[2]
    assert main(["models", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == ["cleancut-default", "tiny-gray"] and data[0]["default"] is True


def test_stdin_output_must_be_an_image_file_name(run, tmp_path):
    code, err = run("-", "-o", tmp_path)
    assert code == 2 and "with input '-', -o must name a file ending in .png, .webp or .jpg" in err


def test_output_that_is_an_existing_plain_file_is_refused(run, photos, tmp_path):
    (tmp_path / "taken").write_text("x")
    code, err = run(photos, "-o", tmp_path / "taken")
    assert code == 2 and "is an existing file; expected a folder" in err


def test_help_lists_every_generated_flag(capsys):
    from cleancut.options import option_info

    with pytest.raises(SystemExit) as exit_info:
        main(["remove", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for info in option_info():
        assert info.flag in text
