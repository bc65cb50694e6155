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

from backfill.errors import OutageTimeout, RetryableError, classify

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


class EndpointHealth:
    """Whether the endpoint answers at all: one per run, shared by every Pacer (listing and copies).

    A request that cannot reach the endpoint (connection refused, a connect that times out, no
    route, no name: RetryableError.unreachable) reports it here instead of spending its own
    retries. From the first such failure with no success anywhere since, the endpoint counts as
    down: requests about to start wait, and one request at a time (the probe) tries again, after a
    pause growing to `probe_cap` seconds. The first success anywhere ends the outage and every
    waiting request goes. So a version is failed only by errors of its own. After `timeout`
    seconds down, every waiting request raises OutageTimeout: the run stops like Ctrl-C.
    """

    ANNOUNCE_AFTER = 1.0  # seconds down before the run says so (one refused connect is not an outage)

    def __init__(
        self,
        timeout: float,
        notify: Callable[[str], None] | None = None,
        probe_cap: float = 1.0,
        name: str = "endpoint",
    ) -> None:
        self.timeout = timeout
        self.name = name  # in the messages: "endpoint", or "state location s3://…" (distributed.store)
        self.notify = notify
        self.probe_cap = probe_cap
        self.down_since: float | None = None  # time.monotonic() of this outage's first failure
        self.down_since_wall = 0.0
        self.reason = ""
        self.outages = 0  # announced outages of the run
        self.longest = 0.0
        self._up = anyio.Event()
        self._up.set()
        self._probing = False
        self._announced = False
        self._probes = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def status(self) -> str:
        """For the progress line: "" while the endpoint answers."""
        if self.down_since is None or not self._announced:
            return ""
        since = time.strftime("%H:%M:%S", time.gmtime(self.down_since_wall))
        return f"{self.name} unreachable since {since} UTC, retrying"

    def succeeded(self) -> None:
        if self.down_since is None:
            return
        took = time.monotonic() - self.down_since
        if self._announced and self.notify is not None:
            self.notify(f"{self.name} reachable again after {took:.1f} s: carrying on")
        self.longest = max(self.longest, took)
        self.down_since = None
        self._announced = False
        self._probes = 0
        self._up.set()

    def _expired(self) -> OutageTimeout:
        since = time.strftime("%H:%M:%S", time.gmtime(self.down_since_wall))
        return OutageTimeout(
            f"the {self.name} has been unreachable since {since} UTC ({self.reason}), longer than "
            f"--outage-timeout ({self.timeout:g} s): check the network and the endpoint, then resume"
        )

    async def unreachable(self, reason: str) -> None:
        """A request could not reach the endpoint: return when it is worth trying again (or raise OutageTimeout)."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since, self.down_since_wall, self.reason = now, time.time(), reason
            self._up = anyio.Event()
        elapsed = now - self.down_since
        if elapsed >= self.timeout:
            raise self._expired()
        if not self._announced and elapsed >= self.ANNOUNCE_AFTER:
            self._announced = True
            self.outages += 1
            if self.notify is not None:
                self.notify(f"{self.status()} ({self.reason}); giving up after {self.timeout:g} s (--outage-timeout)")
        if self._probing:
            await self.wait_up()
            return
        self._probing = True  # this request is the probe: it tries again after a short, growing, jittered pause
        try:
            self._probes += 1
            pause = random.uniform(0.5, 1.0) * min(self.probe_cap, 0.05 * 2**self._probes)  # noqa: S311
            with anyio.move_on_after(min(pause, max(0.0, self.timeout - elapsed))):
                await self._up.wait()  # another request got through: no need to wait longer
        finally:
            self._probing = False

    async def wait_up(self) -> None:
        """Before a request: while the endpoint is down and another request probes it, wait."""
        while self.down_since is not None and self._probing:
            remaining = self.timeout - (time.monotonic() - self.down_since)
            if remaining <= 0:
                raise self._expired()
            with anyio.move_on_after(remaining):
                await self._up.wait()


class Pacer:
    def __init__(
        self,
        limiter: AdaptiveLimiter | None,
        rate: RateLimiter,
        policy: RetryPolicy | None = None,
        health: EndpointHealth | None = None,
    ) -> None:
        self.limiter = limiter
        self.rate = rate
        self.policy = policy or RetryPolicy()
        self.health = health
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
        health = self.health
        while True:
            if health is not None and health.down:
                await health.wait_up()
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
                if health is not None and isinstance(err, RetryableError) and err.unreachable:
                    # The endpoint, not this request: wait for it (or OutageTimeout), spend no attempt.
                    await health.unreachable(str(err))
                    if err.ambiguous and landed is not None:
                        found = await landed()
                        if found is not None:
                            self.recovered += 1
                            return found
                    self.retries += 1
                    continue
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
            if health is not None and health.down:
                health.succeeded()
            return result
