"""Export a checkpoint to ONNX + JSON spec, and check ONNX Runtime against torch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError
from ..models import file_sha256, spec_from_dict
from .checkpoint import load, model_from_checkpoint
from .data import MEAN, STD
from .losses import main_output


INPUT_FORMATS = ("float_nchw", "uint8_nhwc")


class _Deployable(torch.nn.Module):
    """Wraps a trained network into the ONNX contract: image in, probability out. The image is
    normalised float ``[N, C, H, W]``, or (``uint8_nhwc``) the raw pixels ``[N, H, W, C]``, which the
    graph itself scales and normalises: the runtime then does no float work in numpy.

    ``temperature`` sharpens (below 1) the probability: ``sigmoid(logit / temperature)``. It is
    strictly increasing, so unlike the runtime's ``output_levels`` clip it never merges two
    different probabilities into 0 or 1: a threshold sweep (maxF) sees the same ordering."""

    def __init__(self, net: torch.nn.Module, input_format: str = "float_nchw", channels: int = 3, size: int = 0,
                 temperature: float = 1.0, keep_aspect: bool = False):
        super().__init__()
        self.net = net
        self.temperature = float(temperature)
        # static H, W for the exporter's shape inference, unless each photo brings its own size
        self.shape = None if keep_aspect else (-1, channels, size, size)
        self.channels = channels
        self.uint8 = input_format == "uint8_nhwc"
        mean = MEAN[:channels] if channels == 3 else [float(np.mean(MEAN))]
        std = STD[:channels] if channels == 3 else [float(np.mean(STD))]
        # x / 255 then (x - mean) / std, folded into one multiply-add
        scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, -1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, -1, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, image):
        if self.uint8:
            image = image.permute(0, 3, 1, 2)
            # the reshape (a no-op) keeps ONNX Runtime from moving the transpose after the
            # normalisation, where the per-channel multiply-add would run on NHWC (3x slower)
            image = image.reshape(self.shape if self.shape is not None else (-1, self.channels, *image.shape[2:]))
            image = image.float() * self.scale + self.shift
        logits = main_output(self.net(image))
        if logits.shape[-2:] != image.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        if self.temperature != 1.0:
            logits = logits * (1.0 / self.temperature)
        return torch.sigmoid(logits)


FP16_TOLERANCE = 2e-3  # parity bound for fp16-stored weights (their rounding moves probabilities ~1e-3)


def export_onnx(checkpoint: str | Path, out: str | Path, name: str | None = None, size: int | None = None,
                opset: int = 17, tolerance: float | None = None, extra: dict | None = None,
                input_format: str = "float_nchw", fp16_weights: bool = False, temperature: float = 1.0,
                keep_aspect: bool = False) -> dict:
    """Write ``out`` (.onnx) and its ``.json`` spec; return the parity report.

    ``fp16_weights`` stores the convolution weights as float16 (half the file) behind Cast nodes
    that ONNX Runtime folds back to float32 when it loads the model: the file shrinks, the
    computation stays float32. ``temperature`` (> 0; below 1 sharpens) divides the logits inside
    the graph; the spec records it as ``output_temperature``. ``keep_aspect`` leaves the input's
    height and width free (spec ``aspect: keep``): the runtime then runs each photo at its own
    aspect ratio with about ``size * size`` pixels; parity is checked at a square and at a
    non-square size."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ModelError(f"temperature must be a positive number (below 1 sharpens the output), got {temperature!r}")
    if tolerance is None:  # a temperature T < 1 multiplies the sigmoid's slope, and so the difference, by 1/T
        tolerance = (FP16_TOLERANCE if fp16_weights else 1e-4) / min(1.0, temperature)
    if input_format not in INPUT_FORMATS:
        raise ModelError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
    ckpt = load(checkpoint)
    net, cfg = model_from_checkpoint(ckpt)
    size = size or cfg.data.size
    channels = 1 if cfg.data.grayscale else 3
    model = _Deployable(net, input_format, channels, size, temperature, keep_aspect).eval()
    for module in net.modules():  # blocks that bake the export size into the graph unless told not to
        if hasattr(module, "free_size"):
            module.free_size = keep_aspect
    out = Path(out)
    if out.suffix != ".onnx":
        raise ModelError(f"export target {out}: expected a file name ending in .onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = _example(input_format, 1, channels, size)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hw = (1, 2) if input_format == "uint8_nhwc" else (2, 3)
            free = {hw[0]: "height", hw[1]: "width"} if keep_aspect else {}
            torch.onnx.export(model, (dummy,), str(tmp), input_names=["image"], output_names=["alpha"],
                              dynamic_axes={"image": {0: "batch", **free},
                                            "alpha": {0: "batch", **({2: "height", 3: "width"} if keep_aspect else {})}},
                              opset_version=opset, dynamo=False)
    except Exception as exc:  # the exporter raises many types; say which model and size failed
        tmp.unlink(missing_ok=True)
        raise ModelError(f"ONNX export of {cfg.model.arch} at {size}x{size} failed: {str(exc).splitlines()[0]} "
                         "(cutnet and litefpn need a multiple of 32)") from None
    if fp16_weights:
        store_weights_fp16(tmp)
    report = parity(model, tmp, channels, size, input_format=input_format)
    if keep_aspect:  # and at a landscape size of about the same pixel count
        shape = (max(32, size * 3 // 4 // 32 * 32), size * 4 // 3 // 32 * 32 + 32)
        try:
            wide = parity(model, tmp, channels, shape, input_format=input_format)
        except Exception as exc:  # torch or ONNX Runtime refusing the shape: the graph is not size-free
            tmp.unlink(missing_ok=True)
            raise ModelError(f"{cfg.model.arch} exported with --keep-aspect does not run at {shape[0]}x{shape[1]} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); export it without "
                             "--keep-aspect") from None
        report = {**report, "max_abs_diff": max(report["max_abs_diff"], wide["max_abs_diff"]),
                  "size_wide": wide["size"]}
    report["weights"] = "fp16" if fp16_weights else "fp32"
    if report["max_abs_diff"] > tolerance:
        tmp.unlink()
        raise ModelError(f"ONNX export of {checkpoint} differs from torch by {report['max_abs_diff']:.2e} "
                         f"(tolerance {tolerance:.0e}); the file was not written")
    tmp.replace(out)
    spec = {
        "name": name or out.stem, "file": out.name, "sha256": file_sha256(out), "architecture": cfg.model.arch,
        "arch_kwargs": cfg.model.kwargs, "input_size": [size, size], "channels": channels,
        "mean": list(MEAN[:channels]) if channels == 3 else [float(np.mean(MEAN))],
        "std": list(STD[:channels]) if channels == 3 else [float(np.mean(STD))],
        "input_name": "image", "output_name": "alpha", "input_format": input_format,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "training": {"data": cfg.data.roots, "train_split": cfg.data.train_split, "epochs": ckpt.get("epoch"),
                     "config": cfg.to_dict()},
        "metrics": ckpt["history"][-1] if ckpt.get("history") else {},
        "parity": report,
        "licence": "Apache-2.0 (weights trained by cleancut; see MODEL_CARD.md for the training data terms)",
        **({"output_temperature": temperature} if temperature != 1.0 else {}),
        **({"aspect": "keep", "size_multiple": 32} if keep_aspect else {}),
        **(extra or {}),
    }
    spec_from_dict(spec, out.parent)  # validates the spec against the registry's schema
    out.with_suffix(".json").write_text(json.dumps(spec, indent=1))
    return report


def _example(input_format: str, batch: int, channels: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A random input; ``size`` is a side or ``(height, width)``."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    if input_format == "uint8_nhwc":
        return torch.from_numpy(rng.integers(0, 256, (batch, h, w, channels), dtype=np.uint8))
    return torch.from_numpy(rng.standard_normal((batch, channels, h, w)).astype(np.float32))


def parity(model: torch.nn.Module, onnx_path: Path, channels: int, size: int | tuple[int, int], batch: int = 2,
           seed: int = 0, input_format: str = "float_nchw") -> dict:
    import onnxruntime as ort

    x = _example(input_format, batch, channels, size, seed)
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(["alpha"], {"image": x.numpy()})[0]
    return {"max_abs_diff": float(np.abs(got - ref).max()), "batch": batch,
            "size": size if isinstance(size, int) else list(size), "input": input_format}


def store_weights_fp16(path: Path, min_elements: int = 256) -> int:
    """Rewrite the ONNX file so that every Conv weight of at least ``min_elements`` is stored as
    float16 and cast back to float32 by a Cast node (constant-folded by ONNX Runtime at load).
    Returns the number of weights converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    conv_weights = {n.input[1] for n in graph.node if n.op_type == "Conv" and len(n.input) > 1}
    casts, converted = [], 0
    for init in list(graph.initializer):
        if init.name not in conv_weights or init.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(init)
        if array.size < min_elements:
            continue
        half = numpy_helper.from_array(array.astype(np.float16), f"{init.name}__fp16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__cast"))
        converted += 1
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return converted
