"""call_with_retry() and RateGate: transient errors retried, Retry-After honoured, gate shared."""

from __future__ import annotations

import threading
import time

import pytest
from dealcore_fakes import FakeClock

from connector.errors import ConfigError, CoreError, Throttled
from connector.retry import RateGate, RetryPolicy, call_with_retry


class Flaky:
    """Raises the given errors one by one, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def transient(retry_after: float | None = None) -> CoreError:
    return CoreError("busy", transient=True, status=503, retry_after=retry_after)


def test_transient_errors_are_retried_until_success() -> None:
    sleeps: list[float] = []
    fn = Flaky(transient(), transient())
    assert call_with_retry(fn, RetryPolicy(), sleep=sleeps.append) == "done"
    assert fn.calls == 3 and len(sleeps) == 2


def test_permanent_errors_are_raised_at_once() -> None:
    sleeps: list[float] = []
    fn = Flaky(CoreError("bad", code="ReferralClosed"))
    with pytest.raises(CoreError, match="bad"):
        call_with_retry(fn, RetryPolicy(), sleep=sleeps.append)
    assert fn.calls == 1 and sleeps == []


def test_other_exceptions_are_not_retried() -> None:
    fn = Flaky(ConfigError("no"), ValueError("x"))
    with pytest.raises(ConfigError):
        call_with_retry(fn, RetryPolicy(), sleep=lambda s: None)
    assert fn.calls == 1


def test_attempts_are_bounded_and_the_last_error_is_reraised() -> None:
    errors = [transient() for _ in range(10)]
    fn = Flaky(*errors)
    with pytest.raises(CoreError) as raised:
        call_with_retry(fn, RetryPolicy(attempts=4), sleep=lambda s: None)
    assert fn.calls == 4
    assert raised.value is errors[3]


def test_retry_after_is_a_minimum_wait() -> None:
    sleeps: list[float] = []
    fn = Flaky(transient(retry_after=9.0), transient())
    call_with_retry(fn, RetryPolicy(initial_wait=0.1, jitter=0.1), sleep=sleeps.append)
    assert sleeps[0] >= 9.0
    assert sleeps[1] < 9.0  # the second error had no Retry-After: plain backoff


def test_backoff_grows_and_is_capped() -> None:
    sleeps: list[float] = []
    fn = Flaky(*(transient() for _ in range(5)))
    call_with_retry(
        fn, RetryPolicy(attempts=6, initial_wait=1, max_wait=5, jitter=0), sleep=sleeps.append
    )
    assert sleeps == [1, 2, 4, 5, 5]


def test_a_wait_beyond_the_total_budget_is_not_made() -> None:
    sleeps: list[float] = []
    fn = Flaky(transient(retry_after=600.0))
    with pytest.raises(CoreError):
        call_with_retry(fn, RetryPolicy(max_total_seconds=60), sleep=sleeps.append)
    assert fn.calls == 1 and sleeps == []


def test_gate_open_by_default_and_never_shortened() -> None:
    clock = FakeClock()
    gate = RateGate(clock=clock, sleep=clock.sleep)
    gate.wait()
    assert clock.sleeps == []
    gate.block_for(5)
    gate.block_for(1)  # a shorter block does not reopen the gate early
    assert gate.blocked_for == 5
    gate.wait()
    assert clock.now >= 5


def test_gate_holds_every_thread_until_retry_after_passed_fake_clock() -> None:
    clock = FakeClock()
    gate = RateGate(clock=clock, sleep=clock.sleep)
    gate.block_for(2.0)
    released_at: list[float] = []
    lock = threading.Lock()

    def pusher() -> None:
        gate.wait()
        with lock:
            released_at.append(clock())

    threads = [threading.Thread(target=pusher) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert len(released_at) == 8
    assert min(released_at) >= 2.0
    assert clock.sleeps  # they did wait on the clock, not spin


def test_gate_extension_while_waiting_is_respected_fake_clock() -> None:
    clock = FakeClock()
    extended: list[bool] = []

    def sleep_while_another_thread_is_throttled(seconds: float) -> None:
        clock.sleep(seconds)
        if not extended:  # a 429 elsewhere extends the block during the first sleep
            extended.append(True)
            gate.block_for(3.0)

    gate = RateGate(clock=clock, sleep=sleep_while_another_thread_is_throttled)
    gate.block_for(1.0)
    gate.wait()
    assert clock.now >= 4.0
    assert clock.sleeps == [1.0, 3.0]


def test_gate_blocks_real_threads_in_real_time() -> None:
    gate = RateGate()
    gate.block_for(0.2)
    started = time.monotonic()
    waited: list[float] = []

    def pusher() -> None:
        gate.wait()
        waited.append(time.monotonic() - started)

    threads = [threading.Thread(target=pusher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert len(waited) == 4 and min(waited) >= 0.19


def test_gate_refuses_a_wait_past_its_cap_and_then_every_caller() -> None:
    clock = FakeClock()
    gate = RateGate(max_wait_s=300, system="the deal core", clock=clock, sleep=clock.sleep)
    with pytest.raises(Throttled) as refused:
        gate.block_for(86400)
    assert "86400 s" in refused.value.message and "max_throttle_wait_s" in refused.value.message
    for call in (gate.wait, lambda: gate.block_for(1)):
        with pytest.raises(Throttled):
            call()
    assert clock.sleeps == []  # nobody slept on it


def test_gate_caps_the_waits_of_a_run_in_all_fake_clock() -> None:
    clock = FakeClock()
    gate = RateGate(max_wait_s=100, clock=clock, sleep=clock.sleep)
    gate.block_for(60)
    gate.wait()
    gate.block_for(30)  # 90 s closed in all
    gate.block_for(40)  # overlaps the block in force: 10 s more, 100 in all
    gate.wait()
    assert gate.closed_s == 100 and clock.now == 100
    with pytest.raises(Throttled, match="after 100 s of waiting"):
        gate.block_for(1)


def test_gate_ignores_a_nan_or_negative_wait() -> None:
    gate = RateGate(max_wait_s=10)
    gate.block_for(float("nan"))
    gate.block_for(-5)
    assert gate.blocked_for == 0
