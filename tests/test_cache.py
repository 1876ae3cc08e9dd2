"""The generation cache: hits, kept misses, the bound, and dropping on a moved generation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge.cache import MISSING, GenerationCache


class Source:
    """A generation and values that count how often they are read."""

    def __init__(self) -> None:
        self.generation = 0
        self.generation_reads = 0
        self.loads: list[str] = []
        self.values: dict[str, str] = {}

    def read_generation(self) -> int:
        self.generation_reads += 1
        return self.generation

    def loader(self, key: str) -> Callable[[], str | None]:
        def load() -> str | None:
            self.loads.append(key)
            return self.values.get(key)

        return load


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def source() -> Source:
    return Source()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def new_cache(
    source: Source, clock: Clock, *, interval: float = 2.0, size: int = 1000
) -> GenerationCache[str, str | None]:
    return GenerationCache(source.read_generation, interval=interval, size=size, clock=clock)


def test_a_kept_value_is_not_loaded_again(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock)
    source.values["a"] = "A"
    assert cache.get("a", source.loader("a")) == "A"
    assert cache.get("a", source.loader("a")) == "A"
    assert source.loads == ["a"]


def test_a_miss_is_kept_too(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock)
    for _ in range(3):
        assert cache.get("stranger", source.loader("stranger")) is None
    assert source.loads == ["stranger"]


def test_the_least_recently_used_entry_goes_first(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock, size=3)
    for key in ("a", "b", "c"):
        cache.get(key, source.loader(key))
    cache.get("a", source.loader("a"))  # a is now the most recently used
    cache.get("d", source.loader("d"))  # evicts b
    assert len(cache) == 3
    source.loads.clear()
    for key in ("a", "c", "d"):
        cache.get(key, source.loader(key))
    assert source.loads == []
    cache.get("b", source.loader("b"))
    assert source.loads == ["b"]


def test_random_keys_never_hold_more_than_the_bound(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock, size=100)
    for n in range(10_000):
        cache.get(f"random-{n}", source.loader(f"random-{n}"))
    assert len(cache) == 100


def test_the_generation_is_read_at_most_once_per_interval(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock, interval=2.0)
    for _ in range(50):
        cache.get("a", source.loader("a"))
        clock.now += 0.01
    assert source.generation_reads == 1
    clock.now += 2.0
    cache.get("a", source.loader("a"))
    assert source.generation_reads == 2
    assert source.loads == ["a"]  # the generation did not move: still kept


def test_a_moved_generation_drops_everything_at_the_next_read(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock, interval=2.0)
    source.values["a"] = "old"
    cache.get("a", source.loader("a"))
    cache.get("b", source.loader("b"))
    source.values["a"] = "new"
    source.generation += 1
    clock.now += 1.9
    assert cache.get("a", source.loader("a")) == "old"  # not due yet: may be stale
    clock.now += 0.1
    assert cache.get("a", source.loader("a")) == "new"
    assert cache.get("b", source.loader("b")) is None
    assert source.loads == ["a", "b", "a", "b"]


def test_invalidate_drops_everything_at_once(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock)
    source.values["a"] = "old"
    cache.get("a", source.loader("a"))
    source.values["a"] = "new"
    cache.invalidate()
    assert cache.get("a", source.loader("a")) == "new"


def test_a_load_that_began_before_a_drop_is_not_kept(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock)

    def slow_load() -> str | None:
        value = "read-before-the-change"
        cache.invalidate()  # the change lands while this load is under way
        return value

    assert cache.get("a", slow_load) == "read-before-the-change"
    source.values["a"] = "new"
    assert cache.get("a", source.loader("a")) == "new"


def test_zero_interval_reads_the_generation_on_every_look_up(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock, interval=0)
    for _ in range(3):
        cache.get("a", source.loader("a"))
    assert source.generation_reads == 3
    assert source.loads == ["a"]
    assert cache.peek("a") is MISSING


def test_a_failed_generation_read_propagates_and_is_tried_again(
    source: Source, clock: Clock
) -> None:
    cache = new_cache(source, clock)
    cache.get("a", source.loader("a"))
    clock.now += 5

    def unavailable() -> int:
        raise ConnectionError("database down")

    cache._read_generation = unavailable
    with pytest.raises(ConnectionError):
        cache.get("a", source.loader("a"))
    cache._read_generation = source.read_generation
    source.generation += 1
    cache.get("a", source.loader("a"))  # not postponed by the failure: read now
    assert source.loads == ["a", "a"]


def test_peek_answers_only_while_the_generation_is_fresh(source: Source, clock: Clock) -> None:
    cache = new_cache(source, clock, interval=2.0)
    assert cache.peek("a") is MISSING  # never read
    source.values["a"] = "A"
    cache.get("a", source.loader("a"))
    cache.get("stranger", source.loader("stranger"))
    assert cache.peek("a") == "A"
    assert cache.peek("stranger") is None
    assert cache.peek("other") is MISSING
    clock.now += 2.0
    assert cache.peek("a") is MISSING  # the generation must be read first
    assert source.generation_reads == 1
