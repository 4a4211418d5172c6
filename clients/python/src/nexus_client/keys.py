"""Agent key files, in the format of the Rust client (``nexus_client::keys``) and the CLI.

A key file is the JSON object ``{"version":1,"seed":"<64 hex>","author":"<64 hex>"}``
written with mode ``0600`` (its directory, when created, ``0700``). On load, ``author``
must match the key the seed derives, and a file holding nothing but the 64 hex digits of
the seed is accepted too. The default location is ``$NEXUS_HOME/key`` when
``NEXUS_HOME`` is set and not empty, otherwise ``~/.config/nexus/key``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from pathlib import Path

from .crypto import public_key, sign
from .errors import KeyFileError, KeyFileExists, KeyFileMalformed, KeyFileNotFound, KeyFilePermissions

KEY_FILE_NAME = "key"
MAX_KEY_FILE_BYTES = 4096
_SEED = re.compile(r"[0-9a-f]{64}")


class KeyFile:
    """An agent's Ed25519 signing key, possibly tied to the file it was loaded from or
    saved to. ``repr`` shows the author, never the secret."""

    __slots__ = ("_seed", "_author", "path")

    def __init__(self, seed: bytes, path: Path | None = None) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise KeyFileError("a seed is 32 bytes")
        self._seed = seed
        self._author = public_key(seed)
        self.path = path

    @classmethod
    def generate(cls) -> KeyFile:
        """A fresh key from 32 bytes of OS randomness (not saved anywhere yet)."""
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_seed_hex(cls, seed_hex: str) -> KeyFile:
        """The key of a 64-hex-digit seed (e.g. a fixed test key)."""
        if not isinstance(seed_hex, str) or not _SEED.fullmatch(seed_hex):
            raise KeyFileError("the seed must be 64 lowercase hex digits")
        return cls(bytes.fromhex(seed_hex))

    @staticmethod
    def default_path() -> Path:
        """``$NEXUS_HOME/key`` when ``NEXUS_HOME`` is set and not empty, else
        ``$HOME/.config/nexus/key``."""
        home = os.environ.get("NEXUS_HOME")
        if home:
            return Path(home) / KEY_FILE_NAME
        user_home = os.environ.get("HOME")
        if not user_home:
            raise KeyFileError("cannot find a default key location: set NEXUS_HOME (or HOME)")
        return Path(user_home) / ".config" / "nexus" / KEY_FILE_NAME

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> KeyFile:
        """Loads a key file (JSON, or bare seed hex); the default path when ``path`` is
        ``None``. Refuses a file that group or others may read."""
        p = Path(path) if path is not None else cls.default_path()
        try:
            st = p.stat()
        except FileNotFoundError:
            raise KeyFileNotFound("no key file here (create one with `nexus keygen`)", p) from None
        except OSError as e:
            raise KeyFileError(e.strerror or str(e), p) from None
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileMalformed("not a regular file", p)
        mode = stat.S_IMODE(st.st_mode)
        if os.name == "posix" and mode & 0o077:
            raise KeyFilePermissions(p, mode)
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileMalformed(f"not a neXus key file: {st.st_size} bytes is too large for a key file", p)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise KeyFileMalformed(f"not a neXus key file: {e}", p) from None
        try:
            seed = _parse_key_text(text)
        except ValueError as e:
            raise KeyFileMalformed(f"not a neXus key file: {e}", p) from None
        return cls(seed, p)

    def save(self, path: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> Path:
        """Writes the key (mode ``0600``) to ``path`` (default: :meth:`default_path`),
        creating missing directories (mode ``0700``). An existing file is an error
        (:class:`KeyFileExists`) unless ``overwrite``, which replaces it atomically."""
        p = Path(path) if path is not None else self.default_path()
        text = json.dumps({"version": 1, "seed": self._seed.hex(), "author": self._author}, separators=(",", ":"))
        data = (text + "\n").encode()
        try:
            if p.parent != Path(""):
                p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise KeyFileError(e.strerror or str(e), p.parent) from None
        if overwrite:
            tmp = p.with_name(f"{p.name}.tmp-{os.getpid()}")
            tmp.unlink(missing_ok=True)
            try:
                _write_new_private(tmp, data)
                os.replace(tmp, p)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise KeyFileError(e.strerror or str(e), p) from None
        else:
            try:
                _write_new_private(p, data)
            except FileExistsError:
                raise KeyFileExists("a key file already exists (refusing to overwrite it)", p) from None
            except OSError as e:
                raise KeyFileError(e.strerror or str(e), p) from None
        self.path = p
        return p

    @property
    def author(self) -> str:
        """The public key records name as their author (64 hex digits)."""
        return self._author

    @property
    def seed_hex(self) -> str:
        """The secret seed, as 64 hex digits. Keep it secret."""
        return self._seed.hex()

    def sign(self, hash_hex: str) -> str:
        """Signs a FihHash (64 hex digits): the signature as 128 hex digits."""
        return sign(self._seed, hash_hex)

    def __repr__(self) -> str:
        return f"KeyFile(author={self._author}, path={self.path})"


def _parse_key_text(text: str) -> bytes:
    trimmed = text.strip()
    author: str | None = None
    if trimmed.startswith("{"):
        try:
            j = json.loads(trimmed)
        except json.JSONDecodeError as e:
            raise ValueError(str(e)) from None
        if not isinstance(j, dict) or set(j) != {"version", "seed", "author"}:
            raise ValueError('expected exactly the members "version", "seed" and "author"')
        if j["version"] != 1 or type(j["version"]) is not int:
            raise ValueError(f"unsupported version {j['version']!r}")
        seed_hex, author = j["seed"], j["author"]
    else:
        seed_hex = trimmed
    if not isinstance(seed_hex, str) or not _SEED.fullmatch(seed_hex):
        raise ValueError("the seed must be 64 lowercase hex digits")
    seed = bytes.fromhex(seed_hex)
    derived = public_key(seed)
    if author is not None and author != derived:
        raise ValueError(f"the author {author} does not match the seed (which gives {derived})")
    return seed


def _write_new_private(path: Path, data: bytes) -> None:
    """Creates ``path`` (which must not exist) with mode 0600 and writes ``data``, synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # regardless of the umask
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(fd)
    finally:
        os.close(fd)
