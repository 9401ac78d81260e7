"""Backoff: which errors are retried, how long it waits, when it gives up."""

from __future__ import annotations

import random
import threading

import httpx
import pytest

from hpo_service.client.backoff import Backoff, GiveUpError, is_retryable, retry_call
from hpo_service.client.errors import ProblemError


def test_ceiling_grows_exponentially_up_to_the_cap() -> None:
    policy = Backoff(base=0.5, factor=2.0, cap=10.0)
    assert [policy.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert policy.ceiling(10_000) == 10.0


def test_delay_is_jittered_within_the_ceiling() -> None:
    policy = Backoff(base=1.0, factor=2.0, cap=100.0)
    rng = random.Random(0)
    delays = [policy.delay(3, rng) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 150  # spread out, not synchronised


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("dropped"), True),
        (ProblemError(503, {}), True),
        (ProblemError(500, {}), True),
        (ProblemError(429, {}), True),
        (ProblemError(409, {"type": "x/trial-not-leased"}), False),
        (ProblemError(422, {}), False),
        (ValueError("bug"), False),
    ],
)
def test_is_retryable(exc: Exception, expected: bool) -> None:
    assert is_retryable(exc) is expected


class _Flaky:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retries_network_errors_and_5xx_until_success() -> None:
    fn = _Flaky([httpx.ConnectError("x"), ProblemError(502, {}), httpx.ReadTimeout("y")])
    seen: list[tuple[int, float]] = []
    policy = Backoff(base=0.001, cap=0.002, deadline=None)
    assert retry_call(fn, policy, on_retry=lambda n, e, s: seen.append((n, s))) == "ok"
    assert fn.calls == 4
    assert [n for n, _ in seen] == [1, 2, 3]


def test_client_errors_are_not_retried() -> None:
    fn = _Flaky([ProblemError(409, {})])
    with pytest.raises(ProblemError):
        retry_call(fn, Backoff(base=0.001))
    assert fn.calls == 1


def test_gives_up_at_the_attempt_limit() -> None:
    fn = _Flaky([httpx.ConnectError("x")] * 10)
    with pytest.raises(GiveUpError) as info:
        retry_call(fn, Backoff(base=0.001, max_attempts=3))
    assert info.value.attempts == 3
    assert isinstance(info.value.last, httpx.ConnectError)


def test_gives_up_at_the_deadline_with_a_fake_clock() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 4.0  # every look at the clock costs four seconds
        return now[0]

    fn = _Flaky([httpx.ConnectError("x")] * 100)
    with pytest.raises(GiveUpError, match="deadline"):
        retry_call(fn, Backoff(base=0.0001, deadline=10.0), clock=clock)
    assert fn.calls < 5


def test_stop_interrupts_the_wait() -> None:
    stop = threading.Event()
    fn = _Flaky([httpx.ConnectError("x")] * 100)
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    with pytest.raises(GiveUpError, match="stopped"):
        retry_call(fn, Backoff(base=30.0, cap=30.0), stop=stop)
    timer.join()


def test_first_attempt_is_made_even_when_stopped() -> None:
    stop = threading.Event()
    stop.set()
    assert retry_call(_Flaky([]), Backoff(), stop=stop) == "ok"
