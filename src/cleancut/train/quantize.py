"""Quantised variants of an exported cleancut model, made with ONNX Runtime's own tooling: int8
static (QDQ, calibrated on photos), int8 dynamic and fp16 weights.

``benchmarks/quantize.py`` makes and scores them all; :func:`quantize_int8` is the recipe the
shipped ``cleancut-default`` was made with (static int8, uint8 activations, 7-bit weights but for
the depthwise convolutions, the network only), which ``cleancut finetune`` applies to its models.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime as ort
from onnxruntime import quantization as q
from PIL import Image

from .. import datasets
from ..errors import ModelError
from ..models import ModelSpec, file_sha256, get_model
from ..preprocess import to_input


class Calibration(q.CalibrationDataReader):
    """Preprocessed training images, one per batch, exactly as the runtime feeds them."""

    def __init__(self, spec: ModelSpec, pairs: list[datasets.Pair]):
        self.spec, self.pairs, self.i = spec, pairs, 0

    def get_next(self):
        if self.i >= len(self.pairs):
            return None
        with Image.open(self.pairs[self.i].image) as im:
            x = to_input(im.convert("RGB"), self.spec)[None]
        self.i += 1
        return {self.spec.input_name: x}

    def rewind(self):
        self.i = 0


def write_variant(spec: ModelSpec, model_path: Path, tag: str, made_by: str = "benchmarks/quantize.py") -> ModelSpec:
    """A JSON spec beside ``model_path`` (fp32 spec, new name/file/sha256) and the loaded spec."""
    data = spec.to_json()
    for key in ("metrics", "parity"):  # figures of the fp32 export, not of this file
        data.pop(key, None)
    data.update(name=f"{spec.name}-{tag}", file=model_path.name, sha256=file_sha256(model_path),
                description=f"{spec.name} ({tag}, made by {made_by})",
                source_sha256=file_sha256(spec.path))
    model_path.with_suffix(".json").write_text(json.dumps(data, indent=1))
    return get_model(model_path)


VARIANTS = ("int8-static-u8", "int8-static-s8", "int8-dynamic", "fp16")

#: operators that only move or copy values, which ONNX Runtime runs faster on 8-bit levels: Pad
#: with a constant of 0 pads with the zero point, exactly what dequantising, padding and
#: quantising again with the same scale and zero point gives. (Linear Resize is not among them:
#: ONNX Runtime's uint8 Resize took 6.0 ms where the float one with its conversions took 3.2.)
_MOVES = ("Pad",)


def fold_qdq_moves(model: onnx.ModelProto) -> int:
    """Let ONNX Runtime run an int8 QDQ graph's data movement on 8-bit levels: returns how many
    nodes were changed.

    * A ``Shape`` that reads a ``DequantizeLinear``'s output reads its input instead (the same
      shape). Otherwise that float tensor must exist only to be measured, which keeps the
      dequantisation and blocks its fusion with the next operator (in LiteFPN, ``upsample_like``'s
      target size: a float copy of a full-resolution map per photo).
    * ``DequantizeLinear -> Pad -> QuantizeLinear`` with one scale and zero point on both sides
      (the explicit padding before each stride-2 convolution) pads the 8-bit tensor itself with
      the zero point; the dequantisation stays only where something else reads its float output.
      ONNX Runtime leaves the padding in float otherwise."""
    from onnx import numpy_helper

    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def consumers(name):
        return [n for n in graph.node if name in n.input]

    changed = 0
    for node in graph.node:
        if node.op_type == "Shape" and node.input and getattr(producer.get(node.input[0]), "op_type", "") == \
                "DequantizeLinear":
            node.input[0] = producer[node.input[0]].input[0]
            changed += 1
    drop, now_8bit = [], set()
    for node in graph.node:
        if node.op_type not in _MOVES:
            continue
        dq = producer.get(node.input[0])
        after = consumers(node.output[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        qn = after[0]
        scales = [consts.get(n.input[1]) for n in (dq, qn)]
        zeros = [consts.get(n.input[2]) if len(n.input) > 2 else None for n in (dq, qn)]
        if any(v is None for v in scales + zeros) or scales[0].shape != () or not (
                scales[0] == scales[1] and zeros[0] == zeros[1] and zeros[0].dtype == zeros[1].dtype):
            continue
        if node.op_type == "Pad":
            mode = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"constant")
            value = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if mode != b"constant" or (value is not None and float(value) != 0.0):
                continue
            pad_value = f"{node.name}_zero_point"
            graph.initializer.append(numpy_helper.from_array(zeros[0].reshape(()), pad_value))
            inputs = list(node.input) + [""] * (3 - len(node.input))
            inputs[2] = pad_value
            del node.input[:]
            node.input.extend(inputs)
        node.input[0] = dq.input[0]
        for later in consumers(qn.output[0]):
            for k, name in enumerate(later.input):
                if name == qn.output[0]:
                    later.input[k] = node.output[0]
        for out in graph.output:
            if out.name == qn.output[0]:
                out.name = node.output[0]
        drop.append(qn)
        if not consumers(dq.output[0]):  # else others still read the float tensor
            drop.append(dq)
        now_8bit.add(node.output[0])
        changed += 1
    for n in drop:
        graph.node.remove(n)
    stale = [v for v in graph.value_info if v.name in now_8bit]  # recorded as float by shape inference
    for v in stale:
        graph.value_info.remove(v)
    return changed


def outside_network(path: Path) -> list[str]:
    """Names of the nodes ``cleancut export`` put around the network (its graph names the network's
    own nodes ``/net/...``): the uint8 prologue, the resize to the input size, the temperature and
    the sigmoid."""
    return [n.name for n in onnx.load(str(path)).graph.node if not n.name.startswith("/net/")]


def depthwise_weights(path: Path) -> list[str]:
    """The weight initialisers of the depthwise convolutions (``group`` > 1) of an ONNX graph."""
    names = []
    for node in onnx.load(str(path)).graph.node:
        group = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1:
            names.append(node.input[1])
    return names


def make_variants(spec: ModelSpec, calib: list[datasets.Pair], out: Path, reduce_range: bool = False,
                  only: tuple[str, ...] = VARIANTS, network_only: bool = False,
                  full_range_depthwise: bool = False, made_by: str = "benchmarks/quantize.py") -> dict[str, ModelSpec | str]:
    """Each variant's spec (those named in ``only``), or the error text when ONNX Runtime's tooling
    could not make it. ``network_only``: the static variants leave the nodes around the network in
    float (see :func:`outside_network`), so the output probability is not rounded to 8 bits.
    ``full_range_depthwise``: with ``reduce_range``, the depthwise convolutions' weights keep all 8
    bits (per channel): ONNX Runtime's depthwise kernels widen both operands to 16 bits before
    multiplying, so only the GEMM-based convolutions can saturate on x86 CPUs without VNNI."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / spec.name
    pre = Path(f"{stem}-pre.onnx")
    q.quant_pre_process(str(spec.path), str(pre))  # shape inference + graph cleanup, as ORT advises
    exclude = outside_network(pre) if network_only else []
    extra = {}
    if reduce_range and full_range_depthwise:
        extra["TensorQuantOverrides"] = {w: [{"reduce_range": False, "axis": 0}] for w in depthwise_weights(pre)}

    def static(activations):
        return lambda dst: q.quantize_static(
            str(pre), str(dst), Calibration(spec, calib), quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=activations, weight_type=q.QuantType.QInt8, reduce_range=reduce_range,
            nodes_to_exclude=exclude, extra_options=extra)

    makers = {  # u8 activations: ORT fuses every QDQ conv into QLinearConv on x86; s8: only some
        "int8-static-u8": static(q.QuantType.QUInt8),
        "int8-static-s8": static(q.QuantType.QInt8),
        "int8-dynamic": lambda dst: q.quantize_dynamic(
            str(pre), str(dst), per_channel=True, weight_type=q.QuantType.QInt8, reduce_range=reduce_range),
        "fp16": lambda dst: onnx.save(_fp16(spec.path), str(dst)),
    }
    variants: dict[str, ModelSpec | str] = {"fp32": spec}
    for tag, make in makers.items():
        if tag not in only:
            continue
        dst = Path(f"{stem}-{tag}.onnx")
        try:
            make(dst)
            if tag.startswith("int8-static"):
                model = onnx.load(str(dst))
                if fold_qdq_moves(model):
                    onnx.save(model, str(dst))
            ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])  # does ORT run it?
            variants[tag] = write_variant(spec, dst, tag, made_by)
        except Exception as exc:  # report and go on: each tool may reject this graph
            variants[tag] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return variants


def _fp16(path: Path) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)


#: how the shipped cleancut-default was quantised (its spec's "weights" field)
SHIPPED_RECIPE = ("benchmarks/quantize.py --variants int8-static-u8 --reduce-range --full-range-depthwise "
                  "--network-only")


def quantize_int8(spec: ModelSpec, calib: list[datasets.Pair], out: Path, made_by: str) -> ModelSpec:
    """``spec``'s model as static int8 the way the shipped model was made (:data:`SHIPPED_RECIPE`),
    calibrated on ``calib``; written into the folder ``out``. A ModelError when ONNX Runtime's
    tooling cannot make it."""
    made = make_variants(spec, calib, out, reduce_range=True, only=("int8-static-u8",), network_only=True,
                         full_range_depthwise=True, made_by=made_by)["int8-static-u8"]
    if isinstance(made, str):
        raise ModelError(f"int8 quantisation of {spec.name} failed: {made}")
    return made
