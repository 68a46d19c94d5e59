"""The short version of the soak and abuse test of ``cleancut serve`` (benchmarks/soak_server.py):
500 requests of the full mix (good photos, corrupt and truncated files, bombs, non-images,
oversized bodies, clients that disconnect or send slowly, hostile file names, bad options, bad
HTTP) at concurrency 16 against the real command on loopback, with every check of the long run.
The queue is shortened to 4 (room for 6 requests) so that 503s happen and their
``Retry-After`` is checked.

Memory has less time to level off in 500 requests than in 10,000, so the RSS tolerance is wider
here (25 % instead of 10 %); the long run's figures are in the README.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")
pytest.importorskip("onnx", reason="the tiny test model is built with onnx")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_server.py"


def _load_soak():
    spec = importlib.util.spec_from_file_location("cleancut_soak_server", SCRIPT)
    soak = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = soak  # its dataclasses look their module up there
    spec.loader.exec_module(soak)
    return soak


@pytest.mark.parametrize("counts, recounts, leak", [
    ([(10, 11)], 0, False),                      # equal at once
    ([(11, 12), (10, 11)], 1, False),            # a connection still closing: gone at the next count
    ([(11, 11), (12, 11), (13, 11)], 2, True),   # a leak: still there after two more quiet periods
])
def test_fds_and_threads_are_counted_again_while_they_differ(monkeypatch, counts, recounts, leak):
    soak = _load_soak()
    seen = iter(counts)
    monkeypatch.setattr(soak, "settle", lambda pid, port, seconds: dict(zip(("fds", "threads"), next(seen))))
    figures, done = soak.settle_again(1, 1, 0.0, {"fds": 10, "threads": 11})
    assert done == recounts
    assert ((figures["fds"], figures["threads"]) != (10, 11)) == leak
    assert next(seen, None) is None  # no count beyond the last one needed


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's figures from /proc (Linux)")
def test_short_soak_holds(tmp_path, capsys):
    soak = _load_soak()
    out = tmp_path / "soak.json"
    code = soak.main(["--tiny", "--requests", "500", "--warmup", "100", "--sizes", "160x120,320x240",
                      "--max-queue", "4", "--rss-tolerance", "0.25", "--json", str(out)])
    report = json.loads(out.read_text())
    failed = [name for name, ok in report["checks"].items() if not ok]
    figures = {key: report[key] for key in ("rss_mib", "rss_growth", "fds", "threads", "temporary_files_left")}
    assert code == 0, (failed, figures, report["problems"], capsys.readouterr().out)
    assert all(report["checks"].values())
    assert report["requests_sent"] == 500 and "500" not in report["statuses"]
    kinds = report["statuses_by_kind"]
    assert set(kinds) == set(soak.MIX)  # every kind of request was sent
    assert kinds["bomb"] == {"413": kinds["bomb"].get("413", 0)} or "503" in kinds["bomb"]
    # how many good photos get through a queue of 4 depends on the machine's speed (30-60 seen):
    # enough for the percentiles, not a throughput figure
    assert report["good_200"] >= 10 and report["p99_ms"] >= report["p50_ms"] > 0
    assert report["statuses"].get("503", 0) > 0  # 16 clients, room for 6: the queue overflows, with Retry-After
