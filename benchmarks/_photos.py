"""The photos a benchmark runs on: the first N images of a folder, in name order (recursive)."""

from __future__ import annotations

from pathlib import Path


def first_photos(folder: Path, limit: int) -> list[Path]:
    """The first ``limit`` images below ``folder`` as ``cleancut remove`` finds them; exits with a
    message when there are none."""
    from cleancut.jobs import LOCAL

    photos = LOCAL.scan(folder, None, skip_cutouts=True)[:limit]
    if not photos:
        raise SystemExit(f"no images found in {folder}")
    return photos
