"""Pieces of the token side that need no server: at_hash (C1) and the per-code locks (B1)."""

from __future__ import annotations

import threading
import time

from bridge.oauth.server import _KeyedLocks, at_hash


def test_at_hash_matches_the_example_of_oidc_core() -> None:
    """OpenID Connect Core 1.0, Appendix A.3."""
    assert at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y") == "77QmUPtjPfzWtF2AnpK9RQ"


def test_keyed_locks_serialise_one_key_and_forget_it_afterwards() -> None:
    locks = _KeyedLocks()
    inside: list[str] = []
    overlap: list[bool] = []

    def work(key: str) -> None:
        with locks.hold(key):
            overlap.append(key in inside)
            inside.append(key)
            time.sleep(0.01)
            inside.remove(key)

    threads = [threading.Thread(target=work, args=("code",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap == [False] * 8
    assert locks._locks == {}


def test_keyed_locks_do_not_block_other_keys() -> None:
    locks = _KeyedLocks()
    with locks.hold("a"):
        done = threading.Event()

        def other() -> None:
            with locks.hold("b"):
                done.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert done.wait(2)
        thread.join()
