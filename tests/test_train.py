"""Training pipeline on tiny synthetic data: learning, resume, DDP, config and dataset errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from cleancut.cli import main as cli_main  # noqa: E402
from cleancut.errors import ConfigError, DatasetError  # noqa: E402
from cleancut.train.checkpoint import load  # noqa: E402
from cleancut.train.config import load_config  # noqa: E402
from cleancut.train.loop import Trainer  # noqa: E402
from cleancut.train.synthetic import make_shapes_dataset  # noqa: E402

TINY = [
    "data.size=48", "data.num_workers=0", "data.cache=true", "train.batch_size=8", "train.precision=fp32",
    "train.threads=1", "train.early_stopping=null", "data.composite_prob=0.3",
]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=40, size=48, seed=1)


def tiny_cfg(root: Path, *extra: str):
    return load_config(None, [f"data.roots=[{root}]", *TINY, *extra])


def test_training_lowers_loss_and_raises_iou(shapes, tmp_path):
    cfg = tiny_cfg(shapes, "model.arch=unet", "model.kwargs={width: 8, depth: 3}", "train.epochs=8",
                   "optim.lr=0.005", "data.augment=0.3")
    trainer = Trainer(cfg, tmp_path / "run")
    before = trainer.validate()["val/IoU"]
    trainer.fit()
    hist = trainer.history
    assert len(hist) == 8 and trainer.steps_per_epoch * 8 >= 32  # a few dozen steps
    assert hist[-1]["train_loss"] < 0.9 * hist[0]["train_loss"]
    assert hist[-1]["val/IoU"] > before + 0.2
    assert hist[-1]["val/IoU"] > 0.5
    for name in ("config.yaml", "log.csv", "history.json", "curves.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / "run" / name).is_file(), name


def test_cnn_baseline_learns(shapes, tmp_path):
    cfg = tiny_cfg(shapes, "model.arch=cnn", "model.kwargs={width: 8, blocks: 2, fc: 32}", "train.epochs=8",
                   "optim.lr=0.005", "data.augment=0")
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    hist = trainer.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["val/IoU"] > 0.3


def _weights(run: Path) -> dict:
    return load(run / "checkpoints" / "last.pt")["model"]


def test_resume_reproduces_uninterrupted_run(shapes, tmp_path):
    args = ["model.arch=unet", "model.kwargs={width: 4, depth: 2, dropout: 0.2}", "optim.lr=0.003"]
    Trainer(tiny_cfg(shapes, *args, "train.epochs=4"), tmp_path / "full").fit()
    Trainer(tiny_cfg(shapes, *args, "train.epochs=4", "train.time_budget_min=0.0001"), tmp_path / "cut").fit()
    assert load(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 1  # stopped after one epoch
    resumed = Trainer(tiny_cfg(shapes, *args, "train.epochs=4"), tmp_path / "cut", resume=True)
    assert resumed.epoch == 1
    resumed.fit()
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for key in full:
        assert torch.equal(full[key], cut[key]), key


def test_existing_run_is_not_overwritten(shapes, tmp_path):
    args = ["model.arch=unet", "model.kwargs={width: 4, depth: 2}", "train.epochs=1"]
    Trainer(tiny_cfg(shapes, *args), tmp_path / "run").fit()
    with pytest.raises(Exception, match="--resume"):
        Trainer(tiny_cfg(shapes, *args), tmp_path / "run")


@pytest.mark.slow
def test_ddp_two_cpu_processes(shapes, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    cmd = [torchrun, "--nproc_per_node=2", "--master_port=29533", "-m", "cleancut", "train", "--out", str(tmp_path / "ddp"),
           f"data.roots=[{shapes}]", *TINY, "model.arch=unet", "model.kwargs={width: 4, depth: 2}", "train.epochs=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    ckpt = load(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and len(ckpt["rng"]) == 2
    # each process took half the global batch: 35 train pairs // 8 = 4 steps per epoch
    assert ckpt["history"][-1]["img_per_s"] > 0


def test_config_overrides_and_errors(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  arch: cnn\noptim:\n  lr: 0.1\n")
    cfg = load_config(cfg_file, ["optim.lr=1e-3", "data.val_splits=[a, b]"])
    assert cfg.model.arch == "cnn" and cfg.optim.lr == 1e-3 and cfg.data.val_splits == ["a", "b"]
    with pytest.raises(ConfigError, match="unknown config key.*optim.lrr.*valid keys"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="data.size must be a multiple of 16"):
        load_config(None, ["data.size=50"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["optim.lr"])


def test_unknown_architecture_lists_valid_ones(shapes, tmp_path, capsys):
    code = cli_main(["train", "--out", str(tmp_path / "r"), f"data.roots=[{shapes}]", *TINY, "model.arch=nope"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'nope'" in err and "cnn" in err and "unet" in err and "Traceback" not in err


def test_bad_dataset_lists_every_problem_before_training(tmp_path, capsys):
    root = make_shapes_dataset(tmp_path / "bad", n=6, size=32)
    (root / "gt" / "s000.png").unlink()  # image without mask
    Image.new("L", (8, 8)).save(root / "gt" / "orphan.png")  # mask without image
    (root / "im" / "s001.jpg").write_bytes(b"not a jpeg")  # unreadable
    Image.new("L", (5, 5)).save(root / "gt" / "s002.png")  # size mismatch
    code = cli_main(["train", "--out", str(tmp_path / "r"), f"data.roots=[{root}]", *TINY])
    err = capsys.readouterr().err
    assert code == 1
    assert "problem(s) found before training" in err
    for needle in ("s000.jpg: no mask", "orphan.png: no image", "s001.jpg: unreadable", "s002.png: mask is 5x5"):
        assert needle in err, needle
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="found no folder"):
        Trainer(tiny_cfg(tmp_path / "nowhere"), tmp_path / "r")


def test_random_split_and_splits_csv(tmp_path):
    from cleancut import datasets

    root = make_shapes_dataset(tmp_path / "d", n=20, size=32)
    parts = datasets.select([root], ["train", "val"], val_ratio=0.25)
    assert len(parts["val"]) == 5 and len(parts["train"]) == 15
    assert not {p.stem for p in parts["val"]} & {p.stem for p in parts["train"]}
    (root / "splits.csv").write_text("set,stem,split\nd,s000,val\nd,s001,train\nd,s002,test\n")
    parts = datasets.select([root], ["train", "val", "test"])
    assert [p.stem for p in parts["val"]] == ["s000"] and [p.stem for p in parts["test"]] == ["s002"]


def test_augmentation_and_compositing_are_seeded(shapes):
    from cleancut.train.data import SegDataset

    cfg = tiny_cfg(shapes, "data.composite_prob=1.0").data
    ds = SegDataset(__import__("cleancut").datasets.select([shapes], ["train"])["train"], cfg, seed=3)
    x1, y1 = ds[0]
    x2, y2 = ds[0]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    ds.epoch = 1
    x3, _ = ds[0]
    assert not torch.equal(x1, x3)
    assert x1.shape == (3, 48, 48) and y1.shape == (1, 48, 48)
    assert 0 <= y1.min() and y1.max() <= 1
    gray = SegDataset(ds.pairs, tiny_cfg(shapes, "data.grayscale=true").data, seed=3)
    assert gray[0][0].shape == (1, 48, 48)


def test_composite_keeps_foreground_and_replaces_background():
    from cleancut.train.data import _background_strip

    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = 200
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 35:55] = 255
    strip = _background_strip(img, mask)
    assert strip.shape == (40, 35, 3)  # left of the subject's box: the largest background strip


def _two_sets(tmp_path: Path) -> Path:
    root = tmp_path / "two"
    make_shapes_dataset(root / "a", n=12, size=32, seed=1)
    make_shapes_dataset(root / "b", n=12, size=32, seed=2)
    return root


def test_set_weights_rebalance_sampling_and_split_across_processes(tmp_path):
    from cleancut.train.loop import WeightedSampler, select_data

    root = _two_sets(tmp_path)
    cfg = tiny_cfg(root, "data.set_weights={a: 3, b: 1}", "data.val_ratio=0.01")
    pairs, _ = select_data(cfg)
    weights = [cfg.data.set_weights.get(p.set, 1.0) for p in pairs]
    draws = list(WeightedSampler(weights * 200, seed=0))
    share_a = np.mean([pairs[i % len(pairs)].set == "a" for i in draws])
    assert 0.70 < share_a < 0.80  # 3:1 over equal-sized sets
    assert list(WeightedSampler(weights, seed=5)) == list(WeightedSampler(weights, seed=5))
    assert list(WeightedSampler(weights, seed=5)) != list(WeightedSampler(weights, seed=6))
    only_b = [1.0 if p.set == "b" else 0.0 for p in pairs]
    assert {pairs[i].set for i in WeightedSampler(only_b, seed=1)} == {"b"}
    even = weights * 2  # two processes split one sequence: rank r takes draws r, r + 2, ...
    r0, r1 = (list(WeightedSampler(even, seed=2, world=2, rank=r)) for r in (0, 1))
    assert len(r0) == len(r1) == len(even) // 2
    assert [i for pair in zip(r0, r1) for i in pair] == list(WeightedSampler(even, seed=2))


def test_set_weights_errors_name_the_sets(tmp_path):
    root = _two_sets(tmp_path)
    with pytest.raises(ConfigError, match="set_weights names set.*nope.*its sets are: a, b"):
        Trainer(tiny_cfg(root, "data.set_weights={nope: 2}"), tmp_path / "r")
    with pytest.raises(ConfigError, match="weights must be numbers >= 0"):
        load_config(None, ["data.set_weights={a: -1}"])
    with pytest.raises(ConfigError, match="every training pair weight 0"):
        Trainer(tiny_cfg(root, "data.set_weights={a: 0, b: 0}"), tmp_path / "r2")


def test_weighted_training_and_kept_epoch_checkpoints(tmp_path):
    root = _two_sets(tmp_path)
    cfg = tiny_cfg(root, "model.arch=cnn", "train.epochs=2", "data.set_weights={a: 2}", "train.keep_every=1")
    Trainer(cfg, tmp_path / "r").fit()
    ckpts = tmp_path / "r" / "checkpoints"
    assert load(ckpts / "last.pt")["epoch"] == 2
    assert [load(ckpts / f"epoch-00{e}.pt")["epoch"] for e in (1, 2)] == [1, 2]  # kept for averaging
    with pytest.raises(ConfigError, match="train.keep_every must be >= 0"):
        load_config(None, ["train.keep_every=-1"])


# -- issue 32: decode once, progressive resolution, the loss's cost ------------------------------

def test_pair_cache_holds_every_pair_once_shrunk_and_is_rebuilt_only_when_data_change(tmp_path):
    from cleancut.datasets import select
    from cleancut.train.cache import PairCache, cache_folder, open_cache
    from cleancut.train.data import load_mask, load_rgb

    root = make_shapes_dataset(tmp_path / "shapes", n=6, size=64, seed=2)
    pairs = select([root], ["train"], val_ratio=0.0)["train"]
    cache = open_cache(pairs, tmp_path / "cache", side=40, progress=False)
    assert len(cache) == len(pairs)
    for i, pair in enumerate(pairs):
        image, mask = cache[i]
        src = load_rgb(pair.image)
        h, w = src.shape[:2]
        size = (round(w * 40 / max(h, w)), round(h * 40 / max(h, w)))
        assert max(h, w) > 40 and image.shape == (size[1], size[0], 3) and mask.shape == image.shape[:2]
        assert image.dtype == np.uint8
        # the stored photo is the source shrunk to the long side, not another photo
        ref = np.asarray(Image.fromarray(src).resize(size, Image.Resampling.LANCZOS))
        assert np.abs(image.astype(int) - ref).mean() < 1.0
        assert abs(float((mask > 127).mean()) - float((load_mask(pair.mask) > 127).mean())) < 0.03
    folder = cache.folder
    assert open_cache(pairs, tmp_path / "cache", side=40).folder == folder  # reused, not rebuilt
    assert not list((tmp_path / "cache").glob(".*tmp*"))  # no half-written folder left
    # a photo that was enlarged is never stored larger than it is
    assert PairCache(open_cache(pairs, tmp_path / "cache", side=128).folder)[0][0].shape == load_rgb(pairs[0].image).shape
    # other data (a changed mask) -> another folder, never the stale cache
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(pairs[0].mask)
    os.utime(pairs[0].mask, (1, 1))
    assert cache_folder(tmp_path / "cache", pairs, 40) != folder


def test_pair_cache_rejects_a_mask_of_another_size(tmp_path):
    from cleancut.datasets import select
    from cleancut.train.cache import open_cache

    root = make_shapes_dataset(tmp_path / "shapes", n=4, size=48, seed=3)
    pairs = select([root], ["train"], val_ratio=0.0)["train"]
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(pairs[1].mask)
    with pytest.raises(DatasetError, match="must match its photo"):
        open_cache(pairs, tmp_path / "cache", side=48, progress=False)
    assert not list((tmp_path / "cache").iterdir())  # nothing half-written


def test_label_erode_shrinks_the_named_sets_masks_at_their_own_size_in_both_data_paths(tmp_path):
    from cleancut.train.cache import cache_folder, erode_mask
    from cleancut.train.data import SegDataset, load_mask
    from cleancut.train.loop import select_data

    square = np.zeros((40, 40), np.uint8)
    square[10:30, 10:30] = 255
    square[10:30, 9] = 128  # an antialiased column stays a soft edge, moved in
    shrunk = erode_mask(square, 3)
    assert (shrunk == 255).sum() == 14 * 14 and shrunk[20, 12] == 128 and shrunk[20, 11] == 0
    assert erode_mask(square, 0) is square

    root = _two_sets(tmp_path)
    base = ["data.augment=0", "data.composite_prob=0", "data.size=32", "data.val_ratio=0.01"]
    plain = tiny_cfg(root, *base)
    eroded = tiny_cfg(root, *base, "data.label_erode={a: 2}")
    pairs, _ = select_data(eroded)
    for extra in ([], [f"data.cache_dir={tmp_path / 'c'}", "data.cache_side=32"]):
        cfgs = [tiny_cfg(root, *base, *more, *extra) for more in ([], ["data.label_erode={a: 2}"])]
        before, after = (SegDataset(pairs, c.data, seed=0) for c in cfgs)
        for i, pair in enumerate(pairs):
            fg_before, fg_after = (float(ds[i][1].mean()) for ds in (before, after))
            if pair.set == "a" and (load_mask(pair.mask) > 127).any():
                assert fg_after < fg_before - 0.01  # the object lost its outer ring
            elif pair.set == "b":
                assert fg_after == fg_before  # other sets untouched
    # the cache of eroded labels is another cache; an erosion of a set not in the data changes nothing
    assert cache_folder(tmp_path, pairs, 32, {"a": 2}) != cache_folder(tmp_path, pairs, 32)
    assert cache_folder(tmp_path, pairs, 32, {"zz": 2}) == cache_folder(tmp_path, pairs, 32)
    with pytest.raises(ConfigError, match="label_erode names set.*nope.*its sets are: a, b"):
        Trainer(tiny_cfg(root, "data.label_erode={nope: 2}"), tmp_path / "r")
    with pytest.raises(ConfigError, match="whole numbers from 0 to 32"):
        load_config(None, ["data.label_erode={a: 2.5}"])
    assert plain.data.label_erode == {}


def test_cached_training_sees_the_same_samples_as_the_ram_cache(shapes, tmp_path):
    from cleancut.train.data import SegDataset

    pairs = __import__("cleancut").datasets.select([shapes], ["train"])["train"]
    ram = SegDataset(pairs, tiny_cfg(shapes).data, seed=5)
    disk = SegDataset(pairs, tiny_cfg(shapes, f"data.cache_dir={tmp_path / 'c'}", "data.cache_side=64").data, seed=5)
    for i in (0, 3):
        (xa, ya), (xb, yb) = ram[i], disk[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)  # photos <= cache_side are stored as they are


def test_size_schedule_trains_each_epoch_at_its_size_and_validates_at_data_size(shapes, tmp_path):
    from cleancut.train.config import size_at

    cfg = tiny_cfg(shapes, "model.arch=unet", "model.kwargs={width: 4, depth: 2}", "train.epochs=3",
                   "data.size_schedule=[[0, 32], [2, 48]]", f"data.cache_dir={tmp_path / 'c'}")
    assert [size_at(cfg.data, e) for e in range(3)] == [32, 32, 48]
    trainer = Trainer(cfg, tmp_path / "run")
    seen = []
    original = trainer.batch_loss

    def spy(batch, autocast):
        seen.append(batch[0].shape[-1])
        return original(batch, autocast)

    trainer.batch_loss = spy
    trainer.fit()
    assert [row["size"] for row in trainer.history] == [32, 32, 48]
    assert set(seen[: trainer.steps_per_epoch]) == {32} and set(seen[-trainer.steps_per_epoch:]) == {48}
    with pytest.raises(ConfigError, match="size_schedule"):
        tiny_cfg(shapes, "data.size_schedule=[[1, 32]]")
    with pytest.raises(ConfigError, match="size_schedule"):
        tiny_cfg(shapes, "data.size_schedule=[[0, 30]]")


def test_boundary_weight_is_the_exact_window_mean_computed_once_per_batch(monkeypatch):
    import torch.nn.functional as F

    from cleancut.train import losses
    from cleancut.train.config import LossConfig

    target = (torch.rand(2, 1, 37, 53) > 0.6).float()
    k = 9
    ref = 1 + 5.0 * (F.avg_pool2d(target, k, stride=1, padding=k // 2, count_include_pad=False) - target).abs()
    assert torch.allclose(losses.boundary_weight(target, 5.0, k), ref, atol=1e-5)
    calls = []
    real = losses.boundary_weight
    monkeypatch.setattr(losses, "boundary_weight", lambda *a: calls.append(1) or real(*a))
    loss = losses.SegLoss(LossConfig(boundary=5.0, boundary_kernel=k))
    outputs = [torch.randn(2, 1, 37, 53), torch.randn(2, 1, 19, 27), torch.randn(2, 1, 10, 14)]
    loss(outputs, target)
    assert len(calls) == 1
