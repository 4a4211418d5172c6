//! Runs the neXus Worker (`workers/nexus-single`) under the real Workers runtime:
//! `wrangler dev --local` (workerd, from npm) on `127.0.0.1`, a free port of its own,
//! state persisted in a directory the caller owns. [`WranglerDev`] stops the whole
//! process group (wrangler and its workerd children) when dropped.
//!
//! The Worker must have been built first: `scripts/worker-build` writes the deployable
//! build to `workers/nexus-single/build/` and the test build (feature `test-hooks`:
//! fault injection, storage conformance) to `build-test/`.
//!
//! The tests in `tests/` are `#[ignore]`d: a plain `cargo nextest run` skips them, and
//! `scripts/test` runs them with `--run-ignored only` after building the Worker.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `wrangler dev` may take to answer its first request.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The Worker's directory (`workers/nexus-single`), or `NEXUS_WORKER_DIR`.
pub fn worker_dir() -> PathBuf {
    std::env::var_os("NEXUS_WORKER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workers/nexus-single"))
}

/// Which build of the Worker to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// `build/`: what `wrangler deploy` ships.
    Deploy,
    /// `build-test/`: with the `test-hooks` feature.
    Test,
}

impl Build {
    /// The entry module of the build, relative to the Worker's directory.
    pub fn script(self) -> &'static str {
        match self {
            Build::Deploy => "build/worker/shim.mjs",
            Build::Test => "build-test/worker/shim.mjs",
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when this returns; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// How many times [`WranglerDev::start_with`] tries to start `wrangler dev`.
pub const START_ATTEMPTS: usize = 3;

/// Spawns `wrangler dev --local` on `port` in its own process group.
#[allow(clippy::too_many_arguments)]
fn spawn(
    wrangler: &Path,
    dir: &Path,
    config: &str,
    build: Build,
    state: &Path,
    vars: &[(&str, &str)],
    port: u16,
    inspector: u16,
) -> Child {
    let mut cmd = Command::new(wrangler);
    cmd.current_dir(dir)
        .arg("dev")
        .arg(build.script())
        .args(["--config", config, "--local", "--ip", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--inspector-port", &inspector.to_string()])
        .arg("--persist-to")
        .arg(state)
        .args([
            "--log-level",
            "warn",
            "--show-interactive-dev-session=false",
        ])
        // Tests run open (any valid key writes), as local work does; the
        // config's own default is closed. `vars` come after and can override it.
        .args(["--var", "NEXUS_OPEN:true"])
        .args(
            vars.iter()
                .flat_map(|(k, v)| ["--var".to_owned(), format!("{k}:{v}")]),
        )
        // Offline: no telemetry, no prompts, no request-metadata fetch.
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CI", "true")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("WRANGLER_LOG_PATH", state.join("wrangler-logs"))
        // The dev registry through which one wrangler dev reaches a Durable Object
        // of another: private to this state directory, so that parallel tests
        // never find each other's Workers.
        .env("WRANGLER_REGISTRY_PATH", state.join("registry"))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // Its own process group, so that drop stops workerd with it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().expect("spawn wrangler dev")
}

/// The last lines of the newest wrangler log under `state/wrangler-logs`.
fn log_tail(state: &Path) -> String {
    let newest = std::fs::read_dir(state.join("wrangler-logs"))
        .into_iter()
        .flatten()
        .flatten()
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    let Some(entry) = newest else {
        return "(no log written)".to_owned();
    };
    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A running `wrangler dev`.
#[derive(Debug)]
pub struct WranglerDev {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The `--persist-to` directory.
    pub state: PathBuf,
}

impl WranglerDev {
    /// Starts `wrangler dev --local` with `config` (a wrangler config file, relative to
    /// the Worker's directory) serving `build`, state persisted under `state`, with
    /// `vars` overriding the config's variables, and waits until `GET /v1/health`
    /// answers 200. Panics if it does not start.
    pub fn start_with(
        config: &str,
        build: Build,
        state: &Path,
        vars: &[(&str, &str)],
    ) -> WranglerDev {
        let dir = worker_dir();
        let script = dir.join(build.script());
        assert!(
            script.exists(),
            "{} is missing: build the Worker first (scripts/worker-build)",
            script.display()
        );
        let wrangler = dir.join("node_modules/.bin/wrangler");
        assert!(
            wrangler.exists(),
            "{} is missing: run `npm ci` in {} (scripts/setup does)",
            wrangler.display(),
            dir.display()
        );
        // The ports are free when chosen but not reserved, and workerd binds more of
        // its own: a parallel test can take one first, and then the runtime fails to
        // start ("Address already in use"). Such a start is retried on fresh ports;
        // one that serves and then fails is a real failure and is never retried.
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let inspector = free_port();
            let mut dev = WranglerDev {
                child: Some(spawn(
                    &wrangler, &dir, config, build, state, vars, port, inspector,
                )),
                url: format!("http://127.0.0.1:{port}"),
                state: state.to_owned(),
            };
            match dev.wait_ready() {
                Ok(()) => return dev,
                Err(why) => {
                    dev.stop();
                    eprintln!(
                        "wrangler dev did not start ({why}); its log:\n{}",
                        log_tail(state)
                    );
                    failures.push(why);
                }
            }
        }
        panic!("wrangler dev did not start in {START_ATTEMPTS} attempts: {failures:?}");
    }

    /// [`start_with`](Self::start_with) the Worker's own `wrangler.toml`.
    pub fn start(build: Build, state: &Path) -> WranglerDev {
        Self::start_with("wrangler.toml", build, state, &[])
    }

    /// Waits until `GET /v1/health` answers 200; says why not if wrangler exits or the
    /// [`START_TIMEOUT`] passes first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let agent = agent(Duration::from_secs(5));
        let deadline = Instant::now() + START_TIMEOUT;
        let health = format!("{}/v1/health", self.url);
        loop {
            if let Ok(r) = agent.get(&health).call()
                && r.status() == 200
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("it exited before it served: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{health} did not answer within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops wrangler and workerd: SIGINT to the process group, SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-INT");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // wrangler exited; make sure no workerd of the group outlives it.
                signal("-KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        signal("-KILL");
        let _ = child.wait();
    }
}

impl Drop for WranglerDev {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP agent that returns every status as a response (not an error).
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// The native `nexus` binary (`NEXUS_BIN`, else `target/debug/nexus` of this
/// workspace), for what a test checks with it (`nexus verify`).
pub fn nexus_bin() -> PathBuf {
    let bin = std::env::var_os("NEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/nexus"));
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p nexus)",
        bin.display()
    );
    bin
}
