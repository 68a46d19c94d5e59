"""The Python API: input kinds and result kinds, image modes, bad inputs, thread safety, and
that the inference path never imports torch."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cleancut
from cleancut import api
from cleancut.errors import ConfigError, ImageError, ImageTooLargeError, ModelError
from cleancut.io import AnimatedImageWarning

SIZE = (64, 48)
TESTS = Path(__file__).resolve().parent


def png(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def subject_ok(result) -> None:
    """Opaque on the white rectangle, transparent on the black background."""
    a = np.asarray(result)
    assert a.shape == (48, 64, 4)
    assert a[24, 32, 3] == 255 and a[2, 2, 3] == 0 and a[45, 60, 3] == 0


# ---------------------------------------------------------------- kinds of input and result


def test_path_and_str_give_pil(remover, square, tmp_path):
    path = tmp_path / "p.png"
    square(SIZE).save(path)
    for source in (path, str(path)):
        out = remover.remove(source)
        assert isinstance(out, Image.Image)
        subject_ok(out)


def test_bytes_give_bytes(remover, square):
    out = remover.remove(png(square(SIZE)))
    assert isinstance(out, bytes) and out.startswith(b"\x89PNG")
    subject_ok(Image.open(io.BytesIO(out)))


def test_file_object_gives_pil(remover, square):
    subject_ok(remover.remove(io.BytesIO(png(square(SIZE)))))


def test_numpy_gives_numpy(remover, square):
    out = remover.remove(np.asarray(square(SIZE)))
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    subject_ok(out)
    mask = remover.remove(np.asarray(square(SIZE)), mode="mask")
    assert mask.shape == (48, 64)
    assert remover.remove(np.asarray(square(SIZE)), mode="color").shape == (48, 64, 3)


def test_predict_mask(remover, square):
    alpha = remover.predict_mask(square(SIZE))
    assert alpha.dtype == np.float32 and alpha.shape == (48, 64)
    assert alpha[24, 32] > 0.99 and alpha[2, 2] < 0.01


def test_module_level_remove_uses_the_default_model(tiny_registry, square):
    subject_ok(cleancut.remove(square(SIZE)))
    assert cleancut.remove(square(SIZE), mode="mask").mode == "L"


def test_options_object_and_overrides(remover, square):
    opts = cleancut.RemoveOptions(mode="mask")
    assert remover.remove(square(SIZE), opts).mode == "L"
    assert remover.remove(square(SIZE), opts, mode="cutout").mode == "RGBA"
    assert opts.mode == "mask"  # the caller's options are not modified


# ---------------------------------------------------------------- image modes


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "CMYK", "1"])
def test_image_modes(remover, square, mode):
    subject_ok(remover.remove(square(SIZE).convert(mode)))


def test_sixteen_bit_png(remover):
    arr = np.full((48, 64), 5000, np.uint16)
    arr[12:36, 16:48] = 60000  # ~233 after scaling; a clipping reader would see 255 everywhere
    out = remover.remove(png(Image.fromarray(arr)))
    subject_ok(Image.open(io.BytesIO(out)))


def test_exif_rotated_photo(remover, tmp_path):
    img = Image.new("RGB", (48, 64), (0, 0, 0))
    img.paste((255, 255, 255), (12, 16, 36, 48))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 CCW to display -> displayed 64 x 48
    path = tmp_path / "exif.png"
    img.save(path, exif=exif.tobytes())
    out = remover.remove(path)
    assert out.size == (64, 48)
    subject_ok(out)


def test_animated_gif(remover, square, tmp_path):
    first = square(SIZE).convert("P")
    path = tmp_path / "anim.gif"
    first.save(path, save_all=True, append_images=[Image.new("P", SIZE)], duration=50)
    with pytest.warns(AnimatedImageWarning, match="first frame"):
        subject_ok(remover.remove(path))


def test_one_pixel(remover):
    assert remover.remove(Image.new("RGB", (1, 1), (255, 255, 255))).getpixel((0, 0)) == (255, 255, 255, 255)
    assert remover.remove(Image.new("RGB", (1, 1))).getpixel((0, 0))[3] == 0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"just some text\n", "found text"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "bad.png"),
])
def test_bad_files(remover, tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        remover.remove(path)


def test_truncated_bytes(remover):
    data = png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    with pytest.raises(ImageError, match="<bytes>: cannot decode"):
        remover.remove(data[:300])


def test_too_many_pixels(remover, square):
    with pytest.raises(ImageTooLargeError, match="64x48 = 0.0 megapixels, above the limit"):
        remover.remove(png(square(SIZE)), max_pixels=1000)


def test_unknown_model_lists_valid_names(tiny_registry, square):
    with pytest.raises(ModelError, match="unknown model 'nope'. Valid names: cleancut-default, tiny-gray"):
        cleancut.remove(square(SIZE), model="nope")
    with pytest.raises(ModelError, match="Valid names"):
        cleancut.Remover("nope")


def test_remover_refuses_options_for_another_model(remover, tiny_registry, square):
    with pytest.raises(ConfigError, match="this Remover runs model 'tiny', but the options ask for model 'tiny-gray'"):
        remover.remove(square(SIZE), model="tiny-gray")
    with pytest.raises(ConfigError, match="created with threads=None"):
        remover.remove(square(SIZE), threads=3)
    subject_ok(remover.remove(square(SIZE), model=str(remover.spec.path)))  # same model: fine


# ---------------------------------------------------------------- threads


def test_thread_safety_matches_sequential_results(remover):
    rng = np.random.default_rng(7)
    images = []
    for i in range(24):
        arr = rng.integers(0, 120, (30 + i, 40 + 2 * i, 3), dtype=np.uint8)
        arr[5:20, 5 + i:25 + i] = 250
        images.append(arr)
    options = [dict(), dict(mode="mask"), dict(bg_color="red", crop=True), dict(remove_islands=0.05)]
    jobs = [(img, options[i % len(options)]) for i, img in enumerate(images)]
    sequential = [remover.remove(img, **opts) for img, opts in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda job: remover.remove(job[0], **job[1]), jobs * 3))
    for i, out in enumerate(parallel):
        assert np.array_equal(out, sequential[i % len(jobs)]), i


def test_lazy_session_is_created_once_under_concurrency(tiny_model, square, monkeypatch):
    from cleancut import runtime

    created = []
    real = runtime.Session

    class CountingSession(real):
        def __init__(self, *a, **k):
            created.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(runtime, "Session", CountingSession)
    remover = cleancut.Remover(tiny_model)
    barrier = threading.Barrier(8)

    def call(_):
        barrier.wait()
        return remover.remove(square(SIZE), mode="mask")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(8)))
    assert len(created) == 1 and all(r.mode == "L" for r in results)


def test_shared_remover_is_reused(tiny_model):
    assert api.shared_remover(str(tiny_model)) is api.shared_remover(str(tiny_model))
    assert api.shared_remover(str(tiny_model), threads=1) is not api.shared_remover(str(tiny_model))


# ---------------------------------------------------------------- no torch


def test_inference_never_imports_torch(tiny_model, tmp_path):
    script = f"""
import sys
import numpy as np
from PIL import Image
sys.path.insert(0, {str(TESTS)!r})
from cleancut.testing import square_image
import cleancut
img = square_image((64, 48))
out = cleancut.remove(img, model={str(tiny_model)!r}, remove_islands=0.01, fill_holes=1, feather=1,
                      alpha_matting=True, matting_erode=3, matting_dilate=3)
assert out.getpixel((32, 24))[3] > 200
from cleancut.cli import main
img.save({str(tmp_path / 'in.png')!r})
assert main(["remove", {str(tmp_path / 'in.png')!r}, "--model", {str(tiny_model)!r}, "-o", {str(tmp_path / 'out')!r}]) == 0
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH:", bad)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH: []" in proc.stdout
    assert (tmp_path / "out" / "in.png").is_file()


def test_predict_mask_with_uncertainty(remover, square):
    img = square((64, 48))
    alpha = remover.predict_mask(img)
    mean, std = remover.predict_mask(img, with_uncertainty=True)
    assert mean.shape == std.shape == alpha.shape
    assert mean.dtype == std.dtype == np.float32
    assert 0 <= std.min() and std.max() <= 0.5
    assert 0 <= mean.min() and mean.max() <= 1
    # the test-time-augmented mask still separates the square from the background
    assert abs(float(mean.mean()) - float(alpha.mean())) < 0.1
