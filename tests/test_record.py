"""The record stage's arithmetic: the log line's milliseconds, to the microsecond."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.record import RequestRecord, _ms


@given(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_milliseconds_to_the_microsecond(seconds: float) -> None:
    milliseconds = _ms(seconds)
    assert abs(milliseconds - seconds * 1000) <= 0.0005 + 1e-9 * seconds * 1000
    assert abs(milliseconds * 1000 - round(milliseconds * 1000)) < 1e-6 * max(1.0, seconds)


def test_milliseconds_of_known_durations() -> None:
    assert _ms(0.0) == 0.0
    assert _ms(0.0012344) == 1.234
    assert _ms(0.0012346) == 1.235
    assert _ms(2.5) == 2500.0


def test_a_request_handed_over_has_a_fixed_duration() -> None:
    record = RequestRecord(request_id="r", path="/", started=100.0)
    record.ended = 100.25
    assert record.elapsed() == 0.25
    assert record.elapsed() == 0.25  # later reads do not count the client's download
