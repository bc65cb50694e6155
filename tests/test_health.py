"""The endpoint-health tracker's contract (backfill.pacing.EndpointHealth), apart from the end-to-end
outage tests (test_outage.py): requests that cannot reach the endpoint wait instead of spending
their retries, one probe at a time tries again, the first success releases everyone, and past the
outage timeout every waiting request raises OutageTimeout."""

from __future__ import annotations

import anyio
import pytest

from backfill.errors import OutageTimeout, RetryableError, StopRun, UserError
from backfill.pacing import EndpointHealth, Pacer, RateLimiter, RetryPolicy


def _unreachable() -> RetryableError:
    return RetryableError("cannot connect to 127.0.0.1:1: refused", unreachable=True)


def test_requests_wait_for_the_endpoint_and_spend_no_retries() -> None:
    anyio.run(_test_requests_wait_for_the_endpoint_and_spend_no_retries)


async def _test_requests_wait_for_the_endpoint_and_spend_no_retries() -> None:
    lines: list[str] = []
    health = EndpointHealth(timeout=30, notify=lines.append)
    pacer = Pacer(None, RateLimiter(None), health=health)
    up_at = anyio.current_time() + 2.5
    calls = 0

    async def request() -> str:
        nonlocal calls
        calls += 1
        if anyio.current_time() < up_at:
            raise _unreachable()
        return "ok"

    results: list[str] = []

    async def one() -> None:
        results.append(await pacer.run("GET x", request))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert results == ["ok"] * 20
    assert not health.down
    # 20 requests over 2.5 s: far more attempts than a policy of 8 would allow each, had they all tried
    # (they did not: one probe at a time), and no request gave up.
    assert calls < 20 + 40
    assert any("unreachable since" in line for line in lines), lines
    assert any("reachable again" in line for line in lines), lines


def test_past_the_outage_timeout_every_waiting_request_raises() -> None:
    anyio.run(_test_past_the_outage_timeout_every_waiting_request_raises)


async def _test_past_the_outage_timeout_every_waiting_request_raises() -> None:
    health = EndpointHealth(timeout=0.8)
    pacer = Pacer(None, RateLimiter(None), health=health)

    async def request() -> str:
        raise _unreachable()

    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await pacer.run("GET x", request)
        except OutageTimeout as exc:
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert len(errors) == 5
    assert isinstance(errors[0], StopRun) and isinstance(errors[0], UserError)
    assert "--outage-timeout" in str(errors[0])


def test_an_objects_own_errors_still_use_its_retries() -> None:
    anyio.run(_test_an_objects_own_errors_still_use_its_retries)


async def _test_an_objects_own_errors_still_use_its_retries() -> None:
    health = EndpointHealth(timeout=30)
    pacer = Pacer(None, RateLimiter(None), RetryPolicy(base=0.001), health=health)
    calls = 0

    async def request() -> str:
        nonlocal calls
        calls += 1
        raise RetryableError("InternalError", ambiguous=True)

    with pytest.raises(RetryableError):
        await pacer.run("PUT x", request)
    assert calls == pacer.policy.attempts
    assert not health.down
