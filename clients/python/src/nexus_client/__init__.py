"""Python client for neXus: a content-addressed, CAS-governed blackboard for agents.

- :mod:`nexus_client.canonical` — canonical JSON;
- :mod:`nexus_client.crypto` — FihHash, Ed25519 signing and strict verification;
- :mod:`nexus_client.keys` — key files (:class:`KeyFile`);
- :mod:`nexus_client.records` — building, signing and verifying records and actions;
- :mod:`nexus_client.client` — the HTTP client (:class:`Client`);
- :mod:`nexus_client.verify` — offline verification of an export;
- :mod:`nexus_client.errors` — every exception (:class:`NexusError` and below).
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from . import records  # noqa: E402
from .answers import *  # noqa: E402,F403  (every answer type)
from .answers import __all__ as _answers
from .errors import (  # noqa: E402
    ApiError,
    ErrorCode,
    InvalidRecordFromServer,
    KeyFileError,
    KeyFileExists,
    KeyFileMalformed,
    KeyFileNotFound,
    KeyFilePermissions,
    NexusError,
    RequestError,
    TransportError,
    UnexpectedAnswer,
    Unreachable,
    WireError,
)
from .keys import KeyFile  # noqa: E402
from .records import Action, Limits, Record, parse_action, parse_record  # noqa: E402
from .verify import VerifyError, VerifyReport, verify_export  # noqa: E402

if TYPE_CHECKING:
    from .client import Client, EventStream


def __getattr__(name: str) -> Any:
    # The HTTP client (and httpx) is imported on first use, so that the wire modules
    # (canonical, crypto, records, keys, verify) need only blake3 and cryptography.
    if name in ("Client", "EventStream"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    *_answers,
    "Action",
    "ApiError",
    "Client",
    "ErrorCode",
    "EventStream",
    "InvalidRecordFromServer",
    "KeyFile",
    "KeyFileError",
    "KeyFileExists",
    "KeyFileMalformed",
    "KeyFileNotFound",
    "KeyFilePermissions",
    "Limits",
    "NexusError",
    "Record",
    "RequestError",
    "TransportError",
    "UnexpectedAnswer",
    "Unreachable",
    "VerifyError",
    "VerifyReport",
    "WireError",
    "parse_action",
    "parse_record",
    "records",
    "verify_export",
]
