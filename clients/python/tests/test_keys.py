from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from nexus_client import crypto
from nexus_client.errors import KeyFileExists, KeyFileMalformed, KeyFileNotFound, KeyFilePermissions
from nexus_client.keys import KeyFile


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_generate_save_load_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "key"
    k = KeyFile.generate()
    assert k.author != KeyFile.generate().author, "two keys from OS randomness differ"
    assert k.save(path) == path and k.path == path
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    doc = json.loads(path.read_text())
    assert doc == {"version": 1, "seed": k.seed_hex, "author": k.author}
    back = KeyFile.load(path)
    assert back.author == k.author and back.seed_hex == k.seed_hex
    h = crypto.fih_hash(b"x")
    assert crypto.verify_strict(bytes.fromhex(k.author), h, bytes.fromhex(back.sign(h)))
    assert k.seed_hex not in repr(k)


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "key"
    a, b = KeyFile.generate(), KeyFile.generate()
    a.save(path)
    with pytest.raises(KeyFileExists) as e:
        b.save(path)
    assert str(path) in str(e.value) and "refusing to overwrite" in str(e.value)
    assert KeyFile.load(path).author == a.author
    b.save(path, overwrite=True)
    assert KeyFile.load(path).author == b.author and mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"], "no temporary file left behind"


def write_private(p: Path, text: str) -> Path:
    p.write_text(text)
    os.chmod(p, 0o600)
    return p


def test_bare_hex_seed_is_accepted(tmp_path: Path) -> None:
    p = write_private(tmp_path / "hex", "03" * 32 + "\n")
    assert KeyFile.load(p).author == crypto.public_key(bytes([3] * 32))


@pytest.mark.parametrize(
    "text, why",
    [
        ('{"version":1,"seed":"zz","author":""}', "64 lowercase hex"),
        ("01" * 31, "64 lowercase hex"),
        ("AB" * 32, "64 lowercase hex"),
        ('{"version":2,"seed":"' + "01" * 32 + '","author":"x"}', "unsupported version"),
        ('{"version":1,"seed":"' + "01" * 32 + '"}', "exactly the members"),
        ('{"version":1,"seed":"' + "01" * 32 + '","author":"' + crypto.public_key(bytes([2] * 32)) + '"}', "does not match the seed"),
        ("{not json", "not a neXus key file"),
    ],
)
def test_bad_key_files_name_the_path_and_the_reason(tmp_path: Path, text: str, why: str) -> None:
    p = write_private(tmp_path / "bad", text)
    with pytest.raises(KeyFileMalformed) as e:
        KeyFile.load(p)
    assert str(p) in str(e.value) and why in str(e.value)


def test_missing_and_world_readable(tmp_path: Path) -> None:
    with pytest.raises(KeyFileNotFound) as e:
        KeyFile.load(tmp_path / "nope")
    assert "nexus keygen" in str(e.value)
    p = tmp_path / "key"
    KeyFile.generate().save(p)
    os.chmod(p, 0o644)
    with pytest.raises(KeyFilePermissions) as e2:
        KeyFile.load(p)
    assert e2.value.mode == 0o644 and "chmod 600" in str(e2.value)


def test_default_path_prefers_nexus_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEXUS_HOME", str(tmp_path / "n"))
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert KeyFile.default_path() == tmp_path / "n" / "key"
    monkeypatch.setenv("NEXUS_HOME", "")
    assert KeyFile.default_path() == tmp_path / "h" / ".config" / "nexus" / "key"
    k = KeyFile.generate()
    k.save()
    assert KeyFile.load().author == k.author
