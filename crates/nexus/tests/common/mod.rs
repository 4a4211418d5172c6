//! Starting the real `nexus` binary: servers on a loopback port of their own (killed
//! when dropped), and CLI runs with an isolated environment.

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use nexus_client::Client;

/// The binary under test.
pub const NEXUS: &str = env!("CARGO_BIN_EXE_nexus");

/// A `nexus serve` child process; killed (SIGKILL) and reaped on drop.
pub struct Server {
    child: Child,
    /// Kept open: the server's stdout.
    _stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
}

impl Server {
    /// `nexus serve --data DATA --addr 127.0.0.1:0 [--open]`, waiting for its
    /// `nexus listening on http://ADDR` line.
    pub fn start(data: &Path, open: bool) -> Server {
        Self::start_with(data, open, &[])
    }

    /// [`Server::start`] with more arguments (`https://` when they set up TLS).
    pub fn start_with(data: &Path, open: bool, args: &[&str]) -> Server {
        Self::start_env(data, open, args, &[])
    }

    /// [`Server::start_with`] with more environment variables.
    pub fn start_env(data: &Path, open: bool, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(NEXUS);
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--addr", "127.0.0.1:0"]);
        if open {
            cmd.arg("--open");
        }
        cmd.args(args);
        let mut child = cmd
            .env("NEXUS_LOG", "warn")
            .env_remove("NEXUS_DATA")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nexus serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let url = match (read, line.trim().strip_prefix("nexus listening on ")) {
            (Ok(n), Some(url)) if n > 0 => url.to_owned(),
            other => {
                let _ = child.kill();
                let status = child.wait();
                panic!("nexus serve did not start: {other:?}, line {line:?}, exit {status:?}");
            }
        };
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "{url}"
        );
        Server {
            child,
            _stdout: stdout,
            url,
            data: data.to_owned(),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        let hostport = self.url.rsplit("://").next().unwrap_or_default();
        hostport.parse().expect("server address")
    }

    /// The server's process id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client for it.
    pub fn client(&self) -> Client {
        Client::new(&self.url)
            .expect("client")
            .with_timeout(Duration::from_secs(20))
    }

    /// Sends SIGINT (a graceful shutdown).
    pub fn interrupt(&self) {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(ok.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }

    /// `kill -9` and reap.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `nexus` binary with `args`, an environment cleared of the NEXUS_*
/// variables of the caller, plus `env`.
pub fn nexus(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(NEXUS);
    cmd.args(args)
        .env("NEXUS_LOG", "warn")
        .env_remove("NEXUS_SERVER")
        .env_remove("NEXUS_HOME")
        .env_remove("NEXUS_KEY")
        .env_remove("NEXUS_DATA")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run nexus")
}

/// Runs `nexus` and expects success; answers stdout.
pub fn nexus_ok(args: &[&str], env: &[(&str, &Path)]) -> String {
    let out = nexus(args, env);
    assert!(
        out.status.success(),
        "nexus {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs `nexus` and expects failure; answers (stdout, stderr).
pub fn nexus_fails(args: &[&str], env: &[(&str, &Path)]) -> (String, String) {
    let out = nexus(args, env);
    assert!(
        !out.status.success(),
        "nexus {args:?} should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ne!(out.status.code(), None, "killed by a signal (a panic?)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}
