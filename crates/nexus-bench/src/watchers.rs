//! Watchers during a run (`--watchers N`): N event streams (`GET /v1/events`) open
//! from the head at the start, each on its own thread, measuring for every entry the
//! delay from its commit (the entry's `at`, the server's clock) to its arrival here
//! (this machine's clock: the server runs on the same machine in the benches).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nexus_client::Client;

/// The watchers of a run; [`Watchers::finish`] stops them and answers their samples.
pub struct Watchers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    samples: Arc<Mutex<Vec<u64>>>,
    /// Entries each watcher received (min over the watchers at the end).
    counts: Arc<Mutex<Vec<u64>>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Watchers {
    /// Opens `n` streams on the server at `url`, from the entry after its head.
    pub fn start(url: &str, n: usize) -> Result<Self> {
        let client = Client::new(url)?.with_timeout(Duration::from_secs(30));
        let from = client.health()?.log_head + 1;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let stream = client.events(from, None).context("open an event stream")?;
            let (stop, samples, counts) =
                (Arc::clone(&stop), Arc::clone(&samples), Arc::clone(&counts));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("watcher-{i}"))
                    .stack_size(256 << 10)
                    .spawn(move || {
                        let mut mine = Vec::new();
                        let mut n = 0;
                        for entry in stream {
                            let Ok(e) = entry else { break };
                            n += 1;
                            if let Some(at) = e.get("at").and_then(|v| v.as_u64()) {
                                mine.push(now_us().saturating_sub(at * 1_000));
                            }
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                        if let Ok(mut s) = samples.lock() {
                            s.extend(mine);
                        }
                        if let Ok(mut c) = counts.lock() {
                            c.push(n);
                        }
                    })
                    .context("cannot spawn a watcher thread")?,
            );
        }
        Ok(Self {
            stop,
            threads,
            samples,
            counts,
        })
    }

    /// Stops the watchers (each after its next entry: `poke` commits one) and answers
    /// every delay measured (µs) and the fewest entries one watcher received.
    pub fn finish(self, poke: impl FnOnce()) -> (Vec<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        poke();
        for t in self.threads {
            let _ = t.join();
        }
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        let least = self
            .counts
            .lock()
            .ok()
            .and_then(|c| c.iter().min().copied())
            .unwrap_or(0);
        (samples, least)
    }
}
