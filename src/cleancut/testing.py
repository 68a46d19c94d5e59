"""Helpers for tests, fuzz targets and benchmarks: a tiny, deterministic ONNX model built with
``onnx.helper`` (no torch; needs the ``onnx`` package of the ``train`` extra), test pictures, and
multipart bodies built by hand. Nothing in cleancut imports this module.

The graph follows the cleancut ONNX contract and computes, per pixel,

    alpha = sigmoid(gain * (mean over channels of the un-normalised input - 0.5))

i.e. it undoes the spec's mean/std normalisation (so a runtime that forgets to normalise gets a
wrong mask) and calls bright pixels foreground: a white square on a black background gives
alpha ~ 1 on the square and ~ 0 elsewhere. The batch dimension is dynamic unless ``batch`` is set.

Command line (writes ``<folder>/<name>.onnx`` and ``.json``, prints the .onnx path)::

    python -m cleancut.testing /tmp/tiny-model [--name tiny] [--size 64]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .models import ModelSpec, file_sha256

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GAIN = 40.0


def build_model_proto(input_size=(32, 32), channels: int = 3, gain: float = GAIN, batch: int | None = None,
                      input_name: str = "image", output_name: str = "alpha", dynamic_size: bool = False):
    """The ``onnx.ModelProto`` of the tiny model (with ``dynamic_size``, it takes any height and
    width, as a model that keeps the photo's aspect does)."""
    import onnx
    from onnx import TensorProto, helper

    h, w = ("H", "W") if dynamic_size else input_size
    mean = MEAN[:channels] if channels == 3 else (float(np.mean(MEAN)),)
    std = STD[:channels] if channels == 3 else (float(np.mean(STD)),)
    n = batch if batch is not None else "N"

    def const(name, values, shape):
        return helper.make_tensor(name, TensorProto.FLOAT, shape, np.asarray(values, np.float32).ravel().tolist())

    nodes = [
        helper.make_node("Mul", [input_name, "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["pixels"]),  # back to [0, 1]
        helper.make_node("ReduceMean", ["pixels"], ["brightness"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["brightness", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "cleancut_tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [n, channels, h, w])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [n, 1, h, w])],
        initializer=[const("std", std, [1, channels, 1, 1]), const("mean", mean, [1, channels, 1, 1]),
                     const("half", [0.5], []), const("gain", [gain], [])],
    )
    model = helper.make_model(graph, producer_name="cleancut-tests",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_tiny_refiner(path: str | Path, channel: int = 3, input_name: str = "x", output_name: str = "alpha",
                       tile: int = 8, margin: int = 4, max_side: int = 64):
    """Write a tiny learned edge stage (:mod:`cleancut.edges`) to ``path`` and return its
    :class:`~cleancut.models.RefinerSpec`: it answers one channel of its input, 3 (the alpha it was
    given: the network's alpha passes through) or 0 (the photo's red, scaled to [0, 1])."""
    import onnx
    from onnx import TensorProto, helper

    from .models import RefinerSpec

    path = Path(path)
    consts = [helper.make_tensor(n, TensorProto.INT64, [1], [v])
              for n, v in (("starts", channel), ("ends", channel + 1), ("axes", 1))]
    graph = helper.make_graph(
        [helper.make_node("Slice", [input_name, "starts", "ends", "axes"], [output_name])], "cleancut_tiny_refiner",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["n", 4, "h", "w"])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["n", 1, "h", "w"])], consts)
    model = helper.make_model(graph, producer_name="cleancut-tests", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return RefinerSpec(file=path.name, sha256=file_sha256(path), tile=tile, margin=margin, max_side=max_side,
                       batch=5, folder=str(path.parent))


def write_tiny_model(folder: str | Path, name: str = "tiny", input_size=(32, 32), channels: int = 3,
                     gain: float = GAIN, batch: int | None = None, with_sha: bool = True,
                     edge_refiner: bool = True, aspect: str = "stretch", size_multiple: int = 32) -> Path:
    """Write ``<folder>/<name>.onnx`` plus its JSON spec (via ModelSpec.to_json); returns the .onnx
    path. With ``edge_refiner``, the spec names a tiny learned edge stage that passes the
    network's alpha through (:func:`write_tiny_refiner`, ``<name>-edges.onnx``). With ``aspect=
    "keep"`` the model runs each photo at its own aspect ratio with about ``input_size``'s pixel
    count, sides multiples of ``size_multiple`` (as the shipped models do)."""
    import onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{name}.onnx"
    onnx.save(build_model_proto(input_size, channels, gain, batch, dynamic_size=aspect == "keep"), str(onnx_path))
    mean = MEAN if channels == 3 else (float(np.mean(MEAN)),)
    std = STD if channels == 3 else (float(np.mean(STD)),)
    spec = ModelSpec(name=name, file=onnx_path.name, input_size=tuple(input_size), architecture="tiny-test",
                     channels=channels, mean=mean, std=std,
                     sha256=file_sha256(onnx_path) if with_sha else None, licence="Apache-2.0",
                     aspect=aspect, size_multiple=size_multiple,
                     description="brightness threshold; for tests only")
    data = spec.to_json()
    if edge_refiner:
        data["edge_refiner"] = write_tiny_refiner(folder / f"{name}-edges.onnx").to_json()
    (folder / f"{name}.json").write_text(json.dumps(data, indent=2))
    return onnx_path


def expected_alpha(rgb: np.ndarray, gain: float = GAIN) -> np.ndarray:
    """What the tiny model computes for an image already at its input size (float32 HxW)."""
    brightness = np.asarray(rgb, np.float32).reshape(rgb.shape[0], rgb.shape[1], -1).mean(axis=2) / 255.0
    return (1.0 / (1.0 + np.exp(-gain * (brightness - 0.5)))).astype(np.float32)


def square_image(size=(64, 48), box=None, fg=255, bg=0, mode: str = "RGB") -> Image.Image:
    """A ``fg`` rectangle (default: the centre half) on a ``bg`` background, ``size=(w, h)``."""
    w, h = size
    box = box or (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    arr = np.full((h, w), bg, np.uint8)
    arr[box[1]:box[3], box[0]:box[2]] = fg
    img = Image.fromarray(arr, "L")
    return img if mode == "L" else img.convert(mode)


#: what write_bad_images writes, and a phrase the error for each must contain
BAD_IMAGES = [("empty.png", "empty file"), ("text.jpg", "found text"), ("truncated.png", "truncated"),
              ("corrupt.webp", "corrupt.webp"), ("big.png", "above the limit")]


def write_bad_images(folder: str | Path) -> list[tuple[str, str]]:
    """Inputs that must fail one by one (with ``max_pixels=10_000`` for ``big.png``): an empty
    file, text named .jpg, a truncated PNG, a corrupt WebP, a 200x200 image. Returns
    :data:`BAD_IMAGES`."""
    import io
    import os

    folder = Path(folder)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("hello")
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[:400])
    (folder / "corrupt.webp").write_bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 " + os.urandom(40))
    square_image((200, 200)).save(folder / "big.png")
    return BAD_IMAGES


# -- multipart/form-data bodies built by hand, so that tests, the upload fuzz target and the soak test
# can send exactly what a client might: any field names, file names (quotes, separators, line
# breaks ...), content types and bytes.

BOUNDARY = "cleancutBoundary7MA4YWxk"


def write_y4m(path: str | Path, frames, rate: int = 30) -> Path:
    """A Y4M clip (4:2:0, what Chromium's fake camera plays, looping) of RGB frames (HxWx3 uint8,
    even sides, all the same size)."""
    path = Path(path)
    with open(path, "wb") as fh:
        for k, rgb in enumerate(frames):
            h, w, _ = rgb.shape
            if k == 0:
                fh.write(f"YUV4MPEG2 W{w} H{h} F{rate}:1 Ip A1:1 C420jpeg\n".encode())
            x = rgb.astype(np.float32)
            y = 16 + 0.257 * x[..., 0] + 0.504 * x[..., 1] + 0.098 * x[..., 2]
            u = 128 - 0.148 * x[..., 0] - 0.291 * x[..., 1] + 0.439 * x[..., 2]
            v = 128 + 0.439 * x[..., 0] - 0.368 * x[..., 1] - 0.071 * x[..., 2]
            planes = [y] + [c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v)]
            fh.write(b"FRAME\n" + b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes))
    return path


def form_data(parts: list[tuple[str, str | bytes | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """The body for ``parts``: ``(field name, file name or None for a text field, data)``. A
    file name given as bytes is sent as it is (hostile names); as str it is UTF-8 encoded."""
    out = b""
    for name, filename, data in parts:
        head = f'Content-Disposition: form-data; name="{name}"'.encode()
        if filename is not None:
            raw = filename if isinstance(filename, bytes) else filename.encode()
            head += b'; filename="' + raw + b'"\r\nContent-Type: application/octet-stream'
        out += f"--{boundary}\r\n".encode() + head + b"\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def content_type(boundary: str = BOUNDARY) -> str:
    return f"multipart/form-data; boundary={boundary}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the tiny test model (.onnx + .json).")
    parser.add_argument("folder")
    parser.add_argument("--name", default="tiny")
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    args = parser.parse_args(argv)
    print(write_tiny_model(args.folder, args.name, (args.size, args.size)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
