//! Test support shared by the neXus crates; a dev-dependency only, never shipped.
//!
//! [`CrashTest`] is the harness of the crash tests (`nexus-store-redb`'s store-level
//! one and `nexus-core`'s lifecycle one): the test binary runs itself again as a child
//! process that writes to a database until the parent SIGKILLs it at a random moment;
//! after each kill the parent reopens the database and checks its invariants.
//!
//! [`Hooked`] wraps any store and forwards every call, with hooks for the calls a test
//! needs to intercept: a rival writer right before a commit, an injected failure, a
//! commit that drops its read checks.
//!
//! [`faults`] is a redb storage backend whose disk can be made full (`ENOSPC`), for the
//! tests of what the store and the server do while it is and once space returns.

#![allow(clippy::unwrap_used)] // test support: a failed unwrap is a failed test

pub mod faults;
mod hooked;

pub use hooked::{Call, Hooked, Hooks, without_reads};

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One crash test's settings. Declare it as a `const` next to the `#[test]`:
///
/// ```no_run
/// use nexus_testkit::CrashTest;
/// const CRASH: CrashTest = CrashTest {
///     test_name: "writer_is_killed",
///     child_env: "MY_CRASH_CHILD_DB",
///     kills: 25,
///     early_kill_every: 5,
///     max_delay_ms: 50,
/// };
/// #[test]
/// fn writer_is_killed() {
///     if let Some(path) = CRASH.child_path() {
///         // open the database at `path`, call CRASH.ready(), write until killed
///         return;
///     }
///     let path = std::env::temp_dir().join("crash.db");
///     CRASH.run(&path, |kill| { /* reopen `path`, check the invariants */ });
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CrashTest {
    /// The `#[test]` function's name: the child runs exactly this test.
    pub test_name: &'static str,
    /// Environment variable that makes the test the child and names its database.
    pub child_env: &'static str,
    /// SIGKILLs (and checks) per run.
    pub kills: usize,
    /// Every this many kills, one lands before the child reported ready (while it is
    /// opening or recovering the database).
    pub early_kill_every: usize,
    /// The other kills land 0 to this many milliseconds after the child is ready.
    pub max_delay_ms: u64,
}

/// The line a child prints once its database is open.
const READY: &str = "crash child ready";

impl CrashTest {
    /// In the child process, the database path to write to; `None` in the parent.
    pub fn child_path(&self) -> Option<PathBuf> {
        std::env::var_os(self.child_env).map(PathBuf::from)
    }

    /// Called by the child once its database is open, so that most kills land while it
    /// writes (opening is slow in debug builds, where redb checks its allocator state).
    pub fn ready(&self) {
        println!("{READY}");
        std::io::stdout().flush().unwrap();
    }

    /// Runs [`CrashTest::kills`] rounds against the database at `path`: start the child,
    /// wait (briefly, or until it is ready and then a random delay), SIGKILL it, reap it,
    /// then call `after_kill(round)`. Panics with the child's stderr if it exits on its
    /// own. The kill timings come from a seed printed to stderr.
    pub fn run(&self, path: &Path, mut after_kill: impl FnMut(usize)) {
        let exe = std::env::current_exe().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let mut seed = now.map_or(0x5EED, |d| d.as_nanos() as u64) | 1;
        eprintln!("{}: kill timing seed {seed:#x}", self.test_name);
        for kill in 0..self.kills {
            let mut child = KillOnDrop(
                Command::new(&exe)
                    .args(["--exact", self.test_name, "--nocapture", "--test-threads=1"])
                    .env(self.child_env, path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
            if kill % self.early_kill_every == self.early_kill_every - 1 {
                std::thread::sleep(Duration::from_millis(xorshift(&mut seed) % 40));
            } else {
                wait_until_ready(&mut child.0);
                let delay = xorshift(&mut seed) % self.max_delay_ms.max(1);
                std::thread::sleep(Duration::from_millis(delay));
            }
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!(
                    "the child exited on its own ({status}) before kill {kill}:\n{}",
                    stderr_of(&mut child.0)
                );
            }
            // Child::kill is SIGKILL on unix: no destructor, no flush, no clean shutdown.
            child.0.kill().unwrap();
            child.0.wait().unwrap();
            drop(child);
            after_kill(kill);
        }
    }
}

/// The next number of a xorshift64 sequence (`x` must not be 0): cheap, seedable
/// randomness for kill timings and test data, where a crate's generator is not needed.
pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

/// Blocks until the child printed [`READY`]; panics with its stderr if it died first.
fn wait_until_ready(child: &mut Child) {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            // libtest may print "test <name> ... " on the same line first
            Some(Ok(line)) if line.trim_end().ends_with(READY) => return,
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("reading the child's stdout: {err}"),
            None => {
                let status = child.wait().unwrap();
                panic!(
                    "the child exited ({status}) before opening the database:\n{}",
                    stderr_of(child)
                );
            }
        }
    }
}

/// Kills the child if the parent's test panics before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The deployment id the tests' stores are given and their actions are signed for.
pub const TEST_DEPLOYMENT: &str = "test-deployment";
