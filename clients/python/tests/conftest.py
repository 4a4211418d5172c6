"""Fixtures: the real `nexus serve` (NEXUS_BIN, default <repo>/target/debug/nexus)."""

from __future__ import annotations

import os
import select
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus_client import Client, KeyFile

REPO = Path(__file__).resolve().parents[3]
LISTENING = "nexus listening on "


def nexus_bin() -> Path:
    p = Path(os.environ.get("NEXUS_BIN") or REPO / "target" / "debug" / "nexus")
    if not os.access(p, os.X_OK):
        pytest.fail(f"no nexus binary at {p}: build it (cargo build -p nexus) or set NEXUS_BIN")
    return p


class Server:
    """One `nexus serve --open` on a data directory of its own, on 127.0.0.1."""

    def __init__(self, data: Path, *extra: str) -> None:
        self.data = data
        self.extra = extra
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.log = data.parent / f"{data.name}.stderr"

    def start(self, addr: str = "127.0.0.1:0") -> Server:
        cmd = [str(nexus_bin()), "serve", "--data", str(self.data), "--addr", addr, "--open", *self.extra]
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(LISTENING):
                    self.url = line[len(LISTENING) :].strip()
                    return self
            if self.proc.poll() is not None:
                break
        self.stop()
        pytest.fail(f"nexus serve did not start ({' '.join(cmd)}):\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def restart(self) -> None:
        """Stops and starts the server again on the same address and data."""
        addr = self.url.removeprefix("http://")
        self.stop()
        self.start(addr)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs the nexus CLI against this server."""
        env = {**os.environ, "NEXUS_SERVER": self.url}
        r = subprocess.run([str(nexus_bin()), *args], capture_output=True, text=True, env=env, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"nexus {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r


def _server(tmp: Path) -> Iterator[Server]:
    s = Server(tmp / "data").start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server shared by the tests (each uses topics of its own)."""
    yield from _server(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of this test alone (its log starts empty)."""
    yield from _server(tmp_path)


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


@pytest.fixture
def topic() -> str:
    """A topic no other test uses."""
    return f"pytest/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def alice() -> KeyFile:
    return KeyFile.generate()


@pytest.fixture
def bob() -> KeyFile:
    return KeyFile.generate()
