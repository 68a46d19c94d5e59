"""Explanations: torch-free TTA uncertainty, MC dropout, Grad-CAM and the ``cleancut explain`` figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cleancut.cli import main as cli_main
from cleancut.explain import tta_predictions, tta_uncertainty, uncertain_band, uncertainty_summary


def _photo(h=60, w=80) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    img[15:45, 25:60] = 230
    return img


def test_tta_agrees_for_a_pixelwise_model():
    img = _photo()
    pixelwise = lambda rgb: rgb.mean(axis=2) / 255.0  # noqa: E731 - flips and zooms commute with it
    mean, std = tta_uncertainty(pixelwise, img)
    assert mean.shape == std.shape == img.shape[:2] and mean.dtype == np.float32
    np.testing.assert_allclose(mean, img.mean(axis=2) / 255.0, atol=1e-5)
    assert float(std.max()) < 1e-5


def test_tta_disagreement_shows_up_as_uncertainty():
    img = _photo()
    # a "model" that calls the left 30 % of whatever it is shown foreground: flips and zooms disagree
    left = lambda rgb: np.tile((np.arange(rgb.shape[1]) < 0.3 * rgb.shape[1]).astype(np.float32), (rgb.shape[0], 1))  # noqa: E731
    preds = tta_predictions(left, img)
    assert preds.shape == (6, 60, 80)
    assert not np.isnan(preds).any(), "the zoomed-in tiles cover the whole photo"
    mean, std = tta_uncertainty(left, img)
    assert 0 <= mean.min() and mean.max() <= 1 and 0 <= std.min() and std.max() <= 0.5
    assert std.max() > 0.4
    band = uncertain_band(mean, std)
    assert band.dtype == bool and band.shape == img.shape[:2] and 0 < band.mean() < 1
    assert not band[:, 38:42].any(), "every view calls the middle background"
    s = uncertainty_summary(mean, std, band)
    assert 0 < s["band_fraction"] < 1 and s["p99_std"] >= s["mean_std"] > 0


def test_tta_with_the_onnx_remover_is_largest_on_the_edge(remover, square):
    """The call to wire into Remover.predict_mask(..., with_uncertainty=True)."""
    rgb = np.asarray(square(size=(96, 72), box=(20, 16, 60, 50)))
    mean, std = tta_uncertainty(remover.predict_mask, rgb)
    assert mean.shape == std.shape == rgb.shape[:2]
    fg = rgb.mean(axis=2) > 128
    from scipy import ndimage

    edge = fg ^ ndimage.binary_erosion(fg, iterations=2)
    edge |= ndimage.binary_dilation(fg, iterations=2) & ~fg
    assert edge.any() and std[edge].mean() > 5 * std[~edge].mean()


def test_uncertainty_needs_no_torch(tiny_model, tmp_path):
    code = f"""
import sys, numpy as np
sys.modules['torch'] = None  # any 'import torch' now fails
from cleancut import Remover
from cleancut.explain import tta_uncertainty
from cleancut.cli._explain_figure import explain
img = np.zeros((40, 50, 3), np.uint8); img[10:30, 15:35] = 255
mean, std = tta_uncertainty(Remover(model={str(tiny_model)!r}).predict_mask, img)
assert mean.shape == (40, 50) and std.shape == (40, 50)
from PIL import Image; Image.fromarray(img).save({str(tmp_path / 'p.png')!r})
s = explain({str(tmp_path / 'p.png')!r}, {str(tiny_model)!r}, {str(tmp_path / 'fig.png')!r}, mc=4)
assert s['gradcam_layer'] is None and 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]
print('ok')
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
    assert (tmp_path / "fig.png").stat().st_size > 10_000


# -- torch side ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from cleancut.train.config import load_config
    from cleancut.train.loop import Trainer
    from cleancut.train.synthetic import make_shapes_dataset

    root = make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=24, size=48, seed=5)
    run = tmp_path_factory.mktemp("runs") / "r"
    cfg = load_config(None, [f"data.roots=[{root}]", "data.size=48", "data.num_workers=0", "train.batch_size=8",
                             "train.precision=fp32", "train.threads=1", "train.epochs=3", "optim.lr=0.01",
                             "model.arch=unet", "model.kwargs={width: 6, depth: 2, dropout: 0.3}"])
    Trainer(cfg, run).fit()
    return run


def test_explainer_maps(checkpoint):
    from cleancut.train.explain import Explainer

    ex = Explainer(checkpoint)
    assert ex.layer == "down.1"
    img = _photo()
    prob = ex.predict(img)
    assert prob.shape == img.shape[:2] and 0 <= prob.min() and prob.max() <= 1
    mc_mean, mc_std = ex.mc_dropout(img, passes=8)
    assert mc_mean.shape == mc_std.shape == img.shape[:2]
    assert mc_std.max() > 0, "dropout on: the passes differ"
    assert not any(m.training for m in ex.model.modules()), "the model is back in eval mode"
    cam = ex.grad_cam(img)
    assert cam.shape == img.shape[:2] and cam.min() >= 0 and cam.max() == pytest.approx(1.0, abs=1e-3)
    assert cam.std() > 0


def test_cli_writes_the_figure(checkpoint, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(_photo()).save(photo)
    assert cli_main(["explain", str(photo), "--model", str(checkpoint), "--mc", "6"]) == 0
    out = capsys.readouterr().out
    fig = tmp_path / "photo.explain.png"
    assert fig.is_file() and fig.stat().st_size > 20_000
    assert "uncertain band" in out and "MC-dropout std" in out and "Grad-CAM mass on the subject" in out
    with Image.open(fig) as im:
        assert im.size[0] > 800


def test_bad_layer_is_a_clear_error(checkpoint, tmp_path, capsys):
    photo = tmp_path / "p.png"
    Image.fromarray(_photo()).save(photo)
    assert cli_main(["explain", str(photo), "--model", str(checkpoint), "--layer", "nope"]) == 2
    assert "is not a module of unet" in capsys.readouterr().err
