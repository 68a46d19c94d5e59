"""Training the learned edge stage (:mod:`cleancut.edges`) on a base model's own alphas.

The refiner learns to redraw the edge a base model draws: its input is a patch of the photo at the
photo's resolution and the base model's alpha there (the network's probability, resized to the
photo), its target the label. So the training data are the base model's predictions on the
training photos, computed once into a memory-mapped file beside the training cache
(:func:`coarse_cache`); a share of the patches (``perturb``) gets a degraded label instead (shrunk,
blurred, its edge moved in or out), so the refiner does not learn one model's habits only.

Patches are drawn around the uncertain band (where the base model is unsure or the label has an
edge) with flips, quarter turns and a little colour jitter. Every ``val_every`` steps the refiner
is exported and scored through the product's own path (:class:`cleancut.edges.EdgeRefiner` on
whole photos) on the validation split, with the edge figures; the best by Boundary IoU at 0.5 % is
kept. Runs resume from ``last.pt``.

    cleancut train-edges --base cleancut-default --data ../shared/data datasets/DUTS-TR --out runs/edges
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import datasets
from ..edges import INPUT_NAME, OUTPUT_NAME, EdgeRefiner
from ..models import RefinerSpec
from ..errors import ConfigError, DatasetError
from ..models import ModelSpec, file_sha256, get_model
from .cache import building
from .checkpoint import atomic_save

CHECKPOINTS = "checkpoints"


@dataclass
class EdgeTrainConfig:
    base: str = "cleancut-default"  # the model whose alphas the refiner learns to redraw
    roots: list[str] = field(default_factory=list)
    train_split: str = "train"
    val_split: str = "duts-val"
    max_val: int = 200  # validation photos (evenly spread over the split)
    label_erode: dict[str, int] = field(default_factory=dict)  # as data.label_erode of cleancut train
    cache_dir: str = ".cache/train"
    cache_side: int = 448
    width: int = 24  # channels of the refiner's hidden layers
    tile: int = 32
    margin: int = 16
    max_side: int = 1024
    batch_size: int = 32
    steps: int = 4000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    perturb: float = 0.3  # share of patches whose alpha is a degraded label instead of the base model's
    val_every: int = 500
    minutes: float | None = None  # stop (after a checkpoint) once this many minutes have passed
    seed: int = 0
    threads: int | None = None


class RefinerNet(nn.Module):
    """The refiner: four dilated 3x3 convolutions over the photo and the alpha (receptive field
    29 px, well inside a 16-px margin on each side of the kept tile), whose output is added to the
    alpha's logit: where it has nothing to say, the base model's alpha passes through."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.width = width
        self.body = nn.Sequential(
            nn.Conv2d(4, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=8, dilation=8), nn.ReLU(inplace=True),
            nn.Conv2d(width, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 1, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)  # starts as the identity: the base model's alpha
        nn.init.zeros_(self.body[-1].bias)
        self.register_buffer("shift", torch.tensor([-0.485, -0.456, -0.406, -0.5]).view(1, 4, 1, 1) * 4, persistent=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, 4, H, W]``, RGB in [0, 1] and the alpha in [0, 1]."""
        alpha = x[:, 3:4].clamp(1e-4, 1 - 1e-4)
        return torch.log(alpha) - torch.log1p(-alpha) + self.body(x * 4 + self.shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


# ---------------------------------------------------------------- data


def coarse_cache(spec: ModelSpec, cache, root: str | Path, threads: int | None = None, progress: bool = True) -> np.memmap:
    """The base model's alpha for every photo of the training cache ``cache`` (a
    :class:`~cleancut.train.cache.PairCache`), at the stored photo's size, as uint8 laid out like
    the cache's masks; computed once (atomically) into a folder beside it named by both."""
    from PIL import Image
    from tqdm import tqdm

    from ..preprocess import resize_alpha, to_input
    from ..runtime import Session

    spec.verify()
    digest = (spec.sha256 or file_sha256(spec.path))[:12]
    folder = Path(root) / f"coarse-{cache.folder.name}-{spec.name}-{digest}"
    path = folder / "coarse.u8"
    if not path.is_file():
        session = Session(spec, threads=threads)
        with building(folder) as tmp, open(tmp / "coarse.u8", "wb") as fh:
            for i in tqdm(range(len(cache)), desc=f"{spec.name}'s alphas", unit="photo", disable=not progress):
                image, mask = cache[i]
                prob = session.run_batch(to_input(Image.fromarray(image), spec)[None])[0]
                alpha = resize_alpha(prob, (mask.shape[1], mask.shape[0]))
                fh.write(np.round(alpha * 255).astype(np.uint8).tobytes())
            (tmp / "index.json").write_text(json.dumps({"model": spec.name, "sha256": spec.sha256,
                                                        "cache": str(cache.folder)}))
    return np.memmap(path, dtype=np.uint8, mode="r")


def degraded(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A label made to look like a network's alpha: shrunk 2-5x and enlarged again (bilinear),
    blurred, and its edge moved in or out (a power of the alpha)."""
    import cv2

    h, w = mask.shape
    f = rng.uniform(2, 5)
    small = cv2.resize(mask, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    sigma = rng.uniform(0.3, 2.0)
    out = cv2.GaussianBlur(out, (0, 0), sigma)
    return np.clip(out ** float(np.exp(rng.uniform(-0.9, 0.9))), 0, 1)


class PatchSampler:
    """Patches ``(x [N, 4, P, P], target [N, 1, P, P])`` drawn around the uncertain band."""

    def __init__(self, cache, coarse: np.ndarray, size: int, perturb: float, seed: int):
        self.cache, self.coarse, self.size, self.perturb = cache, coarse, size, perturb
        self.rng = np.random.default_rng(seed)
        usable = [i for i in range(len(cache)) if min(cache.entries[i, 2], cache.entries[i, 3]) >= size]
        if not usable:
            raise DatasetError(f"no training photo is at least {size} px on its short side")
        self.usable = np.asarray(usable)

    def _one(self):
        rng, p = self.rng, self.size
        i = int(self.usable[rng.integers(len(self.usable))])
        image, mask = self.cache[i]
        _, mo, h, w = (int(v) for v in self.cache.entries[i])
        if rng.random() < self.perturb:
            alpha = degraded(np.asarray(mask), rng)
        else:
            alpha = self.coarse[mo:mo + h * w].reshape(h, w).astype(np.float32) / 255
        unsure = ((alpha > 0.02) & (alpha < 0.98)) | ((mask > 5) & (mask < 250))
        edge = np.argwhere(unsure[::2, ::2]) * 2
        if len(edge) and rng.random() < 0.9:
            cy, cx = edge[rng.integers(len(edge))]
        else:
            cy, cx = rng.integers(h), rng.integers(w)
        y0, x0 = int(np.clip(cy - p // 2, 0, h - p)), int(np.clip(cx - p // 2, 0, w - p))
        sl = (slice(y0, y0 + p), slice(x0, x0 + p))
        rgb = image[sl].astype(np.float32) / 255
        rgb = np.clip(rgb * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08), 0, 1)  # brightness, contrast
        x = np.concatenate([rgb.transpose(2, 0, 1), alpha[sl][None]])
        y = mask[sl][None].astype(np.float32) / 255
        k = int(rng.integers(4))
        if rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, :, ::-1]
        return np.rot90(x, k, (1, 2)), np.rot90(y, k, (1, 2))

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self._one() for _ in range(n)))
        return torch.from_numpy(np.ascontiguousarray(np.stack(xs))), torch.from_numpy(np.ascontiguousarray(np.stack(ys)))


# ---------------------------------------------------------------- export and validation


def export_refiner(net: RefinerNet, cfg: EdgeTrainConfig, out: str | Path, description: str = "",
                   tolerance: float = 1e-4) -> RefinerSpec:
    """Write the refiner's ONNX file (dynamic batch, height and width) and return its spec,
    after checking ONNX Runtime against torch on random patches."""
    import onnxruntime as ort

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    p = cfg.tile + 2 * cfg.margin
    example = torch.rand(2, 4, p, p)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, example, str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=17,
                          dynamic_axes={INPUT_NAME: {0: "n", 2: "h", 3: "w"}, OUTPUT_NAME: {0: "n", 2: "h", 3: "w"}},
                          dynamo=False)
    x = torch.rand(3, 4, p, p, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x).numpy()
    got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    diff = float(np.abs(got - ref).max())
    if not diff <= tolerance:
        tmp.unlink()
        raise RuntimeError(f"refiner export: ONNX Runtime differs from torch by {diff:.2e} (> {tolerance:g})")
    os.replace(tmp, out)
    return RefinerSpec(file=out.name, sha256=file_sha256(out), tile=cfg.tile, margin=cfg.margin, max_side=cfg.max_side,
                       description=description, folder=str(out.parent))


def validate(refiner: EdgeRefiner, spec: ModelSpec, pairs: list, session) -> dict[str, dict[str, float]]:
    """The base model's figures and the refined ones on ``pairs``, the product's own path."""
    from PIL import Image

    from ..metrics import SODMetrics
    from ..preprocess import finish_alpha, to_input

    base, refined = SODMetrics(curves=False), SODMetrics(curves=False)
    for pair in pairs:
        with Image.open(pair.image) as im:
            photo = im.convert("RGB")
        with Image.open(pair.mask) as m:
            gt = np.asarray(m.convert("L"))
        prob = session.run_batch(to_input(photo, spec)[None])[0]
        base.add(finish_alpha(prob, photo.size, spec.alpha_temperature), gt)
        refined.add(refiner.refine(prob, photo), gt)
    return {"base": base.results(), "refined": refined.results()}


# ---------------------------------------------------------------- the loop

KEYS = ("maxF", "wF", "MAE", "BIoU@2%", "BIoU@0.5%", "fringe@0.5%", "bite@0.5%")


def train_refiner(cfg: EdgeTrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a refiner for ``cfg.base`` into the run folder ``out``; returns the best
    validation row. The run folder holds ``config.json``, ``log.jsonl``, ``checkpoints/`` and the
    best refiner's export ``refiner.onnx`` + ``refiner.json``."""
    from ..runtime import Session
    from .cache import open_cache

    out = Path(out)
    ckpt_dir = out / CHECKPOINTS
    if resume:
        saved = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None
        if saved is None or not (ckpt_dir / "last.pt").is_file():
            raise ConfigError(f"{out} holds no edge-refiner run to resume (config.json and checkpoints/last.pt)")
        cfg = EdgeTrainConfig(**{**saved, "minutes": cfg.minutes, "threads": cfg.threads or saved.get("threads")})
    elif (ckpt_dir / "last.pt").exists():
        raise ConfigError(f"{out} already holds a run; resume it with --resume or choose another --out")
    if not cfg.roots:
        raise ConfigError("no data: give the dataset roots (--data)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = get_model(cfg.base)
    selected = datasets.select(cfg.roots, [cfg.train_split, cfg.val_split])
    train_pairs, val_pairs = selected[cfg.train_split], selected[cfg.val_split]
    if not train_pairs or not val_pairs:
        raise DatasetError(f"need photos in both {cfg.train_split!r} and {cfg.val_split!r} under {cfg.roots}")
    val_pairs = [val_pairs[int(i)] for i in np.linspace(0, len(val_pairs) - 1, min(cfg.max_val, len(val_pairs)))]
    cache = open_cache(train_pairs, cfg.cache_dir, cfg.cache_side, progress=progress, erode=cfg.label_erode)
    coarse = coarse_cache(spec, cache, cfg.cache_dir, threads=cfg.threads, progress=progress)
    sampler = PatchSampler(cache, coarse, cfg.tile + 2 * cfg.margin, cfg.perturb, cfg.seed)

    net = RefinerNet(cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    step, best = 0, None
    if resume:
        state = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        step, best = state["step"], state["best"]
        sampler.rng = np.random.default_rng([cfg.seed, step])
    else:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    session = Session(spec, threads=cfg.threads)
    m = cfg.margin // 2  # the loss skips the outer half of the margin, which sees the patch's padding
    start, losses = time.perf_counter(), []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="edge refiner", unit="step")
    while step < cfg.steps:
        net.train()
        x, y = sampler.batch(cfg.batch_size)
        logits = net.logits(x)[..., m:-m, m:-m]
        y = y[..., m:-m, m:-m]
        loss = F.binary_cross_entropy_with_logits(logits, y) + (torch.sigmoid(logits) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        over = cfg.minutes is not None and (time.perf_counter() - start) / 60 >= cfg.minutes
        if step % cfg.val_every == 0 or step == cfg.steps or over:
            spec_now = export_refiner(net, cfg, ckpt_dir / "refiner-now.onnx")
            figures = validate(EdgeRefiner(spec_now, threads=cfg.threads), spec, val_pairs, session)
            row = {"step": step, "loss": float(np.mean(losses[-cfg.val_every:])),
                   **{f"base/{k}": figures["base"][k] for k in KEYS}, **{k: figures["refined"][k] for k in KEYS}}
            with open(out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  file=sys.stderr, flush=True)
            if best is None or row["BIoU@0.5%"] > best["BIoU@0.5%"]:
                best = row
                atomic_save({"model": net.state_dict(), "width": cfg.width, "step": step}, ckpt_dir / "best.pt")
                for suffix in (".onnx",):
                    shutil.copyfile(ckpt_dir / f"refiner-now{suffix}", out / f"refiner{suffix}")
                final = RefinerSpec(**{**asdict(spec_now), "file": "refiner.onnx", "folder": str(out),
                                       "description": f"learned edge stage for {spec.name} "
                                                      f"({spec.sha256 or ''}), step {step} of {cfg.steps}"})
                (out / "refiner.json").write_text(json.dumps({**final.to_json(), "base": spec.name,
                                                              "validation": row}, indent=1))
            atomic_save({"model": net.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
                         "step": step, "best": best}, ckpt_dir / "last.pt")
        if over:
            print(f"time budget of {cfg.minutes:g} min reached at step {step}", file=sys.stderr)
            break
    if bar is not None:
        bar.close()
    return best or {}


def load_refiner_json(path: str | Path) -> RefinerSpec:
    """The refiner a ``train-edges`` run exported (``refiner.json`` in its folder)."""
    p = Path(path)
    p = p / "refiner.json" if p.is_dir() else p
    data = json.loads(p.read_text())
    return RefinerSpec.from_json(data, p.parent)


