"""First-use costs a newcomer meets: alpha matting's first import (numba compiling pymatting's
kernels) is announced and can be paid earlier (``cleancut warmup``, the server's warm-up before
it reports ready); ``import cleancut`` stays light.

A slow first import is simulated by setting ``refine.COMPILE_NOTICE_AFTER_S`` to 0 in a fresh
process: the import of pymatting then always outlasts it, cached kernels or not.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from serving import free_port, stop, wait_healthy
from cleancut.testing import square_image

pytest.importorskip("pymatting", reason="the matting extra is not installed")

TESTS = Path(__file__).resolve().parent
NOTICE = "preparing the alpha-matting kernels"


def run_python(code: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_a_slow_first_import_of_pymatting_is_announced_and_timed(tiny_model, tmp_path):
    code = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from cleancut.testing import square_image
import cleancut.refine as refine
refine.COMPILE_NOTICE_AFTER_S = 0.0
square_image((64, 48)).save({str(tmp_path / 'in.png')!r})
from cleancut.cli import main
raise SystemExit(main(["remove", {str(tmp_path / 'in.png')!r}, "-o", {str(tmp_path / 'out.png')!r},
                       "--model", {str(tiny_model)!r}, "--alpha-matting"]))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    notice = [i for i, line in enumerate(lines) if line.startswith(f"cleancut remove: {NOTICE}")]
    ready = [i for i, line in enumerate(lines) if line.startswith("cleancut remove: alpha-matting kernels ready after")]
    assert len(notice) == 1 and len(ready) == 1 and notice[0] < ready[0], proc.stderr
    assert "once, about a minute" in lines[notice[0]]
    assert lines[-1].startswith("cleancut remove: 1 written")
    assert (tmp_path / "out.png").is_file()


def test_the_library_announces_it_without_any_logging_set_up(tiny_model):
    """Python's last-resort handler prints the warnings to stderr for a plain script."""
    code = f"""
import cleancut.refine as refine
refine.COMPILE_NOTICE_AFTER_S = 0.0
import cleancut, numpy as np
cleancut.remove(np.zeros((40, 40, 3), np.uint8), model={str(tiny_model)!r}, alpha_matting=True)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert NOTICE in proc.stderr and "alpha-matting kernels ready after" in proc.stderr


def test_a_quick_import_says_nothing(caplog):
    from cleancut import refine

    with caplog.at_level(logging.WARNING, logger="cleancut"):
        refine._pymatting("test")
        refine._pymatting("test")
    assert not [r for r in caplog.records if NOTICE in r.getMessage()]


def test_warmup_command_reports_each_step(tiny_model, capsys):
    from cleancut.cli import main

    assert main(["warmup", "--model", str(tiny_model)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in out] == [
        "load the model (ONNX Runtime session)", "first inference", "alpha matting and foreground estimation (numba kernels)"]
    assert main(["warmup", "--model", str(tiny_model), "--no-matting"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_remover_warm_up_loads_the_session_and_runs_the_pipeline(tiny_model):
    from cleancut import Remover

    remover = Remover(tiny_model)
    seconds = remover.warm_up(alpha_matting=True)
    assert set(seconds) == {"session", "inference", "alpha_matting"} and all(s >= 0 for s in seconds.values())
    assert remover._session is not None
    assert set(Remover(tiny_model).warm_up(alpha_matting=False)) == {"session", "inference"}


def test_server_pays_the_first_use_costs_before_it_reports_ready(tiny_model):
    """In a fresh process: the kernels are prepared during start-up, before uvicorn listens;
    the first request with alpha matting then triggers no compilation."""
    import httpx

    port = free_port()
    code = f"""
import cleancut.refine as refine
refine.COMPILE_NOTICE_AFTER_S = 0.0
from cleancut.cli import main
raise SystemExit(main(["serve", "--model", {str(tiny_model)!r}, "--port", "{port}", "--workers", "1"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        wait_healthy(port, proc, timeout=120)
        buf = io.BytesIO()
        square_image((64, 48)).save(buf, "PNG")
        r = httpx.post(f"http://127.0.0.1:{port}/api/remove", params={"alpha_matting": "true"}, content=buf.getvalue(),
                       timeout=60)
        assert r.status_code == 200
    finally:
        _, err = stop(proc)
    lines = err.splitlines()
    at = {key: next(i for i, line in enumerate(lines) if key in line)
          for key in ("warming up", NOTICE, "warm-up done", "Uvicorn running", '"POST /api/remove?alpha_matting=true" 200')}
    assert at["warming up"] < at[NOTICE] < at["warm-up done"] < at["Uvicorn running"] < at['"POST /api/remove?alpha_matting=true" 200']
    assert sum(NOTICE in line for line in lines) == 1, err


def test_import_cleancut_stays_light():
    code = ("import sys, cleancut; heavy = [m for m in ('numpy', 'PIL', 'onnxruntime', 'pymatting', 'numba', 'scipy', "
            "'torch', 'fastapi') if m in sys.modules]; print(heavy)")
    proc = run_python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
