"""Display orientation of a video: the display matrix a phone stores instead of rotating pixels.

A clip filmed in portrait is usually stored landscape with a display matrix saying "rotate 90
degrees when shown". The model was trained on upright photos, so frames are turned upright before
they are processed, and each result is turned back to the stored orientation before encoding; the
output carries the input's display matrix, so players show it exactly as they show the input.
Frames written as PNG files are written upright (a PNG has no display matrix).

The matrix is interpreted as FFmpeg's command line does when it auto-rotates
(``fftools/ffmpeg_filter.c``): right-angle rotations, with or without a mirror. Any other angle is
left to the player: frames are processed as stored and the matrix is copied.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

# the transforms, as numpy operations on HxW or HxWxC arrays, and their inverses
_APPLY = {
    "transpose": lambda a: a.swapaxes(0, 1),  # FFmpeg's transpose=cclock_flip
    "anti_transpose": lambda a: np.rot90(a, -1)[::-1],  # transpose=clock_flip
    "clock": lambda a: np.rot90(a, -1),
    "cclock": lambda a: np.rot90(a, 1),
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
}
_INVERSE = {"transpose": "transpose", "anti_transpose": "anti_transpose", "clock": "cclock",
            "cclock": "clock", "hflip": "hflip", "vflip": "vflip"}


def rotation_degrees(matrix: tuple[int, ...]) -> float:
    """Counter-clockwise rotation of a display matrix in degrees (FFmpeg's
    ``av_display_rotation_get``); NaN for a degenerate matrix."""
    m = [v / 65536.0 for v in matrix]
    scale_x, scale_y = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale_x == 0.0 or scale_y == 0.0:
        return math.nan
    return -math.degrees(math.atan2(m[1] / scale_y, m[0] / scale_x))


def _operations(matrix: tuple[int, ...]) -> tuple[str, ...] | None:
    """The transforms that make stored pixels upright; None for an angle that is not a multiple
    of 90 degrees."""
    rotation = rotation_degrees(matrix)
    if math.isnan(rotation):
        return None
    theta = -round(rotation)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)  # [0, 360), as fftools' get_rotation
    if abs(theta - 90) < 1:
        return ("transpose",) if matrix[3] > 0 else ("clock",)
    if abs(theta - 180) < 1:
        return tuple(op for op, flip in (("hflip", matrix[0] < 0), ("vflip", matrix[4] < 0)) if flip)
    if abs(theta - 270) < 1:
        return ("anti_transpose",) if matrix[3] < 0 else ("cclock",)
    if abs(theta) < 1:
        return ("vflip",) if matrix[4] < 0 else ()
    return None


@dataclass(frozen=True)
class Orientation:
    """How stored frames are shown. ``matrix`` is FFmpeg's 3x3 display matrix (9 ints, 16.16 /
    2.30 fixed point) or None when the stream has none; ``operations`` turn stored pixels
    upright (empty when they already are, or when the angle is not a right angle)."""

    matrix: tuple[int, ...] | None = None
    operations: tuple[str, ...] = ()

    @classmethod
    def from_matrix(cls, matrix: tuple[int, ...] | None) -> "Orientation":
        if matrix is None:
            return cls()
        if len(matrix) != 9:
            raise ValueError(f"a display matrix has 9 entries, got {len(matrix)}")
        return cls(tuple(int(v) for v in matrix), _operations(tuple(matrix)) or ())

    @classmethod
    def from_frame(cls, frame) -> "Orientation":
        """The orientation a decoded PyAV frame carries (its DISPLAYMATRIX side data)."""
        data = frame.side_data.get("DISPLAYMATRIX")
        if data is None:
            return cls()
        raw = bytes(data)
        if len(raw) != 36:
            return cls()
        return cls.from_matrix(struct.unpack("<9i", raw))

    @property
    def is_identity(self) -> bool:
        return not self.operations

    @property
    def degrees(self) -> float:
        """The counter-clockwise rotation players apply (0 without a matrix)."""
        return 0.0 if self.matrix is None else rotation_degrees(self.matrix)

    def upright(self, pixels: np.ndarray) -> np.ndarray:
        """Stored pixels (HxW or HxWxC) -> as displayed."""
        for op in self.operations:
            pixels = _APPLY[op](pixels)
        return np.ascontiguousarray(pixels)

    def stored(self, pixels: np.ndarray) -> np.ndarray:
        """Displayed pixels -> as stored (the inverse of :meth:`upright`)."""
        for op in reversed(self.operations):
            pixels = _APPLY[_INVERSE[op]](pixels)
        return np.ascontiguousarray(pixels)

    def upright_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of upright frames for stored frames of ``width`` x ``height``."""
        swaps = sum(op in ("transpose", "anti_transpose", "clock", "cclock") for op in self.operations)
        return (height, width) if swaps % 2 else (width, height)
