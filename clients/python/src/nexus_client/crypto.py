"""FihHash (BLAKE3 ``derive_key``), Ed25519 signing, and strict verification.

Verification is strict as ed25519-dalek's ``verify_strict``: S < L, author key and R on
the curve and not of small order. OpenSSL (behind ``cryptography``) does not refuse
small-order keys by itself, so the point checks are done here.
"""

from __future__ import annotations

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HASH_CONTEXT = "neXus 2026-11 FihHash v1"
SIG_DOMAIN = b"neXus sig v1\x00"


def fih_hash(canonical: bytes) -> str:
    """The FihHash of canonical bytes, as 64 lowercase hex digits."""
    return str(blake3.blake3(canonical, derive_key_context=HASH_CONTEXT).hexdigest())


# Ed25519 point arithmetic, only for the small-order checks.
_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
L = 2**252 + 27742317777372353535851937790883648493
"""The order of the Ed25519 base point."""

_Point = tuple[int, int]


def decompress(enc: bytes) -> _Point | None:
    """Affine (x, y) of a compressed Edwards point, or ``None`` if it is not on the curve."""
    if len(enc) != 32:
        return None
    y = int.from_bytes(enc, "little") & ((1 << 255) - 1)
    sign = enc[31] >> 7
    y %= _P
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    if (v * x * x - u) % _P != 0:
        x = x * _SQRT_M1 % _P
        if (v * x * x - u) % _P != 0:
            return None
    if (x & 1) != sign:
        x = (-x) % _P
    return (x, y)


def _add(p1: _Point, p2: _Point) -> _Point:
    (x1, y1), (x2, y2) = p1, p2
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P) % _P
    return (x3, y3)


def is_small_order(point: _Point) -> bool:
    """True when 8·point is the identity."""
    q = point
    for _ in range(3):
        q = _add(q, q)
    return q == (0, 1)


def is_author_key(author: bytes) -> bool:
    """True when ``author`` decodes to a curve point (what the wire shape requires)."""
    return decompress(author) is not None


def verify_strict(author: bytes, hash_hex: str, sig: bytes) -> bool:
    """Strict Ed25519 verification of ``sig`` by ``author`` over the signed message for
    the hash ``hash_hex``."""
    if len(sig) != 64:
        return False
    a = decompress(author)
    r = decompress(sig[:32])
    if a is None or r is None or is_small_order(a) or is_small_order(r):
        return False
    if int.from_bytes(sig[32:], "little") >= L:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(author).verify(sig, SIG_DOMAIN + bytes.fromhex(hash_hex))
        return True
    except InvalidSignature:
        return False


def sign(seed: bytes, hash_hex: str) -> str:
    """The signature (128 hex digits) of the key with 32-byte ``seed`` over ``hash_hex``."""
    return Ed25519PrivateKey.from_private_bytes(seed).sign(SIG_DOMAIN + bytes.fromhex(hash_hex)).hex()


def public_key(seed: bytes) -> str:
    """The author key (64 hex digits) of the 32-byte ``seed``."""
    return (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
        .hex()
    )
