"""cleancut.io: every input kind and Pillow mode, colour profiles, bad inputs, the pixel cap,
atomic writes."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cleancut import io as cio
from cleancut.errors import ImageError, ImageTooLargeError
from icc import PRINTED_CYAN, adobe_rgb_like, cmyk_profile, linear_gray, srgb_profile


def png_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` followed by a scrap of pixel data: cheap to
    make, and only a reader that checks the size before decoding reports it as too large."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def patches(*colors, side: int = 8, mode: str = "RGB") -> Image.Image:
    """A row of flat ``side`` x ``side`` patches, one per colour."""
    img = Image.new(mode, (side * len(colors), side))
    for i, color in enumerate(colors):
        img.paste(color, (i * side, 0, (i + 1) * side, side))
    return img


def patch_colors(img: Image.Image, count: int, side: int = 8) -> list[tuple[int, ...]]:
    """The colour at the centre of each patch."""
    return [img.getpixel((i * side + side // 2, side // 2)) for i in range(count)]


# ---------------------------------------------------------------- input kinds


def test_path_bytes_fileobject_pil_and_numpy_give_the_same_image(tmp_path, square):
    img = square((20, 10))
    path = tmp_path / "a.png"
    img.save(path)
    data = path.read_bytes()
    expected = np.asarray(img)
    for source in (path, str(path), data, bytearray(data), io.BytesIO(data), img, np.asarray(img)):
        out = cio.load_image(source)
        assert out.mode == "RGB" and out.size == (20, 10), type(source)
        assert np.array_equal(np.asarray(out), expected), type(source)


def test_unsupported_source_type_is_an_image_error():
    with pytest.raises(ImageError, match="expected a path, bytes, a binary file object.*got int"):
        cio.load_image(42)


# ---------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "YCbCr", "1", "RGB"])
def test_opaque_modes_become_rgb_with_the_right_pixels(mode, square):
    img = square((16, 12)).convert(mode)
    out = cio.load_image(png_bytes(img) if mode not in ("CMYK", "YCbCr") else img)
    assert out.mode == "RGB"
    arr = np.asarray(out)
    assert arr[6, 8].tolist() == [255, 255, 255]  # inside the square
    assert arr[0, 0].tolist() == [0, 0, 0]


def test_cmyk_jpeg_file(tmp_path, square):
    path = tmp_path / "cmyk.jpg"
    square((16, 16)).convert("CMYK").save(path, quality=100)
    arr = np.asarray(cio.load_image(path))
    assert arr[8, 8].min() > 240 and arr[0, 0].max() < 15


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparency_is_kept_as_rgba(mode):
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    if mode == "LA":
        img = img.convert("LA")
    elif mode == "PA":
        img = img.convert("PA")
    out = cio.load_image(png_bytes(img) if mode != "PA" else img)
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0))[3] == 0 and out.getpixel((4, 4))[3] == 255


def test_palette_with_transparency_index_is_rgba():
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    out = cio.load_image(png_bytes(img, transparency=0))
    assert out.mode == "RGBA" and out.getpixel((0, 0))[3] == 0 and out.getpixel((1, 1)) == (255, 255, 255, 255)


def test_fully_opaque_alpha_is_dropped():
    out = cio.load_image(png_bytes(Image.new("RGBA", (4, 4), (1, 2, 3, 255))))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (1, 2, 3)


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    arr = np.array([[0, 257, 30000], [40000, 60000, 65535]], np.uint16)
    img = Image.fromarray(arr)  # mode I;16
    assert img.mode.startswith("I;16")
    out = np.asarray(cio.load_image(png_bytes(img)))[:, :, 0]
    assert out.tolist() == np.rint(arr / 257.0).astype(np.uint8).tolist()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.png"
    img.save(path, exif=exif.tobytes())
    out = cio.load_image(path)
    assert out.size == (20, 30)
    assert out.getpixel((10, 2)) == (255, 255, 255)  # the band is now at the top
    assert out.getpixel((10, 27)) == (0, 0, 0)


def test_animated_gif_uses_the_first_frame_with_a_warning(tmp_path):
    frames = [Image.new("L", (8, 8), 255).convert("P"), Image.new("L", (8, 8), 0).convert("P")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.warns(cio.AnimatedImageWarning, match="anim.gif: animated image with 2 frames"):
        out = cio.load_image(path)
    assert out.getpixel((4, 4)) == (255, 255, 255)


def test_one_pixel_image():
    assert cio.load_image(png_bytes(Image.new("RGB", (1, 1), (9, 9, 9)))).getpixel((0, 0)) == (9, 9, 9)


@pytest.mark.parametrize("array, expected", [
    (np.full((2, 3), 128, np.uint8), 128),
    (np.full((2, 3, 1), 128, np.uint8), 128),
    (np.full((2, 3, 3), 0.5, np.float32), 128),
    (np.full((2, 3), 65535, np.uint16), 255),
    (np.ones((2, 3), bool), 255),
    (np.full((2, 3), 7, np.int64), 7),
])
def test_numpy_dtypes_and_shapes(array, expected):
    out = cio.load_image(array)
    assert out.size == (3, 2) and out.getpixel((0, 0))[0] == expected


def test_numpy_rgba_keeps_alpha():
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[0, 0] = (10, 20, 30, 255)
    out = cio.load_image(arr)
    assert out.mode == "RGBA" and out.getpixel((0, 0)) == (10, 20, 30, 255) and out.getpixel((1, 1))[3] == 0


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 2, 2), np.uint8), "expected an array of shape"),
    (np.zeros((2,), np.uint8), "expected an array of shape"),
    (np.full((2, 2), 300, np.int32), "integer arrays must hold 0-255"),
    (np.zeros((2, 2), np.complex64), "expected a uint8, uint16, bool or float array"),
])
def test_bad_numpy_arrays(array, message):
    with pytest.raises(ImageError, match=message):
        cio.load_image(array)


# ---------------------------------------------------------------- colour profiles


def test_wide_gamut_profile_is_converted_to_srgb():
    colors = [(0, 255, 0), (64, 160, 64), (255, 0, 0), (128, 128, 128)]
    img = patches(*colors)
    out = cio.load_image(png_bytes(img, icc_profile=adobe_rgb_like()))
    assert out.mode == "RGB" and "icc_profile" not in out.info  # sRGB now: not tagged any more
    green, mid_green, red, grey = patch_colors(out, 4)
    # the wide gamut's pure green and red are beyond sRGB: they clip, staying fully saturated
    assert green[1] == 255 and max(green[0], green[2]) <= 5
    assert red[0] == 255 and max(red[1:]) <= 5
    # a mid green is more saturated in the wide gamut than the same numbers read as sRGB: the
    # conversion pushes it away from grey (red and blue drop, green stays)
    assert mid_green[0] < 20 and mid_green[2] < 60 and abs(mid_green[1] - 160) <= 3
    assert mid_green != colors[1]
    # neutrals stay neutral (gamma 2.2 vs the sRGB curve: at most a level or two)
    assert max(grey) - min(grey) <= 1 and abs(grey[0] - 128) <= 2
    # the same pixels untagged are read as they are
    assert patch_colors(cio.load_image(png_bytes(img)), 4) == colors


def test_untagged_image_is_unchanged_and_never_colour_managed(monkeypatch):
    noise = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)

    def fail(*args, **kwargs):
        raise AssertionError("an untagged image went through colour management")

    monkeypatch.setattr(cio, "_to_srgb", fail)
    for source in (png_bytes(Image.fromarray(noise)), Image.fromarray(noise)):
        out = cio.load_image(source)
        assert np.array_equal(np.asarray(out), noise)


def test_srgb_tagged_image_is_practically_unchanged():
    noise = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = np.asarray(cio.load_image(png_bytes(Image.fromarray(noise), icc_profile=srgb_profile())))
    assert np.abs(out.astype(int) - noise).max() <= 1


def test_tagged_pil_image_is_converted_and_left_untouched():
    img = patches((64, 160, 64))
    img.info["icc_profile"] = adobe_rgb_like()
    out = cio.load_image(img)
    assert patch_colors(out, 1)[0][0] < 20 and "icc_profile" not in out.info
    assert img.info["icc_profile"] == adobe_rgb_like() and img.getpixel((4, 4)) == (64, 160, 64)


def test_profile_conversion_keeps_alpha_and_exif_orientation(tmp_path):
    img = Image.new("RGBA", (30, 20), (64, 160, 64, 255))
    img.paste((0, 0, 0, 0), (0, 0, 10, 20))  # transparent band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.png"
    img.save(path, exif=exif.tobytes(), icc_profile=adobe_rgb_like())
    out = cio.load_image(path)
    assert out.mode == "RGBA" and out.size == (20, 30)
    assert out.getpixel((10, 2))[3] == 0  # the band is now at the top, still transparent
    r, g, b, a = out.getpixel((10, 27))
    assert a == 255 and r < 20 and abs(g - 160) <= 3  # and the colour is converted


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_grayscale_with_profile(mode):
    img = patches(0, 128, 255, mode="L")
    if mode == "LA":
        img.putalpha(Image.new("L", img.size, 255))
        img.putpixel((0, 0), (0, 0))
    out = cio.load_image(png_bytes(img, icc_profile=linear_gray()))
    assert out.mode == ("RGBA" if mode == "LA" else "RGB")
    black, mid, white = (px[:3] for px in patch_colors(out, 3))
    assert black == (0, 0, 0) and white == (255, 255, 255)
    assert mid[0] == mid[1] == mid[2] and abs(mid[0] - 188) <= 2  # 50 % luminance in sRGB
    if mode == "LA":
        assert out.getpixel((0, 0))[3] == 0 and out.getpixel((12, 4))[3] == 255


def test_cmyk_jpeg_with_profile(tmp_path):
    img = patches((0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255), mode="CMYK")
    path = tmp_path / "print.jpg"
    img.save(path, quality=100, icc_profile=cmyk_profile())
    paper, cyan, black = patch_colors(cio.load_image(path), 3)
    assert min(paper) >= 250 and max(black) <= 5
    assert max(abs(got - want) for got, want in zip(cyan, PRINTED_CYAN)) <= 4, cyan
    untagged = tmp_path / "untagged.jpg"
    img.save(untagged, quality=100)
    assert patch_colors(cio.load_image(untagged), 3)[1][1] > 245  # naive: (0, 255, 255)


@pytest.mark.parametrize("profile", [b"not an ICC profile", adobe_rgb_like()[:100], b"\0" * 200],
                         ids=["garbage", "truncated", "zeros"])
def test_unreadable_profile_warns_and_reads_the_pixels_as_they_are(tmp_path, profile):
    colors = [(64, 160, 64), (200, 30, 90)]
    path = tmp_path / "bad.png"
    patches(*colors).save(path, icc_profile=profile)
    with pytest.warns(cio.ColorProfileWarning, match=r"bad\.png: the embedded ICC colour profile is "
                                                     r"ignored \(cannot read it"):
        out = cio.load_image(path)
    assert out.mode == "RGB" and patch_colors(out, 2) == colors and "icc_profile" not in out.info


@pytest.mark.parametrize("mode, profile, space", [
    ("RGB", linear_gray(), "GRAY"),
    ("CMYK", adobe_rgb_like(), "RGB"),
    ("RGB", cmyk_profile(), "CMYK"),
])
def test_profile_that_does_not_fit_the_pixels_warns(mode, profile, space):
    img = patches((10, 20, 30) if mode == "RGB" else (0, 0, 0, 0), mode=mode)
    img.info["icc_profile"] = profile
    with pytest.warns(cio.ColorProfileWarning, match=f"colour space {space} does not fit {mode} pixels"):
        out = cio.load_image(img)
    assert out.mode == "RGB" and out.getpixel((4, 4)) == ((10, 20, 30) if mode == "RGB" else (255, 255, 255))


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_cutout_of_a_tagged_photo_is_srgb_and_untagged(remover, fmt):
    img = Image.new("RGB", (32, 32), (0, 0, 0))
    img.paste((160, 240, 160), (8, 8, 24, 24))  # bright: the tiny model's foreground
    data = png_bytes(img, icc_profile=adobe_rgb_like())
    expected = cio.load_image(data).getpixel((16, 16))
    assert expected[0] < 150  # converted: more saturated than (160, 240, 160)
    result = Image.open(io.BytesIO(remover.remove(data, mode="color", bg_color="black", format=fmt)))
    assert "icc_profile" not in result.info
    got = result.convert("RGB").getpixel((16, 16))
    assert max(abs(a - b) for a, b in zip(got, expected)) <= (1 if fmt == "png" else 12)


# ---------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nothere\.jpg: no such file"):
        cio.load_image(tmp_path / "nothere.jpg")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="found a folder"):
        cio.load_image(tmp_path)


def test_empty_file_and_empty_bytes(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: .*empty file \(0 bytes\)"):
        cio.load_image(path)
    with pytest.raises(ImageError, match="found 0 bytes"):
        cio.load_image(b"")


def test_text_file_names_the_file_and_what_was_found(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello world\n")
    with pytest.raises(ImageError, match=r"notes\.jpg: expected an image .* found text starting with 'hello"):
        cio.load_image(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(ImageError, match=r"corrupt\.png"):
        cio.load_image(path)


def test_truncated_file(tmp_path):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = png_bytes(noisy)
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"truncated\.png: cannot decode the image .*corrupt or truncated"):
        cio.load_image(path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns above 89 MP
def test_pixel_cap_is_checked_before_decoding():
    # 12000 x 9000 = 108 MP: above the default cap of 100 MP. The pixel data is a stub, so a
    # reader that decoded first would report truncation instead.
    with pytest.raises(ImageTooLargeError, match=r"12000x9000 = 108\.0 megapixels, above the limit of 100\.0"):
        cio.load_image(png_header_only(12000, 9000))


def test_pixel_cap_is_configurable_and_applies_to_every_source(square):
    img = square((20, 20))
    for source in (png_bytes(img), img, np.asarray(img)):
        with pytest.raises(ImageTooLargeError, match="--max-pixels"):
            cio.load_image(source, max_pixels=399)
        assert cio.load_image(source, max_pixels=400).size == (20, 20)


def test_gif_frame_size_is_checked_before_pillow_allocates_it():
    """Pillow's GIF reader allocates the first frame's disposal buffer inside Image.open; a
    300-byte GIF claiming 2060 x 33536 (69 MP) must be refused before that (found by fuzzing)."""
    import resource

    data = (Path(__file__).resolve().parents[1] / "fuzz/regressions/decode/gif-first-frame-extent-allocated-by-open").read_bytes()
    assert len(data) < 400
    assert cio.gif_canvas_size(io.BytesIO(data)) == (2060, 33536)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLargeError, match="2060x33536"):
        cio.load_image(data, max_pixels=10**6)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 32 * 1024  # KiB: far below 69 MB
    frame = struct.pack("<4H", 3, 4, 20, 10) + b"\0"  # a frame past the logical screen grows the canvas
    gif = b"GIF89a" + struct.pack("<HHBBB", 8, 8, 0, 0, 0) + b"!\xf9\x04\x08\x00\x00\x00\x00" + b"," + frame
    assert cio.gif_canvas_size(io.BytesIO(gif)) == (23, 14)
    assert cio.gif_canvas_size(io.BytesIO(b"GIF89a")) is None and cio.gif_canvas_size(io.BytesIO(b"\x89PNG")) is None


def test_pillow_decompression_bomb_becomes_image_too_large():
    with pytest.raises(ImageTooLargeError, match="Pillow refuses"):
        cio.load_image(png_header_only(100_000, 100_000), max_pixels=10**12)


# ---------------------------------------------------------------- writing


def test_encode_formats_and_jpeg_flattening():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    for fmt, pil in (("png", "PNG"), ("webp", "WEBP"), ("jpeg", "JPEG")):
        decoded = Image.open(io.BytesIO(cio.encode_image(rgba, fmt)))
        assert decoded.format == pil
    jpeg = Image.open(io.BytesIO(cio.encode_image(rgba, "jpeg", background=(0, 0, 255))))
    assert jpeg.mode == "RGB" and jpeg.getpixel((1, 1))[2] > 240 and jpeg.getpixel((1, 1))[0] < 15
    with pytest.raises(ImageError, match="expected one of png, webp, jpeg"):
        cio.encode_image(rgba, "gif")


def test_save_image_picks_format_from_suffix(tmp_path):
    path = cio.save_image(Image.new("RGB", (2, 2)), tmp_path / "x.webp")
    assert Image.open(path).format == "WEBP"
    assert cio.format_from_suffix("a.JPG") == "jpeg" and cio.format_from_suffix("a.gif") is None


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        cio.write_atomic(target, b"new data")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_atomic_write_replaces(tmp_path):
    target = tmp_path / "out.bin"
    cio.write_atomic(target, b"one")
    cio.write_atomic(target, b"two")
    assert target.read_bytes() == b"two" and [p.name for p in Path(tmp_path).iterdir()] == ["out.bin"]
