"""Showing cleancut's log warnings (such as "preparing the alpha-matting kernels ...") on the
command line, through whatever a command uses to print its lines."""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator


class _ReportHandler(logging.Handler):
    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        self._report(record.getMessage())


@contextlib.contextmanager
def notes_to(report: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, pass every warning logged under ``cleancut`` to ``report``."""
    handler = _ReportHandler(report)
    logger = logging.getLogger("cleancut")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
