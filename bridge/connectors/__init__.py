"""Where identities come from: the :class:`UserStore` protocol and its outcomes.

A connector checks a username and password and reads a profile; it knows
nothing about OAuth, sessions or HTTP responses of the bridge. Every call ends
in exactly one named outcome, so callers can never mistake "iMIS is down" for
"wrong password".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.identity import Identity


@dataclass(frozen=True, slots=True)
class WrongCredentials:
    """Username unknown or password wrong (the person is told the same for both)."""

    detail: str = ""  # for the log only (e.g. iMIS's error_description)


@dataclass(frozen=True, slots=True)
class AccountDisabled:
    """iMIS knows the account but it may not sign in."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class OrganizationAccount:
    """The account belongs to an organization record; organizations do not sign in."""

    imis_id: str


@dataclass(frozen=True, slots=True)
class NotFound:
    """No such iMIS ID (from :meth:`UserStore.lookup`)."""

    imis_id: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """iMIS could not answer (down, slow, 5xx, garbage). Nothing was decided."""

    retry_after: int
    detail: str = ""


SignInOutcome = Identity | WrongCredentials | AccountDisabled | OrganizationAccount | Unavailable
LookupOutcome = Identity | NotFound | AccountDisabled | OrganizationAccount | Unavailable


class UserStore(Protocol):
    """What the bridge needs from a directory of people."""

    async def authenticate(
        self, username: str, password: str, *, properties: Sequence[str] = ()
    ) -> SignInOutcome:
        """Check the password and read the profile (plus the named extra properties)."""
        ...

    async def lookup(self, imis_id: str, *, properties: Sequence[str] = ()) -> LookupOutcome:
        """Read a profile again without a password (refresh, userinfo)."""
        ...

    async def others_sharing_email(self, identity: Identity) -> tuple[str, ...] | Unavailable:
        """iMIS IDs of *other* people with the same primary email who can sign in."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
