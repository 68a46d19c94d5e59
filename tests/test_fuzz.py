"""The fuzz targets of fuzz/: every saved crasher and every seed still keeps the targets'
properties, and a short coverage-guided run of each target (the CI smoke run) finds nothing.

``CLEANCUT_FUZZ_SECONDS`` sets the smoke run's length per target (default 30; the three targets
run at the same time). The long runs and their figures are in the README ("Robustness").
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the upload target needs the server extra")
pytest.importorskip("onnx", reason="the upload target builds the tiny test model with onnx")

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
SMOKE_SECONDS = int(os.environ.get("CLEANCUT_FUZZ_SECONDS", "60"))


def _load_runner():
    spec = importlib.util.spec_from_file_location("cleancut_fuzz_run", FUZZ / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
SAVED = [(name, path) for name in runner.TARGETS for path in runner.regressions(name)]


@pytest.fixture(scope="module")
def targets():
    loaded = {}
    for name in runner.TARGETS:
        loaded[name] = runner.load_target(name)
        loaded[name].prepare()
    return loaded


@pytest.mark.parametrize("name, path", SAVED, ids=[f"{n}/{p.name}" for n, p in SAVED])
def test_saved_crashers_keep_the_properties(targets, name, path):
    one_input = runner.guarded(targets[name])
    started = time.perf_counter()
    one_input(path.read_bytes())
    assert time.perf_counter() - started < runner.HANG_SECONDS


def test_every_target_has_saved_regressions():
    assert {name for name, _ in SAVED} >= {"decode", "options"}  # what fuzzing found, kept


@pytest.mark.parametrize("name", runner.TARGETS)
def test_seeds_keep_the_properties(targets, name):
    target = targets[name]
    one_input = runner.guarded(target)
    seeds = target.seeds()
    assert len(seeds) >= 20
    for data in seeds.values():
        one_input(data)


@pytest.mark.filterwarnings("ignore")  # animations and the deliberately unusable profiles warn
def test_image_seeds_are_real_images_of_every_format():
    from PIL import Image

    from cleancut.io import load_image

    seeds = runner.load_target("decode").seeds()
    formats = set()
    for name, data in seeds.items():
        if name.startswith(("stub-", "eps-")):  # header-only formats, and EPS needs Ghostscript
            continue
        with Image.open(io.BytesIO(data)) as img:
            formats.add(img.format)
        assert load_image(data).mode in ("RGB", "RGBA"), name
    assert {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "ICO", "ICNS", "PSD", "TGA", "PPM", "QOI"} <= formats
    assert len(formats) >= 25


@pytest.mark.slow
def test_fuzz_smoke_run_finds_nothing(tmp_path):
    """What CI runs: each target fuzzed for SMOKE_SECONDS, all three at once."""
    pytest.importorskip("atheris", reason="atheris (dev extra, Linux) is not installed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(FUZZ.parent / "src"), os.environ.get("PYTHONPATH")]))}
    runs = {}
    for name in runner.TARGETS:
        log = open(tmp_path / f"{name}.log", "w")
        cmd = [sys.executable, str(FUZZ / "run.py"), name, "--seconds", str(SMOKE_SECONDS),
               "--workdir", str(tmp_path / name)]
        runs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path), log)
    for name, (proc, log) in runs.items():
        proc.wait(timeout=SMOKE_SECONDS + 300)
        log.close()
        text = (tmp_path / f"{name}.log").read_text(errors="replace")
        assert proc.returncode == 0, f"{name}: fuzzing failed:\n{text[-4000:]}"
        assert list((tmp_path / name / "artifacts").iterdir()) == [], name
        done = re.search(r"Done (\d+) runs", text)
        assert done and int(done.group(1)) > 50, f"{name}: too few runs:\n{text[-2000:]}"
