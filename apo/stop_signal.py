"""Stopping a long run cleanly on Ctrl-C or SIGTERM: the trainer finishes the step, checkpoints and exits
(StopRequest); evaluation stops at once and says what it kept (raise_on_sigterm)."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

logger = logging.getLogger(__name__)


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks between steps (so it can
    write a checkpoint and exit cleanly); a second SIGINT raises KeyboardInterrupt at once.
    Use as a context manager; the previous handlers are restored on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("received %s: finishing this step, writing a checkpoint, then exiting "
                       "(press Ctrl-C again to stop at once)", signal.Signals(signum).name)

    def __enter__(self) -> StopRequest:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the handlers alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class Terminated(Exception):
    """SIGTERM arrived inside `raise_on_sigterm`."""


@contextlib.contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """Within the block SIGTERM raises Terminated at once, so the caller can say what it kept
    before it exits (the default action ends the process without a word). Outside the main
    thread nothing changes; the previous handler is restored on exit."""
    def handle(signum, frame) -> None:
        raise Terminated(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
