"""Training throughput (images/s) of each architecture, fp32 vs bf16 autocast, channels_last.

Times full training steps (forward, loss, backward, AdamW step) on random batches, so the figure is
the compute cost of training, without data loading.

    python benchmarks/train_throughput.py --archs cnn unet cutnet --size 256 --batch 16
"""

from __future__ import annotations

import argparse
import time

import torch

from cleancut.train import archs
from cleancut.train.config import LossConfig
from cleancut.train.losses import SegLoss


def measure(arch: str, size: int, batch: int, bf16: bool, steps: int, warmup: int = 2) -> float:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["cnn", "unet", "cutnet"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, input {args.size}x{args.size}, batch {args.batch}")
    print("| architecture | parameters | fp32 img/s | bf16 img/s | bf16 speed-up |")
    print("|---|---:|---:|---:|---:|")
    for arch in args.archs:
        params = sum(p.numel() for p in archs.build(arch).parameters())
        fp32 = measure(arch, args.size, args.batch, False, args.steps)
        bf16 = measure(arch, args.size, args.batch, True, args.steps)
        print(f"| {arch} | {params / 1e6:.2f} M | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f}x |")


if __name__ == "__main__":
    main()
