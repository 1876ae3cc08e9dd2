"""The stored audit trail: who did what, when, from where.

This module owns the ``audit_events`` rows: recording an event (overlong
values clipped rather than refused, ``detail`` as compact JSON) and listing
them newest first, optionally filtered by actor, action or target (``bridge audit
list``, the admin's audit page and API). The trail is never purged here.
What is worth recording is the caller's decision; no secret is ever passed in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlmodel import col, select

from bridge.storage.base import StoreBase, clip, compact_json
from bridge.storage.models import AuditEventRow


def event_data(event: AuditEventRow) -> dict[str, Any]:
    """An event as the CLI and the admin API show it (``time`` in UTC, ``detail`` decoded)."""
    return {
        "id": event.id,
        "at": event.at,
        "time": datetime.fromtimestamp(event.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "detail": json.loads(event.detail_json),
        "ip": event.ip,
    }


class AuditStore(StoreBase):
    """The audit trail."""

    def audit(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        detail: Mapping[str, Any] | None = None,
        ip: str | None = None,
        now: int,
    ) -> None:
        """Record who did what. ``detail`` must not hold a secret."""
        row = AuditEventRow(
            at=now,
            actor=clip(actor, 200) or "",
            action=clip(action, 64) or "",
            target=clip(target, 200) or "",
            detail_json=compact_json(detail or {}),
            ip=clip(ip, 64),
        )
        with self._statements() as s:
            s.add(row)

    def list_audit(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditEventRow]:
        """Newest first; ``actor``, ``action`` and ``target`` (each exact, when given)
        keep only the matching events (the admin's audit page filters by them)."""
        query = select(AuditEventRow)
        for column, wanted in (
            (AuditEventRow.actor, actor),
            (AuditEventRow.action, action),
            (AuditEventRow.target, target),
        ):
            if wanted:
                query = query.where(col(column) == wanted)
        query = (
            query.order_by(col(AuditEventRow.at).desc(), col(AuditEventRow.id).desc())
            .limit(limit)
            .offset(offset)
        )
        with self._statements() as s:
            return list(s.exec(query))
