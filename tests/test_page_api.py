"""What the web page relies on from the server, without a browser: the model's description holds
no path of the machine it was trained on, the icon browsers ask for exists, and a clip's result is
named after the uploaded file."""

from __future__ import annotations

import json
import shutil
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from cleancut.server import ServerSettings, create_app  # noqa: E402


def test_models_never_list_training_paths(tiny_model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tiny_model, folder / tiny_model.name)
    spec = json.loads(tiny_model.with_suffix(".json").read_text())
    spec.update(parameters=1234, training={"data": ["../shared/data", "datasets/DUTS-TR"], "run": "runs/v10-b",
                                           "config": {"data": {"roots": ["../shared/data"]}}})
    (folder / "tiny.json").write_text(json.dumps(spec))
    settings = ServerSettings.from_values(model=str(folder / tiny_model.name), warm_up=False)
    with TestClient(create_app(settings)) as client:
        body = client.get("/api/models").json()
    model = body["models"][0]
    assert model["name"] == "tiny" and model["parameters"] == 1234 and model["input_size"] == [32, 32]
    text = json.dumps(body)
    assert "training" not in model and "shared/data" not in text and "runs/" not in text and "file" not in model
    assert "edge_refiner" not in model and "-edges.onnx" not in text  # its stages are named, not its files
    assert model["edges"] == "network" and model["edge_stages"] == ["network", "guided", "learned"]


def test_favicon_is_served_with_the_page(tiny_model):
    with TestClient(create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False))) as client:
        icon = client.get("/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
        assert b"<svg" in icon.content
        assert 'rel="icon"' in client.get("/").text
    with TestClient(create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False, ui=False))) as client:
        assert client.get("/favicon.ico").status_code == 404  # API only: no page, no icon


def test_clip_result_is_named_after_the_upload(tiny_model, tmp_path):
    pytest.importorskip("av")
    from video_clips import make_clip

    clip = make_clip(tmp_path / "beach walk.mp4", frames=6, audio=None)
    with TestClient(create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False))) as client:
        names = []
        for files, body in (({"file": ("beach walk.mp4", clip.read_bytes(), "video/mp4")}, None),
                            (None, clip.read_bytes())):
            job = client.post("/api/video", params={"mode": "mask"}, files=files, content=body).json()
            assert "id" in job, job  # the second clip right after the first is done: its slot is free
            for _ in range(300):
                status = client.get(f"/api/video/{job['id']}").json()
                if status["status"] != "running" and status["status"] != "queued":
                    break
                time.sleep(0.05)
            assert status["status"] == "done", status
            result = client.get(f"/api/video/{job['id']}/result")
            names.append(result.headers["content-disposition"])
    assert 'filename="beach_walk.mask.webm"' in names[0]
    assert 'filename="clip.mask.webm"' in names[1]  # a raw body has no name
