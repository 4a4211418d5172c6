#!/usr/bin/env python3
"""Proof sizes and the cost of proof requests on `nexus serve` (BENCHMARKS.md §13).

    .venv/bin/python bench/tlog_proofs.py sizes
        bytes of inclusion and consistency proofs at 1k / 100k / 1M entries, from the
        RFC 6962 proof shapes, over every leaf and every old size (no server).
    .venv/bin/python bench/tlog_proofs.py load NEXUS_BIN [ENTRIES] [SECONDS] [ROUNDS]
        starts `NEXUS_BIN serve --open` on a temp dir, writes ENTRIES log entries
        (default 2000) through the Python client, then, one kept-alive connection,
        ROUNDS (default 3) interleaved rounds of SECONDS (default 3) per route:
        GET /v1/health, /v1/records/{id}, /v1/proof/inclusion, /v1/proof/consistency,
        /v1/checkpoint; prints requests/s per route and round as JSON lines. With
        ETCD=/usr/bin/etcd in the environment it also starts etcd on a temp dir and
        times, in the same rounds, a read of one key through its v3 JSON gateway
        (`POST /v3/kv/range`, also one kept-alive connection): the peer's plain read.

Not part of CI.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python" / "src"))


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def path_len(m: int, n: int) -> int:
    """Length of RFC 6962 PATH(m, D[n])."""
    if n <= 1:
        return 0
    k = _split(n)
    return 1 + (path_len(m, k) if m < k else path_len(m - k, n - k))


def subproof_len(m: int, n: int, whole: bool) -> int:
    if m == n:
        return 0 if whole else 1
    k = _split(n)
    return 1 + (subproof_len(m, k, whole) if m <= k else subproof_len(m - k, n - k, False))


def sizes() -> None:
    for n in (1_000, 100_000, 1_000_000):
        incl = [path_len(m, n) for m in range(n)]
        cons = [subproof_len(m, n, True) for m in range(1, n)]
        # On the wire each hash is 44 base64 characters in quotes, comma-separated.
        wire = lambda k: 2 + k * 46 - (1 if k else 0)  # noqa: E731
        print(json.dumps({
            "entries": n,
            "inclusion_hashes_min_max": [min(incl), max(incl)],
            "inclusion_bytes_raw_max": 32 * max(incl),
            "inclusion_proof_json_bytes_max": wire(max(incl)),
            "consistency_hashes_min_max": [min(cons), max(cons)],
            "consistency_bytes_raw_max": 32 * max(cons),
            "consistency_proof_json_bytes_max": wire(max(cons)),
        }))


def load(binary: str, entries: int, seconds: float, rounds: int) -> None:
    from nexus_client import Client, KeyFile, records

    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([binary, "serve", "--data", f"{tmp}/d", "--addr", "127.0.0.1:0", "--open"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs = [proc]
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            url = line.split("nexus listening on ")[1].strip()
            key = KeyFile.generate()
            hashes = []
            with Client(url) as c:
                for i in range(entries):
                    r = records.propose(key, f"bench/{i % 50}", {"i": i})
                    c.propose(r)
                    hashes.append(r.hash)
            host, port = url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port))
            rng = random.Random(2)
            routes: dict[str, tuple[http.client.HTTPConnection, str, Callable[[], str], bytes | None]] = {
                "health": (conn, "GET", lambda: "/v1/health", None),
                "record": (conn, "GET", lambda: f"/v1/records/{rng.choice(hashes)}", None),
                "inclusion": (conn, "GET", lambda: f"/v1/proof/inclusion?seq={rng.randrange(1, entries + 1)}", None),
                "consistency": (conn, "GET", lambda: f"/v1/proof/consistency?from={rng.randrange(1, entries)}", None),
                "checkpoint": (conn, "GET", lambda: "/v1/checkpoint", None),
            }
            if os.environ.get("ETCD"):
                etcd = _etcd(os.environ["ETCD"], tmp)
                procs.append(etcd[0])
                body = json.dumps({"key": base64.b64encode(b"record/x").decode()}).encode()
                routes["etcd_range"] = (etcd[1], "POST", lambda: "/v3/kv/range", body)
            for rnd in range(1, rounds + 1):
                for name, (cn, method, target, payload) in routes.items():
                    n, nbytes = 0, 0
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        cn.request(method, target(), body=payload)
                        resp = cn.getresponse()
                        body = resp.read()
                        if resp.status != 200:
                            raise SystemExit(f"{name}: {resp.status} {body[:200]!r}")
                        n += 1
                        nbytes += len(body)
                    print(json.dumps({"round": rnd, "route": name, "entries": entries,
                                      "req_per_s": round(n / seconds, 1), "mean_body_bytes": nbytes // max(n, 1)}))
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)


def _etcd(binary: str, tmp: str) -> tuple[subprocess.Popen[bytes], http.client.HTTPConnection]:
    """etcd on a temp dir (client port 23791), with one key of 400 bytes."""
    proc = subprocess.Popen([binary, "--data-dir", f"{tmp}/etcd", "--listen-client-urls", "http://127.0.0.1:23791",
                             "--advertise-client-urls", "http://127.0.0.1:23791",
                             "--listen-peer-urls", "http://127.0.0.1:23801"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = http.client.HTTPConnection("127.0.0.1", 23791)
    put = json.dumps({"key": base64.b64encode(b"record/x").decode(), "value": base64.b64encode(b"v" * 400).decode()})
    for _ in range(100):
        try:
            conn.request("POST", "/v3/kv/put", body=put)
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                return proc, conn
        except OSError:
            conn.close()
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("etcd did not start")


def main(argv: list[str]) -> int:
    if argv[:1] == ["sizes"]:
        sizes()
        return 0
    if argv[:1] == ["load"] and len(argv) >= 2:
        load(argv[1], int(argv[2]) if len(argv) > 2 else 2000,
             float(argv[3]) if len(argv) > 3 else 3.0, int(argv[4]) if len(argv) > 4 else 3)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
