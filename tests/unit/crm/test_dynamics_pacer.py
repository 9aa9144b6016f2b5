"""The Dataverse request pacer: a sliding window of sends, with a fake clock (no waiting)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import respx
from dynamics_fakes import API, ENV, adapter, mocked_dataverse

from connector.crm.dynamics.adapter import DataverseOpportunities
from connector.crm.dynamics.pacing import (
    PACING_MARGIN_S,
    WINDOW_REQUESTS,
    WINDOW_S,
    RequestPacer,
    shared_pacer,
)
from connector.settings import DataverseSettings


class FakeClock:
    """Time that moves only when the pacer sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pacer(limit: int, window_s: float = 300.0) -> tuple[RequestPacer, FakeClock]:
    clock = FakeClock()
    return RequestPacer(limit, window_s, clock=clock, sleep=clock.sleep), clock


def test_requests_inside_the_allowance_never_wait() -> None:
    paced, clock = pacer(5)
    assert [paced.acquire() for _ in range(5)] == [0.0] * 5
    assert clock.slept == [] and paced.in_window() == 5 and paced.waits == 0


def test_the_request_past_the_allowance_waits_until_the_oldest_leaves_the_window() -> None:
    paced, clock = pacer(3, window_s=300.0)
    paced.acquire()  # t = 1000
    clock.now += 10
    paced.acquire()  # t = 1010
    paced.acquire()
    waited = paced.acquire()  # the window holds 3: wait for the one sent at 1000
    assert waited == pytest.approx(290.0)
    assert clock.now == pytest.approx(1300.0)
    assert paced.waits == 1 and paced.waited_s == pytest.approx(290.0)
    # the next one waits for the pair sent at 1010
    assert paced.acquire() == pytest.approx(10.0)


def test_a_sliding_window_never_holds_more_than_the_limit() -> None:
    """Sends at an uneven pace: every window of window_s seconds counts at most the limit."""
    paced, clock = pacer(50, window_s=300.0)
    sends: list[float] = []
    for i in range(400):
        clock.now += (i % 7) * 0.9  # bursts and gaps
        paced.acquire()
        sends.append(clock.now)
    for i, start in enumerate(sends):
        inside = [t for t in sends[i:] if t < start + 300.0]
        assert len(inside) <= 50
    # and the pacer does not slow down more than it must: the 400 sends took about
    # 400 / 50 windows at most
    assert sends[-1] - sends[0] <= (400 / 50) * 300.0


def test_the_window_is_longer_than_dataverses_by_the_margin() -> None:
    assert RequestPacer().window_s == WINDOW_S + PACING_MARGIN_S
    assert RequestPacer().limit == WINDOW_REQUESTS == 6000


def test_threads_share_one_window() -> None:
    paced, clock = pacer(20)
    lock = threading.Lock()

    def send() -> None:
        for _ in range(10):
            with lock:  # the fake clock is not thread-safe; the pacer's count is the point
                paced.acquire()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 40 sends, 20 a window: the second 20 waited one window
    assert clock.now == pytest.approx(1300.0)
    assert paced.in_window() == 20


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RequestPacer(0)
    with pytest.raises(ValueError):
        RequestPacer(10, 0)


def test_one_pacer_per_user_and_environment() -> None:
    a = shared_pacer("https://org.crm.dynamics.com/", "app-1", 6000)
    assert shared_pacer("https://ORG.crm.dynamics.com", "app-1", 6000) is a
    assert shared_pacer("https://org.crm.dynamics.com", "app-2", 6000) is not a
    assert shared_pacer("https://other.crm.dynamics.com", "app-1", 6000) is not a


def test_the_setting_defaults_to_the_documented_allowance() -> None:
    settings = DataverseSettings.model_validate(
        {
            "environment_url": "https://org.crm.dynamics.com",
            "tenant": "t",
            "client_id": "c",
            "client_secret": {"env": "DATAVERSE_SECRET"},
        }
    )
    assert settings.requests_per_5min == 6000
    off = settings.model_copy(update={"requests_per_5min": None})
    assert off.requests_per_5min is None


def test_connect_paces_by_default_and_can_be_told_not_to() -> None:
    paced = DataverseOpportunities.connect(
        environment_url="https://paced.crm.dynamics.com",
        tenant="t",
        client_id="c",
        client_secret="s",
    )
    unpaced = DataverseOpportunities.connect(
        environment_url="https://paced.crm.dynamics.com",
        tenant="t",
        client_id="c",
        client_secret="s",
        requests_per_5min=None,
    )
    try:
        assert paced.transport.pacer is shared_pacer("https://paced.crm.dynamics.com", "c", 6000)
        assert unpaced.transport.pacer is None
    finally:
        paced.close()
        unpaced.close()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with mocked_dataverse() as router:
        yield router


def test_the_transport_waits_instead_of_sending_past_the_window(
    mock: respx.MockRouter,
) -> None:
    """Three requests allowed per window: the fourth is sent only after the pacer's wait,
    and no request was refused or retried."""
    clock = FakeClock()
    route = mock.get(f"{API}/WhoAmI").respond(json={"UserId": "u"})
    paced = RequestPacer(3, 300.0, clock=clock, sleep=clock.sleep)
    crm = adapter(pacer=paced)
    try:
        for _ in range(4):
            crm.transport.send("GET", "WhoAmI", kind="read", what="WhoAmI")
    finally:
        crm.close()
    assert route.call_count == 4
    assert clock.slept == [pytest.approx(300.0)]
    assert crm.transport.throttled == 0
    assert ENV in crm.environment_url
