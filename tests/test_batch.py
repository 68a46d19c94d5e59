"""``cleancut batch``: planning (folders, patterns, list files, S3), the manifest and its journal,
the command's errors, and real Ray runs: a private Ray on this machine with bad inputs, a
two-node cluster on this machine (both nodes in the manifest), S3 source and destination on a
moto server, a killed driver and a killed worker node (re-runs finish; every output once).

Ray runs cost tens of seconds on a small machine, so they are ``slow`` and share one cluster
(``cluster``, created once for the module); the test that kills its worker node runs last.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cleancut.batch import manifest, storage
from cleancut.batch.plan import make_plan
from cleancut.batch.worker import process_one
from cleancut.cli import main
from cleancut.errors import ConfigError
from cleancut.jobs import plan_jobs
from cleancut.options import RemoveOptions
from cleancut.testing import BAD_IMAGES, write_bad_images

SIZE = (64, 48)
MB = 1024 ** 2


# ---------------------------------------------------------------- helpers and fixtures


def alpha_ok(data: bytes | Path) -> None:
    """A cut-out of the test square: opaque in the middle, transparent in the corner."""
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    a = np.asarray(image)
    h, w = a.shape[:2]
    assert image.format == "PNG" and a.shape[2] == 4 and a[h // 2, w // 2, 3] == 255 and a[2, 2, 3] == 0


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def read_manifest(folder: Path) -> list[dict]:
    return pq.read_table(folder / "manifest.parquet").to_pylist()


def write_photos(folder: Path, count: int, square, size=SIZE) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:03d}.png" for i in range(count)]
    for path in paths:
        square(size).save(path, compress_level=1)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def batch(tiny_model, capsys):
    """Run ``cleancut batch ARGS --model tiny`` in this process; returns (exit code, stderr)."""
    def _run(*args, model: bool = True) -> tuple[int, str]:
        code = main(["batch", *map(str, args)] + (["--model", str(tiny_model)] if model else []))
        return code, capsys.readouterr().err
    return _run


@pytest.fixture
def bad_photos(tmp_path, square) -> Path:
    """Three good images and the bad kinds of test_cli_remove (``big.png`` needs
    ``--max-pixels 10000`` to fail)."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    square(SIZE).save(root / "a.jpg", quality=95)
    square(SIZE).save(root / "b.png")
    square(SIZE).save(root / "sub" / "c.webp", lossless=True)
    write_bad_images(root)
    return root


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 for this module, with the environment pointing at it
    (AWS_ENDPOINT_URL, dummy credentials); yields a pyarrow S3FileSystem that may create buckets."""
    from pyarrow import fs as pafs

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        with pytest.MonkeyPatch.context() as patch:
            for name, value in [("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "testing"),
                                ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1"),
                                ("AWS_EC2_METADATA_DISABLED", "true")]:
                patch.setenv(name, value)
            storage._remote_tree.cache_clear()
            yield pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True)
    finally:
        storage._remote_tree.cache_clear()
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(s3):
    """A two-node Ray cluster on this machine (head and one worker node, one CPU each), started
    after ``s3`` so that its workers see the S3 endpoint."""
    with pytest.MonkeyPatch.context() as patch:
        # Workers at the tests' own priority: Ray's default (+15) starves them on a busy machine.
        patch.setenv("RAY_worker_niceness", "0")
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # Ray's default token authentication, which drivers joining by HOST:PORT must ask for
        # (README, "Joining a cluster"); the token is ~/.ray/auth_token, made if missing.
        # Ray reads it when first imported: set before the import.
        patch.setenv("RAY_AUTH_MODE", "token")
        from ray.cluster_utils import Cluster

        ray_cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "object_store_memory": 100 * MB, "include_dashboard": False})
        try:
            ray_cluster.add_node(num_cpus=1, object_store_memory=100 * MB)
            ray_cluster.wait_for_nodes(timeout=120)
            yield ray_cluster
        finally:
            ray_cluster.shutdown()


def put(fs, key: str, data: bytes) -> None:
    with fs.open_output_stream(key) as stream:
        stream.write(data)


def png_bytes(square, size=SIZE) -> bytes:
    buf = io.BytesIO()
    square(size).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- planning


def test_plan_mirrors_like_remove_and_reads_list_files(tmp_path, square):
    photos = tmp_path / "photos"
    write_photos(photos / "sub", 2, square)
    write_photos(photos, 1, square)
    (photos / ".hidden").mkdir()
    square(SIZE).save(photos / ".hidden" / "h.png")
    out = tmp_path / "out"
    plan = make_plan([str(photos), f"{photos}/**/*.png"], str(out), ".png")
    remove_jobs, _ = plan_jobs([str(photos)], out, ".png")
    assert [(j.source, j.target) for j in plan.jobs] == [
        (os.path.abspath(j.source), os.path.abspath(j.target)) for j in remove_jobs]  # the pattern adds nothing new
    assert plan.failures == []

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "a.txt").write_text(f"# shoot 1\n\n../photos/sub/000.png\n{photos}/sub/001.png\n../photos/000.png\n")
    with open(lists / "b.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "path"], [1, "../photos/sub/001.png"]])
    pq.write_table(pa.table({"path": [str(photos / "000.png")]}), lists / "c.parquet")
    (lists / "d.csv").write_text("id,file\n1,x.png\n")

    plan = make_plan([str(lists / "a.txt")], str(out), ".webp")
    assert [(Path(j.source).relative_to(photos).as_posix(), Path(j.target).relative_to(out).as_posix())
            for j in plan.jobs] == [("sub/000.png", "sub/000.webp"), ("sub/001.png", "sub/001.webp"),
                                    ("000.png", "000.webp")]  # mirrored below the entries' common folder
    (lists / "e.txt").write_text("# nothing yet\n")
    plan = make_plan([str(lists / "b.csv"), f"file://{lists / 'c.parquet'}", str(lists / "none.txt"),
                      str(lists / "e.txt")], f"file://{out}", ".png")
    assert [Path(j.target) for j in plan.jobs] == [out / "001.png", out / "000.png"]
    assert plan.failures == [(str(lists / "none.txt"), f"{lists / 'none.txt'}: no such file or folder"),
                             (str(lists / "e.txt"), f"{lists / 'e.txt'}: the list names no images")]
    with pytest.raises(ConfigError, match=r"expected a 'path' column; found columns id, file"):
        make_plan([str(lists / "d.csv")], str(out), ".png")


def test_s3_folders_and_patterns_follow_the_same_rules(s3, square):
    s3.create_dir("plan")
    for key in ["shots/a.png", "shots/sub/b.png", "shots/.hidden/c.png", "shots/notes.txt", "shots/out/d.png"]:
        put(s3, f"plan/{key}", png_bytes(square))
    plan = make_plan(["s3://plan/shots/", "s3://plan/shots/**/*.png", "s3://plan/nothing/*.png"],
                     "s3://plan/shots/out", ".png")
    assert [(j.source, j.target) for j in plan.jobs] == [
        ("s3://plan/shots/a.png", "s3://plan/shots/out/a.png"),
        ("s3://plan/shots/sub/b.png", "s3://plan/shots/out/sub/b.png")]  # hidden, non-images, DEST skipped
    assert plan.failures == [("s3://plan/nothing/*.png", "s3://plan/nothing/*.png: no images match this pattern")]
    assert storage.size("s3://plan/shots/a.png") == len(png_bytes(square))
    assert storage.size("s3://plan/shots/none.png") is None


# ---------------------------------------------------------------- the worker, the manifest


def test_pool_is_no_larger_than_the_work():
    from cleancut.batch.cluster import pool_size

    assert pool_size(1000, 2) == (2, 16) and pool_size(1000, 64) == (63, 16)  # 16 images a task
    assert pool_size(20, 2) == (2, 10) and pool_size(3, 2) == (2, 2) and pool_size(1, 4) == (1, 1)


def test_process_one_turns_bad_inputs_into_failed_rows(remover, bad_photos, tmp_path):
    options = RemoveOptions(max_pixels=10_000)
    row = process_one(remover, options, str(bad_photos / "b.png"), str(tmp_path / "out" / "b.png"))
    assert row["status"] == "ok" and row["bytes"] == (tmp_path / "out" / "b.png").stat().st_size
    alpha_ok(tmp_path / "out" / "b.png")
    for name, text in BAD_IMAGES:
        row = process_one(remover, options, str(bad_photos / name), str(tmp_path / "out" / name))
        assert row["status"] == "failed" and name in row["error"] and text in row["error"], row
        assert not (tmp_path / "out" / name).exists()
    (tmp_path / "file").write_text("x")
    row = process_one(remover, options, str(bad_photos / "b.png"), str(tmp_path / "file" / "b.png"))
    assert row["status"] == "failed" and f"cannot write {tmp_path / 'file' / 'b.png'}" in row["error"]


def test_journal_survives_the_driver_and_feeds_the_next_manifest(tmp_path):
    dest = str(tmp_path)
    journal = manifest.Journal(dest, "run1", every_s=3600)
    journal.add(manifest.rows_table([{"source": "/a.jpg", "output": f"{dest}/a.png", "status": "ok",
                                      "ms": 12.5, "bytes": 10, "node": "n1", "index": 0}]))
    assert journal.written == []  # not yet due
    journal.flush()  # what the driver does before it exits, also when interrupted
    previous, read = manifest.read_previous(dest, warn=pytest.fail)
    assert read == journal.written and previous.to_pylist()[0]["node"] == "n1"

    skipped = manifest.rows_table([
        {"source": "/a.jpg", "output": f"{dest}/a.png", "status": "skipped", "bytes": 10, "index": 1},
        {"source": "/b.jpg", "output": f"{dest}/b.png", "status": "skipped", "bytes": 20, "index": 0}])
    rows = manifest.carry_forward(skipped, previous)
    location = manifest.write(dest, rows)
    manifest.clear_journal(dest, read)
    assert [(r["source"], r["ms"], r["node"]) for r in read_manifest(tmp_path)] == [
        ("/b.jpg", None, None), ("/a.jpg", 12.5, "n1")]
    assert location == f"{dest}/manifest.parquet" and files(tmp_path) == ["manifest.parquet"]

    (tmp_path / ".cleancut-batch" / "journal").mkdir(parents=True)
    (tmp_path / ".cleancut-batch" / "journal" / "x.parquet").write_bytes(b"garbage")
    warnings = []
    previous, _ = manifest.read_previous(dest, warn=warnings.append)
    assert previous.num_rows == 2 and len(warnings) == 1 and "x.parquet" in warnings[0]


# ---------------------------------------------------------------- the command's errors


def test_invalid_options_and_unreachable_cluster_are_one_line_errors(batch, bad_photos, tmp_path, tiny_registry):
    out = tmp_path / "out"
    port = free_port()  # nothing listens there
    for args, code, text in [
        (["--address", f"127.0.0.1:{port}"], 1, f"cannot reach a Ray cluster at 127.0.0.1:{port}"),
        (["--address", "nowhere"], 2, "--address expects auto, HOST:PORT or ray://HOST:PORT"),
        (["--actors", "0"], 2, "--actors expects a number >= 1"),
        (["--threads-per-actor", "0"], 2, "--threads-per-actor expects a number >= 1"),
        (["--threshold", "2"], 2, "invalid value for 'threshold'"),
        (["--model", "nope"], 1, "unknown model 'nope'"),
    ]:
        result = batch(bad_photos, "-o", out, *args, model="--model" not in args)
        assert result[0] == code and len(result[1].strip().splitlines()) == 1 and text in result[1], (args, result)
    code, err = batch(bad_photos, "-o", tmp_path / "x.png")
    assert code == 2 and "looks like an image file" in err
    (tmp_path / "list.csv").write_text("name\nx.png\n")
    code, err = batch(tmp_path / "list.csv", "-o", out)
    assert code == 2 and "expected a 'path' column" in err and "Traceback" not in err
    assert not out.exists()


def test_help_offers_every_request_option_and_the_cluster_flags(capsys):
    from cleancut.options import option_info

    with pytest.raises(SystemExit) as exit_info:
        main(["batch", "--help"])
    assert exit_info.value.code == 0
    flags = set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))
    assert {info.flag for info in option_info()} - flags == {"--threads"}  # -> --threads-per-actor
    assert {"--address", "--actors", "--threads-per-actor", "--overwrite", "--output"} <= flags


def test_nothing_to_do_needs_no_ray(batch, tmp_path, square, monkeypatch):
    """Complete outputs are skipped before any cluster is started (connecting to Ray fails the
    test), and the manifest still lists every source."""
    from cleancut.batch import cluster

    def no_cluster(address):
        raise AssertionError(f"connected to Ray ({address}) with nothing to do")

    monkeypatch.setattr(cluster, "connected", no_cluster)
    photos = tmp_path / "photos"
    write_photos(photos, 3, square)
    out = tmp_path / "out"
    for name in ["000.png", "001.png", "002.png"]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"done")
    (out / ".001.png.0123abcd.tmp").write_bytes(b"half")  # left by a killed worker
    code, err = batch(photos, photos / "missing.png", "-o", out)
    assert code == 1 and err.strip().splitlines()[-1].startswith(
        "cleancut batch: 0 written, 3 skipped (output exists; --overwrite redoes them), 1 failed in")
    assert f"failed: {photos / 'missing.png'}: no such file or folder" in err
    rows = read_manifest(out)
    assert [(r["status"], r["bytes"]) for r in rows] == [("failed", None)] + [("skipped", 4)] * 3
    assert files(out) == ["000.png", "001.png", "002.png", "manifest.parquet"]


# ---------------------------------------------------------------- Ray runs


@pytest.mark.slow
def test_private_ray_on_this_machine_records_bad_inputs(batch, bad_photos, tmp_path, monkeypatch):
    """No --address and no cluster running: a private Ray starts and stops; each bad input is a
    failed row and one line; the summary and exit code are remove's."""
    monkeypatch.setenv("RAY_worker_niceness", "0")  # see the cluster fixture
    out = tmp_path / "out"
    code, err = batch(bad_photos, f"{bad_photos}/*.gif", "-o", out, "--max-pixels", 10_000)
    assert code == 1, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("cleancut batch: 3 written, 0 skipped, 6 failed in")
    assert files(out) == ["a.png", "b.png", "manifest.parquet", "sub/c.png"]
    for name in ["a.png", "b.png", "sub/c.png"]:
        alpha_ok(out / name)
    rows = {Path(r["source"]).name: r for r in read_manifest(out)}
    assert rows["*.gif"]["error"] == f"{bad_photos}/*.gif: no images match this pattern"
    for name, text in BAD_IMAGES:
        assert rows[name]["status"] == "failed" and text in rows[name]["error"], rows[name]
        assert f"cleancut batch: failed: {rows[name]['error']}" in err
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 3 and all(r["ms"] > 0 and r["bytes"] > 0 and r["node"] for r in ok)
    import ray

    assert not ray.is_initialized()


@pytest.mark.slow
def test_two_node_cluster_both_nodes_in_the_manifest(batch, cluster, tmp_path, square):
    photos = tmp_path / "photos"
    write_photos(photos, 96, square)
    out = tmp_path / "out"
    code, err = batch(photos, "-o", out, "--address", cluster.address)
    assert code == 0, err
    assert "96 written, 0 skipped, 0 failed" in err and "(96 rows; 2 nodes worked)" in err
    rows = read_manifest(out)
    nodes = {cluster.head_node.node_id} | {n.node_id for n in cluster.worker_nodes}
    assert {r["node"] for r in rows} == nodes and len(nodes) == 2
    assert [Path(r["output"]).name for r in rows] == [f"{i:03d}.png" for i in range(96)]
    for name in files(out)[::16]:
        if name.endswith(".png"):
            alpha_ok(out / name)


@pytest.mark.slow
def test_s3_source_and_destination(batch, cluster, s3, square):
    s3.create_dir("shop")
    put(s3, "shop/shots/a.png", png_bytes(square))
    put(s3, "shop/shots/sub/b.png", png_bytes(square))
    put(s3, "shop/shots/bad.jpg", b"hello")
    put(s3, "shop/extra/c.png", png_bytes(square))
    put(s3, "shop/lists/extra.txt", b"../extra/c.png\ns3://shop/extra/missing.png\n")
    code, err = batch("s3://shop/shots", "s3://shop/lists/extra.txt", "-o", "s3://shop/out",
                      "--address", cluster.address)
    assert code == 1 and "3 written, 0 skipped, 2 failed" in err, err
    for key in ["shop/out/a.png", "shop/out/sub/b.png", "shop/out/c.png"]:
        with s3.open_input_stream(key) as stream:
            alpha_ok(stream.readall())
    with s3.open_input_stream("shop/out/manifest.parquet") as stream:
        rows = {r["source"]: r for r in manifest.from_bytes(stream.readall()).to_pylist()}
    assert rows["s3://shop/shots/bad.jpg"]["error"].startswith(
        "s3://shop/shots/bad.jpg: expected an image (JPEG, PNG, WebP, GIF, BMP, TIFF ...), found text")
    assert rows["s3://shop/extra/missing.png"]["error"] == "s3://shop/extra/missing.png: no such file."
    assert rows["s3://shop/extra/c.png"]["output"] == "s3://shop/out/c.png"
    done = {k: r for k, r in rows.items() if r["status"] == "ok"}
    assert len(done) == 3 and all(r["bytes"] > 0 and r["node"] for r in done.values())

    s3.delete_file("shop/shots/bad.jpg")
    code, err = batch("s3://shop/shots", "-o", "s3://shop/out", "--address", cluster.address)
    assert code == 0 and "0 written, 2 skipped" in err, err
    with s3.open_input_stream("shop/out/manifest.parquet") as stream:
        again = manifest.from_bytes(stream.readall()).to_pylist()
    assert [(r["status"], r["node"]) for r in again] == [
        ("skipped", rows[r["source"]]["node"]) for r in again]  # who did it is kept


def _run_until(cmd: list[str], out: Path, outputs: int, timeout_s: float = 300) -> tuple[subprocess.Popen, int]:
    """Start ``cmd``; return once ``outputs`` PNG files exist below ``out`` (and how many)."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = len(list(out.rglob("*.png"))) if out.exists() else 0
        if count >= outputs or process.poll() is not None:
            return process, count
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"{cmd} wrote fewer than {outputs} outputs in {timeout_s}s")


def _check_complete(out: Path, sources: list[Path], rerun: subprocess.CompletedProcess) -> list[dict]:
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    expected = [f"{p.stem}.png" for p in sources]
    assert sorted(n for n in files(out) if n.endswith(".png")) == expected  # each exactly once
    assert not [n for n in files(out) if n.endswith(".tmp") or n.startswith(".cleancut-batch")]
    for name in expected:
        alpha_ok(out / name)
    rows = read_manifest(out)
    assert [r["source"] for r in rows] == [str(p) for p in sources]
    assert {r["status"] for r in rows} <= {"ok", "skipped"}
    return rows


def _start_and_wait(cluster, tiny_model, tmp_path, square) -> tuple[list[str], list[Path], Path, subprocess.Popen, int]:
    """``cleancut batch`` of 320 images on ``cluster`` in a subprocess, returned once at least 32
    outputs exist: (command, sources, output folder, process, outputs seen)."""
    sources = write_photos(tmp_path / "photos", 320, square, size=(256, 192))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cleancut", "batch", str(tmp_path / "photos"), "-o", str(out),
           "--model", str(tiny_model), "--address", cluster.address]
    process, count = _run_until(cmd, out, 32)
    assert 32 <= count < 320, count  # interrupted mid-run
    return cmd, sources, out, process, count


@pytest.mark.slow
def test_killed_driver_loses_nothing(cluster, tiny_model, tmp_path, square):
    cmd, sources, out, process, count = _start_and_wait(cluster, tiny_model, tmp_path, square)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rows = _check_complete(out, sources, rerun)
    skipped = sum(r["status"] == "skipped" for r in rows)
    assert skipped >= count and f"{320 - skipped} written, {skipped} skipped" in rerun.stderr


@pytest.mark.slow
def test_killed_worker_node_then_rerun_completes(cluster, tiny_model, tmp_path, square):
    """Runs last: it takes the cluster's worker node away."""
    cmd, sources, out, process, _count = _start_and_wait(cluster, tiny_model, tmp_path, square)
    (worker,) = cluster.worker_nodes
    cluster.remove_node(worker, allow_graceful=False)  # SIGKILL its raylet and workers
    _stdout, stderr = process.communicate(timeout=300)  # it ends by itself, no hang
    if process.returncode == 0:  # Ray Data retried the lost node's blocks on the head's actor
        assert "320 written, 0 skipped, 0 failed" in stderr, stderr
    else:  # or the job stopped with one line, and the re-run finishes it
        assert process.returncode == 1 and "the Ray job stopped" in stderr and "Traceback" not in stderr, stderr
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rows = _check_complete(out, sources, rerun)
    if process.returncode == 0:
        assert "0 written, 320 skipped" in rerun.stderr
        assert all(r["node"] for r in rows)  # the node that did each image is still on record
