"""The provenance explorer in headless Chromium (the distribution's chromium and
chromedriver, driven through WebDriver by selenium), against `nexus serve` running
`nexus demo`, behind a test proxy that can tamper with one record's signature.

Checks: the DAG of a resolved Intent is drawn with the nodes and edges of its
provenance; the board changes as commits arrive; a tampered record is shown failing
verification; keyboard expansion; narrow and wide windows; no console errors.
Screenshots go to target/explorer-screenshots/ (the path is printed).

Run: NEXUS_BIN=target/debug/nexus .venv/bin/python -m pytest explorer/test -q
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

ROOT = pathlib.Path(__file__).resolve().parents[2]
NEXUS = os.environ.get("NEXUS_BIN", str(ROOT / "target" / "debug" / "nexus"))
SHOTS = ROOT / "target" / "explorer-screenshots"
DEMO = ["--agents", "4", "--work", "20ms", "--lease", "1s", "--seed", "21"]


def chromedriver() -> str:
    for p in (os.environ.get("CHROMEDRIVER"), shutil.which("chromedriver"), "/usr/bin/chromedriver"):
        if p and os.path.exists(p):
            return p
    pytest.fail("chromedriver is not installed (scripts/setup installs chromium and chromium-driver)")


class Serve:
    """`nexus serve --open` on a temporary store, on a free loopback port."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="nexus-explorer-test")
        self.proc = subprocess.Popen(
            [NEXUS, "serve", "--data", self.dir.name, "--addr", "127.0.0.1:0", "--open", "--address-rate", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "NEXUS_LOG": "warn"}, text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line.startswith("nexus listening on http://"), line
        self.url = line.strip().removeprefix("nexus listening on ")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.load(r)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()


class TamperingProxy:
    """Forwards every request to `upstream`; in the answers of /v1/records/…, the record
    whose hash is `self.target` gets one bit of its signature flipped."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.target: str | None = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "last-event-id", "accept")}
                conn.request("GET", self.path, headers=headers)
                resp = conn.getresponse()
                streaming = self.path.startswith("/v1/events")
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                if streaming:
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        while chunk := resp.read1(65536):
                            self.wfile.write(chunk)
                            self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError, http.client.HTTPException):
                        pass
                    self.close_connection = True
                    return
                body = resp.read()
                if proxy.target and self.path.startswith("/v1/records/"):
                    body = proxy.tamper(body)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tamper(self, body: bytes) -> bytes:
        doc = json.loads(body)

        def walk(v):
            if isinstance(v, dict):
                if v.get("hash") == self.target and isinstance(v.get("sig"), str):
                    sig = v["sig"]
                    v["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
                for x in v.values():
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)

        walk(doc)
        return json.dumps(doc).encode()

    def close(self) -> None:
        self.server.shutdown()


def links(rec: dict) -> set[str]:
    out = set(rec.get("parents", []))
    if isinstance(rec.get("resolves"), dict):
        out.add(rec["resolves"]["intent"])
    if isinstance(rec.get("source"), dict):
        out.update(rec["source"].get("facts", []))
    return out


@pytest.fixture(scope="module")
def env():
    server = Serve()
    proxy = TamperingProxy(server.url)
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(a)
    if os.environ.get("CHROMIUM"):
        opts.binary_location = os.environ["CHROMIUM"]
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver()), options=opts)
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nexplorer screenshots: {SHOTS}")
    try:
        yield server, proxy, driver
    finally:
        driver.quit()
        proxy.close()
        server.close()


def wait_for(what, cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def count(driver, state: str) -> int:
    # Read in one script: the board is redrawn as commits arrive.
    n = driver.execute_script(
        "const h = document.querySelector(`.column[data-state=${arguments[0]}] h3`); return h ? Number(h.dataset.count) : -1;",
        state,
    )
    return int(n)


def no_console_errors(driver) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors: {errors}"


def test_explorer_follows_a_demo_and_verifies_what_it_shows(env):
    server, proxy, d = env
    d.get(proxy.url + "/")
    wait_for("the page to go live", lambda: "live" in d.find_element(By.ID, "status").text)
    wait_for("the board", lambda: count(d, "resolved") == 0)
    # The board changes as the demo's commits arrive (through the event stream).
    demo = subprocess.Popen([NEXUS, "demo", "--server", server.url, *DEMO], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wait_for("resolved Intents on the board", lambda: count(d, "resolved") > 0)
    d.save_screenshot(str(SHOTS / "live.png"))
    out, _ = demo.communicate(timeout=300)
    assert demo.returncode == 0, out
    assert "--replay ok" in out
    feed = d.find_elements(By.CSS_SELECTOR, "#feed li")
    assert len(feed) > 10
    # The DAG of a resolved leaf Intent, through its resolving Fact.
    resolved = [i for i in server.get("/v1/intents?state=resolved&limit=500")["intents"] if i["record"]["body"]["hi"] - i["record"]["body"]["lo"] <= 64]
    assert resolved
    intent = resolved[0]
    fact = intent["state"]["fact"]
    prov = server.get(f"/v1/records/{fact}/provenance?depth=3")
    want_nodes = {r["hash"] for r in prov["records"]}
    want_edges = {(r["hash"], l) for r in prov["records"] for l in links(r) if l in want_nodes}
    assert intent["record"]["hash"] in want_nodes and (fact, intent["record"]["hash"]) in want_edges
    d.get(f"{proxy.url}/#record={fact}")
    wait_for("the DAG", lambda: len(d.find_elements(By.CSS_SELECTOR, "#dag g.node")) == len(want_nodes))
    nodes = {g.get_attribute("data-hash") for g in d.find_elements(By.CSS_SELECTOR, "#dag g.node")}
    edges = {(p.get_attribute("data-from"), p.get_attribute("data-to")) for p in d.find_elements(By.CSS_SELECTOR, "#dag path.edge")}
    assert nodes == want_nodes
    assert edges == want_edges
    assert all(g.get_attribute("data-verdict") == "ok" for g in d.find_elements(By.CSS_SELECTOR, "#dag g.node"))
    assert "verified" in d.find_element(By.ID, "detail").text
    # Keyboard: a node with unloaded ancestors expands on Enter.
    more = [g for g in d.find_elements(By.CSS_SELECTOR, "#dag g.node") if "expandable" in (g.get_attribute("aria-label") or "")]
    assert more, "a depth-3 provenance of a leaf has more ancestors"
    more[0].send_keys(Keys.ENTER)
    wait_for("the expansion", lambda: len(d.find_elements(By.CSS_SELECTOR, "#dag g.node")) > len(want_nodes))
    d.save_screenshot(str(SHOTS / "wide.png"))
    d.set_window_size(390, 844)
    time.sleep(0.5)
    d.save_screenshot(str(SHOTS / "narrow.png"))
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1"), "no sideways scrolling on a phone"
    d.set_window_size(1400, 1000)
    # Hints in force, with the rule and the Facts behind each.
    hints = d.find_element(By.ID, "hints").text
    assert "failure-budget" in hints and "deny" in hints
    no_console_errors(d)


def test_a_tampered_signature_is_shown_failing(env):
    server, proxy, d = env
    facts = server.get("/v1/facts?limit=5")["facts"]
    target = facts[-1]["hash"]
    proxy.target = target
    try:
        d.get(f"{proxy.url}/#record={target}")
        node = wait_for("the tampered node", lambda: d.find_elements(By.CSS_SELECTOR, f'#dag g.node[data-hash="{target}"]'))[0]
        assert node.get_attribute("data-verdict") == "bad"
        detail = d.find_element(By.ID, "detail").text
        assert "FAILS VERIFICATION" in detail and "bad_signature" in detail, detail
        assert "FAILING" in d.find_element(By.ID, "verdicts").text
        others = [g for g in d.find_elements(By.CSS_SELECTOR, "#dag g.node") if g.get_attribute("data-hash") != target]
        assert all(g.get_attribute("data-verdict") == "ok" for g in others)
        d.save_screenshot(str(SHOTS / "tampered.png"))
        no_console_errors(d)
    finally:
        proxy.target = None


def test_assets_are_public_but_reads_need_the_token():
    """A server in closed mode with a read token: the page loads, the API needs the
    token, which the page takes from the URL fragment."""
    tmp = tempfile.TemporaryDirectory(prefix="nexus-explorer-token")
    token_file = pathlib.Path(tmp.name) / "tokens"
    token_file.write_text("s3cret-token\n")
    proc = subprocess.Popen(
        [NEXUS, "serve", "--data", str(pathlib.Path(tmp.name) / "data"), "--addr", "127.0.0.1:0", "--read-token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip().removeprefix("nexus listening on ")
        with urllib.request.urlopen(url + "/", timeout=10) as r:
            assert r.status == 200 and b"neXus explorer" in r.read()
            assert "connect-src 'self'" in r.headers["Content-Security-Policy"]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/v1/intents", timeout=10)
        assert e.value.code == 401
        opts = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
            opts.add_argument(a)
        d = webdriver.Chrome(service=Service(chromedriver()), options=opts)
        try:
            d.get(url + "/")
            wait_for("the token form", lambda: d.find_element(By.ID, "token-form").is_displayed())
            d.get(url + "/#token=s3cret-token")
            d.refresh()
            wait_for("the page to go live with the token", lambda: "live" in d.find_element(By.ID, "status").text)
            assert "token" not in d.current_url, "the token leaves the address bar"
        finally:
            d.quit()
    finally:
        proc.kill()
        proc.wait()
        tmp.cleanup()
