"""How a run stops: the first Ctrl-C (SIGINT or SIGTERM, or a caller's shutdown event) stops
gracefully, a second one stops now. Used by the pipeline and by the multi-shard driver.

A graceful stop stops the producers (`halt` scopes are cancelled: no more listing) and
gives what is in flight `grace_seconds` to finish (a deadline on the `scope`); a second
signal cancels `scope` at once.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Any

import anyio
from anyio import CancelScope


class Stopper:
    """One run's stop: requested once, by a signal or an event; `interrupted` tells whether it was."""

    def __init__(
        self,
        grace_seconds: float,
        out: Any,
        scope: CancelScope,
        *,
        halt: Sequence[CancelScope] = (),
        deadline: bool = True,
    ) -> None:
        """`scope` is cancelled by a second signal; with `deadline` it also ends `grace_seconds`
        after the first (False: the work under it applies its own grace, e.g. each shard's pipeline)."""
        self.grace_seconds = grace_seconds
        self.out = out
        self.scope = scope
        self.halt = list(halt)
        self.deadline = deadline
        self.requested = anyio.Event()

    @property
    def interrupted(self) -> bool:
        return self.requested.is_set()

    def stop(self, *, message: bool) -> None:
        """Stop gracefully (once): no more work starts, work in flight gets the grace period."""
        if self.requested.is_set():
            return
        self.requested.set()
        for s in self.halt:
            s.cancel()
        if message:
            print(
                f"\nstopping: letting in-flight copies finish (up to {self.grace_seconds:.0f} s); "
                "Ctrl-C again to stop now",
                file=self.out,
                flush=True,
            )
        if self.deadline:
            self.scope.deadline = anyio.current_time() + self.grace_seconds

    async def watch_signals(self) -> None:
        """SIGINT/SIGTERM: the first stops gracefully, the second cancels `scope` now. Main thread only."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if self.requested.is_set():
                    self.scope.cancel()
                    return
                self.stop(message=True)

    async def follow(self, event: anyio.Event) -> None:
        """A caller's shutdown (a lost lease, the driver's Ctrl-C) stops gracefully, without a message."""
        await event.wait()
        self.stop(message=False)
