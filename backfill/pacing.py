"""All waiting lives here: adaptive concurrency, a request-rate cap, and retries.

One Pacer wraps every S3 request of a kind (rclone's lib/pacer does the same):
the SDK's own retries are switched off (see s3/connect.py), so a throttled request is
seen here once, shrinks the concurrency, and is retried with capped, jittered
backoff instead of being retried three times underneath.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from backfill.errors import RetryableError, classify

T = TypeVar("T")


class AdaptiveLimiter:
    """AIMD concurrency: halve on throttling, +1 after a window of successes.

    Entering takes a slot without yielding to the event loop when one is free
    (every request is about to wait on the network anyway; anyio's
    CapacityLimiter checkpoints twice per acquisition, which at thousands of
    requests per second is a measurable share of the client's CPU). A task
    that finds no free slot waits in FIFO order; a released slot is handed to
    the first waiter directly.
    """

    def __init__(self, ceiling: int, floor: int = 1) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.limit = ceiling
        self.in_use = 0
        self._waiters: deque[anyio.Event] = deque()
        self._successes = 0
        self._last_cut = -math.inf
        self.cuts = 0
        self.low = ceiling  # the lowest limit of the run, and the highest after it: for the summary
        self.high_after_low = ceiling

    async def __aenter__(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self._release()  # the slot was handed over as we were cancelled: pass it on
            else:
                self._waiters.remove(turn)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            self.in_use += 1
            self._waiters.popleft().set()

    def on_success(self) -> None:
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.ceiling:
            self.limit += 1
            self._successes = 0
            self.high_after_low = max(self.high_after_low, self.limit)
            self._wake()

    def on_throttle(self) -> None:
        # Many requests in flight see the same throttling at once: cut once per second.
        now = time.monotonic()
        if now - self._last_cut < 1.0:
            return
        self._last_cut = now
        self._successes = 0
        self.cuts += 1
        self.limit = max(self.floor, self.limit // 2)
        if self.limit <= self.low:
            self.low = self.high_after_low = self.limit


class RateLimiter:
    """At most `rps` request starts per second, spread evenly (no bursts)."""

    def __init__(self, rps: float | None) -> None:
        self._interval = 1.0 / rps if rps else 0.0
        self._next = 0.0
        self.active = bool(self._interval)

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self._interval
        if start > now:
            await anyio.sleep(start - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 8
    base: float = 0.2
    cap: float = 20.0

    def delay(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base·2^attempt)]."""
        return random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311 - jitter, not crypto


class Pacer:
    def __init__(
        self,
        limiter: AdaptiveLimiter | None,
        rate: RateLimiter,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.limiter = limiter
        self.rate = rate
        self.policy = policy or RetryPolicy()
        self.retries = 0
        self.recovered = 0  # writes found carried out after a failure that left it unknown

    async def run(
        self,
        what: str,
        fn: Callable[[], Awaitable[T]],
        *,
        bucket: str = "",
        who: str = "",
        landed: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T:
        """Run one request under the limits; retry transient failures; raise classified errors.

        `landed`, for a write that must not happen twice: after a failure that
        leaves it unknown whether the server carried the request out, it looks
        for the write's result and returns it (which then counts as the
        request's), or None; only then is the request sent again, or given up.
        """
        attempt = 0
        while True:
            if self.rate.active:
                await self.rate.wait()
            try:
                if self.limiter is None:
                    result = await fn()
                else:
                    async with self.limiter:
                        result = await fn()
            except Exception as exc:
                err = classify(exc, what=what, bucket=bucket, profile_hint=who)
                retry = isinstance(err, RetryableError) and attempt + 1 < self.policy.attempts
                if isinstance(err, RetryableError):
                    if err.throttled and self.limiter is not None:
                        self.limiter.on_throttle()
                    if retry:
                        await anyio.sleep(self.policy.delay(attempt))
                    if err.ambiguous and landed is not None:
                        found = await landed()
                        if found is not None:
                            self.recovered += 1
                            return found
                if not retry:
                    if err is exc:
                        raise
                    raise err from exc
                self.retries += 1
                attempt += 1
                continue
            if self.limiter is not None:
                self.limiter.on_success()
            return result
