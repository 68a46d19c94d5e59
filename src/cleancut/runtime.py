"""ONNX Runtime session for a registered model: images in, alpha masks out. numpy + Pillow only.

The network runs at its own resolution (``spec.input_size``); only the predicted mask is scaled
back to each image's size, so memory stays bounded whatever the photo size.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image

from .errors import ConfigError, ModelError
from .models import ModelSpec, get_model
from .edges import EdgeRefiner, finish_edges, resolve_stage
from .preprocess import network_size, to_input

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """The providers to use: ``requested`` (checked against what this ONNX Runtime offers), or
    CUDA then CPU when CUDA is available, else CPU."""
    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ConfigError(
                f"execution provider(s) {', '.join(missing)} are not available in this ONNX "
                f"Runtime build; available: {', '.join(available)}. Install the matching "
                "onnxruntime package (e.g. onnxruntime-gpu for CUDA) or choose from the list.")
        return list(requested)
    return [CUDA, CPU] if CUDA in available else [CPU]


class Session:
    """One ONNX Runtime inference session for one model. ``predict`` is thread-safe."""

    def __init__(self, model: ModelSpec | str | Path | None = None,
                 providers: Sequence[str] | None = None, threads: int | None = None,
                 batch_size: int = 8, spinning: bool = True):
        self.spec = model if isinstance(model, ModelSpec) else get_model(model)
        self.spec.verify()
        self.providers = choose_providers(providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; ORT warnings are noise for users
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if not spinning:  # idle threads sleep instead of spinning: kinder to a CPU shared with other jobs
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(self.spec.path), sess_options=options,
                                                 providers=self.providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise ModelError(
                f"model '{self.spec.name}': ONNX Runtime cannot load {self.spec.path} "
                f"({type(exc).__name__}: {exc}). Re-export the model.") from exc
        self._check_signature()
        self.batch_size = max(1, int(batch_size)) if self._batch_dim is None else self._batch_dim
        self._threads, self._refiner, self._refiner_lock = threads, None, threading.Lock()

    def _check_signature(self) -> None:
        spec = self.spec
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if spec.input_name not in inputs or spec.output_name not in outputs:
            raise ModelError(
                f"model '{spec.name}': the spec expects input '{spec.input_name}' and output "
                f"'{spec.output_name}'; the ONNX file has inputs {sorted(inputs)} and outputs "
                f"{sorted(outputs)}. Fix input_name/output_name in the JSON spec or re-export.")
        shape = inputs[spec.input_name].shape
        if len(shape) != 4:
            raise ModelError(f"model '{spec.name}': expected a 4-D input [N, C, H, W], the ONNX "
                             f"input '{spec.input_name}' has shape {shape}.")
        expected = (spec.channels, spec.input_size[0], spec.input_size[1])
        names = ("channels", "height", "width")
        if spec.input_format == "uint8_nhwc":
            expected, names = expected[1:] + expected[:1], names[1:] + names[:1]
        if spec.aspect == "keep":
            fixed = [what for got, what in zip(shape[1:], names) if what != "channels" and isinstance(got, int)]
            if fixed:
                raise ModelError(
                    f"model '{spec.name}': the spec says aspect 'keep' (a size per photo), but the ONNX input "
                    f"has a fixed {' and '.join(fixed)} (shape {shape}). Export with --keep-aspect, or set "
                    "aspect to 'stretch' in the JSON spec.")
        for got, want, what in zip(shape[1:], expected, names):
            if spec.aspect == "keep" and what != "channels":
                continue
            if isinstance(got, int) and got != want:
                raise ModelError(
                    f"model '{spec.name}': the spec says {what} {want}, the ONNX input has {got} "
                    f"(shape {shape}). The JSON spec does not belong to this ONNX file.")
        self._batch_dim = shape[0] if isinstance(shape[0], int) else None

    def predict(self, images: Sequence[Image.Image], edges: str = "auto") -> list[np.ndarray]:
        """Alpha masks (float32 HxW in [0, 1], each at its image's size) for RGB images, brought
        to each photo by the edge stage ``edges`` (:data:`cleancut.edges.EDGE_STAGES`)."""
        stage = resolve_stage(edges, self.spec)
        refiner = self.edge_refiner() if stage == "learned" else None
        results: list[np.ndarray | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}  # with aspect 'keep', photos differ in network size
        for i, image in enumerate(images):
            by_size.setdefault(network_size(self.spec, image.size), []).append(i)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                inputs = np.stack([to_input(images[i], self.spec) for i in chunk])
                out = self.run_batch(inputs)
                for i, alpha, given in zip(chunk, out, inputs):
                    results[i] = finish_edges(alpha, images[i], self.spec, stage, refiner, network_input=given)
        return results

    def edge_refiner(self) -> EdgeRefiner:
        """The model's learned edge stage, loaded on first use (a ConfigError when it has none)."""
        with self._refiner_lock:
            if self._refiner is None:
                resolve_stage("learned", self.spec)
                self._refiner = EdgeRefiner(self.spec.edge_refiner, threads=self._threads, providers=self.providers)
            return self._refiner

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, H, W]`` for a preprocessed batch (see :func:`preprocess.to_input`)."""
        spec = self.spec
        n = batch.shape[0]
        batch = batch.astype(np.uint8 if spec.input_format == "uint8_nhwc" else np.float32, copy=False)
        fixed = self._batch_dim
        if fixed is not None and n != fixed:  # a model exported with a fixed batch size: chunk and pad
            parts = []
            for start in range(0, n, fixed):
                part = batch[start:start + fixed]
                if len(part) < fixed:
                    part = np.concatenate([part, np.zeros((fixed - len(part),) + part.shape[1:], part.dtype)])
                parts.append(self.run_batch(part))
            return np.concatenate(parts)[:n]
        try:
            (out,) = self._session.run([spec.output_name], {spec.input_name: batch})
        except Exception as exc:  # ORT's own exception types
            raise ModelError(
                f"model '{spec.name}': inference failed ({type(exc).__name__}: {exc}). The ONNX "
                f"file does not follow the contract (input {spec.input_format}, {spec.channels} channels).") from exc
        out = np.asarray(out, np.float32)
        if out.ndim == 4 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 3 or out.shape[0] != batch.shape[0]:
            raise ModelError(
                f"model '{spec.name}': expected output '{spec.output_name}' of shape [N, 1, H, W] "
                f"with N={batch.shape[0]}, got {list(out.shape)}. Re-export the model.")
        out = np.nan_to_num(out, nan=0.0)
        if spec.output_norm == "minmax":
            lo_, hi_ = out.min(axis=(1, 2), keepdims=True), out.max(axis=(1, 2), keepdims=True)
            out = (out - lo_) / np.maximum(hi_ - lo_, 1e-6)
        out = np.clip(out, 0.0, 1.0)
        lo, hi = spec.output_levels
        if (lo, hi) != (0.0, 1.0):
            out = np.clip((out - lo) / (hi - lo), 0.0, 1.0)
        return out
