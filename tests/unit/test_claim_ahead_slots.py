"""Slots: a worker claims ahead only while its handlers are short."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from teguh.worker.dispatcher import AHEAD_MAX_HANDLER, Slots


def test_short_handlers_open_the_ahead_room_and_long_ones_close_it() -> None:
    slots = Slots(concurrency=4, min_batch=2, ahead=2)
    try:
        assert (slots.capacity, slots.min_batch) == (4, 2)  # nothing known yet: no claim ahead
        slots.give_back(object(), 0.001)  # type: ignore[arg-type]
        assert (slots.capacity, slots.min_batch) == (6, 3)
        for _ in range(20):
            slots.give_back(object(), 10 * AHEAD_MAX_HANDLER)  # type: ignore[arg-type]
        assert (slots.capacity, slots.min_batch) == (4, 2)
        slots.give_back(object(), None)  # type: ignore[arg-type]  # a run handed back unrun
        assert slots.capacity == 4
    finally:
        slots.close()


def test_no_ahead_room_without_ahead() -> None:
    slots = Slots(concurrency=3, min_batch=1)
    try:
        slots.give_back(object(), 0.0)  # type: ignore[arg-type]
        assert (slots.capacity, slots.min_batch, slots.free) == (3, 1, 3)
    finally:
        slots.close()


@given(
    concurrency=st.integers(1, 50),
    ahead=st.integers(0, 25),
    durations=st.lists(st.one_of(st.none(), st.floats(0, 5)), max_size=30),
)
def test_capacity_stays_between_concurrency_and_concurrency_plus_ahead(
    concurrency: int, ahead: int, durations: list[float | None]
) -> None:
    slots = Slots(concurrency, max(1, concurrency // 2), ahead=ahead)
    try:
        for d in durations:
            slots.give_back(object(), d)  # type: ignore[arg-type]
            assert slots.capacity in (concurrency, concurrency + ahead)
            assert slots.min_batch >= max(1, concurrency // 2)
    finally:
        slots.close()
