"""A model's learned edge stage, as data: the ``edge_refiner`` entry of its JSON spec.

The refiner itself (an ONNX file beside the model's) is run by :class:`cleancut.edges.EdgeRefiner`
and trained by :mod:`cleancut.train.edges`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError


@dataclass(frozen=True)
class RefinerSpec:
    """An edge refiner, as its base model's JSON spec names it (``edge_refiner``)."""

    file: str  # ONNX file, relative to the base spec's folder (or absolute)
    sha256: str | None = None
    tile: int = 32  # pixels of the result each patch decides
    margin: int = 16  # context on each side of a tile
    max_side: int = 1024  # the working size's long side at most (a larger photo is refined shrunk)
    band: tuple[float, float] = (0.02, 0.98)  # alpha strictly between these is uncertain
    temperature: float = 1.0  # sharpening of the refined alpha when it is enlarged to the photo
    batch: int = 32  # patches per ONNX Runtime call
    description: str = ""
    folder: str = ""

    @property
    def path(self) -> Path:
        p = Path(self.file)
        return p if p.is_absolute() else Path(self.folder) / p

    @property
    def patch(self) -> int:
        return self.tile + 2 * self.margin

    @classmethod
    def from_json(cls, data: dict, folder: str | Path) -> "RefinerSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "folder"}
        if "file" not in known:
            raise ModelError(f"edge_refiner in the spec in {folder} has no 'file'")
        if "band" in known:
            known["band"] = tuple(float(v) for v in known["band"])
        spec = cls(**known, folder=str(folder))
        if spec.tile < 1 or spec.margin < 0 or spec.max_side < spec.patch or not 0 <= spec.band[0] < spec.band[1] <= 1:
            raise ModelError(f"edge_refiner {spec.file}: tile, margin, max_side or band out of range ({data})")
        return spec

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "folder"}
        out["band"] = list(self.band)
        return out
