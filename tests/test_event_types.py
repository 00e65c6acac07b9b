"""The event types are named once, in mailroom.event_types. The answers' TypedDicts write them out again
because the type checker needs them literally; these tests fail when the two disagree."""

from __future__ import annotations

from typing import get_type_hints

from mailroom.campaigns.schemas import CountersOut
from mailroom.event_types import EVENT_TYPES
from mailroom.tracking.stats import EventCountOut, EventCountsOut


def test_the_counters_answer_names_every_event_type_in_order() -> None:
    # The order is the answers' key order and the API document's property order.
    assert tuple(CountersOut.__annotations__) == EVENT_TYPES
    assert get_type_hints(CountersOut) == dict.fromkeys(EVENT_TYPES, int)


def test_the_stats_counts_name_every_event_type_in_order() -> None:
    assert tuple(EventCountsOut.__annotations__) == EVENT_TYPES
    assert get_type_hints(EventCountsOut) == dict.fromkeys(EVENT_TYPES, EventCountOut)
