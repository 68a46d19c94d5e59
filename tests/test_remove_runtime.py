"""cleancut.runtime: the ONNX Runtime session, its checks and its batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from cleancut.errors import ConfigError, ModelError
from cleancut.models import get_model
from cleancut.runtime import Session, choose_providers
from cleancut.testing import expected_alpha, write_tiny_model


def test_prediction_matches_the_graph_at_model_size(tiny_model):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    (alpha,) = Session(tiny_model).predict([Image.fromarray(photo)])
    assert alpha.dtype == np.float32 and alpha.shape == (32, 32)
    # the graph undoes mean/std: agreement proves the runtime normalised with the spec's values
    np.testing.assert_allclose(alpha, expected_alpha(photo), atol=1e-4)


def test_masks_come_back_at_each_image_size_in_one_batch(tiny_model, square):
    session = Session(tiny_model, batch_size=2)
    sizes = [(64, 48), (1, 1), (33, 7), (200, 100), (5, 300)]
    alphas = session.predict([square(s) for s in sizes])
    assert [a.shape[::-1] for a in alphas] == sizes
    assert all(a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1 for a in alphas)
    assert alphas[3][50, 100] > 0.99 and alphas[3][0, 0] < 0.01


def test_fixed_batch_model_pads_the_last_chunk(tmp_path, square):
    path = write_tiny_model(tmp_path, name="fixed", batch=2)
    session = Session(path)
    assert session.batch_size == 2
    alphas = session.predict([square((20, 20))] * 3)
    assert len(alphas) == 3 and all(a[10, 10] > 0.99 for a in alphas)


def test_grayscale_model(tiny_registry, square):
    session = Session("tiny-gray")
    (alpha,) = session.predict([square((30, 30))])
    assert alpha[15, 15] > 0.99 and alpha[0, 0] < 0.01


def test_provider_choice():
    assert choose_providers() == (["CUDAExecutionProvider", "CPUExecutionProvider"]
                                  if "CUDAExecutionProvider" in ort.get_available_providers()
                                  else ["CPUExecutionProvider"])
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="NopeExecutionProvider are not available .* available: .*CPUExecutionProvider"):
        choose_providers(["NopeExecutionProvider"])


def test_threads_are_applied(tiny_model):
    session = Session(tiny_model, threads=1)
    assert session._session.get_session_options().intra_op_num_threads == 1


def test_sha_mismatch_is_refused(tmp_path):
    path = write_tiny_model(tmp_path, name="tampered")
    spec_path = path.with_suffix(".json")
    data = json.loads(spec_path.read_text())
    data["sha256"] = "0" * 64
    spec_path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="sha256 .* the spec expects 000000000000"):
        Session(path)


def test_missing_onnx_file(tmp_path):
    path = write_tiny_model(tmp_path, name="gone")
    path.unlink()
    with pytest.raises(ModelError, match="expected the ONNX file"):
        Session(path.with_suffix(".json"))


def test_garbage_onnx_file(tmp_path):
    path = write_tiny_model(tmp_path, name="garbage", with_sha=False)
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load .*Re-export"):
        Session(path)


def test_spec_that_does_not_match_the_graph(tmp_path):
    path = write_tiny_model(tmp_path, name="renamed")
    spec_path = path.with_suffix(".json")
    data = json.loads(spec_path.read_text())
    data["input_name"] = "pixels"
    spec_path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="expects input 'pixels' .* has inputs \\['image'\\]"):
        Session(path)
    data["input_name"] = "image"
    data["input_size"] = [64, 64]
    spec_path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="the spec says height 64, the ONNX input has 32"):
        Session(path)


def test_spec_objects_and_names_resolve_the_same(tiny_registry):
    assert Session(get_model("cleancut-default")).spec == Session().spec


def test_output_levels_stretch_the_probability(tiny_model, tmp_path):
    import dataclasses

    spec = get_model(tiny_model)
    stretched = dataclasses.replace(spec, output_levels=(0.2, 0.8))
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (raw,) = Session(spec).predict([photo])
    (got,) = Session(stretched).predict([photo])
    np.testing.assert_allclose(got, np.clip((raw - 0.2) / 0.6, 0, 1), atol=1e-5)
    data = json.loads(Path(tiny_model).with_suffix(".json").read_text())
    for bad in ([0.5, 0.5], [0.2], [-0.1, 0.9]):
        (tmp_path / "m.json").write_text(json.dumps({**data, "file": str(Path(tiny_model).resolve()), "output_levels": bad}))
        with pytest.raises(ModelError, match="output_levels"):
            get_model(tmp_path / "m.json")


def test_alpha_temperature_sharpens_after_the_resize_to_the_photo(tiny_model, tmp_path):
    import dataclasses

    from cleancut.preprocess import resize_alpha, to_input

    spec = get_model(tiny_model)
    sharp = dataclasses.replace(spec, alpha_temperature=0.25)
    rng = np.random.default_rng(2)
    photo = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))  # not the model's 32x32
    session = Session(spec)
    (raw,) = session.predict([photo])
    (got,) = Session(sharp).predict([photo])
    assert got.shape == raw.shape == (48, 80) and got.dtype == np.float32
    # sigmoid(logit(p) / T) of the alpha already at the photo's size, not resized after sharpening
    # (to the precision of preprocess.finish_alpha's 16-bit levels: 2.5 levels x the slope 1 / T)
    p = np.clip(raw.astype(np.float64), 1e-9, 1 - 1e-9)
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-np.log(p / (1 - p)) / 0.25)), atol=2.5 / 65535 / 0.25)
    model_size = session.run_batch(to_input(photo, spec)[None])[0]
    q = np.clip(model_size.astype(np.float64), 1e-9, 1 - 1e-9)
    sharpened_first = resize_alpha((1 / (1 + np.exp(-np.log(q / (1 - q)) / 0.25))).astype(np.float32), (80, 48))
    assert np.abs(got - sharpened_first).max() > 1e-2  # the order of the two steps matters
    order = np.argsort(raw.ravel(), kind="stable")
    # no pixel overtakes another by more than the 16-bit levels the sharpened alpha is resized on
    assert np.all(np.diff(got.ravel()[order]) >= -2.5 / 65535 / 0.25)
    assert np.abs(got - 0.5).mean() > np.abs(raw - 0.5).mean()  # crisper
    data = json.loads(Path(tiny_model).with_suffix(".json").read_text())
    for bad in (0.0, 0.01, 1.5, "0.25", None):
        (tmp_path / "m.json").write_text(json.dumps({**data, "file": str(Path(tiny_model).resolve()), "alpha_temperature": bad}))
        with pytest.raises(ModelError, match="alpha_temperature must be a number from 0.05 to 1"):
            get_model(tmp_path / "m.json")
