"""Minimal ICC v2 colour profiles for tests and the fuzz seed corpus.

Pillow can only create sRGB, LAB and XYZ profiles, so the wide-gamut, grey and CMYK ones are
written here: header, tag table and tags, which littleCMS reads.
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import ImageCms

D50 = (0.9642, 1.0, 0.8249)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _gamma_tag(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def _desc_tag(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + b"\0" * 78  # no Unicode/Mac names


def icc_profile(space: bytes, tags: dict[bytes, bytes], device_class: bytes = b"mntr",
                pcs: bytes = b"XYZ ") -> bytes:
    """ICC v2.1 profile bytes: colour ``space`` (b"RGB ", b"GRAY", b"CMYK") with ``tags``."""
    offset = 128 + 4 + 12 * len(tags)
    table = data = b""
    for sig, body in tags.items():
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + b"\0" * 4 + struct.pack(">I", 0x02100000)
              + device_class + space + pcs + b"\0" * 12 + b"acsp" + b"\0" * 28 + b"".join(map(_s15, D50)))
    return header.ljust(128, b"\0") + struct.pack(">I", len(tags)) + table + data


def adobe_rgb_like() -> bytes:
    """Matrix/TRC RGB profile with the Adobe RGB (1998) primaries (D50-adapted) and gamma 2.2:
    its green is far outside sRGB."""
    return icc_profile(b"RGB ", {
        b"desc": _desc_tag("test wide-gamut RGB"), b"wtpt": _xyz_tag(*D50),
        b"rXYZ": _xyz_tag(0.60974, 0.31111, 0.01947), b"gXYZ": _xyz_tag(0.20528, 0.62567, 0.06087),
        b"bXYZ": _xyz_tag(0.14919, 0.06322, 0.74457),
        b"rTRC": _gamma_tag(2.2), b"gTRC": _gamma_tag(2.2), b"bTRC": _gamma_tag(2.2)})


def linear_gray() -> bytes:
    """Grey profile with gamma 1.0: grey level 128 is 50 % luminance, sRGB ~188."""
    return icc_profile(b"GRAY", {b"desc": _desc_tag("test linear grey"), b"wtpt": _xyz_tag(*D50),
                                 b"kTRC": _gamma_tag(1.0)})


def srgb_lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """CIELAB (D50, the ICC connection space) of an sRGB colour."""
    c = np.asarray(rgb, np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4360747, 0.3850649, 0.1430804],  # sRGB -> XYZ, Bradford-adapted to D50
                    [0.2225045, 0.7168786, 0.0606169],
                    [0.0139322, 0.0971045, 0.7141733]]) @ linear / np.asarray(D50)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


#: the sRGB colour 100 % cyan ink prints as in the test CMYK profile (naive CMYK->RGB: 0,255,255)
PRINTED_CYAN = (0, 160, 225)


def cmyk_profile() -> bytes:
    """Output (printer) profile whose A2B0 is a 2x2x2x2 lut16 CMYK -> Lab: naive ink mixing,
    except that 100 % cyan is the duller PRINTED_CYAN, as real inks are."""
    lut = b"mft2\0\0\0\0" + struct.pack(">BBBB", 4, 3, 2, 0)
    lut += b"".join(map(_s15, (1, 0, 0, 0, 1, 0, 0, 0, 1))) + struct.pack(">HH", 2, 2)
    identity = struct.pack(">HH", 0, 65535)
    clut = b""
    for c, m, y, k in np.ndindex(2, 2, 2, 2):
        if (c, m, y, k) == (1, 0, 0, 0):
            rgb = PRINTED_CYAN
        else:
            rgb = tuple(round(255 * (1 - ink) * (1 - k)) for ink in (c, m, y))
        lightness, a, b = srgb_lab(rgb)  # v2 16-bit Lab: L 0..100 -> 0..0xFF00, a/b +128, x256
        clut += struct.pack(">HHH", round(lightness / 100 * 0xFF00), round((a + 128) * 256), round((b + 128) * 256))
    lut += identity * 4 + clut + identity * 3
    return icc_profile(b"CMYK", {b"desc": _desc_tag("test CMYK"), b"wtpt": _xyz_tag(*D50), b"A2B0": lut},
                       device_class=b"prtr", pcs=b"Lab ")


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
