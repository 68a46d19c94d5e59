"""Adversarial training plugged into the loop, its checkpointed state, and the boundary measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cleancut.cli import main as cli_main  # noqa: E402
from cleancut.train.adversarial import (  # noqa: E402
    AdversarialTraining, PatchDiscriminator, boundary_f, boundary_iou, inner_band)
from cleancut.train.checkpoint import load  # noqa: E402
from cleancut.train.config import load_config  # noqa: E402
from cleancut.train.loop import Trainer as _Trainer  # noqa: E402
from cleancut.train.methods import plugins_for  # noqa: E402
from cleancut.train.synthetic import make_shapes_dataset  # noqa: E402

TINY = ["data.size=48", "data.num_workers=0", "train.batch_size=8", "train.precision=fp32", "train.threads=1",
        "train.early_stopping=null", "model.arch=unet", "model.kwargs={width: 4, depth: 2, dropout: 0.0}"]


def Trainer(config, out, **kwargs):  # noqa: N802
    """A Trainer with the plugins its config asks for, as ``cleancut train`` builds it."""
    return _Trainer(config, out, plugins=plugins_for(config), **kwargs)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=24, size=48, seed=2)


def cfg(root, *extra):
    return load_config(None, [f"data.roots=[{root}]", *TINY, *extra])


def _batch(trainer):
    x, y = next(iter(trainer._loader()))
    return x, y


def _grads(module):
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("weight", [0.5, 0.0])
def test_adversarial_term_alone_reaches_the_segmenter_not_the_discriminator(shapes, tmp_path, weight):
    trainer = Trainer(cfg(shapes, "adversarial.weight=1.0", "adversarial.warmup_epochs=0"), tmp_path / "r")
    plugin = next(p for p in trainer.plugins if isinstance(p, AdversarialTraining))
    plugin.cfg.weight = weight
    x, y = _batch(trainer)
    outputs = trainer.model(x)
    term = plugin.loss(trainer, x, y, outputs)
    trainer.model.zero_grad(set_to_none=True)
    term.backward()
    grads = [g for g in _grads(trainer.model) if g is not None]
    assert grads, "the adversarial term is connected to the segmenter's graph"
    total = sum(float(g.abs().sum()) for g in grads)
    if weight > 0:
        assert total > 0
    else:
        assert total == 0.0
    assert all(g is None for g in _grads(plugin.disc)), "D is frozen for the generator's term"
    assert all(p.requires_grad for p in plugin.disc.parameters()), "and unfrozen again afterwards"


def test_in_the_loop_only_the_adversarial_term_moves_the_segmenter(shapes, tmp_path):
    """With the segmentation loss switched off, the segmenter's gradients come from D alone."""
    base = ["loss.bce=0", "loss.overlap_weight=0", "loss.pos_weight=null", "optim.weight_decay=0",
            "train.epochs=1", "train.steps_per_epoch=2", "adversarial.warmup_epochs=0"]
    adv = Trainer(cfg(shapes, *base, "adversarial.weight=1.0"), tmp_path / "adv")
    d_before = {k: v.clone() for k, v in adv.plugins[0].disc.state_dict().items()}
    adv.fit()
    assert sum(float(p.grad.abs().sum()) for p in adv.model.parameters() if p.grad is not None) > 0
    d_after = adv.plugins[0].disc.state_dict()
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before), "D took optimiser steps"
    row = adv.history[-1]
    assert {"adv_g", "adv_w", "d_loss", "d_acc"} <= row.keys() and row["adv_w"] == 1.0
    plain = Trainer(cfg(shapes, *base, "adversarial.weight=0"), tmp_path / "plain")
    assert plain.plugins == []
    plain.fit()
    assert sum(float(p.grad.abs().sum()) for p in plain.model.parameters() if p.grad is not None) == 0


def test_weight_warms_up_linearly(shapes, tmp_path):
    trainer = Trainer(cfg(shapes, "adversarial.weight=0.2", "adversarial.warmup_epochs=1"), tmp_path / "r")
    plugin = trainer.plugins[0]
    n = plugin.warmup_steps
    assert n == trainer.steps_per_epoch
    plugin.step = 0
    assert plugin.current_weight() == 0.0
    plugin.step = n // 2
    assert plugin.current_weight() == pytest.approx(0.2 * (n // 2) / n)
    plugin.step = 10 * n
    assert plugin.current_weight() == pytest.approx(0.2)


def test_resume_restores_discriminator_and_reproduces_the_run(shapes, tmp_path):
    args = ["adversarial.weight=0.1", "adversarial.warmup_epochs=1", "adversarial.width=8", "optim.lr=0.003"]
    Trainer(cfg(shapes, *args, "train.epochs=3"), tmp_path / "full").fit()
    Trainer(cfg(shapes, *args, "train.epochs=3", "train.time_budget_min=0.0001"), tmp_path / "cut").fit()
    cut = load(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert cut["epoch"] == 1 and {"disc", "optimizer", "step"} <= cut["plugins"]["adversarial"].keys()
    resumed = Trainer(cfg(shapes, *args, "train.epochs=3"), tmp_path / "cut", resume=True)
    assert resumed.plugins[0].step == cut["plugins"]["adversarial"]["step"] > 0
    resumed.fit()
    full = load(tmp_path / "full" / "checkpoints" / "last.pt")
    again = load(tmp_path / "cut" / "checkpoints" / "last.pt")
    for key in full["model"]:
        assert torch.equal(full["model"][key], again["model"][key]), key
    for key, value in full["plugins"]["adversarial"]["disc"].items():
        assert torch.equal(value, again["plugins"]["adversarial"]["disc"][key]), key


def test_resume_without_the_discriminator_state_is_refused(shapes, tmp_path):
    Trainer(cfg(shapes, "train.epochs=1"), tmp_path / "r").fit()
    with pytest.raises(Exception, match="without 'adversarial'"):
        Trainer(cfg(shapes, "train.epochs=2", "adversarial.weight=0.1"), tmp_path / "r", resume=True)


def test_cli_flag_turns_it_on(shapes, tmp_path, capsys):
    code = cli_main(["train", "--adversarial", "--out", str(tmp_path / "r"), f"data.roots=[{shapes}]", *TINY,
                     "train.epochs=1", "adversarial.width=8"])
    assert code == 0, capsys.readouterr().err
    ckpt = load(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ckpt["config"]["adversarial"]["weight"] == 0.01
    assert "adversarial" in ckpt["plugins"]


def test_patch_discriminator_shapes():
    d = PatchDiscriminator(in_channels=4, width=8, layers=3)
    out = d(torch.randn(2, 3, 64, 64), torch.rand(2, 1, 64, 64))
    assert out.shape[:2] == (2, 1) and out.shape[-1] == 6  # 64 / 8 - 2: one logit per overlapping patch
    assert any("parametrizations" in name for name, _ in d.named_modules()), "spectral norm"


# -- boundary measures -------------------------------------------------------------------------------

def _square(shape=(100, 100), box=(30, 70, 30, 70)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[box[0]:box[1], box[2]:box[3]] = 255
    return m


def test_boundary_iou_and_f():
    gt = _square()
    assert boundary_iou(gt / 255.0, gt) == 1.0 and boundary_f(gt / 255.0, gt) == 1.0
    shifted = _square(box=(33, 73, 30, 70)) / 255.0
    biou, bf = boundary_iou(shifted, gt), boundary_f(shifted, gt)
    assert 0 < biou < 0.8 and 0 < bf < 1
    # a 3-pixel shift costs far more boundary IoU than mask IoU (0.86): it is an edge measure
    assert biou < 0.86
    assert boundary_iou(np.zeros((50, 50)), np.zeros((50, 50), np.uint8)) == 1.0
    assert boundary_f(np.zeros((50, 50)), gt[:50, :50] * 0 + 255) == 1.0  # full masks: no contour at all
    assert boundary_iou(np.zeros((100, 100)), gt) == 0.0


def test_the_image_frame_is_not_an_edge():
    full_bottom = np.zeros((60, 60), bool)
    full_bottom[30:] = True  # a subject cut by the bottom of the photo
    band = inner_band(full_bottom, 3)
    assert band[30:33].all() and not band[33:].any()  # 3 rows below the edge; left, right, bottom frame: none
