"""Running one stage of the frame pipeline in a background thread.

:func:`in_background` turns an iterator into one whose items are produced by a worker thread
while the consumer works on the previous ones. A bounded queue between the two keeps at most
``depth`` items in flight, so memory stays flat however long the clip is. Exceptions raised by the
producer are re-raised in the consumer; when the consumer stops early (an error, Ctrl-C, a
generator closed half-way), the producer is told to stop, its iterator is closed in its own thread
(so upstream stages stop in turn) and the thread is joined before the consumer goes on.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = range(3)
_POLL_SECONDS = 0.1


def in_background(items: Iterable[T], depth: int = 2, name: str = "cleancut-stage") -> Iterator[T]:
    """Iterate ``items`` in a worker thread, at most ``depth`` items ahead of the consumer."""
    channel: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(kind: int, value) -> bool:
        while not stop.is_set():
            try:
                channel.put((kind, value), timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(_ITEM, item):
                    return
            put(_END, None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_ERROR, exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            kind, value = channel.get()
            if kind == _END:
                return
            if kind == _ERROR:
                try:
                    raise value
                finally:  # the exception's traceback holds this frame: no cycle back to it (which would
                    del value  # keep the stages' decoders and their threads alive until the cyclic GC)
            yield value
    finally:
        stop.set()
        worker.join()
