"""Recover a trainable checkpoint from an exported cleancut ONNX model (BatchNorm folded into convs).

Run folders do not survive sessions on ephemeral machines, but the shipped ONNX file does. This
puts its weights back into the torch architecture so that training can continue from it
(``cleancut train --init``):

    python tools/onnx_to_checkpoint.py src/cleancut/models/cleancut-default.onnx \
        --arch cutnet --kwargs '{"width": 1.0, "decoder": 48, "dropout": 0.1}' \
        --data ../shared/data --out runs/recovered.pt

How: ONNX ``Conv`` nodes are matched, in execution order and by weight shape, to the ``Conv2d``
modules the torch model calls in eval mode (convs whose output never reaches the main output,
such as the deep-supervision heads, are absent from the export and keep their fresh init). A conv
followed by BatchNorm gets the folded weight, and the BatchNorm is rebuilt so that it is the
identity plus the folded bias in eval mode AND close to it in train mode: its running statistics
are measured on training images (the inputs to each BatchNorm are exact, since the rebuilt model
already equals the ONNX one in eval mode). The script checks parity with onnxruntime and refuses
to write a checkpoint that does not match.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn


def conv_call_order(model: nn.Module, size: int) -> list[nn.Conv2d]:
    calls: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append(mod)) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return calls


def following_bn(model: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    pairs = {}
    for seq in model.modules():
        conv, bn = getattr(seq, "conv", None), getattr(seq, "bn", None)  # the encoder's ConvBN blocks
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            pairs[conv] = bn
        if isinstance(seq, nn.Sequential):
            kids = list(seq)
            for a, b in zip(kids, kids[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    pairs[a] = b
    return pairs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx")
    p.add_argument("--arch", required=True)
    p.add_argument("--kwargs", default="{}")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--data", required=True, help="dataset root whose train split calibrates BatchNorm")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from cleancut.train.archs import build
    from cleancut.datasets import select
    from cleancut.train.data import EvalDataset, collate_eval
    from cleancut.train.export import _Deployable

    model = build(args.arch, **json.loads(args.kwargs)).eval()
    graph = onnx.load(args.onnx).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # fp16-stored weights (export --fp16-weights) reach the convs through a Cast
        if node.op_type == "Cast" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]].astype(np.float32)
    nodes = [n for n in graph.node if n.op_type == "Conv"]
    calls = conv_call_order(model, args.size)
    bns = following_bn(model)
    names = {m: n for n, m in model.named_modules()}

    # match in order; torch convs with no ONNX counterpart (dead outputs) are skipped
    assigned: dict[nn.Conv2d, tuple[np.ndarray, np.ndarray | None]] = {}
    j = 0
    for node in nodes:
        w = inits[node.input[1]]
        b = inits[node.input[2]] if len(node.input) > 2 else None
        while j < len(calls) and (calls[j] in assigned or tuple(calls[j].weight.shape) != w.shape):
            j += 1
        if j == len(calls):
            sys.exit(f"error: ONNX conv {node.name} {w.shape} has no matching torch conv left")
        assigned[calls[j]] = (w, b)
        j += 1
    print(f"matched {len(assigned)} of {len(nodes)} ONNX convs to {len(set(calls))} torch convs")

    with torch.no_grad():
        for conv, (w, b) in assigned.items():
            conv.weight.copy_(torch.from_numpy(w.copy()))
            bias = torch.from_numpy(b.copy()) if b is not None else torch.zeros(w.shape[0])
            bn = bns.get(conv)
            if bn is not None:  # identity BN carrying the bias; statistics fixed below
                bn.running_mean.zero_()
                bn.running_var.fill_(1 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(bias)
            elif conv.bias is not None:
                conv.bias.copy_(bias)
            elif b is not None and np.abs(b).max() > 0:
                sys.exit(f"error: ONNX conv {names[conv]} has a bias but its torch conv has neither bias nor BatchNorm")

    # measure each BatchNorm's input statistics on real training images (eval mode is exact now)
    pairs = select([args.data], ["train"], check=False)["train"]
    pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, min(args.images, len(pairs))).astype(int)]
    ds = EvalDataset(pairs, args.size)
    # running sums per channel (storing every input would take tens of GB at 384 px)
    stats: dict[nn.BatchNorm2d, list] = {bn: [0, 0.0, 0.0] for bn in bns.values()}

    def accumulate(mod, inputs, output):
        x = inputs[0].detach().double().transpose(0, 1).reshape(mod.num_features, -1)
        st = stats[mod]
        st[0] += x.shape[1]
        st[1] = st[1] + x.sum(1)
        st[2] = st[2] + (x * x).sum(1)

    hooks = [bn.register_forward_hook(accumulate) for bn in stats]
    loader = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=collate_eval)
    with torch.no_grad():
        for batch in loader:
            model(batch[0])
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for bn, (n, total, squares) in stats.items():
            mean = total / n
            var = (squares / n - mean * mean).clamp_min(0) * n / max(n - 1, 1)
            mean, var = mean.float(), var.float()
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.add_(mean)

    import onnxruntime as ort

    sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    uint8 = sess.get_inputs()[0].type == "tensor(uint8)"  # export --uint8-input: raw NHWC pixels
    if uint8:
        x = torch.randint(0, 256, (2, args.size, args.size, 3), dtype=torch.uint8)
    else:
        x = torch.rand(2, 3, args.size, args.size)
    with torch.no_grad():
        ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        deployable = _Deployable(model, input_format="uint8_nhwc" if uint8 else "float_nchw", size=args.size)
        got = deployable.eval()(x).numpy()
    diff = float(np.abs(ref - got).max())
    print(f"parity with onnxruntime: max abs diff {diff:.2e}")
    if diff > 1e-3:
        sys.exit("error: the rebuilt model does not match the ONNX file; not writing a checkpoint")
    torch.save({"model": model.state_dict(), "source": args.onnx}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
