"""The learned edge stage (cleancut.edges): tiles along the uncertain band, each redrawn by a
refiner from the photo with context, pasted back exactly; and its training (cleancut.train.edges)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cleancut.edges import EdgeRefiner, uncertain_tiles, working_size
from cleancut.models import RefinerSpec
from cleancut.testing import write_tiny_refiner
from cleancut.errors import ModelError


def _channel_refiner(path, channel: int, in_name: str = "x") -> RefinerSpec:
    return write_tiny_refiner(path, channel, input_name=in_name)


def _scene(h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = np.zeros((h, w), np.float32)
    alpha[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
    alpha[h // 4, w // 4: 3 * w // 4] = 0.5  # a soft top edge
    alpha[h // 4: 3 * h // 4, w - 1] = 0.3  # and a soft column on the photo's right border
    return rgb, alpha


@pytest.mark.parametrize("shape", [(40, 56), (37, 53), (6, 50), (9, 9)])
def test_the_refined_tiles_are_pasted_exactly_and_the_rest_is_the_network_alpha(tmp_path, shape):
    rgb, alpha = _scene(*shape)
    red = EdgeRefiner(_channel_refiner(tmp_path / "red.onnx", 0))
    got = red.refine_at(rgb, alpha)
    expected = alpha.copy()
    tiles = uncertain_tiles(alpha, 8, (0.02, 0.98))
    assert len(tiles)  # the scene has an uncertain band
    for r, c in tiles:
        block = (slice(r * 8, r * 8 + 8), slice(c * 8, c * 8 + 8))
        expected[block] = rgb[block][..., 0] / 255
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # a refiner that answers the alpha it was given changes nothing, at the borders too
    same = EdgeRefiner(_channel_refiner(tmp_path / "same.onnx", 3))
    np.testing.assert_allclose(same.refine_at(rgb, alpha), alpha, atol=1e-7)


def test_only_tiles_that_hold_an_uncertain_pixel_are_refined():
    alpha = np.zeros((20, 30), np.float32)
    alpha[9, 17] = 0.5
    alpha[0:4, 0:4] = 1.0  # certain object: not a tile to refine
    assert uncertain_tiles(alpha, 8, (0.02, 0.98)).tolist() == [[1, 2]]
    assert uncertain_tiles(np.round(alpha), 8, (0.02, 0.98)).size == 0


def test_a_large_photo_is_refined_at_the_working_size_and_returned_at_its_own(tmp_path):
    spec = _channel_refiner(tmp_path / "same.onnx", 3)
    refiner = EdgeRefiner(spec)
    photo = Image.fromarray(np.full((150, 200, 3), 128, np.uint8))
    prob = np.zeros((24, 32), np.float32)
    prob[6:18, 8:24] = 1
    assert working_size(photo.size, spec.max_side) == (64, 48)
    out = refiner.refine(prob, photo)
    assert out.shape == (150, 200) and out.dtype == np.float32
    assert out[75, 100] == pytest.approx(1.0) and out[5, 5] == pytest.approx(0.0)
    small = Image.fromarray(np.full((30, 40, 3), 128, np.uint8))
    assert refiner.refine(prob, small).shape == (30, 40)


def test_a_refiner_that_breaks_the_contract_is_refused_with_a_reason(tmp_path):
    wrong = _channel_refiner(tmp_path / "wrong.onnx", 0, in_name="image")
    with pytest.raises(ModelError, match="expected input 'x'"):
        EdgeRefiner(wrong)
    with pytest.raises(ModelError, match="missing"):
        EdgeRefiner(RefinerSpec(file="nothing.onnx", folder=str(tmp_path)))
    ok = _channel_refiner(tmp_path / "ok.onnx", 0)
    with pytest.raises(ModelError, match="sha256"):
        EdgeRefiner(RefinerSpec(**{**ok.__dict__, "sha256": "0" * 64}))
    assert EdgeRefiner(ok).spec.sha256 == ok.sha256
    with pytest.raises(ModelError, match="out of range"):
        RefinerSpec.from_json({"file": "ok.onnx", "band": [0.9, 0.1]}, tmp_path)
    spec = RefinerSpec.from_json(json.loads(json.dumps(ok.to_json())), tmp_path)
    assert spec.path == ok.path and spec.band == ok.band


def test_training_a_refiner_learns_the_edges_exports_it_and_resumes(tmp_path, tiny_model):
    pytest.importorskip("torch")
    from cleancut.train.edges import EdgeTrainConfig, load_refiner_json, train_refiner
    from cleancut.train.synthetic import make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "shapes", n=30, size=48, seed=3)
    cfg = EdgeTrainConfig(base=str(tiny_model), roots=[str(root)], val_split="val", max_val=6,
                          cache_dir=str(tmp_path / "cache"), cache_side=48, width=8, tile=8, margin=4, max_side=64,
                          batch_size=16, steps=60, lr=1e-2, val_every=30, threads=1, minutes=1e-6)
    train_refiner(cfg, tmp_path / "run", progress=False)  # stopped by its time budget after one step
    with pytest.raises(Exception, match="already holds a run"):
        train_refiner(cfg, tmp_path / "run", progress=False)
    best = train_refiner(EdgeTrainConfig(threads=1), tmp_path / "run", resume=True, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 30, 60]  # resumed at step 1, not from the start
    assert best["MAE"] < best["base/MAE"] and best["BIoU@0.5%"] > best["base/BIoU@0.5%"]
    spec = load_refiner_json(tmp_path / "run")
    refiner = EdgeRefiner(spec)  # the export is what the product loads (its sha256 checked)
    assert spec.tile == 8 and spec.sha256 and refiner.spec.path.is_file()


def test_auto_takes_the_stage_the_model_spec_names(tmp_path):
    from cleancut import Remover
    from cleancut.edges import resolve_stage
    from cleancut.errors import ConfigError
    from cleancut.models import get_model
    from cleancut.testing import write_tiny_model

    path = write_tiny_model(tmp_path, name="red-edges", edge_refiner=False)
    data = json.loads(path.with_suffix(".json").read_text())
    assert resolve_stage("auto", get_model(path)) == "network"  # a spec that names no stage
    red = write_tiny_refiner(tmp_path / "red.onnx", channel=0, tile=8, margin=4)
    path.with_suffix(".json").write_text(json.dumps({**data, "edges": "learned", "edge_refiner": red.to_json()}))
    spec = get_model(path)
    assert resolve_stage("auto", spec) == "learned" and resolve_stage("guided", spec) == "guided"
    # the refiner answers the photo's red channel along the edge: the prediction shows it
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[12:36, 16:48] = (255, 0, 255)
    photo = Image.fromarray(pixels)
    remover = Remover(model=str(path))
    auto, network = remover.predict_mask(photo), remover.predict_mask(photo, edges="network")
    assert not np.array_equal(auto, network)
    np.testing.assert_array_equal(auto, remover.predict_mask(photo, edges="learned"))
    for bad in ({"edges": "learned"}, {"edges": "sharp"}):
        path.with_suffix(".json").write_text(json.dumps({**data, **bad}))
        with pytest.raises(ModelError, match="edges"):
            get_model(path)
    with pytest.raises(ConfigError, match="edges must be one of auto, network, guided, learned"):
        resolve_stage("sharp", spec)
    with pytest.raises(ConfigError, match="has no learned edge stage"):
        resolve_stage("learned", get_model(write_tiny_model(tmp_path / "bare", name="bare", edge_refiner=False)))
