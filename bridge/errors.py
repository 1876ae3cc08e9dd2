"""The bridge's error tree and how each error reaches a person or a client.

    BridgeError                 500  something we did not expect (never shown in detail)
    ├── BadRequest              400  malformed or unacceptable input
    │   └── InvalidRegistration 400  a registration that its profile refuses
    ├── Forbidden               403  signed in, but not allowed (access rule, admin)
    ├── NotFound                404  no such registration / page
    ├── PayloadTooLarge         413  body over the limit
    └── RetryLater                   carries retry_after (sent as Retry-After)
        ├── TooManyRequests     429  throttled sign-in attempts
        └── ServiceUnavailable  503  iMIS or the database cannot answer

OAuth protocol errors are not here: they are answered in the protocol's own
shape by :mod:`bridge.oauth`. Every error has one HTTP status and one message a
person can read; ``detail`` is for the log only and never rendered.
"""

from __future__ import annotations


class BridgeError(Exception):
    status_code = 500
    title = "Something went wrong"

    def __init__(self, message: str | None = None, *, detail: str = "") -> None:
        self.message = message or self.title
        self.detail = detail
        super().__init__(self.message)


class BadRequest(BridgeError):
    status_code = 400
    title = "This request cannot be handled"


class InvalidRegistration(BadRequest):
    """A registration's settings are refused by its profile; ``problems`` lists why."""

    title = "The registration is not valid"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"{key}: {reason}" if key else reason for key, reason in problems)
        )


class Forbidden(BridgeError):
    status_code = 403
    title = "You cannot use this application"


class NotFound(BridgeError):
    status_code = 404
    title = "Not found"


class PayloadTooLarge(BridgeError):
    status_code = 413
    title = "The request is too large"


class RetryLater(BridgeError):
    """An error the person can wait out; ``retry_after`` seconds (at least 1)."""

    def __init__(
        self, message: str | None = None, *, retry_after: int = 30, detail: str = ""
    ) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(message, detail=detail)


class TooManyRequests(RetryLater):
    status_code = 429
    title = "Too many attempts"


class ServiceUnavailable(RetryLater):
    status_code = 503
    title = "Sign-in is temporarily unavailable"
