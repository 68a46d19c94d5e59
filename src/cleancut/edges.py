"""The learned edge stage: a small network that redraws the edge from the photo's own pixels.

The segmentation network sees each photo at about 416² pixels and its finest head predicts at
half that, so its edge is only placed to within a few of the photo's pixels and, stretched to the
photo, sits partly on the old background (the fringe issue 31 measures). The edge stage looks at
the photo itself, at its own resolution (up to ``max_side`` on the long side), but only where the
network is unsure: the photo is cut into tiles of ``tile`` pixels, and each tile that holds a
pixel of the uncertain band (``lo < alpha < hi``) goes through the refiner with ``margin`` pixels
of context on every side. Everywhere else the network's alpha is kept as it is.

A refiner is data, like a model: an ONNX file and a few numbers in its base model's JSON spec
(``edge_refiner``). It is trained on that model's own alphas (:mod:`cleancut.train.edges`), so
each base model names its own.

The ONNX contract: input ``x``, float32 ``[N, 4, P, P]`` with ``P = tile + 2 margin``: the photo's
RGB scaled to [0, 1] and the network's alpha (probability, resized to the working size); output
``alpha``, float32 ``[N, 1, P, P]``, the refined probability. The graph normalises its input
itself. Only each patch's central ``tile x tile`` pixels are kept, so a patch's own border (which
sees padding) never reaches the result.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import ConfigError, ModelError
from .models import RefinerSpec, file_sha256
from .options import EDGE_STAGES

INPUT_NAME = "x"
OUTPUT_NAME = "alpha"



def working_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size ``(width, height)`` the edge is redrawn at: the photo's, or shrunk to ``max_side``."""
    w, h = size
    scale = min(1.0, max_side / max(w, h))
    return (max(1, round(w * scale)), max(1, round(h * scale)))


def uncertain_tiles(alpha: np.ndarray, tile: int, band: tuple[float, float]) -> np.ndarray:
    """``(row, col)`` of every ``tile x tile`` block of ``alpha`` that holds a pixel strictly inside
    ``band`` (blocks at the right and bottom edges may be cut short)."""
    h, w = alpha.shape
    unsure = (alpha > band[0]) & (alpha < band[1])
    rows, cols = -(-h // tile), -(-w // tile)
    padded = np.zeros((rows * tile, cols * tile), bool)
    padded[:h, :w] = unsure
    return np.argwhere(padded.reshape(rows, tile, cols, tile).any(axis=(1, 3)))


class EdgeRefiner:
    """An ONNX Runtime session for one refiner (``providers``: as the model's session chose them;
    default the CPU). ``refine`` is thread-safe."""

    def __init__(self, spec: RefinerSpec, threads: int | None = None, providers=None):
        import onnxruntime as ort

        self.spec = spec
        if not spec.path.is_file():
            raise ModelError(f"edge refiner {spec.path} is missing; reinstall cleancut or re-export the model")
        if spec.sha256:
            got = file_sha256(spec.path)
            if got != spec.sha256:
                raise ModelError(f"edge refiner {spec.path}: sha256 {got[:12]}... differs from its spec's "
                                 f"{spec.sha256[:12]}...; the file is damaged or belongs to another model")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(spec.path), sess_options=options,
                                                 providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # ORT's own exception types
            raise ModelError(f"edge refiner {spec.path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from exc
        names = ([i.name for i in self._session.get_inputs()], [o.name for o in self._session.get_outputs()])
        if names != ([INPUT_NAME], [OUTPUT_NAME]):
            raise ModelError(f"edge refiner {spec.path}: expected input '{INPUT_NAME}' and output "
                             f"'{OUTPUT_NAME}', the file has {names[0]} and {names[1]}")

    def refine_at(self, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """The refined alpha (float32 ``HxW``) of ``rgb`` (uint8 ``HxWx3``) whose network alpha,
        already at ``rgb``'s size, is ``alpha`` (float ``HxW`` in [0, 1])."""
        s = self.spec
        alpha = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)
        tiles = uncertain_tiles(alpha, s.tile, s.band)
        if not len(tiles):
            return alpha
        h, w = alpha.shape
        rows, cols = -(-h // s.tile), -(-w // s.tile)
        pad = ((s.margin, rows * s.tile - h + s.margin), (s.margin, cols * s.tile - w + s.margin))
        stack = np.empty((4, h + pad[0][0] + pad[0][1], w + pad[1][0] + pad[1][1]), np.float32)
        for c in range(3):  # reflected borders: a tile at the photo's edge sees the photo, not zeros
            stack[c] = np.pad(rgb[..., c], pad, mode="reflect" if min(h, w) > s.margin else "edge")
        stack[:3] *= np.float32(1 / 255)
        stack[3] = np.pad(alpha, pad, mode="reflect" if min(h, w) > s.margin else "edge")
        out = np.zeros((rows * s.tile, cols * s.tile), np.float32)
        out[:h, :w] = alpha
        p, t, m = s.patch, s.tile, s.margin
        for start in range(0, len(tiles), s.batch):
            chunk = tiles[start:start + s.batch]
            batch = np.stack([stack[:, r * t:r * t + p, c * t:c * t + p] for r, c in chunk])
            (refined,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})
            for (r, c), patch in zip(chunk, refined[:, 0, m:m + t, m:m + t]):
                out[r * t:(r + 1) * t, c * t:(c + 1) * t] = patch
        return np.clip(out[:h, :w], 0.0, 1.0)

    def refine(self, prob: np.ndarray, photo: Image.Image) -> np.ndarray:
        """The alpha of ``photo`` (float32, at its size) from the network's probability ``prob``
        (float ``hxw`` at the network's size): resized to the working size, redrawn along the
        uncertain band, then resized to the photo (sharpened by the refiner's temperature) when
        the photo is larger than the working size."""
        from .preprocess import resize_alpha, sharpen_alpha

        size = tuple(photo.size)
        work = working_size(size, self.spec.max_side)
        rgb = photo if photo.mode == "RGB" else photo.convert("RGB")
        if work != size:
            rgb = rgb.resize(work, Image.BOX)
        refined = self.refine_at(np.asarray(rgb), resize_alpha(prob, work))
        if work == size:
            return refined
        out = resize_alpha(refined, size)
        return out if self.spec.temperature == 1.0 else sharpen_alpha(out, self.spec.temperature)


def resolve_stage(stage: str, spec) -> str:
    """``stage`` (one of :data:`EDGE_STAGES`) for the model ``spec``: "auto" made concrete, and
    "learned" refused, with the way out, for a model that has no learned edge stage."""
    if stage not in EDGE_STAGES:
        raise ConfigError(f"edges must be one of {', '.join(EDGE_STAGES)}, got {stage!r}")
    if stage == "auto":
        return spec.edges
    if stage == "learned" and spec.edge_refiner is None:
        raise ConfigError(f"model '{spec.name}' has no learned edge stage (its spec names no edge_refiner); "
                          "use edges 'guided' or 'network', or a model that has one (cleancut models)")
    return stage


def finish_edges(prob: np.ndarray, photo: Image.Image, spec, stage: str, refiner: "EdgeRefiner | None" = None,
                 network_input: np.ndarray | None = None) -> np.ndarray:
    """The network's probability ``prob`` (at its own size) as the alpha of ``photo`` (float32, at
    its size), through the edge stage ``stage`` (concrete: see :func:`resolve_stage`); the runtime
    and ``cleancut evaluate`` both call this, so they score what a user gets. ``refiner``: the
    model's loaded :class:`EdgeRefiner` (loaded here when not given); ``network_input``: what the
    network was given for this photo; a uint8 RGB input is the photo already shrunk, which the
    guided stage fits on instead of the photo."""
    from .preprocess import finish_alpha

    if stage == "learned":
        return (refiner or EdgeRefiner(spec.edge_refiner)).refine(prob, photo)
    if stage == "guided":
        shrunk = network_input is not None and spec.input_format == "uint8_nhwc" and spec.channels == 3
        return finish_alpha(prob, photo.size, spec.alpha_temperature, guide=photo,
                            reduced=network_input if shrunk else None)
    return finish_alpha(prob, photo.size, spec.alpha_temperature)
