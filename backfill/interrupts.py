"""A Ctrl-C during start-up, kept even where Python itself would drop it.

Python runs the SIGINT handler between two bytecodes of whatever runs then. When that is a weakref
callback or a `__del__` (the import machinery has such callbacks: `_get_module_lock`'s), the
KeyboardInterrupt it raises cannot propagate: Python prints "Exception ignored in: …" with a traceback
and goes on, and the command would run to its end. `watching()` covers the windows where that can
happen (backfill.entry's first imports, cli.guard.before_anything's set-up): the Ctrl-C is noted, the
traceback not printed, and KeyboardInterrupt raised once the window closes. Standard library only.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

_caught: list[bool] = []  # a Ctrl-C came within the current window


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _caught.append(True)
    raise KeyboardInterrupt


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """A window in which a Ctrl-C is never lost: it raises KeyboardInterrupt, here or at the window's end.

    Only where SIGINT has Python's default handler (not where it is ignored, or handled by a caller)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    previous_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)

    _caught.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = hook
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = previous_hook
    if _caught:
        _caught.clear()
        raise KeyboardInterrupt  # it came in a callback that could not raise it: raised now
