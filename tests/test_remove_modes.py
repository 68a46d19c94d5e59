"""Output modes and mask post-processing, end to end through the tiny model.

The tiny model calls bright pixels foreground, so a white rectangle on black must come out
opaque on the rectangle and transparent elsewhere."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cleancut import refine
from cleancut.options import RemoveOptions
from cleancut.pipeline import process

SIZE = (64, 48)  # square_image puts the rectangle at x 16..48, y 12..36


def arr(img):
    return np.asarray(img)


def test_cutout(remover, square):
    out = remover.remove(square(SIZE))
    a = arr(out)
    assert out.mode == "RGBA" and out.size == SIZE
    assert a[24, 32].tolist() == [255, 255, 255, 255]
    assert a[2, 2, 3] == 0 and a[45, 60, 3] == 0


def test_mask(remover, square):
    out = remover.remove(square(SIZE), mode="mask")
    assert out.mode == "L" and out.size == SIZE
    assert arr(out)[24, 32] == 255 and arr(out)[2, 2] == 0


def test_color(remover, square):
    out = remover.remove(square(SIZE), bg_color="#00ff00")
    assert out.mode == "RGB"
    assert arr(out)[2, 2].tolist() == [0, 255, 0] and arr(out)[24, 32].tolist() == [255, 255, 255]
    assert arr(remover.remove(square(SIZE), mode="color"))[2, 2].tolist() == [255, 255, 255]  # white default


def test_translucent_color_gives_rgba(remover, square):
    out = remover.remove(square(SIZE), bg_color="0,0,255,128")
    assert out.mode == "RGBA"
    assert arr(out)[2, 2].tolist() == [0, 0, 255, 128] and arr(out)[24, 32].tolist() == [255, 255, 255, 255]


def test_background_image_covers_the_photo(remover, square, tmp_path):
    bg = Image.new("RGB", (10, 30), (0, 0, 200))  # other size and aspect ratio
    bg.paste((200, 0, 0), (0, 0, 10, 15))  # top half red
    path = tmp_path / "bg.png"
    bg.save(path)
    out = remover.remove(square(SIZE), bg_image=path)
    assert out.mode == "RGB" and out.size == SIZE
    assert arr(out)[24, 32].tolist() == [255, 255, 255]
    # cover + centre crop of a tall picture onto a wide photo keeps its middle: red above, blue below
    assert arr(out)[1, 2].tolist() == [200, 0, 0] and arr(out)[46, 2].tolist() == [0, 0, 200]


def test_background_image_missing_is_an_image_error(remover, square, tmp_path):
    from cleancut.errors import ImageError

    with pytest.raises(ImageError, match="background image .*nope.png"):
        remover.remove(square(SIZE), bg_image=tmp_path / "nope.png")


def test_blur_smooths_only_the_background(remover):
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 90, (48, 64, 3), dtype=np.uint8)  # dark noisy background
    photo[12:36, 16:48] = 255
    out = arr(remover.remove(Image.fromarray(photo), mode="blur", blur_radius=4))
    assert out[24, 32].tolist() == [255, 255, 255]
    corner = (slice(0, 8), slice(0, 10))
    assert out[corner].std() < photo[corner].std() / 3
    # the white subject does not bleed into the blurred background next to it
    assert out[12:36, 8].mean() < 100


def test_crop_with_margin(remover, square):
    tight = remover.remove(square(SIZE), crop=True, threshold=0.5)
    assert tight.size == (32, 24)
    assert remover.remove(square(SIZE), crop=True, threshold=0.5, crop_margin=3).size == (38, 30)
    assert remover.remove(square(SIZE), crop=True, threshold=0.5, crop_margin=100).size == SIZE


def test_crop_of_an_empty_mask_keeps_the_image(remover):
    with pytest.warns(UserWarning, match="no subject"):
        out = remover.remove(Image.new("RGB", (10, 8)), crop=True)
    assert out.size == (10, 8)


def test_threshold_binarises(remover, square):
    soft = arr(remover.remove(square(SIZE), mode="mask"))
    assert len(np.unique(soft)) > 2  # upscaled model mask has soft edges
    hard = arr(remover.remove(square(SIZE), mode="mask", threshold=0.5))
    assert set(np.unique(hard)) == {0, 255}


def test_remove_islands_keeps_the_largest(remover):
    img = np.zeros((64, 64), np.uint8)
    img[10:40, 10:40] = 255  # subject: 900 px
    img[50:54, 50:54] = 255  # speck: 16 px = 0.4 % of the image
    raw = arr(remover.remove(Image.fromarray(img), mode="mask"))
    assert raw[52, 52] > 200
    cleaned = arr(remover.remove(Image.fromarray(img), mode="mask", remove_islands=0.01))
    assert cleaned[49:56, 49:56].max() == 0 and cleaned[25, 25] == 255
    # the largest blob survives even when it is below the limit itself
    kept = arr(remover.remove(Image.fromarray(img), mode="mask", remove_islands=0.9))
    assert kept[25, 25] == 255 and kept[52, 52] == 0


def test_fill_holes_respects_the_size_limit():
    alpha = np.zeros((40, 40), np.float32)
    alpha[5:35, 5:35] = 1.0
    alpha[10:14, 10:14] = 0.0  # 16 px hole
    alpha[18:30, 18:30] = 0.0  # 144 px hole
    small_only = refine.fill_holes(alpha, 20 / alpha.size)
    assert small_only[12, 12] == 1.0 and small_only[24, 24] == 0.0 and small_only[0, 0] == 0.0
    everything = refine.fill_holes(alpha, 1.0)
    assert everything[24, 24] == 1.0 and everything[0, 0] == 0.0  # border background is never a hole


def test_fill_holes_through_the_pipeline(remover):
    ring = np.zeros((64, 64), np.uint8)
    ring[8:56, 8:56] = 255
    ring[28:36, 28:36] = 0
    out = arr(remover.remove(Image.fromarray(ring), mode="mask", fill_holes=1))
    assert out[32, 32] == 255
    assert arr(remover.remove(Image.fromarray(ring), mode="mask"))[32, 32] < 30


def test_feather_softens_the_edge():
    alpha = np.zeros((40, 40), np.float32)
    alpha[10:30, 10:30] = 1.0
    soft = refine.feather(alpha, 3)
    assert 0.2 < soft[20, 10] < 0.8 and soft[20, 20] > 0.95 and soft[0, 0] < 0.02
    opts = RemoveOptions(mode="mask", threshold=0.5, feather=3)
    out = arr(process(Image.new("RGB", (40, 40)), alpha, opts))
    assert 50 < out[20, 10] < 200


def test_input_transparency_is_kept(remover, square):
    img = square(SIZE).convert("RGBA")
    img.putpixel((32, 24), (255, 255, 255, 0))  # a transparent pixel inside the subject
    out = remover.remove(img)
    assert out.getpixel((32, 24))[3] == 0 and out.getpixel((33, 24))[3] == 255


def test_alpha_matting_refines_the_edge(remover):
    # a soft-edged disc: matting should stay close to the true alpha in the unknown band
    yy, xx = np.mgrid[0:80, 0:80]
    dist = np.hypot(yy - 40, xx - 40)
    true_alpha = np.clip(25 - dist, 0, 1)
    photo = (true_alpha[:, :, None] * np.array([250, 250, 250]) + (1 - true_alpha[:, :, None]) * 10).astype(np.uint8)
    out = remover.remove(Image.fromarray(photo), mode="mask", alpha_matting=True, matting_erode=4,
                         matting_dilate=4)
    alpha = arr(out) / 255.0
    assert alpha.shape == (80, 80) and alpha[40, 40] > 0.99 and alpha[2, 2] < 0.01
    raw = arr(remover.remove(Image.fromarray(photo), mode="mask")) / 255.0
    error, raw_error = np.abs(alpha - true_alpha).mean(), np.abs(raw - true_alpha).mean()
    assert error < 0.005 and error < raw_error / 3


def _matte_steps_without_photo_edge(alpha: np.ndarray, photo: np.ndarray, level: int = 3, step: float = 0.1) -> int:
    """Neighbouring pixels whose alpha differs by more than ``step`` where the photo differs by at
    most ``level`` (every channel): an edge of the matte that the photo does not have. A matte in
    square blocks has them all along the blocks' sides."""
    colour = photo.astype(np.int16)
    count = 0
    for axis in (0, 1):
        jump = np.abs(np.diff(alpha, axis=axis)) > step
        flat = np.abs(np.diff(colour, axis=axis)).max(-1) <= level
        count += int((jump & flat).sum())
    return count


def test_alpha_matting_makes_no_blocks_on_a_jpeg():
    """A dark object on a dark background, saved as JPEG: the compression flattens both into 8x8
    blocks a level or two apart. Closed-form matting with pymatting's default regularisation
    (1e-7) took each step for an edge and left square blocks of half transparency beside the
    object (the README's Abyssinian); the matte must not step where the photo does not."""
    from PIL import ImageDraw, ImageFilter

    truth = Image.new("L", (128, 128))
    ImageDraw.Draw(truth).ellipse((34, 24, 94, 104), fill=255)
    t = np.asarray(truth, np.float32)[:, :, None] / 255
    pixels = (1 - t) * (40, 45, 45) + t * (80, 60, 40) + np.random.default_rng(0).normal(0, 1.5, (128, 128, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=25)
    photo = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    # a prediction as the network makes it: a little outside the object, soft
    predicted = np.asarray(truth.filter(ImageFilter.MaxFilter(7)).filter(ImageFilter.GaussianBlur(4)), np.float32) / 255
    blocky = refine.alpha_matting(photo, predicted, 10, 10, epsilon=1e-7)  # pymatting's default, cleancut's until now
    assert _matte_steps_without_photo_edge(blocky, np.asarray(photo)) > 30  # the test sees the blocks
    matte = refine.alpha_matting(photo, predicted, 10, 10)
    assert _matte_steps_without_photo_edge(matte, np.asarray(photo)) == 0
    inside, outside = np.asarray(truth) == 255, np.asarray(truth.filter(ImageFilter.MaxFilter(5))) == 0
    assert matte[inside].mean() > 0.9 and matte[outside].mean() < 0.02


def test_alpha_matting_at_bounded_resolution_keeps_the_size(remover, square):
    out = remover.remove(square((200, 150)), mode="mask", alpha_matting=True, matting_max_side=64)
    assert out.size == (200, 150) and arr(out)[75, 100] > 240 and arr(out)[2, 2] < 15


def test_estimate_foreground_removes_the_background_fringe():
    # white subject on a red background, with a soft edge where the photo mixes white and red
    alpha = np.zeros((40, 40), np.float32)
    alpha[10:30, 10:30] = 1.0
    alpha[10:30, 8:10] = 0.5
    photo = np.zeros((40, 40, 3), np.float32)
    photo[:] = (255, 0, 0)
    a = alpha[:, :, None]
    photo = (a * 255 + (1 - a) * photo).astype(np.uint8)
    plain = arr(process(Image.fromarray(photo), alpha, RemoveOptions(estimate_foreground=False)))
    fixed = arr(process(Image.fromarray(photo), alpha, RemoveOptions()))  # on by default
    # in the soft band the plain cut-out is pinkish (green low); the estimate is close to white
    assert plain[20, 9, 1] < 140
    assert fixed[20, 9, 1] > 200 and fixed[20, 9, 3] == plain[20, 9, 3]
    bounded = refine.estimate_foreground(photo, alpha, max_side=20)
    assert bounded[20, 9, 1] > 180 and np.array_equal(bounded[0, 0], photo[0, 0])


def _reference_foreground(rgb: np.ndarray, alpha: np.ndarray, max_side: int = refine.FOREGROUND_SIDE) -> np.ndarray:
    """Blur-fusion written out plainly over the whole photo: the means at ``max_side`` from
    :func:`box_mean` (tested against the window mean), resized to the photo in float."""
    from cleancut.preprocess import box_mean

    h, w = alpha.shape
    size = refine._working_size((w, h), max_side)
    image = np.asarray(Image.fromarray(rgb).resize(size, Image.BOX), np.float32) / 255
    a = np.clip(np.asarray(Image.fromarray(alpha, "F").resize(size, Image.BILINEAR)), 0, 1)[:, :, None]
    fg = bg = image
    for radius in [max(1, round(r * max(size) / max(w, h))) for r in refine.FOREGROUND_RADII]:
        blurred = box_mean(a, radius)
        fg_mean = box_mean(fg * a, radius) / (blurred + 1e-5)
        bg_mean = box_mean(bg * (1 - a), radius) / (1 - blurred + 1e-5)
        fg, bg = np.clip(fg_mean + a * (image - a * fg_mean - (1 - a) * bg_mean), 0, 1), bg_mean

    def at_photo(mean):
        planes = (Image.fromarray(np.ascontiguousarray(mean[:, :, c]), "F") for c in range(3))
        return np.stack([np.asarray(plane.resize((w, h), Image.BILINEAR)) for plane in planes], -1)

    f, b = at_photo(fg_mean), at_photo(bg_mean)
    levels = np.rint(np.clip(alpha, 0, 1) * 255)
    soft = (levels > 0) & (levels < 255)
    k = (levels / 255)[:, :, None]
    estimate = f + k * (rgb / 255 - k * f - (1 - k) * b)
    out = rgb.copy()
    out[soft] = np.clip(np.rint(estimate * 255), 0, 255)[soft]
    return out


@pytest.mark.parametrize("photo_size", [(900, 600), (300, 200)])
def test_estimate_foreground_matches_blur_fusion_over_the_whole_photo(photo_size):
    """The estimate works out its means only around the soft band (here an object off-centre, in
    a quarter of the photo) and reads them at the band's pixels: within 2 levels of blur-fusion over
    the whole photo, the photo kept outside the band, the same whether the photo also comes as an
    image. (300x200: smaller than the working size, the means at the photo's own size.)"""
    w, h = photo_size
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    background = np.stack([x / w * 200 + 30, y / h * 150 + 50, np.full_like(x, 90)], -1)
    subject = np.stack([np.full_like(x, 230), 180 + 40 * np.sin(x / 9), np.full_like(x, 40)], -1)
    distance = np.hypot((x - 0.72 * w) / (0.14 * w), (y - 0.3 * h) / (0.16 * h)) - 1
    alpha = (1 / (1 + np.exp(np.minimum(distance * w / 6, 80)))).astype(np.float32)  # a soft edge a few pixels wide
    a = alpha[:, :, None]
    photo = np.clip(a * subject + (1 - a) * background + rng.normal(0, 3, background.shape), 0, 255).astype(np.uint8)
    expected = _reference_foreground(photo, alpha)
    got = refine.estimate_foreground(photo, alpha)
    soft = (np.rint(alpha * 255) > 0) & (np.rint(alpha * 255) < 255)
    assert soft.sum() > 500 and soft[:, : w // 2].sum() == 0  # the band is off-centre
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert difference.max() <= 2 and difference[soft].mean() < 0.5
    assert np.array_equal(got[~soft], photo[~soft])
    assert np.array_equal(refine.estimate_foreground(photo, alpha, photo=Image.fromarray(photo)), got)


@pytest.mark.parametrize("width", [2, 6, 10])
def test_no_background_colour_is_left_on_a_two_colour_edge(width):
    """A red subject on a green background with a soft edge ``width`` pixels wide, the photo made
    by the compositing equation: where alpha > 0 the estimated colour must hold no green of the
    background (its share along the red-to-green line at most 3 %), and composites over another
    colour must show no green rim."""
    h, w = 40, 200
    ramp = np.linspace(0, 1, width + 2, dtype=np.float32)[1:-1]
    alpha = np.zeros((h, w), np.float32)
    alpha[:, 100:100 + width] = ramp
    alpha[:, 100 + width:] = 1
    fg, bg = np.array([220, 40, 40], np.float32), np.array([30, 200, 60], np.float32)
    a = alpha[:, :, None]
    photo = np.clip(np.rint(a * fg + (1 - a) * bg), 0, 255).astype(np.uint8)
    soft = alpha > 0
    for colours in (refine.estimate_foreground(photo, alpha), photo):
        share = ((colours[soft].astype(np.float32) - fg) @ (bg - fg)) / ((bg - fg) @ (bg - fg))
        if colours is photo:  # the photo itself holds the background: the test sees it
            assert share.max() > 0.4
        else:
            assert share.max() < 0.03 and np.array_equal(colours[~soft], photo[~soft])
    # over white the subject's edge is red fading to white: green and blue rise together
    for options, rim in ((RemoveOptions(bg_color="white", estimate_foreground=False), True),
                         (RemoveOptions(bg_color="white"), False)):
        over_white = arr(process(Image.fromarray(photo), alpha, options)).astype(int)
        green_excess = (over_white[:, 100:100 + width, 1] - over_white[:, 100:100 + width, 2]).max()
        assert green_excess > 20 if rim else green_excess <= 6


def test_bytes_result_uses_the_format(remover, square):
    buf = io.BytesIO()
    square(SIZE).save(buf, "PNG")
    for fmt, pil in (("png", "PNG"), ("webp", "WEBP"), ("jpeg", "JPEG"), ("jpg", "JPEG")):
        out = remover.remove(buf.getvalue(), format=fmt)
        decoded = Image.open(io.BytesIO(out))
        assert decoded.format == pil and decoded.size == SIZE
    jpeg = Image.open(io.BytesIO(remover.remove(buf.getvalue(), format="jpeg")))
    assert jpeg.mode == "RGB" and min(jpeg.getpixel((2, 2))) > 240  # transparent -> white


def test_process_rejects_a_mask_of_the_wrong_size():
    with pytest.raises(ValueError, match="expected the image's"):
        process(Image.new("RGB", (4, 4)), np.zeros((3, 4), np.float32))


def test_pymatting_console_warnings_never_reach_stdout(capsys):
    # ichol prints "PERFORMANCE WARNING" for matrices that are not positive definite; on stdout
    # that would corrupt `cleancut remove - > out.png`
    from scipy.sparse import csc_matrix

    refine._pymatting("test")
    from pymatting import ichol

    ichol(csc_matrix(np.array([[1.0, 2.0], [2.0, 1.0]])))
    assert capsys.readouterr().out == ""


def test_concurrent_matting_survives_numba_workqueue_layer(tiny_model):
    """numba's fallback threading layer (no TBB, no OpenMP) aborts the process when two threads
    run parallel kernels at once; cleancut serialises them there (a server has two workers)."""
    import subprocess
    import sys

    code = f"""
import threading, numpy as np, cleancut, numba
photo = np.zeros((120, 160, 3), np.uint8); photo[30:90, 40:120] = 255
remover = cleancut.Remover({str(tiny_model)!r})
def work():
    for _ in range(3):
        remover.remove(photo, alpha_matting=True, matting_erode=3, matting_dilate=3)
threads = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in threads]; [t.join() for t in threads]
print("layer", numba.threading_layer())
"""
    env = {**__import__("os").environ, "NUMBA_THREADING_LAYER": "workqueue"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "layer workqueue" in proc.stdout
