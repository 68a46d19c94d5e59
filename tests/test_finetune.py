"""``cleancut finetune`` (issue 34) on a tiny cutnet and generated photos: weight recovery and its
parity (float and int8 files, and the shipped model), the whole path from finetune to remove
--model NAME to models remove NAME, bad data, and an interrupted run that leaves nothing behind;
the example sets (folder, zip) and the server's "Save as example" endpoint."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from cleancut import Remover  # noqa: E402
from cleancut.cli import main as cli_main  # noqa: E402
from cleancut.errors import DatasetError, ModelError  # noqa: E402
from cleancut.examples import add_example, count_examples, read_examples, write_zip  # noqa: E402
from cleancut.models import get_model, list_models  # noqa: E402
from cleancut.testing import write_tiny_model  # noqa: E402
from cleancut.train import archs  # noqa: E402
from cleancut.train.checkpoint import atomic_save  # noqa: E402
from cleancut.train.config import load_config  # noqa: E402
from cleancut.train.export import export_onnx  # noqa: E402
from cleancut.train.recover import recover  # noqa: E402
from cleancut.train.synthetic import make_shapes_dataset  # noqa: E402

KWARGS = {"width": 0.5, "decoder": 8}
SIZE = 64


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A tiny cutnet exported as the shipped model is (uint8 input, aspect kept, sharpened at the
    photo's size), and the torch model it came from."""
    folder = tmp_path_factory.mktemp("tiny-base")
    cfg = load_config(None, ["model.arch=cutnet", f"data.size={SIZE}"])
    cfg.model.kwargs = KWARGS
    torch.manual_seed(0)
    model = archs.build("cutnet", **KWARGS)
    opt = torch.optim.Adam(model.parameters(), 1e-2)  # one step: BatchNorm and weights off their init
    sum(o.mean() for o in model(torch.randn(2, 3, SIZE, SIZE))).backward()
    opt.step()
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "epoch": 1, "history": []}, folder / "t.pt")
    export_onnx(folder / "t.pt", folder / "tiny-base.onnx", name="tiny-base", input_format="uint8_nhwc",
                keep_aspect=True, extra={"alpha_temperature": 0.5})
    return folder / "tiny-base.onnx", model.eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("photos") / "mine", n=10, size=SIZE, seed=5)


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("CLEANCUT_MODELS_DIR", str(folder))
    return folder


def _finetune(args, capsys):
    code = cli_main(["finetune", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# -------------------------------------------------------------------------------------- recovery


def test_recovery_matches_the_onnx_file_and_the_original_weights(tiny_base):
    path, original = tiny_base
    model, report = recover(get_model(path))
    assert report["max_abs_diff"] < 1e-4 and not report["quantized"]
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():  # every weight back: the rebuilt network is the original one in eval mode
        assert torch.allclose(model.eval()(x), original(x), atol=1e-4)


def test_recovery_reads_an_int8_file_through_its_dequantised_graph(tiny_base, photos, tmp_path):
    from cleancut import datasets
    from cleancut.train.quantize import quantize_int8

    path, original = tiny_base
    pairs = datasets.select([photos], ["all"])["all"]
    int8 = quantize_int8(get_model(path), pairs, tmp_path, made_by="test")
    model, report = recover(int8)
    assert report["quantized"] and report["max_abs_diff"] < 1e-3  # parity with the dequantised graph
    assert 0 < report["int8_max_abs_diff"] < 0.5  # the int8 file itself: quantisation noise, no more
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (model.eval()(x) - original(x)).abs().mean() < 0.1 * original(x).abs().mean() + 0.05


def test_recovery_of_litefpn_with_its_detail_branch(tmp_path):
    """v11's architecture (LiteFPN with the stride-1 detail branch) comes back out of its export."""
    cfg = load_config(None, ["model.arch=litefpn", "data.size=96"])
    cfg.model.kwargs = {"decoder": 8, "detail": 8}
    torch.manual_seed(1)
    model = archs.build("litefpn", **cfg.model.kwargs)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    sum(o.mean() for o in model(torch.randn(2, 3, 96, 96))).backward()
    opt.step()
    atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "epoch": 1, "history": []}, tmp_path / "d.pt")
    export_onnx(tmp_path / "d.pt", tmp_path / "detail.onnx", input_format="uint8_nhwc", keep_aspect=True)
    recovered, report = recover(get_model(tmp_path / "detail.onnx"))
    assert report["max_abs_diff"] < 1e-4
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.allclose(recovered.eval()(x), model.eval()(x), atol=1e-4)


def test_the_shipped_int8_model_is_recovered_exactly():
    spec = get_model("cleancut-default")
    if spec.architecture != "litefpn" or not spec.path.is_file():
        pytest.skip("the shipped model is not here")
    _, report = recover(spec)
    assert report["quantized"] and report["convs"] == 65 and report["max_abs_diff"] < 1e-4


def test_a_peer_model_cannot_be_finetuned(tmp_path):
    peer = write_tiny_model(tmp_path, name="peer")  # a hand-made graph, like a U2-Net file
    with pytest.raises(ModelError, match="cannot be fine-tuned.*cleancut-default"):
        recover(get_model(peer))


def test_tool_script_calls_the_package(tiny_base, photos, tmp_path, tool):
    out = tmp_path / "recovered.pt"
    tool("onnx_to_checkpoint").main([str(tiny_base[0]), "--arch", "cutnet", "--kwargs", json.dumps(KWARGS),
                                     "--size", str(SIZE), "--data", str(photos.parent), "--images", "8",
                                     "--out", str(out)])
    assert set(torch.load(out)["model"]) == set(tiny_base[1].state_dict())


# -------------------------------------------------------------------------------------- end to end


def test_finetune_then_remove_with_it_then_models_remove(tiny_base, photos, models_dir, tmp_path, capsys):
    code, out, err = _finetune([photos, "--name", "shapes", "--base", tiny_base[0], "--minutes", "0.1",
                                "--no-replay", "--threads", "1"], capsys)
    assert code == 0, err
    assert "| before |" in out and "| after |" in out and "registered" in out
    assert "L2-SP" in err and "parity" in err
    spec = get_model("shapes")
    assert spec.extra["made_by"] == "cleancut finetune" and spec.extra["base"] == "tiny-base"
    assert spec.aspect == "keep" and spec.input_format == "uint8_nhwc" and spec.alpha_temperature == 0.5
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(spec.path)).graph.node)  # int8
    assert sorted(p.name for p in models_dir.iterdir()) == sorted(["shapes.json", spec.path.name])
    assert {"before", "after"} <= set(spec.extra["finetune"]) and spec.extra["finetune"]["train"] == 8

    photo = next((photos / "im").iterdir())
    assert cli_main(["remove", str(photo), "--model", "shapes", "-o", str(tmp_path / "cut.png")]) == 0
    assert Image.open(tmp_path / "cut.png").mode == "RGBA"
    assert Remover("shapes").spec.name == "shapes"
    assert "shapes" in [s.name for s in list_models()]
    capsys.readouterr()
    assert cli_main(["models"]) == 0
    assert any(line.split()[:2] == ["yours", "shapes"] for line in capsys.readouterr().out.splitlines())

    assert cli_main(["models", "export", "shapes", str(tmp_path)]) == 0
    assert get_model(tmp_path / "shapes.onnx").sha256 == spec.sha256
    assert cli_main(["models", "export", "shapes", str(tmp_path)]) == 2  # never overwritten unless --force
    assert "--force" in capsys.readouterr().err

    assert cli_main(["models", "remove", "shapes"]) == 0
    assert list(models_dir.iterdir()) == []
    assert cli_main(["remove", str(photo), "--model", "shapes", "-o", str(tmp_path / "x.png")]) != 0
    assert "unknown model 'shapes'" in capsys.readouterr().err
    assert cli_main(["models", "remove", "cleancut-default"]) != 0
    assert "bundled" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli_main(["finetune", "--help"])
    text = capsys.readouterr().out
    for option in ("--name", "--base", "--minutes", "--val", "--replay", "--no-replay", "--replace", "--threads",
                   "--seed", "DATA"):
        assert option in text


# -------------------------------------------------------------------------------------- bad data


def _pairs(folder: Path, n: int, size=(40, 32), mask_size=None) -> Path:
    for sub in ("im", "gt"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (i * 20, 40, 90)).save(folder / "im" / f"p{i}.jpg")
        Image.new("L", mask_size or size, 255).save(folder / "gt" / f"p{i}.png")
    return folder


@pytest.mark.parametrize("case, message", [
    ("few", "2 photo/mask pair(s) found; fine-tuning needs at least 5"),
    ("size", "mask is 20x20, image is 40x32"),
    ("orphan", "no mask gt/extra.png"),
    ("nothing", "no such folder or zip"),
    ("notzip", "cannot be read as a zip"),
    ("escape", "a path outside its folder"),
    ("empty-zip", "found neither folder"),
    ("peer", "cannot be fine-tuned"),
    ("name", "expected 1 to 64 letters"),
    ("bundled-name", "the name of a bundled model"),
    ("val", "--val must be a fraction"),
    ("minutes", "--minutes must be a positive number"),
    ("replay", "--replay"),
])
def test_bad_data_gives_a_clear_error_and_writes_nothing(case, message, tmp_path, models_dir, capsys, tiny_base):
    data, base, extra = tmp_path / "data", str(tiny_base[0]), []
    name = "mine"
    if case == "few":
        _pairs(data, 2)
    elif case == "size":
        _pairs(data, 6)
        Image.new("L", (20, 20), 255).save(data / "gt" / "p3.png")
    elif case == "orphan":
        _pairs(data, 6)
        Image.new("RGB", (8, 8)).save(data / "im" / "extra.jpg")
    elif case == "notzip":
        data = tmp_path / "set.zip"
        data.write_text("not a zip")
    elif case in ("escape", "empty-zip"):
        data = tmp_path / "set.zip"
        with zipfile.ZipFile(data, "w") as zf:
            zf.writestr("../evil.jpg" if case == "escape" else "readme.txt", b"x")
    elif case == "peer":
        _pairs(data, 6)
        base = str(write_tiny_model(tmp_path / "peer", name="peer"))
    elif case in ("name", "bundled-name"):
        _pairs(data, 6)
        name = "../x" if case == "name" else "cleancut-default"
    elif case in ("val", "minutes"):
        _pairs(data, 6)
        extra = ["--val", "0.9"] if case == "val" else ["--minutes", "0"]
    elif case == "replay":
        _pairs(data, 6)
        extra = ["--replay", str(tmp_path / "no-such-root")]
    replay = [] if case == "replay" else ["--no-replay"]
    code, out, err = _finetune([data, "--name", name, "--base", base, *extra, *replay], capsys)
    assert code != 0
    assert message in err and "cleancut finetune: error:" in err
    assert not models_dir.exists() or list(models_dir.iterdir()) == []


def test_an_existing_name_needs_replace(photos, models_dir, tiny_base, capsys):
    models_dir.mkdir()
    (models_dir / "mine.json").write_text(json.dumps({"name": "mine", "file": "mine.onnx", "input_size": [8, 8],
                                                      "made_by": "cleancut finetune"}))
    code, _, err = _finetune([photos, "--name", "mine", "--base", tiny_base[0], "--no-replay"], capsys)
    assert code == 2 and "--replace" in err


# -------------------------------------------------------------------------------------- interrupted


@pytest.mark.parametrize("where", ["training", "install"])
def test_an_interrupted_finetune_leaves_nothing_half_written(where, tiny_base, photos, models_dir, tmp_path,
                                                             monkeypatch, capsys):
    import tempfile

    from cleancut.models import user as user_models
    from cleancut.train import finetune as ft

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    # a model of that name already there: an interrupted --replace must keep it whole
    previous = write_tiny_model(tmp_path / "prev", name="shapes")
    user_models.install_user_model(previous, {**json.loads(previous.with_suffix(".json").read_text()),
                                              "made_by": "test"}, "shapes")
    before = sorted(p.name for p in models_dir.iterdir())

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "training":
        monkeypatch.setattr(ft.Finetuner, "train_epoch", interrupt)
    else:
        real_replace = os.replace

        def replace(src, dst):  # the ONNX file goes in, then Ctrl-C before the spec does
            if str(dst).endswith(".json"):
                raise KeyboardInterrupt
            real_replace(src, dst)

        monkeypatch.setattr(user_models.os, "replace", replace)
    code, _, err = _finetune([photos, "--name", "shapes", "--replace", "--base", tiny_base[0], "--minutes", "0.05",
                              "--no-replay"], capsys)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in models_dir.iterdir()) == before  # no temporary file, no new ONNX file
    assert get_model("shapes").extra["made_by"] == "test"
    get_model("shapes").verify()
    assert list((tmp_path / "tmp").iterdir()) == []  # the run folder is gone too


def test_a_sigterm_that_a_library_turns_into_its_own_error_still_reads_as_the_interrupt():
    """The signal can land inside the ONNX exporter or a torch writer, which re-raise the interrupt
    as an error of their own: after a SIGTERM, that error is the interrupt (exit 130), not a failure."""
    import signal
    import time

    from cleancut.cli.finetune import _terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as caught:
        with _terminate_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here
            except KeyboardInterrupt as exc:
                raise RuntimeError("export failed") from exc
    assert isinstance(caught.value.__cause__, RuntimeError)
    with pytest.raises(RuntimeError, match="a real failure"):  # without a SIGTERM an error stays itself
        with _terminate_as_interrupt():
            raise RuntimeError("a real failure")
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


def test_a_terminated_finetune_process_cleans_up(tiny_base, photos, tmp_path):
    """SIGTERM (what a service manager or `kill` sends) mid-training: exit 130, no model, no run folder."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "CLEANCUT_MODELS_DIR": str(tmp_path / "models"), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "cleancut", "finetune", str(photos), "--name", "shapes", "--base",
                             str(tiny_base[0]), "--minutes", "5", "--no-replay", "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any((tmp_path / "tmp").glob("cleancut-finetune-*/run/checkpoints/best.pt")):  # training has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, (proc.returncode, err[-3000:])
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []
    assert list((tmp_path / "tmp").glob("cleancut-*")) == []  # the run folder is gone


# -------------------------------------------------------------------------------------- example sets


def _photo_and_mask(size=(48, 36)):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    mask = Image.new("L", size, 0)
    mask.paste(255, (10, 10, 30, 30))
    return photo, mask


def test_examples_are_added_atomically_and_never_overwritten(tmp_path):
    from cleancut.examples import examples_folder

    folder = examples_folder(tmp_path / "set")
    photo, mask = _photo_and_mask()
    stems = {add_example(folder, photo, mask, "same.jpg") for _ in range(3)}
    assert len(stems) == 3 and count_examples(folder) == 3
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    pairs = read_examples(folder)
    assert {p.stem for p in pairs} == stems
    with Image.open(pairs[0].mask) as m:
        assert m.mode == "L" and m.size == photo.size and np.asarray(m).max() == 255
    with pytest.raises(DatasetError, match="the mask is 10x10 pixels but the photo is 48x36"):
        add_example(folder, photo, Image.new("L", (10, 10)))
    assert count_examples(folder) == 3


def test_the_zip_export_format_round_trips(tmp_path):
    folder = tmp_path / "set"
    for sub in ("im", "gt"):
        (folder / sub).mkdir(parents=True)
    photo, mask = _photo_and_mask()
    for i in range(3):
        add_example(folder, photo, mask, f"p{i}")
    assert write_zip(folder, tmp_path / "set.zip") == 3
    names = zipfile.ZipFile(tmp_path / "set.zip").namelist()
    assert sorted(n.split("/")[0] for n in names) == ["gt"] * 3 + ["im"] * 3
    pairs = read_examples(tmp_path / "set.zip", tmp_path / "work")
    assert len(pairs) == 3 and all(p.image.is_file() for p in pairs)
    nested = tmp_path / "nested.zip"  # one folder around im/ and gt/ (a zip made by hand) is read too
    with zipfile.ZipFile(nested, "w") as zf:
        for n in names:
            zf.writestr(f"my-set/{n}", zipfile.ZipFile(tmp_path / "set.zip").read(n))
        zf.writestr("__MACOSX/._x", b"")
    assert len(read_examples(nested, tmp_path / "work2")) == 3


# -------------------------------------------------------------------------------------- the server


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_save_as_example_endpoint(tmp_path, tiny_model):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from cleancut.server import ServerSettings, create_app

    photo, mask = _photo_and_mask()
    cutout = photo.convert("RGBA")
    cutout.putalpha(mask)
    off = create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False))
    with TestClient(off) as client:
        assert client.get("/api/examples").json()["enabled"] is False
        r = client.post("/api/examples", files={"file": ("a.png", _png(photo)), "mask": ("m.png", _png(mask))})
        assert r.status_code == 404 and r.json()["detail"]["code"] == "examples_off"

    folder = tmp_path / "examples"
    app = create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False, examples_dir=str(folder)))
    with TestClient(app) as client:
        for mask_upload in (_png(mask), _png(cutout)):  # a gray mask, or a cut-out whose alpha is the mask
            r = client.post("/api/examples", files={"file": ("shot 1.png", _png(photo)), "mask": ("m.png", mask_upload)})
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["stem"].startswith("shot-1-") and (folder / body["photo"]).is_file()
            with Image.open(folder / body["mask"]) as stored:
                assert np.array_equal(np.asarray(stored), np.asarray(mask))
        assert body["count"] == 2 and client.get("/api/examples").json() == {
            "enabled": True, "count": 2, "zip": "/api/examples/zip", "max_upload_bytes": app.state.cleancut.settings.max_upload_bytes}
        bad = client.post("/api/examples", files={"file": ("a.png", _png(photo)), "mask": ("m.png", _png(mask.resize((8, 8))))})
        assert bad.status_code == 422 and bad.json()["detail"]["code"] == "mask_size"
        text = client.post("/api/examples", files={"file": ("a.png", b"hello"), "mask": ("m.png", _png(mask))})
        assert text.status_code == 415
        missing = client.post("/api/examples", files={"file": ("a.png", _png(photo))})
        assert missing.status_code == 422 and "'mask'" in missing.json()["error"]
        assert count_examples(folder) == 2 and not list(folder.glob(".*.tmp"))
        z = client.get("/api/examples/zip")
        assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
        assert len(zipfile.ZipFile(io.BytesIO(z.content)).namelist()) == 4
