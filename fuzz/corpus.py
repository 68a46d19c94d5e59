"""Seed images for the fuzz targets: small real files of every format Pillow writes here, in
every mode each format takes, with and without ICC profiles and EXIF orientation, plus animated
GIF/WebP/PNG and multi-page TIFF.

The seeds are generated (a few hundred bytes each), never committed: ``image_seeds()`` returns
``{file name: bytes}``, and ``python fuzz/corpus.py FOLDER`` writes them out, e.g. to look at them.
Formats Pillow only reads (XPM, Sun raster, DCX, CUR, FITS, GIMP brush, XV thumbnail, PSD,
ICNS, and the BUFR/GRIB/HDF5 stubs) are written by hand; formats this Pillow build cannot write
(no AVIF or JPEG 2000 codec, say) are left out.
"""

from __future__ import annotations

import io
import struct
import sys
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from icc import adobe_rgb_like, cmyk_profile, linear_gray, srgb_profile  # noqa: E402

SIZE = (12, 8)

#: Pillow format -> the modes to write it in (what each format's writer accepts)
FORMAT_MODES: dict[str, tuple[str, ...]] = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "WEBP": ("RGB", "RGBA"),
    "GIF": ("L", "P"),
    "BMP": ("1", "L", "P", "RGB", "RGBA"),
    "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I;16", "I", "F"),
    "ICO": ("RGBA",),
    "JPEG2000": ("L", "RGB", "RGBA"),
    "AVIF": ("RGB", "RGBA"),
    "QOI": ("RGB", "RGBA"),
    "TGA": ("L", "LA", "P", "RGB", "RGBA"),
    "SGI": ("L", "RGB", "RGBA"),
    "PCX": ("1", "L", "P", "RGB"),
    "PPM": ("1", "L", "RGB", "I;16"),
    "DDS": ("L", "LA", "RGB", "RGBA"),
    "BLP": ("P",),
    "IM": ("1", "L", "P", "RGB", "RGBA", "I", "F"),
    "MSP": ("1",),
    "SPIDER": ("F",),
    "XBM": ("1",),
    "EPS": ("L", "RGB", "CMYK"),
    "DIB": ("RGB",),
}

#: the formats an ICC profile is embedded in (grey, RGB and CMYK profiles where the mode fits)
ICC_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")


def pattern(mode: str, size: tuple[int, int] = SIZE, seed: int = 0) -> Image.Image:
    """A small image in ``mode``: a bright blob on a gradient, with a little noise and, for the
    modes with alpha, a transparent border."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    blob = ((xx - w / 2) ** 2 / (w / 3) ** 2 + (yy - h / 2) ** 2 / (h / 3) ** 2) < 1
    rgb = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, 60)], -1)
    rgb[blob] = (250, 210, 120)
    rgb = np.clip(rgb + rng.integers(-8, 9, rgb.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    if mode in ("RGBA", "LA", "PA"):
        alpha = np.full((h, w), 255, np.uint8)
        alpha[0, :] = alpha[:, 0] = 0
        alpha[-1, :] = 128
        img.putalpha(Image.fromarray(alpha, "L"))
    grey = np.asarray(img.convert("L"))
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 1000)
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255.0)
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return img.convert(mode)


def _save(img: Image.Image, fmt: str, **params) -> bytes | None:
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.save(buffer, fmt, **params)
    except (OSError, ValueError, KeyError, TypeError):  # this writer or codec does not take it here
        return None
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return exif.tobytes()


def _variants() -> Iterator[tuple[str, bytes | None]]:
    for fmt, modes in FORMAT_MODES.items():
        for mode in modes:
            yield f"{fmt.lower()}-{mode.replace(';', '')}", _save(pattern(mode), fmt)
    profiles = {"RGB": adobe_rgb_like(), "L": linear_gray(), "CMYK": cmyk_profile()}
    for fmt in ICC_FORMATS:
        for mode, profile in profiles.items():
            if mode == "CMYK" and fmt not in ("JPEG", "TIFF"):
                continue
            yield f"{fmt.lower()}-{mode}-icc", _save(pattern(mode), fmt, icc_profile=profile)
        yield f"{fmt.lower()}-RGB-srgb-icc", _save(pattern("RGB"), fmt, icc_profile=srgb_profile())
    yield "png-RGB-bad-icc", _save(pattern("RGB"), "PNG", icc_profile=b"not an ICC profile" * 4)
    yield "jpeg-L-rgb-icc", _save(pattern("L"), "JPEG", icc_profile=adobe_rgb_like())  # does not fit
    for fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        yield f"{fmt.lower()}-RGB-exif-rotated", _save(pattern("RGB", (12, 6)), fmt, exif=_exif_rotated())
    yield "png-P-transparency", _save(pattern("P"), "PNG", transparency=0)
    yield "gif-P-transparency", _save(pattern("P"), "GIF", transparency=0)
    yield "jpeg-RGB-progressive", _save(pattern("RGB"), "JPEG", progressive=True)
    yield "tiff-RGB-deflate", _save(pattern("RGB"), "TIFF", compression="tiff_adobe_deflate")
    yield "tiff-RGB-lzw", _save(pattern("RGB"), "TIFF", compression="tiff_lzw")
    yield "tiff-RGB-jpeg", _save(pattern("RGB"), "TIFF", compression="jpeg")
    yield "tiff-1-group4", _save(pattern("1"), "TIFF", compression="group4")
    yield "bmp-RGB-rle-source", _save(pattern("P"), "BMP", compression=1)
    frames = [pattern("RGB", seed=i) for i in range(3)]
    for fmt in ("GIF", "WEBP", "PNG", "TIFF"):
        yield f"{fmt.lower()}-animated", _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50)
    yield "mpo-RGB", _save(frames[0], "MPO", save_all=True, append_images=frames[1:2])
    yield "png-1x1", _save(pattern("RGB", (1, 1)), "PNG")
    yield "png-wide", _save(pattern("L", (64, 1)), "PNG")


def _crafted() -> Iterator[tuple[str, bytes]]:
    """Formats Pillow reads but does not write, built by hand (the smallest valid files)."""
    w, h = SIZE
    grey = pattern("L").tobytes()
    rgb = pattern("RGB").tobytes()
    yield "xpm-P", (b"/* XPM */\nstatic char *x[] = {\n\"4 2 2 1\",\n\"a c #ff0000\",\n\"b c None\",\n"
                    b"\"abab\",\n\"baba\"\n};\n")
    bgr = b"".join(rgb[i:i + 3][::-1] for i in range(0, len(rgb), 3))
    yield "sun-RGB", struct.pack(">8I", 0x59A66A95, w, h, 24, len(bgr), 1, 0, 0) + bgr
    pcx = _save(pattern("P"), "PCX") or b""
    yield "dcx-P", struct.pack("<3I", 0x3ADE68B1, 12, 0) + pcx
    rows = b"".join(bgr[y * w * 3:(y + 1) * w * 3].ljust(-(-w * 3 // 4) * 4, b"\0") for y in reversed(range(h)))
    dib = struct.pack("<IiiHHIIiiII", 40, w, 2 * h, 1, 24, 0, 0, 0, 0, 0, 0) + rows + b"\0" * 4 * h
    yield "cur-RGB", struct.pack("<HHH4BHHII", 0, 2, 1, w, h, 0, 0, 2, 2, len(dib), 22) + dib
    cards = [f"{'SIMPLE':<8}= {'T':>20}", f"{'BITPIX':<8}= {8:>20}", f"{'NAXIS':<8}= {2:>20}",
             f"{'NAXIS1':<8}= {w:>20}", f"{'NAXIS2':<8}= {h:>20}", "END"]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode()
    yield "fits-L", header + grey
    name = b"seed\0"
    yield "gbr-L", struct.pack(">5I4sI", 28 + len(name), 2, w, h, 1, b"GIMP", 10) + name + grey
    yield "xvthumb-P", b"P7 332\n#XVVERSION:Version 2.28\n#END_OF_COMMENTS\n" + f"{w} {h} 255\n".encode() + grey
    planes = b"".join(pattern("RGB").getchannel(c).tobytes() for c in "RGB")
    yield "psd-RGB", (b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3) + struct.pack(">III", 0, 0, 0)
                      + struct.pack(">H", 0) + planes)
    runs = b"".join(bytes((0xFF, v, 0xFB, v)) for v in (250, 210, 120))  # 16x16 RLE: 130 + 126 pixels
    elements = b"is32" + struct.pack(">I", 8 + len(runs)) + runs + b"s8mk" + struct.pack(">I", 8 + 256) + b"\xff" * 256
    yield "icns-RGBA", b"icns" + struct.pack(">I", 8 + len(elements)) + elements
    for kind, stub in (("bufr", b"BUFR"), ("grib", b"GRIB\0\0\0\x01"), ("hdf5", b"\x89HDF\r\n\x1a\n")):
        yield f"stub-{kind}", stub + b"\0" * 24  # Pillow reads only their header


def image_seeds() -> dict[str, bytes]:
    """``{name.ext: bytes}`` of every variant this Pillow build can write, plus hand-made files of
    the formats it only reads."""
    seeds = dict(_crafted())
    for name, data in _variants():
        if data:
            seeds[name] = data
    return seeds


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python fuzz/corpus.py FOLDER", file=sys.stderr)
        return 2
    folder = Path(args[0])
    folder.mkdir(parents=True, exist_ok=True)
    seeds = image_seeds()
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    print(f"{len(seeds)} seed images written to {folder} ({sum(map(len, seeds.values()))} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
