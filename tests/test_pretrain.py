"""Masked-autoencoder pre-training and ``train --init`` from it, on tiny synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cleancut.cli import main as cli_main  # noqa: E402
from cleancut.train import archs  # noqa: E402
from cleancut.train.checkpoint import load  # noqa: E402
from cleancut.train.config import load_config  # noqa: E402
from cleancut.train.loop import Trainer  # noqa: E402
from cleancut.train.pretrain import MaskedImageDataset, add_reconstruction_heads, list_images  # noqa: E402
from cleancut.train.synthetic import make_shapes_dataset  # noqa: E402

MODEL = ["model.arch=unet", "model.kwargs={width: 4, depth: 2}"]
COMMON = ["data.size=48", "data.num_workers=0", "train.batch_size=8", "train.threads=1", "train.precision=fp32"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=24, size=48, seed=3)


@pytest.fixture(scope="module")
def pre_run(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre") / "run"
    code = cli_main(["pretrain", "--images", str(shapes), "--out", str(out), "--patch", "8", *MODEL, *COMMON,
                     "train.epochs=6", "optim.lr=0.01", "optim.warmup_epochs=0"])
    assert code == 0
    return out


def test_pretrain_writes_a_run_and_learns_to_reconstruct(pre_run):
    for name in ("config.yaml", "log.csv", "history.json", "recon.png", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (pre_run / name).is_file(), name
    ckpt = load(pre_run)
    hist = ckpt["history"]
    assert len(hist) == 6 and hist[-1]["recon_loss"] < 0.8 * hist[0]["recon_loss"]
    assert ckpt["pretrain"]["heads"] == ["head"] and ckpt["model"]["head.weight"].shape[0] == 3
    assert ckpt["pretrain"]["images"] == 24  # gt/ masks are not photos


def test_init_transfers_every_tensor_but_the_head(shapes, pre_run, tmp_path, capsys):
    pre = load(pre_run)["model"]
    cfg = load_config(None, [f"data.roots=[{shapes}]", *MODEL, *COMMON, "train.epochs=1"])
    trainer = Trainer(cfg, tmp_path / "t", init=str(pre_run))
    own = trainer.model.state_dict()
    matched = [k for k in own if k in pre and own[k].shape == pre[k].shape]
    assert set(own) - set(matched) == {"head.weight", "head.bias"}
    assert trainer.init_report.startswith(f"initialised {len(own) - 2}/{len(own)} tensors")
    for k in matched:
        assert torch.equal(own[k].cpu(), pre[k]), k
    # and through the CLI: the matched count is reported
    code = cli_main(["train", "--init", str(pre_run), "--out", str(tmp_path / "cli"), f"data.roots=[{shapes}]",
                     *MODEL, *COMMON, "train.epochs=1"])
    assert code == 0
    assert f"initialised {len(own) - 2}/{len(own)} tensors from {pre_run}" in capsys.readouterr().err


def test_masked_dataset_hides_patches_and_is_seeded(shapes):
    paths = list_images([shapes])
    ds = MaskedImageDataset(paths, 48, seed=1, mask_ratio=0.5, patch=8, noise=0.0, visible_weight=0.1)
    xc, x, w = ds[3]
    assert xc.shape == x.shape == (3, 48, 48) and w.shape == (1, 48, 48)
    hidden = w[0] == 1.0
    assert 0.2 < hidden.float().mean() < 0.8
    assert torch.all(xc[:, hidden] == 0) and torch.equal(xc[:, ~hidden], x[:, ~hidden])
    assert torch.equal(ds[3][0], xc)
    ds.epoch = 1
    assert not torch.equal(ds[3][0], xc)


@pytest.mark.parametrize("arch", ["unet", "cutnet", "cnn"])
def test_every_architecture_gets_reconstruction_heads(arch):
    model = archs.build(arch)
    heads = add_reconstruction_heads(model, 3)
    assert heads
    out = model.train()(torch.randn(2, 3, 64, 64))
    outs = [out] if isinstance(out, torch.Tensor) else out
    assert all(o.shape[1] == 3 for o in outs)


def test_no_photos_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["pretrain", "--out", str(tmp_path / "r")]) == 2
    assert "--images" in capsys.readouterr().err
