"""The training loop: one code path for single-process and ``torchrun`` (DDP) training.

    cleancut train --config configs/unet.yaml --out runs/unet
    torchrun --nproc_per_node 2 -m cleancut train --config configs/unet.yaml --out runs/unet-ddp

A run folder holds the resolved ``config.yaml``, ``log.csv`` (one row per epoch), ``history.json``,
``curves.png`` and ``checkpoints/{last,best}.pt``. ``--resume`` continues from ``last.pt``
exactly where it stopped (model, optimiser, scheduler, epoch, RNG state).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from .. import datasets
from ..errors import CheckpointError, ConfigError
from ..evaluate import evaluate
from ..metrics import HIGHER_IS_BETTER, METRIC_NAMES
from . import archs
from .checkpoint import atomic_save, load, rng_state, set_rng_state
from .config import Config, size_at
from .data import SegDataset
from .losses import SegLoss, main_output
from .plugin import Plugin
from .predict import TorchModel, spec_for


class _Dist:
    def __init__(self, device_pref: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
        if device_pref == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if self.world > 1 and not dist.is_initialized():
            if use_cuda:
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if use_cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([1 if flag else 0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(t, 0)
        return bool(t.item())

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.item() / self.world

    def close(self):
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "fp32":
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if precision == "bf16":
        return True
    # auto on CPU: only where the CPU has native bf16 (AVX512-BF16 / AMX); elsewhere it is slower.
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX") and torch.backends.mkldnn.is_available()


def lr_lambda(cfg: Config, steps_per_epoch: int):
    o = cfg.optim
    total = max(1, cfg.train.epochs * steps_per_epoch)
    warm = int(o.warmup_epochs * steps_per_epoch)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if o.scheduler == "none":
            return 1.0
        t = min(1.0, (step - warm) / max(1, total - warm))
        if o.scheduler == "step":
            return 1.0 if t < 2 / 3 else 0.1
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))  # cosine / onecycle

    return f


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class WeightedSampler(torch.utils.data.Sampler):
    """One epoch of ``len(weights)`` draws with replacement, probability proportional to the weights
    (``data.set_weights``: rebalance sets, e.g. general objects against portraits). Every process
    draws the same seeded sequence and takes its own stride of it, so DDP splits it without overlap."""

    def __init__(self, weights: list[float], seed: int, rank: int = 0, world: int = 1):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.seed, self.rank, self.world = seed, rank, world
        self.total = len(weights) - len(weights) % world

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.multinomial(self.weights, self.total, replacement=True, generator=gen)
        return iter(idx[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return self.total // self.world


def select_data(cfg: Config):
    d = cfg.data
    if not d.roots:
        raise ConfigError("data.roots is empty: give the dataset folder(s), e.g. data.roots=[../shared/data]")
    splits = datasets.select(d.roots, [d.train_split, *d.val_splits], splits_csv=d.splits_csv,
                             val_ratio=d.val_ratio, seed=cfg.train.seed)
    train_pairs = splits[d.train_split]
    if not train_pairs:
        raise ConfigError(f"split '{d.train_split}' is empty in {d.roots}")
    n = len(train_pairs)
    keep = n if d.fraction >= 1 else max(1, int(round(n * d.fraction)))
    if d.max_train:
        keep = min(keep, d.max_train)
    if keep < n:
        idx = np.random.default_rng(cfg.train.seed).permutation(n)[:keep]
        train_pairs = [train_pairs[i] for i in sorted(idx)]
    present = sorted({p.set for p in train_pairs})
    for key, per_set in (("set_weights", d.set_weights), ("label_erode", d.label_erode)):
        unknown = sorted(set(per_set) - set(present))
        if unknown:
            raise ConfigError(f"data.{key} names set(s) {', '.join(unknown)} that the training split does not "
                              f"have; its sets are: {', '.join(present)}")
    if d.set_weights:
        if not any(d.set_weights.get(p.set, 1.0) > 0 for p in train_pairs):
            raise ConfigError("data.set_weights gives every training pair weight 0")
    val = {}
    for s in d.val_splits:
        pairs = splits[s]
        if d.max_val and len(pairs) > d.max_val:
            idx = np.linspace(0, len(pairs) - 1, d.max_val).astype(int)
            pairs = [pairs[i] for i in idx]
        if pairs:
            val[s] = pairs
    return train_pairs, val


class Trainer:
    """Owns one run. Hooks (``extra_loss``, ``plugins``) let other methods (adversarial training...) plug in;
    another task (self-supervised pre-training, :class:`cleancut.train.pretrain.Pretrainer`) subclasses it
    and overrides the data, the model's heads and :meth:`batch_loss`, sharing the loop, the checkpoints,
    the resume and the logs."""

    loss_name = "train_loss"  # the training loss's name in the history
    track_accuracy = True  # the pixel accuracy of the main output (segmentation)

    def __init__(self, cfg: Config, out_dir: str | Path, resume: bool = False, init: str | None = None,
                 plugins: list[Plugin] | None = None):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self._setup_process()
        self._build_data()
        self._build_model(resume, init)
        self._build_optimizer()
        self.epoch = 0
        self.best = None
        self.bad_epochs = 0
        self.history: list[dict] = []
        self.extra_loss = None  # callable(images, targets, outputs) -> loss tensor, for plug-in methods
        self._attach_plugins(plugins)
        if resume:
            self._resume()
        elif self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if (self.ckpt_dir / "last.pt").exists():
                raise CheckpointError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        if self.dist.main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            self.cfg.save(self.out / "config.yaml")

    # ------------------------------------------------------------ construction, step by step

    def _setup_process(self) -> None:
        """Device and processes (DDP), threads, seeds, precision."""
        cfg = self.cfg
        self.dist = _Dist(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        elif self.dist.world > 1 and self.dist.device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 2) // self.dist.world))
        seed_everything(cfg.train.seed + self.dist.rank)
        self.bf16 = use_bf16(cfg.train.precision, self.dist.device)

    def _build_data(self) -> None:
        """The training and validation pairs, the training dataset and the batch per process."""
        cfg = self.cfg
        self.train_pairs, self.val_pairs = select_data(cfg)
        self.dataset = SegDataset(self.train_pairs, cfg.data, seed=cfg.train.seed, train=True)
        self._count_steps("training pairs")

    def _count_steps(self, what: str) -> None:
        """The batch per process and the steps of an epoch over ``self.dataset``."""
        cfg = self.cfg
        self.per_proc_batch = max(1, cfg.train.batch_size // self.dist.world)
        self.steps_per_epoch = len(self.dataset) // (self.per_proc_batch * self.dist.world)
        if cfg.train.steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ConfigError(f"{len(self.dataset)} {what} are fewer than one batch of {cfg.train.batch_size}; "
                              "lower train.batch_size")

    def _build_model(self, resume: bool, init: str | None) -> None:
        """The architecture (its ``encoder``, pretrained or initialised weights), on the device,
        wrapped for DDP, and the loss."""
        cfg = self.cfg
        in_ch = 1 if cfg.data.grayscale else 3
        model = self.adapt_model(archs.build(cfg.model.arch, in_channels=in_ch, **cfg.model.kwargs))
        self.encoder = model.encoder
        uses_encoder = cfg.model.pretrained or cfg.optim.encoder_lr_mult != 1 or cfg.train.freeze_encoder_epochs
        if uses_encoder and self.encoder is None:
            raise ConfigError(f"model.pretrained, optim.encoder_lr_mult and train.freeze_encoder_epochs need an "
                              f"architecture with a pretrained encoder (e.g. litefpn); {cfg.model.arch!r} has none")
        if cfg.model.pretrained and not resume and not init:
            self.init_report = model.load_pretrained(cfg.model.pretrained)
        if init:
            self._init_from(model, init)
        self.model = model.to(self.dist.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ddp = self.model
        if self.dist.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None)
        self.pos_weight = self._pos_weight()
        self.loss_fn = SegLoss(cfg.loss, self.pos_weight)

    def adapt_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The network of this task, from the registered architecture (segmentation: as it is)."""
        return model

    def _build_optimizer(self) -> None:
        """The optimiser (the encoder as its own group, at ``optim.encoder_lr_mult``, frozen for
        ``train.freeze_encoder_epochs``) and the learning-rate schedule."""
        cfg = self.cfg
        opt_cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
        groups = [{"params": [p for p in self.model.parameters()], "lr": cfg.optim.lr}]
        schedule = lr_lambda(cfg, self.steps_per_epoch)
        lambdas = [schedule]
        if self.encoder is not None:
            enc = {id(p) for p in self.encoder.parameters()}
            groups = [{"params": [p for p in self.model.parameters() if id(p) not in enc], "lr": cfg.optim.lr},
                      {"params": list(self.encoder.parameters()), "lr": cfg.optim.lr * cfg.optim.encoder_lr_mult}]
            frozen_steps = cfg.train.freeze_encoder_epochs * self.steps_per_epoch
            lambdas = [schedule, lambda step: 0.0 if step < frozen_steps else schedule(step)]
        self.optimizer = opt_cls(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                 betas=tuple(cfg.optim.betas))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambdas)

    def _attach_plugins(self, plugins: list[Plugin] | None) -> None:
        self.plugins: list[Plugin] = list(plugins or [])
        if self.cfg.adversarial.weight > 0 and not any(p.name == "adversarial" for p in self.plugins):
            raise ConfigError("adversarial.weight > 0 needs the adversarial plugin: build the Trainer with "
                              "plugins=cleancut.train.methods.plugins_for(cfg) (cleancut train does)")
        for plugin in self.plugins:
            plugin.setup(self)

    def _init_from(self, model: torch.nn.Module, path: str) -> None:
        """Start from pre-trained weights (e.g. ``cleancut pretrain``): copy every matching tensor."""
        state = load(path)
        state = state.get("model", state)
        own = model.state_dict()
        matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not matched:
            raise CheckpointError(f"--init {path}: no weights match architecture {self.cfg.model.arch!r}")
        model.load_state_dict(matched, strict=False)
        self.init_report = f"initialised {len(matched)}/{len(own)} tensors from {path}"

    def _pos_weight(self) -> float | None:
        pw = self.cfg.loss.pos_weight
        if pw in (None, "none", 0):
            return None
        if pw == "auto":
            frac = min(max(self.dataset.foreground_fraction(), 1e-3), 1 - 1e-3)
            return float(((1 - frac) / frac) ** self.cfg.loss.balance)
        return float(pw)

    def _resume(self) -> None:
        path = self.ckpt_dir / "last.pt"
        ckpt = load(path)
        saved = ckpt["config"]
        defaults = Config().to_dict()
        for section in ("model",):
            if {**defaults[section], **saved[section]} != self.cfg.to_dict()[section]:
                raise CheckpointError(f"--resume: {path} was trained with {section}={saved[section]}, the config says "
                                      f"{self.cfg.to_dict()[section]}; resume with the run's own config.yaml")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.best, self.bad_epochs = ckpt["epoch"], ckpt["best"], ckpt["bad_epochs"]
        self.history = ckpt["history"]
        saved_plugins = ckpt.get("plugins", {})
        for plugin in self.plugins:
            if plugin.name in saved_plugins:
                plugin.load_state_dict(saved_plugins[plugin.name])
            elif plugin.state_dict() is not None:
                raise CheckpointError(f"--resume: {path} was trained without {plugin.name!r}; "
                                      "resume with the run's own config.yaml")
        set_rng_state(ckpt["rng"][min(self.dist.rank, len(ckpt["rng"]) - 1)])

    def _checkpoint(self, name: str) -> None:
        states = [rng_state()]
        if self.dist.world > 1:
            gathered = [None] * self.dist.world
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if not self.dist.main:
            return
        atomic_save({
            "config": self.cfg.to_dict(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "best": self.best,
            "bad_epochs": self.bad_epochs, "history": self.history, "rng": states, "pos_weight": self.pos_weight,
            "plugins": {p.name: p.state_dict() for p in self.plugins if p.state_dict() is not None},
            **self.checkpoint_extra(),
        }, self.ckpt_dir / name)

    def checkpoint_extra(self) -> dict:
        """More entries for every checkpoint (a task's own settings)."""
        return {}

    # -- the loop -------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        self.dataset.epoch = self.epoch
        if hasattr(self.dataset, "set_size"):
            self.dataset.set_size(size_at(self.cfg.data, self.epoch))
        if self.cfg.data.set_weights and self.train_pairs is not None:
            weights = [self.cfg.data.set_weights.get(p.set, 1.0) for p in self.train_pairs]
            sampler = WeightedSampler(weights, seed=self.cfg.train.seed * 100003 + self.epoch,
                                      rank=self.dist.rank, world=self.dist.world)
        elif self.dist.world > 1:
            sampler = DistributedSampler(self.dataset, num_replicas=self.dist.world, rank=self.dist.rank,
                                         shuffle=True, seed=self.cfg.train.seed, drop_last=True)
            sampler.set_epoch(self.epoch)
        else:
            gen = torch.Generator().manual_seed(self.cfg.train.seed * 100003 + self.epoch)
            sampler = RandomSampler(self.dataset, generator=gen)
        workers = self.cfg.data.num_workers
        return DataLoader(self.dataset, batch_size=self.per_proc_batch, sampler=sampler, num_workers=workers,
                          drop_last=True, pin_memory=self.dist.device.type == "cuda",
                          multiprocessing_context="fork" if workers and sys.platform == "linux" else None)

    def _apply_freeze(self) -> bool:
        """Freeze the encoder during the first ``train.freeze_encoder_epochs`` epochs: no gradients
        (single process; under DDP its learning rate is 0 instead) and BatchNorm statistics kept."""
        frozen = self.encoder is not None and self.epoch < self.cfg.train.freeze_encoder_epochs
        if self.encoder is not None:
            if self.dist.world == 1:
                self.encoder.requires_grad_(not frozen)
            if frozen:
                self.encoder.eval()
        return frozen

    def train_epoch(self, bar=None) -> dict[str, float]:
        self.ddp.train()
        self._apply_freeze()
        dev = self.dist.device
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        total_loss = total_acc = 0.0
        seen = 0
        t0 = time.perf_counter()
        for step, batch in enumerate(self._loader()):
            if step >= self.steps_per_epoch:
                break
            x, y, outputs, loss = self.batch_loss(batch, autocast)
            if self.extra_loss is not None:
                loss = loss + self.extra_loss(x, y, outputs)
            for plugin in self.plugins:
                term = plugin.loss(self, x, y, outputs)
                if term is not None:
                    loss = loss + term
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            for plugin in self.plugins:
                plugin.after_step(self, x, y, outputs)
            acc = self.pixel_accuracy(outputs, y) if self.track_accuracy else 0.0
            total_loss += loss.item()
            total_acc += acc
            seen += x.shape[0]
            if bar is not None:
                rate = seen * self.dist.world / (time.perf_counter() - t0)
                shown = {"loss": f"{total_loss / (step + 1):.4f}", "img_s": f"{rate:.1f}"}
                if self.track_accuracy:
                    shown["acc"] = f"{total_acc / (step + 1):.3f}"
                bar.set_postfix(**shown, refresh=False)
                bar.update(1)
        steps = step + 1 if seen else 1
        elapsed = time.perf_counter() - t0
        out = {self.loss_name: self.dist.mean(total_loss / steps)}
        if self.track_accuracy:
            out["train_acc"] = self.dist.mean(total_acc / steps)
        out.update(img_per_s=seen * self.dist.world / elapsed, epoch_s=elapsed)
        for plugin in self.plugins:
            out.update(plugin.epoch_metrics(self))
        return out

    def batch_loss(self, batch, autocast) -> tuple:
        """``(input, target, outputs, loss)`` of one batch of the task (here: segmentation)."""
        x, y = batch
        dev = self.dist.device
        x = x.to(dev, non_blocking=True)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(dev, non_blocking=True)
        with autocast:
            outputs = self.ddp(x)
        return x, y, outputs, self.loss_fn(outputs, y)

    @staticmethod
    @torch.no_grad()
    def pixel_accuracy(outputs, y) -> float:
        logits = main_output(outputs).float()
        if logits.shape[-2:] != y.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return ((logits > 0) == (y > 0.5)).float().mean().item()

    def header(self) -> str:
        cfg = self.cfg
        return (f"cleancut train: {cfg.model.arch} on {len(self.dataset)} pairs, val "
                f"{ {k: len(v) for k, v in self.val_pairs.items()} }, {self.dist.world} process(es) on "
                f"{self.dist.device}, {'bf16' if self.bf16 else 'fp32'}, batch {cfg.train.batch_size}, "
                f"size {size_at(cfg.data, self.epoch)} (validation {cfg.data.size}), "
                f"{self.steps_per_epoch} steps/epoch, pos_weight {self.pos_weight}")

    def validate(self) -> dict[str, float]:
        if not self.val_pairs:
            return {}
        predictor = TorchModel(self.model, spec_for(self.cfg), self.dist.device, self.bf16)
        row = {}
        for split, pairs in self.val_pairs.items():
            res = evaluate(predictor, pairs, batch_size=self.per_proc_batch).results()
            row.update({f"{split}/{k}": v for k, v in res.items()})
        return row

    def monitor_value(self, row: dict[str, float]) -> float | None:
        key = self.cfg.train.monitor
        if key not in METRIC_NAMES:
            raise ConfigError(f"train.monitor={key!r}: expected one of {', '.join(METRIC_NAMES)}")
        values = [v for k, v in row.items() if k.endswith("/" + key)]
        return float(np.mean(values)) if values else None

    def fit(self) -> dict:
        cfg = self.cfg
        start = time.perf_counter()
        main = self.dist.main
        if main:
            print(self.header(), file=sys.stderr)
        from tqdm import tqdm

        stop = False
        while self.epoch < cfg.train.epochs and not stop:
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}", unit="step",
                       disable=not main, file=sys.stderr, mininterval=1 if sys.stderr.isatty() else 30)
            row = {"epoch": self.epoch + 1, "size": size_at(cfg.data, self.epoch)}
            row.update(self.train_epoch(bar))
            row["lr"] = self.optimizer.param_groups[0]["lr"]  # at the end of the epoch
            bar.close()
            self.epoch += 1
            improved = False
            if main and (self.epoch % cfg.train.val_every == 0 or self.epoch == cfg.train.epochs):
                row.update(self.validate())
                value = self.monitor_value(row)
                if value is not None:
                    better = self.best is None or (
                        value > self.best if HIGHER_IS_BETTER[cfg.train.monitor] else value < self.best)
                    if better:
                        self.best, self.bad_epochs, improved = value, 0, True
                    else:
                        self.bad_epochs += 1
            row["elapsed_min"] = (time.perf_counter() - start) / 60
            self.history.append(row)
            if main:
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), file=sys.stderr)
            if cfg.train.early_stopping and self.bad_epochs >= cfg.train.early_stopping:
                stop = True
                if main:
                    print(f"early stopping: no {cfg.train.monitor} improvement for {self.bad_epochs} epochs", file=sys.stderr)
            if cfg.train.time_budget_min and row["elapsed_min"] >= cfg.train.time_budget_min:
                stop = True
                if main:
                    print(f"time budget of {cfg.train.time_budget_min} min reached", file=sys.stderr)
            stop = self.dist.broadcast_flag(stop)
            improved = self.dist.broadcast_flag(improved)
            self._checkpoint("last.pt")
            if main and cfg.train.keep_every and self.epoch % cfg.train.keep_every == 0:
                shutil.copyfile(self.ckpt_dir / "last.pt", self.ckpt_dir / f"epoch-{self.epoch:03d}.pt")
            if improved:
                self._checkpoint("best.pt")
            if main:
                self._write_logs()
            for plugin in self.plugins:
                plugin.epoch_end(self, row)
        self.dist.barrier()
        if self.dist.broadcast_flag(main and not (self.ckpt_dir / "best.pt").exists()):
            self._checkpoint("best.pt")  # no validation split: the last weights are the best we have
        summary = {"epochs": self.epoch, "best": self.best, "monitor": cfg.train.monitor, "run": str(self.out)}
        self.dist.close()
        return summary

    def _write_logs(self) -> None:
        keys = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        tmp = self.out / ".log.csv.tmp"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        os.replace(tmp, self.out / "log.csv")
        (self.out / "history.json").write_text(json.dumps(self.history, indent=1))
        plot_history(self.history, self.out / "curves.png")


def plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    val_keys = sorted({k for r in history for k in r if "/" in k and k.split("/")[1] in ("wF", "maxF", "Sm", "IoU", "MAE")})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    loss_key = next((k for k in ("train_loss", "recon_loss") if k in history[0]), "train_loss")
    ax1.plot(epochs, [r[loss_key] for r in history], "o-", label=loss_key.replace("_", " "))
    ax1b = ax1.twinx()
    if "train_acc" in history[0]:
        ax1b.plot(epochs, [r["train_acc"] for r in history], "s--", color="tab:green", label="train pixel acc.")
    ax1.set(xlabel="epoch", ylabel="loss", title="Training")
    ax1b.set_ylabel("pixel accuracy")
    ax1.legend(loc="upper left", fontsize=8)
    if "train_acc" in history[0]:
        ax1b.legend(loc="upper right", fontsize=8)
    for key in val_keys:
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=key)
    ax2.set(xlabel="epoch", title="Validation (full-resolution protocol)")
    ax2.grid(alpha=0.3)
    if val_keys:
        ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
