"""Training throughput (photos/s): real training steps with real data loading, today's data path
beside phase D's (v10's), at several sizes, in one run.

Each measured step is what ``cleancut train`` does: the loader (``SegDataset`` through a
``DataLoader`` with the config's workers and set weights), bf16 autocast + channels-last forward,
the loss, backward and the AdamW step. Two data paths, the same photos, model and config:

- ``phase-d``: v10's phase D -- every photo decoded into RAM when the run starts, one loader
  process, and the loss as it was then (the boundary weights' k x k mean recomputed for each of
  the four outputs);
- ``cache``: photos decoded once into memory-mapped arrays (``data.cache_dir``, built by
  ``cleancut train --build-cache``), the config's loader processes (v11: none -- on two cores a
  loader process beside two torch threads costs more than the 5 ms a photo it takes to augment
  in the training process), and the loss as it is now (the k x k mean as two 1-D means, once
  per batch).

    python benchmarks/train_throughput.py                          # configs/v11-duts.yaml, 256 320 416 px
    python benchmarks/train_throughput.py --sizes 320 --steps 10 --pairs 2000
    python benchmarks/train_throughput.py --compute-only --archs cnn unet cutnet --size 256   # no data
    python benchmarks/train_throughput.py --depthwise --size 320     # bf16 vs float32, each depthwise conv

``--pairs`` takes a seeded subset of the training pairs (both paths the same) so that phase D's
start-up decode stays short; the per-photo cost of a step does not depend on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from cleancut.train import archs
from cleancut.train.config import LossConfig, load_config
from cleancut.train.data import SegDataset
from cleancut.train.losses import SegLoss
from cleancut.train.loop import WeightedSampler, select_data, use_bf16


class PhaseDLoss(SegLoss):
    """The loss as v10's phase D computed it: the boundary weights' k x k window mean, once per output."""

    def forward(self, outputs, target):
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        loss = 0.0
        for i, out in enumerate(outputs):
            weight = None
            if self.cfg.boundary:
                k = max(3, int(self.cfg.boundary_kernel) // 2 * 2 + 1)
                local = F.avg_pool2d(target, k, stride=1, padding=k // 2, count_include_pad=False)
                weight = 1.0 + self.cfg.boundary * (local - target).abs()
            loss = loss + (1.0 if i == 0 else self.cfg.aux_weight) * self.single(out, target, weight)
        return loss


PHASE_D_WORKERS = 1  # configs/v10-duts.yaml: one loader process beside the training process


def loader_for(dataset: SegDataset, cfg, batch: int, seed: int, workers: int) -> torch.utils.data.DataLoader:
    weights = [cfg.data.set_weights.get(p.set, 1.0) for p in dataset.pairs]
    return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=WeightedSampler(weights, seed), drop_last=True,
                                       num_workers=workers, multiprocessing_context="fork" if workers else None)


def make_dataset(cfg, pairs, path: str) -> SegDataset:
    data = dataclasses.replace(cfg.data, cache=True, cache_dir=cfg.data.cache_dir if path == "cache" else None)
    t0 = time.perf_counter()
    dataset = SegDataset(pairs, data, seed=0, train=True)
    print(f"  {path}: dataset ready in {time.perf_counter() - t0:.1f} s", flush=True)
    return dataset


def measure(cfg, dataset: SegDataset, path: str, size: int, steps: int, warmup: int) -> float:
    bf16 = use_bf16(cfg.train.precision, torch.device("cpu"))
    loss_fn = (PhaseDLoss if path == "phase-d" else SegLoss)(cfg.loss, None)
    torch.manual_seed(0)
    model = archs.build(cfg.model.arch, **cfg.model.kwargs).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dataset.set_size(size)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    workers = PHASE_D_WORKERS if path == "phase-d" else cfg.data.num_workers
    it = iter(loader_for(dataset, cfg, cfg.train.batch_size, seed=size, workers=workers))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        x, y = next(it)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            outputs = model(x)
        loss = loss_fn(outputs, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    rate = steps * cfg.train.batch_size / (time.perf_counter() - start)
    print(f"  {path} at {size} px: {rate:.2f} photos/s", flush=True)
    return rate


def compare_loaders(args) -> None:
    cfg = load_config(args.config, [f"data.max_train={args.pairs}", f"train.batch_size={args.batch}", *args.set])
    if not cfg.data.cache_dir:
        cfg.data.cache_dir = ".cache/train"
    pairs, _ = select_data(cfg)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.config}: {cfg.model.arch} "
          f"{cfg.model.kwargs}, {len(pairs)} training pairs, batch {args.batch}, loader workers {cfg.data.num_workers}, "
          f"{args.steps} steps after {args.warmup} warm-up steps per size", flush=True)
    paths = ("phase-d", "cache")
    datasets = {p: make_dataset(cfg, pairs, p) for p in paths}
    rows = {p: {} for p in paths}
    for size in args.sizes:  # the two paths take turns, so that a background job slows them alike
        for p in paths:
            rows[p][size] = measure(cfg, datasets[p], p, size, args.steps, args.warmup)
    print("\n| data path | " + " | ".join(f"{s} px photos/s" for s in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    for path, row in rows.items():
        print(f"| {path} | " + " | ".join(f"{row[s]:.2f}" for s in args.sizes) + " |")
    print("| speed-up | " + " | ".join(f"{rows['cache'][s] / rows['phase-d'][s]:.2f}x" for s in args.sizes) + " |")


def measure_compute(arch: str, size: int, batch: int, bf16: bool, steps: int, warmup: int = 2) -> float:
    torch.manual_seed(0)
    model = archs.build(arch).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = SegLoss(LossConfig())
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def compare_archs(args) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, input {args.size}x{args.size}, batch {args.batch}, no data loading")
    print("| architecture | parameters | fp32 img/s | bf16 img/s | bf16 speed-up |")
    print("|---|---:|---:|---:|---:|")
    for arch in args.archs:
        params = sum(p.numel() for p in archs.build(arch).parameters())
        fp32 = measure_compute(arch, args.size, args.batch, False, args.steps)
        bf16 = measure_compute(arch, args.size, args.batch, True, args.steps)
        print(f"| {arch} | {params / 1e6:.2f} M | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x |")


def depthwise_step_ms(channels: int, side: int, kernel: int, stride: int, batch: int, dtype, steps: int = 5) -> float:
    """One depthwise convolution forward + backward (input and weight gradients), channels-last."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels, bias=False)
    conv = conv.to(memory_format=torch.channels_last).to(dtype)
    x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last).to(dtype)
    x.requires_grad_()
    for i in range(2 + steps):
        if i == 2:
            t0 = time.perf_counter()
        y = conv(x)
        y.backward(torch.ones_like(y))
    return (time.perf_counter() - t0) / steps * 1000


def compare_depthwise(args) -> None:
    """bf16 against float32 for the depthwise convolutions of EfficientNet-Lite2 at a training
    size: why ``ConvBN`` runs kernel 5 in float32 under CPU autocast (and kernel 3 in bf16)."""
    from cleancut.train.archs._encoders import EfficientNetLite

    encoder = EfficientNetLite("efficientnet-lite2")
    shapes, side = [], args.size // 2  # after the stem
    for block in encoder.blocks:
        conv = block.dw.conv
        shapes.append((conv.in_channels, side, conv.kernel_size[0], conv.stride[0]))
        side //= conv.stride[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size} px, batch {args.batch}: "
          "one depthwise convolution, forward + backward, ms")
    print("| channels | side | kernel | stride | bf16 | float32 | faster |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for shape in dict.fromkeys(shapes):
        bf16 = depthwise_step_ms(*shape, args.batch, torch.bfloat16)
        fp32 = depthwise_step_ms(*shape, args.batch, torch.float32)
        print(f"| {shape[0]} | {shape[1]} | {shape[2]} | {shape[3]} | {bf16:.1f} | {fp32:.1f} | "
              f"{'float32' if fp32 < bf16 else 'bf16'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/v11-duts.yaml", help="training config (data, model, loss)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 416])
    ap.add_argument("--pairs", type=int, default=2000, help="seeded subset of the training pairs (both paths)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. data.num_workers=0")
    ap.add_argument("--compute-only", action="store_true", help="random batches, no data: per architecture, fp32 vs bf16")
    ap.add_argument("--archs", nargs="+", default=["cnn", "unet", "cutnet"])
    ap.add_argument("--size", type=int, default=256, help="input size of --compute-only and --depthwise")
    ap.add_argument("--depthwise", action="store_true",
                    help="bf16 vs float32 for each depthwise convolution of EfficientNet-Lite2 at --size")
    args = ap.parse_args()
    if args.depthwise:
        compare_depthwise(args)
    elif args.compute_only:
        compare_archs(args)
    else:
        compare_loaders(args)


if __name__ == "__main__":
    main()
