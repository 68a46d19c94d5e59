"""Clips over HTTP: ``POST /api/video`` jobs, progress, download, cancel, limits and clean-up."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
av = pytest.importorskip("av")
from fastapi.testclient import TestClient  # noqa: E402
from video_clips import make_clip, probe  # noqa: E402

from cleancut.server import ServerSettings, create_app  # noqa: E402


def make_client(tiny_model, **kwargs) -> TestClient:
    return TestClient(create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False, **kwargs)))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("jobs") / "clip.mp4", frames=12).read_bytes()


def wait_done(client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/video/{job_id}").json()
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def job_folders(client) -> list[Path]:
    return sorted(client.app.state.cleancut_video.root.iterdir())


def test_a_clip_in_webm_with_alpha_out(tiny_model, clip, tmp_path):
    with make_client(tiny_model) as c:
        r = c.post("/api/video", content=clip, headers={"Content-Type": "video/mp4"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] in ("queued", "running") and r.headers["location"] == f"/api/video/{job['id']}"
        done = wait_done(c, job["id"])
        assert done["status"] == "done" and done["frames"] == 12 and done["percent"] == 100.0
        result = c.get(done["links"]["result"])
        assert result.status_code == 200 and result.headers["content-type"] == "video/webm"
        out = tmp_path / "cut.webm"
        out.write_bytes(result.content)
        got = probe(out)
        assert got.frames == 12 and got.first is not None
        assert got.first[2, 2, 3] < 60 and got.first[24, 26, 3] > 200  # transparent corner, opaque subject
        (folder,) = job_folders(c)
        assert [p.name for p in folder.iterdir()] == ["result.webm"]  # the upload is gone
        assert c.delete(f"/api/video/{job['id']}").json()["status"] == "deleted"
        assert job_folders(c) == []
        assert c.get(f"/api/video/{job['id']}").status_code == 404


def test_multipart_upload_options_and_server_sent_events(tiny_model, clip):
    with make_client(tiny_model) as c:
        r = c.post("/api/video", params={"output": "mp4", "bg_color": "green"},
                   files={"file": ("clip.mp4", clip, "video/mp4")})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        with c.stream("GET", f"/api/video/{job_id}/events") as events:
            lines = [line for line in events.iter_lines() if line.startswith("data: ")]
        assert '"status": "done"' in lines[-1]
        assert c.get(f"/api/video/{job_id}/result").headers["content-type"] == "video/mp4"


def test_cancel_removes_the_job_folder(tiny_model, clip, monkeypatch):
    from cleancut.server import video_jobs

    started = threading.Event()
    real = video_jobs.VideoJobs._run

    def slow_run(self, job, upload):  # the job waits until the test cancelled it
        started.set()
        deadline = time.monotonic() + 10
        while not job.cancel.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        real(self, job, upload)

    monkeypatch.setattr(video_jobs.VideoJobs, "_run", slow_run)
    with make_client(tiny_model) as c:
        job_id = c.post("/api/video", content=clip).json()["id"]
        assert started.wait(10)
        assert c.delete(f"/api/video/{job_id}").json()["status"] == "cancelling"
        # deleted for its client at once: no 409 for its result until a second DELETE
        for path in (f"/api/video/{job_id}", f"/api/video/{job_id}/result"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["detail"]["code"] == "no_such_job", r.text
        jobs = c.app.state.cleancut_video
        deadline = time.monotonic() + 20
        while (jobs.running() or job_folders(c)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job_folders(c) == [] and jobs.running() == 0  # its folder and its slot are freed
        assert c.post("/api/video", content=clip).status_code == 202


def test_the_job_limit_answers_503_with_retry_after(tiny_model, clip, monkeypatch):
    from cleancut.server import video_jobs

    release = threading.Event()
    real = video_jobs.VideoJobs._run
    monkeypatch.setattr(video_jobs.VideoJobs, "_run", lambda self, job, upload: (release.wait(10),
                                                                                 real(self, job, upload)))
    with make_client(tiny_model, max_video_jobs=1) as c:
        first = c.post("/api/video", content=clip)
        second = c.post("/api/video", content=clip)
        assert first.status_code == 202
        assert second.status_code == 503 and int(second.headers["retry-after"]) >= 1
        assert second.json()["detail"]["code"] == "video_jobs_full"
        release.set()
        assert wait_done(c, first.json()["id"])["status"] == "done"
        assert len(job_folders(c)) == 1  # the refused job left no folder


def test_non_video_uploads_and_limits_are_clear_4xx(tiny_model, clip):
    with make_client(tiny_model, max_video_bytes=len(clip) - 1) as c:
        r = c.post("/api/video", content=clip)
        assert r.status_code == 413 and r.json()["detail"]["code"] == "upload_too_large"
        assert "for a clip" in r.json()["error"]

        def chunks():  # no Content-Length: the cap must hold while the multipart body is parsed
            from cleancut.testing import form_data

            body = form_data([("file", "clip.mp4", clip)])
            for k in range(0, len(body), 4096):
                yield body[k:k + 4096]

        from cleancut.testing import content_type

        r = c.post("/api/video", content=chunks(), headers={"Content-Type": content_type()})
        assert r.status_code == 413 and r.json()["detail"]["code"] == "upload_too_large"
        assert job_folders(c) == []
    with make_client(tiny_model, max_video_seconds=0.2) as c:
        r = c.post("/api/video", content=clip)
        assert r.status_code == 413 and "at most 0.2 s" in r.json()["error"]
    with make_client(tiny_model, max_video_pixels=100) as c:
        assert c.post("/api/video", content=clip).status_code == 413
    with make_client(tiny_model) as c:
        r = c.post("/api/video", content=b"just some text, not a clip" * 10)
        assert r.status_code == 415 and "not a video" in r.json()["error"]
        assert "cleancut-video-" not in r.text  # no server path in the message
        r = c.post("/api/video", params={"output": "gif"}, content=clip)
        assert r.status_code == 422
        r = c.post("/api/video", params={"output": "mp4"}, content=clip)  # a cut-out needs alpha
        assert r.status_code == 422 and "no alpha channel" in r.json()["error"]
        assert job_folders(c) == []


def test_a_client_that_disconnects_mid_upload_leaves_nothing(tiny_model, clip):
    from serving import served

    app = create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False))
    with served(app) as (_, port):
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"POST /api/video HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
                         + f"Content-Length: {len(clip)}\r\n\r\n".encode() + clip[: len(clip) // 2])
            time.sleep(0.3)
        jobs = app.state.cleancut_video
        deadline = time.monotonic() + 10
        while (list(jobs.root.iterdir()) or jobs.jobs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(jobs.root.iterdir()) == [] and jobs.jobs == {}


def test_finished_jobs_expire(tiny_model, clip):
    with make_client(tiny_model, video_ttl_seconds=1.0) as c:
        job_id = c.post("/api/video", content=clip).json()["id"]
        assert wait_done(c, job_id)["status"] == "done"
        time.sleep(1.3)
        assert c.get(f"/api/video/{job_id}").status_code == 404
        assert job_folders(c) == []


def test_video_endpoints_are_in_openapi(tiny_model):
    with make_client(tiny_model) as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert {"/api/video", "/api/video/{job_id}", "/api/video/{job_id}/events", "/api/video/{job_id}/result"} <= set(paths)
    assert "delete" in paths["/api/video/{job_id}"]
