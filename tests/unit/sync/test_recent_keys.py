"""RecentKeys: repeats within its size are caught; memory stays at its size."""

from __future__ import annotations

import pytest

from connector.dedupe import RecentCache, RecentKeys


def test_a_repeat_within_the_window_is_caught_and_old_keys_are_forgotten() -> None:
    keys = RecentKeys(3)
    assert [keys.add(k) for k in ("a", "b", "a", "c", "d")] == [True, True, False, True, True]
    assert len(keys) == 3
    assert keys.add("b") is True  # the oldest, forgotten when "d" came
    assert keys.add("d") is False  # seen recently: still remembered


def test_memory_never_exceeds_the_size() -> None:
    keys = RecentKeys(100)
    for i in range(10_000):
        keys.add(("id", i))
    assert len(keys) == 100


def test_a_window_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RecentKeys(0)


def test_a_recent_cache_keeps_the_most_recently_used_entries() -> None:
    cache: RecentCache[str, int] = RecentCache(3)
    for i, key in enumerate("abc"):
        cache[key] = i
    cache.touch(["a", "zz"])  # "a" is used again; an absent key is ignored
    cache["d"] = 3  # evicts "b", the least recently used
    assert sorted(cache) == ["a", "c", "d"]
    assert cache.get("b") is None and cache["a"] == 0 and len(cache) == 3
    with pytest.raises(ValueError, match="at least one"):
        RecentCache(0)
