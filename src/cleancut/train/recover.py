"""Trainable weights recovered from an exported cleancut ONNX model (BatchNorm folded into convs).

Run folders do not survive sessions on ephemeral machines, and a user's machine never had them,
but the ONNX file does. :func:`recover` puts its weights back into the torch architecture so
that training can continue from it (``cleancut finetune``, ``cleancut train --init``).

How: ONNX ``Conv`` nodes are matched, in execution order and by weight shape, to the ``Conv2d``
modules the torch model calls in eval mode (convs whose output never reaches the main output,
such as the deep-supervision heads, are absent from the export and keep their fresh init). A conv
followed by BatchNorm gets the folded weight, and the BatchNorm is rebuilt as the identity plus
the folded bias in eval mode. With calibration photos, the conv's output statistics are then
measured on them and moved back into the BatchNorm (:func:`calibrate_bn`), so that it is also
close to that in train mode and the conv's weights have their trained scale again (the inputs to
each BatchNorm are exact, since the rebuilt model already equals the ONNX one in eval mode).

A quantised file (static int8 in QDQ form, as ``cleancut-default`` ships) is read through
:func:`dequantized`: every stored weight is dequantized once and the activations' quantize /
dequantize pairs are dropped, which leaves the float network the int8 file approximates. The
parity check (:func:`parity`) compares the rebuilt model with ONNX Runtime on that float graph
(every weight recovered: differences of float rounding only) and reports how far the int8 file
itself is from it (quantisation noise). Nothing is returned from a model that does not match.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..models import ModelSpec

#: largest difference allowed between the rebuilt model and the (dequantized) ONNX graph
PARITY_TOLERANCE = 1e-3


def conv_call_order(model: nn.Module, size: int, channels: int = 3) -> list[nn.Conv2d]:
    """The ``Conv2d`` modules in the order an eval-mode forward pass at ``size`` calls them."""
    calls: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append(mod))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, channels, size, size))
    for h in hooks:
        h.remove()
    return calls


def following_bn(model: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """Each conv that a BatchNorm follows, with that BatchNorm."""
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


def is_quantized(graph) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in graph.node)


def dequantized(model):
    """A copy of an ONNX model with its QDQ quantisation undone: each ``DequantizeLinear`` of a
    stored tensor becomes that tensor in float32, and each activation ``QuantizeLinear`` ->
    ``DequantizeLinear`` pair is bypassed, as is the quantisation around data movement run on
    8-bit levels (a padding with the zero point pads with 0 again). A float model comes back
    unchanged."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if not is_quantized(graph):
        return model
    if any(n.op_type.startswith("QLinear") or n.op_type in ("ConvInteger", "MatMulInteger") for n in graph.node):
        raise ModelError("the ONNX file holds fused integer operators (QLinearConv ...), not QDQ nodes; "
                         "weights can be recovered from a float export or a QDQ quantisation only")
    inits = {t.name: t for t in graph.initializer}
    rename: dict[str, str] = {}  # a tensor name -> the name that now carries its value
    drop = []
    quantizers = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in inits:  # a stored weight, bias or constant
            q = numpy_helper.to_array(inits[source]).astype(np.float64)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            zero = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
                    if len(node.input) > 2 and node.input[2] else np.zeros_like(scale))
            if scale.ndim == 1 and q.ndim > 1:  # per channel along the node's axis
                axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            value = (q - zero) * scale
            if _EXPORTER_CONSTANT.search(source) and value.size <= 64:
                # the exporter's small constants (pooling windows' bounds) were whole numbers that
                # int8 moved by up to half a step: 1.008, 2.016, 2.992 are 1, 2, 3
                whole = np.round(value)
                value = np.where(np.abs(value - whole) < 0.05 * np.maximum(1, np.abs(whole)), whole, value)
            graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
            drop.append(node)
        elif source in quantizers:  # an activation's fake quantisation
            rename[node.output[0]] = quantizers[source].input[0]
            drop.append(node)
        elif getattr(producers.get(source), "op_type", None) == "Pad":  # padded on 8-bit levels
            rename[node.output[0]] = source  # (quantize.fold_qdq_moves): the padding is float again
            drop.append(node)
    for node in drop:
        graph.node.remove(node)
    for name, quantizer in quantizers.items():  # what read 8-bit levels reads the float tensor
        rename.setdefault(name, quantizer.input[0])
    for node in list(graph.node):
        if node.op_type == "QuantizeLinear":
            graph.node.remove(node)
        elif node.op_type == "Pad" and len(node.input) > 2 and node.input[2] in inits and \
                inits[node.input[2]].data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8):
            zero = f"{node.name}_float_zero"  # it padded with the zero point: in float, with 0
            graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
            node.input[2] = zero
    _restore_activations(graph)
    for node in graph.node:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
    for out in graph.output:
        while out.name in rename:
            out.name = rename[out.name]
    used = {i for n in graph.node for i in n.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    return model


_EXPORTER_CONSTANT = re.compile(r"/Constant(_[0-9]+)?_output_0_quantized$")
_FUSED_ACTIVATION = re.compile(r"/(Clip|Relu)_output_0$")


def _restore_activations(graph) -> None:
    """Put back the activations ONNX Runtime's quantiser folded into a quantisation range: a conv
    that writes a tensor the exporter named ``.../Relu_output_0`` (or ``Clip``: ReLU6) lost its
    ReLU (ReLU6), which the activation's uint8 range from 0 (to about 6) replaced."""
    from onnx import TensorProto, helper

    nodes = list(graph.node)
    del graph.node[:]
    bounds = False
    for node in nodes:
        match = _FUSED_ACTIVATION.search(node.output[0]) if node.output else None
        if match is None or node.op_type in ("Clip", "Relu"):
            graph.node.append(node)
            continue
        out = node.output[0]
        node.output[0] = f"{out}_before_activation"
        graph.node.append(node)  # a copy: edited first
        if match[1] == "Relu":
            graph.node.append(helper.make_node("Relu", [node.output[0]], [out], name=f"{out}_restored"))
        else:
            if not bounds:
                graph.initializer.extend([helper.make_tensor("relu6_low", TensorProto.FLOAT, [], [0.0]),
                                          helper.make_tensor("relu6_high", TensorProto.FLOAT, [], [6.0])])
                bounds = True
            graph.node.append(helper.make_node("Clip", [node.output[0], "relu6_low", "relu6_high"], [out],
                                               name=f"{out}_restored"))


def _conv_weights(graph) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(node name, weight, bias or None) of every Conv node, in graph order."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # fp16-stored weights (export --fp16-weights) reach the convs through a Cast
        if node.op_type == "Cast" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]].astype(np.float32)
    out = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        if node.input[1] not in inits:
            raise ModelError(f"ONNX conv {node.name}: its weight is computed in the graph, not stored; "
                             "weights cannot be recovered from this file")
        bias = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        out.append((node.name, inits[node.input[1]], bias))
    return out


def module_path(node_name: str) -> str:
    """The module path the torch exporter's scope names give a node: ``/net/encoder/blocks.1/expand/
    conv/Conv`` -> ``encoder.blocks.1.expand.conv``; ``/net/fuse.0/fuse.0.0/fuse.0.0.0/Conv`` ->
    ``fuse.0.0.0`` (a nested container's scope repeats its parent's path)."""
    parts: list[str] = []
    for seg in node_name.strip("/").split("/")[:-1]:
        if seg == "net" and not parts:
            continue
        if parts and seg.startswith(parts[-1] + "."):
            parts[-1] = seg
        else:
            parts.append(seg)
    return ".".join(parts)


def load_weights(model: nn.Module, onnx_model, size: int, channels: int = 3) -> int:
    """Copy the conv weights of ``onnx_model`` (float) into ``model``; returns how many convs matched.

    Each ONNX conv goes to the module its scope name names (when that is a conv of the same
    shape), the others in execution order by shape (graph optimisers may reorder independent
    branches, exports without scope names have only the order)."""
    calls = conv_call_order(model, size, channels)
    bns = following_bn(model)
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    convs = _conv_weights(onnx_model.graph)
    assigned: dict[nn.Conv2d, tuple[np.ndarray, np.ndarray | None]] = {}
    rest = []
    for node_name, w, b in convs:
        target = modules.get(module_path(node_name))
        if isinstance(target, nn.Conv2d) and target not in assigned and tuple(target.weight.shape) == w.shape:
            assigned[target] = (w, b)
        else:
            rest.append((node_name, w, b))
    j = 0  # match in order; torch convs with no ONNX counterpart (dead outputs) are skipped
    for node_name, w, b in rest:
        while j < len(calls) and (calls[j] in assigned or tuple(calls[j].weight.shape) != w.shape):
            j += 1
        if j == len(calls):
            raise ModelError(f"ONNX conv {node_name} {tuple(w.shape)} has no matching conv left in the "
                             "architecture: the file was not exported from this architecture and these kwargs")
        assigned[calls[j]] = (w, b)
        j += 1
    with torch.no_grad():
        for conv, (w, b) in assigned.items():
            conv.weight.copy_(torch.from_numpy(np.array(w, np.float32)))
            bias = torch.from_numpy(np.array(b, np.float32)) if b is not None else torch.zeros(w.shape[0])
            bn = bns.get(conv)
            if bn is not None:  # identity BN carrying the bias; statistics measured by calibrate_bn
                bn.running_mean.zero_()
                bn.running_var.fill_(1 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(bias)
            elif conv.bias is not None:
                conv.bias.copy_(bias)
            elif b is not None and np.abs(b).max() > 0:
                raise ModelError(f"ONNX conv for {names[conv]} has a bias but its torch conv has neither bias "
                                 "nor BatchNorm")
    return len(assigned)


def calibrate_bn(model: nn.Module, pairs: list, size: int, grayscale: bool = False, batch_size: int = 16) -> None:
    """Measure each folded conv's output statistics on ``pairs`` (photos) and move them back into
    its BatchNorm: the conv's weights are divided by its outputs' standard deviation (per
    channel) and the BatchNorm keeps that scale and the mean, so that it computes the same in
    eval mode, normalises like it in train mode, and the conv's weights have the scale of a
    network trained with BatchNorm (an optimiser step of a given size then moves every channel
    alike, not the channels whose folded weights are tiny the most)."""
    from .data import EvalDataset, collate_eval

    pairs_bn = following_bn(model)
    stats: dict[nn.BatchNorm2d, list] = {bn: [0, 0.0, 0.0] for bn in pairs_bn.values()}  # running sums

    def accumulate(mod, inputs, output):
        x = inputs[0].detach().double().transpose(0, 1).reshape(mod.num_features, -1)
        st = stats[mod]
        st[0] += x.shape[1]
        st[1] = st[1] + x.sum(1)
        st[2] = st[2] + (x * x).sum(1)

    hooks = [bn.register_forward_hook(accumulate) for bn in stats]
    loader = torch.utils.data.DataLoader(EvalDataset(pairs, size, grayscale), batch_size=batch_size,
                                         collate_fn=collate_eval)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            model(batch[0])
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for conv, bn in pairs_bn.items():
            n, total, squares = stats[bn]
            if not n:
                continue
            mean = total / n
            var = (squares / n - mean * mean).clamp_min(0) * n / max(n - 1, 1)
            scale = torch.sqrt(var + bn.eps)  # of the conv's output, per channel
            # before: bn(y) = y + b (identity BN carrying the bias b); after: y' = y / scale and
            # bn(y') = (y' - mean / scale) * scale + b + mean = y + b, with unit-variance y'
            conv.weight.div_(scale.float().view(-1, *([1] * (conv.weight.dim() - 1))))
            bn.running_mean.copy_((mean / scale).float())
            bn.running_var.fill_(1 - bn.eps)
            bn.weight.copy_(scale.float())
            bn.bias.add_(mean.float())


def parity(model: nn.Module, onnx_model, size: int, channels: int = 3, temperature: float = 1.0,
           seed: int = 0) -> float:
    """Largest difference of the probabilities of ``model`` (eval mode, wrapped as the export
    wraps it, with the export's in-graph ``temperature``) and ONNX Runtime running ``onnx_model``
    on random input at ``size``."""
    import onnxruntime as ort

    from .export import _Deployable, _example

    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    uint8 = sess.get_inputs()[0].type == "tensor(uint8)"  # export --uint8-input: raw NHWC pixels
    input_format = "uint8_nhwc" if uint8 else "float_nchw"
    x = _example(input_format, 2, channels, size, seed)
    if not uint8:
        x = x.clamp(-2.5, 2.5)
    deployable = _Deployable(model, input_format=input_format, channels=channels, size=size,
                             temperature=temperature)
    with torch.no_grad():
        got = deployable.eval()(x).numpy()
    ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    if ref.shape != got.shape:
        raise ModelError(f"the ONNX file outputs {ref.shape}, the rebuilt model {got.shape} at {size}x{size}")
    return float(np.abs(ref - got).max())


def parity_size(spec: ModelSpec) -> int:
    """A side the network runs at for the parity check: the spec's size when the graph's input is
    fixed, else a multiple of 32 near it (smaller: cheaper)."""
    if spec.aspect == "keep":
        return max(64, min(spec.input_size) // 2 // 32 * 32)
    return spec.input_size[0]


def recover(spec: ModelSpec, calibration: list | None = None, size: int | None = None,
            tolerance: float = PARITY_TOLERANCE) -> tuple[nn.Module, dict]:
    """The torch model inside ``spec``'s ONNX file and a report (convs matched, parity).

    ``spec`` must name an architecture cleancut trains and carry its ``arch_kwargs`` (every spec
    ``cleancut export`` writes does); a peer's model (U2-Net, a hand-made graph) is refused with
    a :class:`ModelError`. ``calibration``: photos (pairs) to measure BatchNorm statistics on
    (see :func:`calibrate_bn`); without them each BatchNorm is the identity plus its bias, exact
    in eval mode. ``size``: the side of the parity check (default :func:`parity_size`)."""
    import onnx

    from . import archs

    arch = spec.architecture
    kwargs = spec.extra.get("arch_kwargs")
    if arch not in archs.available() or not isinstance(kwargs, dict):
        raise ModelError(
            f"model '{spec.name}' cannot be fine-tuned: its spec names architecture {arch!r}"
            + ("" if isinstance(kwargs, dict) else " and no arch_kwargs")
            + f"; weights can be recovered from models cleancut exported ({', '.join(archs.available())}) only, "
            "for example cleancut-default")
    if spec.input_format == "float_nchw" and (spec.input_scale != "unit" or spec.output_norm != "none"):
        raise ModelError(f"model '{spec.name}' cannot be fine-tuned: its input or output is not the one "
                         "cleancut exports (input_scale unit, output_norm none)")
    spec.verify()
    channels = spec.channels
    try:
        model = archs.build(arch, in_channels=channels, **kwargs).eval()
    except Exception as exc:  # ConfigError for bad kwargs, anything else from a foreign spec
        raise ModelError(f"model '{spec.name}': architecture {arch!r} cannot be built with {kwargs} ({exc})") from None
    size = size or parity_size(spec)
    source = onnx.load(str(spec.path))
    quantized = is_quantized(source.graph)
    floating = dequantized(source)
    temperature = float(spec.extra.get("output_temperature", 1.0))  # cleancut export --temperature
    matched = load_weights(model, floating, size, channels)
    if calibration:
        calibrate_bn(model, calibration, size, grayscale=channels == 1)
    try:
        diff = parity(model, floating, size, channels, temperature)
    except ModelError:
        raise
    except Exception as exc:  # ONNX Runtime refusing the size of a fixed-size graph, for one
        raise ModelError(f"model '{spec.name}': the parity check could not run ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None
    report = {"convs": matched, "size": size, "max_abs_diff": diff, "quantized": quantized}
    if diff > tolerance:
        raise ModelError(f"model '{spec.name}': the weights rebuilt from {spec.path.name} differ from the ONNX "
                         f"file by {diff:.2e} (tolerance {tolerance:.0e}); it was not exported from "
                         f"{arch} {kwargs}, so it cannot be fine-tuned")
    if quantized:  # how far the shipped int8 file is from the float network it approximates
        report["int8_max_abs_diff"] = parity(model, source, size, channels, temperature)
    return model, report


def checkpoint_from_spec(spec: ModelSpec, model: nn.Module, report: dict, size: int) -> dict:
    """A checkpoint of the recovered model that :class:`~cleancut.train.loop.Trainer` (``init``),
    ``cleancut export`` and ``cleancut evaluate`` read: the weights and a config naming the
    architecture, its kwargs and the training ``size``."""
    from .config import Config

    cfg = Config(name=f"{spec.name}-recovered")
    cfg.model.arch = spec.architecture
    cfg.model.kwargs = dict(spec.extra.get("arch_kwargs") or {})
    cfg.data.size = size
    cfg.data.grayscale = spec.channels == 1
    return {"config": cfg.to_dict(), "model": model.state_dict(), "source": str(spec.path),
            "source_sha256": spec.sha256, "recovery": report, "epoch": 0, "history": []}


def spec_for_file(onnx_path: str | Path, arch: str, kwargs: dict) -> ModelSpec:
    """A spec for an ONNX file given by hand (the tool's --arch and --kwargs), when the file's own
    spec is absent or lacks them."""
    from ..models import load_spec, spec_from_dict

    path = Path(onnx_path)
    try:
        spec = load_spec(path)
        data = spec.to_json()
    except ModelError:
        data = {"name": path.stem, "file": str(path.resolve()), "input_size": [256, 256]}
    data.update(architecture=arch, arch_kwargs=kwargs, file=str(path.resolve()), sha256=None)
    return spec_from_dict(data, path.parent)
