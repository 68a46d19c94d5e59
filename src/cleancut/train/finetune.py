"""``cleancut finetune``: teach a registered model a user's own kind of photo in minutes on a CPU.

    cleancut finetune my-photos/ --name products            # im/ + gt/, or the page's zip
    cleancut remove shots/*.jpg --model products

The steps, each reusing what ``cleancut train`` and ``cleancut export`` use:

1. the example set is read and checked (:func:`cleancut.examples.read_examples`) and split: a
   held-out part (``val``, seeded) that early stopping and the before / after figures use, and
   the training part;
2. the base model's weights are recovered from its ONNX file, with the parity check
   (:func:`cleancut.train.recover.recover`; an int8 file is read through its dequantised graph),
   and the scale BatchNorm folding put into the convs' weights is moved back into the BatchNorm
   layers, measured on the photos (so that each step of the optimiser moves every channel alike);
3. :class:`Finetuner` (a :class:`~cleancut.train.loop.Trainer`) trains within the time budget with
   a recipe for few photos: strong augmentation and compositing onto other photos' backgrounds,
   a low constant rate after a short warm-up, BatchNorm statistics kept (batches of a few photos
   are too small to measure them), no deep supervision (the base's auxiliary heads are not in
   its ONNX file), validation on the held-out part every epoch, early stopping, the best epoch
   kept. Against forgetting, half of each batch replays training photos of the shared data or
   DUTS-TR when they are found (``replay``); without them an L2-SP penalty (:class:`L2SP`, Li et
   al. 2018) keeps the weights near the base's;
4. the best weights are exported like the base (size, aspect, uint8 input, sharpening) and
   quantised to int8 the way the shipped model was (:func:`cleancut.train.quantize.quantize_int8`),
   then scored on the held-out part against the base;
5. the model is registered in the user's model folder (:func:`cleancut.models.cache_dir`): its
   ONNX file under a name of its own, then its spec, each by an atomic rename, so an interrupted
   or failed run leaves nothing there and a replaced model is swapped in one step.

Everything else is written to a temporary folder that is removed however the run ends.
"""

from __future__ import annotations

import inspect
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import datasets
from ..errors import ConfigError, DatasetError
from ..evaluate import OnnxModel, evaluate
from ..examples import read_examples
from ..models import USER_MARK, ModelSpec, get_model
from ..models.user import check_user_name, install_user_model
from . import archs
from .checkpoint import atomic_save
from .config import Config, validate
from .data import SegDataset
from .loop import Trainer
from .plugin import Plugin
from .quantize import SHIPPED_RECIPE, quantize_int8
from .recover import checkpoint_from_spec, recover

MIN_PAIRS = 5  # at least one held-out photo and four to learn from
DEFAULT_MINUTES = 10.0
DEFAULT_VAL = 0.2
TRAIN_SIZE = 320  # training crops (the model runs at its own, larger size)
BATCH = 8
REPLAY_PHOTOS = 240  # replayed training photos drawn from the replay roots (seeded)
REPLAY_SHARE = 0.5  # of each batch
CALIBRATION_PHOTOS = 48  # int8 calibration: the training photos first, then replayed ones
L2SP_WEIGHT = 0.01
MIN_PATIENCE = 6
FIGURES = ("MAE", "maxF", "wF", "IoU")


class L2SP(Plugin):
    """``weight / 2 * sum((w - w_base)^2)`` over every trainable weight: the L2-SP penalty (Li,
    Grandvalet and Davoine, ICML 2018), a pull towards the starting point instead of towards 0."""

    name = "l2sp"

    def __init__(self, weight: float = L2SP_WEIGHT):
        self.weight = weight
        self.start: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def setup(self, trainer: Trainer) -> None:
        self.start = [(p, p.detach().clone()) for p in trainer.model.parameters() if p.requires_grad]

    def loss(self, trainer: Trainer, images, targets, outputs):
        total = sum(((p - p0) ** 2).sum() for p, p0 in self.start)
        return 0.5 * self.weight * total


class Budget(Plugin):
    """Ends the run when the next epoch would pass the time budget: after each epoch the number of
    epochs is re-estimated from the time one has taken (which the progress bar shows as the
    total), so the run stops on time instead of one epoch late."""

    name = "budget"

    def __init__(self, minutes: float):
        self.minutes = minutes

    def epoch_end(self, trainer: Trainer, row: dict) -> None:
        per_epoch = row["elapsed_min"] / max(1, trainer.epoch)
        more = int((self.minutes - row["elapsed_min"]) // max(per_epoch, 1e-9))
        trainer.cfg.train.epochs = trainer.epoch + max(0, more)
        trainer.cfg.train.early_stopping = patience(trainer.cfg.train.epochs)


def patience(epochs: int) -> int:
    """Epochs without progress on the held-out photos before stopping: half the run, at least
    :data:`MIN_PATIENCE` (a few held-out photos are a noisy judge, and the first epochs move away
    from the base before they improve on it)."""
    return max(MIN_PATIENCE, epochs // 2)


class Finetuner(Trainer):
    """The training loop of ``cleancut finetune``: the user's pairs (and replayed ones, weighted
    by ``data.set_weights``), the held-out pairs as the one validation split, BatchNorm kept in
    eval mode."""

    def __init__(self, cfg: Config, out_dir: Path, init: str, train_pairs: list[datasets.Pair],
                 val_pairs: list[datasets.Pair], plugins: list[Plugin] | None = None):
        self._given = (train_pairs, {"held-out": val_pairs})
        super().__init__(cfg, out_dir, init=init, plugins=plugins)

    def _build_data(self) -> None:
        self.train_pairs, self.val_pairs = self._given
        self.dataset = SegDataset(self.train_pairs, self.cfg.data, seed=self.cfg.train.seed, train=True)
        self._count_steps("training pairs")

    def _apply_freeze(self) -> bool:
        frozen = super()._apply_freeze()
        for module in self.model.modules():  # statistics of batches of a few photos would be noise
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
        return frozen

    def validate(self) -> dict[str, float]:
        return {k: v for k, v in super().validate().items() if k.split("/")[-1] in FIGURES}

    def header(self) -> str:
        return "cleancut finetune: " + super().header().split(": ", 1)[1]

    def start_row(self) -> dict:
        """Validate the starting weights and keep them as the best so far: an epoch must beat the
        base on the held-out photos to replace it."""
        row = {"epoch": 0, **self.validate()}
        self.best = self.monitor_value(row)
        self._checkpoint("best.pt")
        return row


@dataclass
class Plan:
    """What a fine-tuning run will use, settled before any training."""

    name: str
    base: ModelSpec
    train: list[datasets.Pair]
    held_out: list[datasets.Pair]
    replay: list[datasets.Pair]
    replay_roots: list[str]
    has_encoder: bool  # a pretrained encoder, trained at half the rate


def split_examples(pairs: list[datasets.Pair], val: float, seed: int = 0) -> tuple[list, list]:
    """(training pairs, held-out pairs): ``val`` of them, at least one, chosen at random (seeded)."""
    if not 0 < val <= 0.5:
        raise ConfigError(f"--val must be a fraction above 0 and at most 0.5 (the held-out part), got {val:g}")
    if len(pairs) < MIN_PAIRS:
        raise DatasetError(f"{len(pairs)} photo/mask pair(s) found; fine-tuning needs at least {MIN_PAIRS} "
                           f"(one or more held out to check the result on) and works best with 20 or more")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(pairs) * val))
    held = sorted(order[:n_val])
    rest = sorted(order[n_val:])
    return [_renamed(pairs[i], "yours") for i in rest], [_renamed(pairs[i], "yours") for i in held]


def _renamed(pair: datasets.Pair, set_name: str) -> datasets.Pair:
    return datasets.Pair(pair.image, pair.mask, set_name, pair.stem)


def replay_pairs(roots: list[str], n: int = REPLAY_PHOTOS, seed: int = 0) -> list[datasets.Pair]:
    """``n`` training-split pairs of ``roots`` drawn at random (seeded), as set ``replay``; roots
    that are no dataset are skipped."""
    found: list[datasets.Pair] = []
    for root in roots:
        try:
            found += datasets.select([root], ["train"], check=False)["train"]
        except DatasetError:
            continue
    if not found:
        return []
    chosen = random.Random(seed).sample(found, min(n, len(found)))
    return [_renamed(p, "replay") for p in chosen]


def finetune_config(plan: Plan, minutes_for_training: float, threads: int | None, seed: int) -> Config:
    """The few-photo recipe as a training config (see the module's docstring)."""
    spec = plan.base
    cfg = Config(name=f"finetune-{plan.name}")
    kwargs = dict(spec.extra.get("arch_kwargs") or {})
    archs.available()  # loads the registry
    arch_cls = archs._REGISTRY[spec.architecture]
    if "deep_supervision" in inspect.signature(arch_cls.__init__).parameters:
        kwargs["deep_supervision"] = False  # the base's auxiliary heads are not in its ONNX file
    cfg.model.arch, cfg.model.kwargs = spec.architecture, kwargs
    run_size = min(spec.input_size)
    cfg.data.size = max(32, run_size // 32 * 32)  # validation at the size the model runs at
    train_size = min(TRAIN_SIZE, cfg.data.size)
    cfg.data.size_schedule = [[0, train_size]] if train_size != cfg.data.size else []
    cfg.data.grayscale = spec.channels == 1
    cfg.data.augment = 1.0
    cfg.data.composite_prob = 0.3
    cfg.data.num_workers = 0
    cfg.data.cache = True
    n_train = len(plan.train)
    if plan.replay:  # REPLAY_SHARE of every batch, whatever the counts
        cfg.data.set_weights = {"yours": (1 - REPLAY_SHARE) * len(plan.replay) / (REPLAY_SHARE * n_train),
                                "replay": 1.0}
    cfg.loss.pos_weight = None
    cfg.loss.boundary, cfg.loss.boundary_kernel = 5.0, 27  # the shipped model's loss
    cfg.loss.aux_weight = 0.0
    cfg.optim.lr = 1e-4
    cfg.optim.encoder_lr_mult = 0.5 if plan.has_encoder else 1.0
    cfg.optim.weight_decay = 1e-4 if plan.replay else 0.0  # the L2-SP penalty replaces the pull to 0
    cfg.optim.scheduler = "none"
    cfg.optim.warmup_epochs = 0.5
    cfg.train.batch_size = min(BATCH, n_train + len(plan.replay))
    views = n_train / (1 - REPLAY_SHARE) if plan.replay else n_train
    cfg.train.steps_per_epoch = max(4, math.ceil(2 * views / cfg.train.batch_size))
    # a first guess (at about 2 photos a second); Budget re-estimates it after each epoch
    cfg.train.epochs = max(1, int(minutes_for_training * 60 * 2 / (cfg.train.steps_per_epoch * cfg.train.batch_size)))
    cfg.train.time_budget_min = minutes_for_training
    cfg.train.early_stopping = patience(cfg.train.epochs)
    cfg.train.monitor = "wF"
    cfg.train.seed = seed
    cfg.train.threads = threads
    cfg.train.log_every = 10**6
    validate(cfg)
    return cfg


def score(spec: ModelSpec, pairs: list[datasets.Pair], threads: int | None) -> dict[str, float]:
    res = evaluate(OnnxModel(spec, threads=threads), pairs).results()
    return {k: float(res[k]) for k in FIGURES}


def figures_table(before: dict, after: dict, base: str, name: str, n: int) -> str:
    lines = [f"held-out photos ({n}): before = {base}, after = {name}", "",
             "| | " + " | ".join(FIGURES) + " |", "|---|" + "---:|" * len(FIGURES)]
    for label, row in (("before", before), ("after", after)):
        lines.append(f"| {label} | " + " | ".join(f"{row[k]:.4f}" for k in FIGURES) + " |")
    lines.append("| change | " + " | ".join(f"{after[k] - before[k]:+.4f}" for k in FIGURES) + " |")
    return "\n".join(lines)


def _export_like(base: ModelSpec, checkpoint: Path, out: Path, name: str) -> ModelSpec:
    """Export ``checkpoint`` the way ``base`` was (input size and format, aspect, sharpening)."""
    from .export import export_onnx

    extra = {k: v for k, v in base.to_json().items()
             if k in ("alpha_temperature", "output_levels", "resample", "size_multiple")}
    export_onnx(checkpoint, out, name=name, size=min(base.input_size) // 32 * 32, input_format=base.input_format,
                temperature=float(base.extra.get("output_temperature", 1.0)), keep_aspect=base.aspect == "keep",
                extra=extra)
    return get_model(out)


def finetune(data: str | Path, name: str, base: str | None = None, minutes: float = DEFAULT_MINUTES,
             val: float = DEFAULT_VAL, replay_roots: list[str] | None = None, replace: bool = False,
             threads: int | None = None, seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Fine-tune ``base`` (default ``cleancut-default``) on the example set ``data`` and register
    the result as ``name``; returns a summary (figures before and after, minutes, the spec's path).
    ``replay_roots``: dataset roots whose training photos are replayed (none found, or ``[]``: the
    L2-SP penalty instead)."""
    log = log or (lambda text: print(text, file=sys.stderr))
    started = time.perf_counter()
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"--minutes must be a positive number of minutes, got {minutes!r}")
    check_user_name(name, replace)
    base_spec = get_model(base)
    with tempfile.TemporaryDirectory(prefix="cleancut-finetune-") as tmp:
        work = Path(tmp)
        pairs = read_examples(data, work)
        train_pairs, held_out = split_examples(pairs, val, seed)
        log(f"{len(pairs)} pairs in {data}: {len(train_pairs)} to learn from, {len(held_out)} held out")
        replay = replay_pairs(replay_roots or [], seed=seed)
        # a ModelError for a model that cannot be fine-tuned; BatchNorm re-measured on these photos
        model, report = recover(base_spec, calibration=(train_pairs + replay)[:CALIBRATION_PHOTOS])
        log(f"recovered the weights of {base_spec.name} ({report['convs']} convs; parity with its ONNX file: "
            f"max abs difference {report['max_abs_diff']:.1e})")
        plan = Plan(name, base_spec, train_pairs, held_out, replay, list(replay_roots or []),
                    getattr(model, "encoder", None) is not None)
        guard = (f"replay of {len(replay)} training photos of {', '.join(plan.replay_roots)}" if replay
                 else f"L2-SP penalty towards {base_spec.name}'s weights (weight {L2SP_WEIGHT:g})")
        log(f"against forgetting: {guard}")
        before = score(base_spec, held_out, threads)
        reserve = min(1.5, 0.15 * minutes)  # export, int8 calibration and the after figures
        budget = max(minutes * 0.05, minutes - reserve - (time.perf_counter() - started) / 60)
        cfg = finetune_config(plan, budget, threads, seed)
        init = work / "base.pt"
        atomic_save(checkpoint_from_spec(base_spec, model, report, cfg.data.size), init)
        trainer = Finetuner(cfg, work / "run", str(init), train_pairs + replay, held_out,
                            plugins=[Budget(budget)] + ([] if replay else [L2SP()]))
        start = trainer.start_row()
        summary = trainer.fit()
        best_epoch = max([start, *trainer.history], key=lambda r: r.get("held-out/wF", -1.0))["epoch"]
        log(f"trained {summary['epochs']} epochs; best held-out wF {summary['best']:.4f} at epoch {best_epoch} "
            f"(base {start['held-out/wF']:.4f})")
        if best_epoch == 0:
            log(f"warning: no epoch did better than {base_spec.name} on the held-out photos; {name} keeps its "
                "weights (more photos, more minutes or masks closer to what you want may help)")
        fp32 = _export_like(base_spec, work / "run" / "checkpoints" / "best.pt", work / "export" / f"{name}.onnx", name)
        calib = (train_pairs + replay)[:CALIBRATION_PHOTOS]
        int8 = quantize_int8(fp32, calib, work / "export", made_by="cleancut finetune")
        after = score(int8, held_out, threads)
        elapsed = (time.perf_counter() - started) / 60
        details = {
            USER_MARK: "cleancut finetune",
            "description": f"{base_spec.name} fine-tuned by cleancut finetune on {len(train_pairs)} photos of {data} "
                           f"({elapsed:.1f} min on CPU); static int8 like its base",
            "licence": f"derived from {base_spec.name} ({base_spec.licence}) and your photos",
            "base": base_spec.name, "base_sha256": base_spec.sha256,
            "weights": f"epoch {best_epoch} of {summary['epochs']} (held-out wF), exported like {base_spec.name}, "
                       f"then {SHIPPED_RECIPE} ({len(calib)} calibration photos)",
            "finetune": {"data": str(data), "pairs": len(pairs), "train": len(train_pairs),
                         "held_out": sorted(p.stem for p in held_out), "guard": guard, "minutes": round(elapsed, 2),
                         "epochs": summary["epochs"], "best_epoch": best_epoch, "seed": seed,
                         "before": before, "after": after},
        }
        data = int8.to_json()
        data.pop("parity", None)  # the fp32 export's check, not this file's
        data.update(details)
        path = install_user_model(int8.path, data, name)
    return {"name": name, "spec": str(path), "base": base_spec.name, "before": before, "after": after,
            "held_out": len(held_out), "train": len(train_pairs), "minutes": elapsed, "guard": guard,
            "epochs": summary["epochs"], "best_epoch": best_epoch,
            "table": figures_table(before, after, base_spec.name, name, len(held_out))}
