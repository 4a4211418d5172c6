"""Every error the package raises: one base, :class:`NexusError`.

- :class:`WireError` — a value, record or action is refused by the wire rules
  (``spec/README.md``); its ``code`` is the vectors' error code (``malformed``,
  ``not_an_integer``, ``hash_mismatch``, ``bad_signature``, …).
- :class:`ApiError` — the server answered with an error body
  ``{"error":{"code","message",…details}}``; ``code`` is the API's stable code (compare it
  with :class:`ErrorCode`), the detail members are in ``details`` and behind properties.
- :class:`TransportError` (and :class:`Unreachable`) — no answer.
- :class:`UnexpectedAnswer` — an answer that is not what the API promises.
- :class:`InvalidRecordFromServer` — a record or action in an answer does not verify.
- :class:`KeyFileError` and its subclasses — key files.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any


class NexusError(Exception):
    """Base of every error of this package."""


class WireError(NexusError, ValueError):
    """A JSON value, record or action is refused; ``code`` names the rule it breaks."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class ErrorCode(StrEnum):
    """The API's error codes (``nexus_wire::ErrorCode``), each with its HTTP status.

    A :class:`StrEnum`, so ``err.code == ErrorCode.ALREADY_CLAIMED`` holds for the string
    the server sent. A newer server may send codes this version does not know:
    :attr:`ApiError.error_code` is then ``None`` while :attr:`ApiError.code` keeps the
    string.
    """

    MALFORMED_JSON = "malformed_json"
    INVALID_RECORD = "invalid_record"
    HASH_MISMATCH = "hash_mismatch"
    TOO_MANY_PARENTS = "too_many_parents"
    SELECTOR_TOO_LARGE = "selector_too_large"
    LEASE_OUT_OF_RANGE = "lease_out_of_range"
    CLOCK_SKEW = "clock_skew"
    LEGACY_ACTION = "legacy_action"
    AMBIGUOUS_ID = "ambiguous_id"
    BAD_REQUEST = "bad_request"
    INVALID_CONTRACT = "invalid_contract"
    BAD_SIGNATURE = "bad_signature"
    UNAUTHORIZED = "unauthorized"
    INADMISSIBLE = "inadmissible"
    NOT_PROPOSER = "not_proposer"
    WRONG_DEPLOYMENT = "wrong_deployment"
    AUTHOR_NOT_ALLOWED = "author_not_allowed"
    HINT_NOT_PERMITTED = "hint_not_permitted"
    UPGRADE_REFUSED = "upgrade_refused"
    NOT_FOUND = "not_found"
    NO_ROUTE = "no_route"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    ALREADY_CLAIMED = "already_claimed"
    LEASE_EXPIRED = "lease_expired"
    NOT_HOLDER = "not_holder"
    STALE_TOKEN = "stale_token"
    ALREADY_RESOLVED = "already_resolved"
    WITHDRAWN = "withdrawn"
    REPLAYED = "replayed"
    CONFLICT = "conflict"
    TOO_MANY_HINTS = "too_many_hints"
    STALE_CONTRACT = "stale_contract"
    BODY_TOO_LARGE = "body_too_large"
    UNKNOWN_PARENT = "unknown_parent"
    WRONG_KIND = "wrong_kind"
    HINT_QUOTA = "hint_quota"
    RATE_LIMITED = "rate_limited"
    STORAGE = "storage"
    NOT_IMPLEMENTED = "not_implemented"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    GOVERNANCE_PENDING = "governance_pending"
    INSUFFICIENT_STORAGE = "insufficient_storage"

    @property
    def status(self) -> int:
        """The HTTP status every answer with this code has."""
        return _STATUS[self]


_STATUS: dict[ErrorCode, int] = {
    **dict.fromkeys(
        [
            ErrorCode.MALFORMED_JSON,
            ErrorCode.INVALID_RECORD,
            ErrorCode.HASH_MISMATCH,
            ErrorCode.TOO_MANY_PARENTS,
            ErrorCode.SELECTOR_TOO_LARGE,
            ErrorCode.LEASE_OUT_OF_RANGE,
            ErrorCode.CLOCK_SKEW,
            ErrorCode.LEGACY_ACTION,
            ErrorCode.AMBIGUOUS_ID,
            ErrorCode.BAD_REQUEST,
            ErrorCode.INVALID_CONTRACT,
        ],
        400,
    ),
    ErrorCode.BAD_SIGNATURE: 401,
    ErrorCode.UNAUTHORIZED: 401,
    **dict.fromkeys(
        [
            ErrorCode.INADMISSIBLE,
            ErrorCode.NOT_PROPOSER,
            ErrorCode.WRONG_DEPLOYMENT,
            ErrorCode.AUTHOR_NOT_ALLOWED,
            ErrorCode.HINT_NOT_PERMITTED,
            ErrorCode.UPGRADE_REFUSED,
        ],
        403,
    ),
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NO_ROUTE: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TIMEOUT: 408,
    **dict.fromkeys(
        [
            ErrorCode.ALREADY_CLAIMED,
            ErrorCode.LEASE_EXPIRED,
            ErrorCode.NOT_HOLDER,
            ErrorCode.STALE_TOKEN,
            ErrorCode.ALREADY_RESOLVED,
            ErrorCode.WITHDRAWN,
            ErrorCode.REPLAYED,
            ErrorCode.CONFLICT,
            ErrorCode.TOO_MANY_HINTS,
            ErrorCode.STALE_CONTRACT,
        ],
        409,
    ),
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.UNKNOWN_PARENT: 422,
    ErrorCode.WRONG_KIND: 422,
    ErrorCode.HINT_QUOTA: 429,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.STORAGE: 500,
    ErrorCode.NOT_IMPLEMENTED: 501,
    ErrorCode.TOO_MANY_CONNECTIONS: 503,
    ErrorCode.GOVERNANCE_PENDING: 503,
    ErrorCode.INSUFFICIENT_STORAGE: 507,
}


class RequestError(NexusError):
    """A request failed; names the method and URL."""

    def __init__(self, method: str, url: str, message: str) -> None:
        super().__init__(f"{method} {url}: {message}")
        self.method = method
        self.url = url


class TransportError(RequestError):
    """The exchange failed after connecting (timeout, reset, protocol error)."""


class Unreachable(TransportError):
    """No connection could be made (refused, host not found, connect timeout)."""


class UnexpectedAnswer(RequestError):
    """The answer is not what the API promises (not JSON, wrong shape, non-API error)."""

    def __init__(self, method: str, url: str, status: int, reason: str) -> None:
        super().__init__(method, url, f"unexpected answer (HTTP {status}): {reason}")
        self.status = status
        self.reason = reason


class InvalidRecordFromServer(RequestError):
    """A record or action in the answer does not verify (``cause`` says why)."""

    def __init__(self, method: str, url: str, cause: WireError) -> None:
        super().__init__(method, url, f"the server sent an invalid record: {cause}")
        self.cause = cause


class ApiError(RequestError):
    """The server's error answer: HTTP ``status``, stable ``code``, ``message`` and the
    other members of the error object in ``details`` (``holder``, ``lease_until`` and
    ``token`` of an ``already_claimed``; ``hint`` and ``reason`` of an ``inadmissible``;
    ``parent`` of an ``unknown_parent``; …)."""

    def __init__(
        self, method: str, url: str, status: int, code: str, message: str, details: dict[str, Any]
    ) -> None:
        super().__init__(method, url, f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @property
    def error_code(self) -> ErrorCode | None:
        """The code as an :class:`ErrorCode`, if this version knows it."""
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None

    def detail(self, name: str) -> Any:
        """A detail member, or ``None``."""
        return self.details.get(name)

    def _str(self, name: str) -> str | None:
        v = self.details.get(name)
        return v if isinstance(v, str) else None

    def _int(self, name: str) -> int | None:
        v = self.details.get(name)
        return v if type(v) is int else None

    @property
    def holder(self) -> str | None:
        """``holder`` (``already_claimed``, ``lease_expired``, ``not_holder``)."""
        return self._str("holder")

    @property
    def lease_until(self) -> int | None:
        """``lease_until`` (``already_claimed``, ``lease_expired``)."""
        return self._int("lease_until")

    @property
    def token(self) -> int | None:
        """``token`` of an ``already_claimed``."""
        return self._int("token")

    @property
    def hint(self) -> str | None:
        """``hint`` of an ``inadmissible``: the Hint that denies."""
        return self._str("hint")

    @property
    def reason(self) -> str | None:
        """``reason`` of an ``inadmissible``: the Hint's reason."""
        return self._str("reason")

    @property
    def parent(self) -> str | None:
        """``parent`` of an ``unknown_parent``."""
        return self._str("parent")

    @property
    def retry_after_ms(self) -> int | None:
        """``retry_after_ms`` of a ``rate_limited``."""
        return self._int("retry_after_ms")


class KeyFileError(NexusError):
    """A key could not be made, saved or loaded; names the file when there is one."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.path = path


class KeyFileExists(KeyFileError):
    """Saving would replace an existing key file."""


class KeyFileNotFound(KeyFileError):
    """No key file at the path."""


class KeyFileMalformed(KeyFileError):
    """The file is not a neXus key file (or its author does not match its seed)."""


class KeyFilePermissions(KeyFileError):
    """Group or others may read the key file."""

    def __init__(self, path: Path, mode: int) -> None:
        super().__init__(
            f"the key file is readable by group or others (mode {mode:o}); run `chmod 600` on it",
            path,
        )
        self.mode = mode
