"""One exception hierarchy for cleancut.

Every message says what was expected, what was found, and how to fix it. The CLI
turns any :class:`CleancutError` into a one-line message and a non-zero exit code
instead of a traceback.
"""

from __future__ import annotations


class CleancutError(Exception):
    """Base class of every error cleancut raises on purpose."""

    exit_code = 1


class ConfigError(CleancutError, ValueError):
    """A configuration value or command-line option is invalid."""

    exit_code = 2


class DatasetError(CleancutError):
    """A dataset folder is missing, empty or has unreadable / unmatched pairs."""


class ImageError(CleancutError):
    """An input image cannot be read (corrupt, truncated, empty, not an image, too large)."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the configured cap."""


class VideoError(CleancutError):
    """A video cannot be read or written: not a video, no video stream, an unsupported codec, an
    output kind that cannot hold what was asked for."""


class VideoTruncatedError(VideoError):
    """A video ended before its declared length. The frames that could be decoded were processed
    and written; ``result`` describes that output."""

    def __init__(self, message: str, result: object = None):
        super().__init__(message)
        self.result = result


class ModelError(CleancutError):
    """A model name, file or spec is unknown or inconsistent."""


class CheckpointError(CleancutError):
    """A training checkpoint is missing or does not match the config."""


class MissingDependencyError(CleancutError, ImportError):
    """An optional dependency is needed for this feature but not installed."""

    def __init__(self, module: str, extra: str | None, feature: str):
        self.module = module
        self.extra = extra
        install = f"pip install 'cleancut[{extra}]'" if extra else f"pip install {module}"
        super().__init__(
            f"{feature} needs the Python package '{module}', which is not installed. "
            f"Install it with: {install}"
        )
