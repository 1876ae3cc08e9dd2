"""Scheduled work inside each bridge process: the purge of expired state (SECURITY D8),
writing the sign-in counts, and following the keys kept in the database.

Every process runs :func:`purge_periodically` from the app's lifespan: about
every ``purge_interval_seconds`` (with jitter, so several processes do not all
wake together) it deletes what nobody can use any more through
:meth:`bridge.storage.Store.purge_expired`, which is idempotent, works in
bounded batches, and on PostgreSQL lets one process purge at a time. A failed
purge is logged and retried at the next turn; it never stops the server. This
module decides *when* to purge; *what* is expired is the Store's business.

Sign-ins are counted in memory (:meth:`bridge.storage.Store.count_sign_in`);
:func:`flush_counts_periodically` writes them every :data:`COUNTS_FLUSH_SECONDS`
and the app's lifespan once more at shutdown (:func:`flush_counts`).

With ``key_store = "database"``, :func:`watch_keys_periodically` reads the key
vault's generation every :data:`bridge.keys.KEYS_POLL_SECONDS`, reloads the keys
when it moved, and acknowledges the kids this process publishes, so that a
rotation promotes a key only once every serving process publishes it (SECURITY
C3, G4). A folder of keys needs none of this: it is checked on every use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time

from bridge.keys import KeyStoreError
from bridge.services import Services
from bridge.storage.db import DatabaseUnavailable

log = logging.getLogger("bridge.housekeeping")

#: How often each process writes the sign-ins it counted (what another process's
#: statistics page lags behind at most).
COUNTS_FLUSH_SECONDS = 5.0
#: A serving process acknowledges its kids at least this often, changed or not, so
#: that it stays counted among the processes a rotation waits for.
KEYS_ACK_SECONDS = 10.0


def describe(counts: dict[str, int]) -> str:
    """``sessions=3 pending requests=0 ...``: one line for the log and the CLI."""
    return ", ".join(f"{kind}: {count}" for kind, count in counts.items())


async def purge_once(services: Services) -> dict[str, int] | None:
    """Purge now; the rows removed per kind, or None if another process is purging."""
    now = int(time.time())
    idle = services.settings.sessions.idle_seconds
    counts: dict[str, int] | None = await services.db.run(
        lambda: services.store.purge_expired(now=now, session_idle_seconds=idle)
    )
    return counts


async def purge_periodically(services: Services, interval: float) -> None:
    """Purge about every ``interval`` seconds until cancelled (at shutdown)."""
    while True:
        # 0.5x to 1.5x: on average ``interval``; processes started together drift apart.
        await asyncio.sleep(interval * random.uniform(0.5, 1.5))
        try:
            counts = await purge_once(services)
        except DatabaseUnavailable as error:
            log.warning("scheduled purge skipped: database unavailable (%s)", error.detail)
            continue
        except Exception:
            log.exception("scheduled purge failed; trying again at the next turn")
            continue
        if counts is None:
            log.debug("scheduled purge skipped: another process is purging")
        elif any(counts.values()):
            log.info("purged expired rows: %s", describe(counts))
        else:
            log.debug("purged expired rows: nothing to remove")


async def flush_counts(services: Services) -> None:
    """Write the sign-ins this process counted; a failure is logged (they are kept)."""
    try:
        await services.db.run(services.store.flush_sign_ins)
    except DatabaseUnavailable as error:
        log.warning("sign-in counts not written yet: database unavailable (%s)", error.detail)
    except Exception:
        log.exception("sign-in counts not written yet; trying again at the next turn")


async def flush_counts_periodically(services: Services, interval: float) -> None:
    """Write the counted sign-ins every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        await flush_counts(services)


def instance_name() -> str:
    """This serving process among its peers: host, pid and a random tag (pids repeat)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(3)}"


async def watch_keys_periodically(
    services: Services, instance: str, interval: float, ack_every: float = KEYS_ACK_SECONDS
) -> None:
    """Reload the keys when another process changed them, and acknowledge what this
    process publishes, every ``interval`` seconds until cancelled. A failure is
    logged and the keys in memory keep serving; the next turn tries again."""
    keys, db = services.keys, services.db
    acknowledged: frozenset[str] | None = None
    last_ack = 0.0
    failing: str | None = None  # logged once, not every second
    while True:
        try:
            await db.run(keys.reload_if_changed)
            published = keys.published_kids()
            now = time.monotonic()
            if published != acknowledged or now - last_ack >= ack_every:
                await db.run(keys.acknowledge, instance)
                acknowledged, last_ack = published, now
        except DatabaseUnavailable as error:
            if failing != "database":
                log.warning("keys not checked: database unavailable (%s)", error.detail)
            failing = "database"
        except KeyStoreError as error:
            if failing != str(error):
                log.error("keys not reloaded, the last good ones keep serving: %s", error)
            failing = str(error)
        except Exception:
            log.exception("keys not checked; trying again at the next turn")
        else:
            if failing is not None:
                log.info("keys checked again")
            failing = None
        await asyncio.sleep(interval)


async def forget_instance(services: Services, instance: str) -> None:
    """At shutdown: this process no longer holds back a rotation."""
    try:
        await services.db.run(services.keys.forget, instance)
    except DatabaseUnavailable as error:
        log.warning("could not sign off from the key vault (%s)", error.detail)
