//! `worker-archive [ENTRIES] [SNAPSHOT_EVERY]` (defaults 3,000 and 16, which takes no
//! snapshot of 3,000 entries): the Worker's archive and self-restore
//! under `wrangler dev` (the test build, for its `/__test/archive` and `/__test/wipe`
//! hooks). Writes ENTRIES Facts (4 writers) with every window held shut, restarts the
//! Worker on the same state with windows of 1,000 entries, then times how long the
//! coordinator's alarm takes to archive them all (from the write that arms it until
//! the flush cursor reaches the head), and how long the first request after a wipe of
//! the coordinator's storage takes (it waits for the restore). Prints one JSON
//! object. For BENCHMARKS.md §11.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nexus_client::{Client, KeyFile, builders};
use nexus_worker_test::{Build, WranglerDev, agent};
use serde_json::{Value, json};

const WRITERS: u64 = 4;

fn status(url: &str) -> Result<Value, String> {
    let mut r = agent(Duration::from_secs(30))
        .get(format!("{url}/__test/archive"))
        .call()
        .map_err(|e| e.to_string())?;
    r.body_mut().read_json().map_err(|e| e.to_string())
}

fn write_facts(url: &str, entries: u64) -> Result<(), String> {
    let per = entries.div_ceil(WRITERS);
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = url.to_owned();
            std::thread::spawn(move || -> Result<(), String> {
                let c = Client::new(&url).map_err(|e| e.to_string())?;
                let key = KeyFile::generate().map_err(|e| e.to_string())?;
                for n in (w * per)..((w + 1) * per).min(entries) {
                    let f = builders::fact(key.key(), "bench/archive", json!({"n": n}), &[], None)
                        .map_err(|e| e.to_string())?;
                    c.submit_fact(&f).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a writer panicked".to_owned())??;
    }
    Ok(())
}

fn run(entries: u64, snapshot_every: &str) -> Result<Value, String> {
    let state = tempfile_dir()?;
    let shut = [
        ("NEXUS_FLUSH_ENTRIES", "1000000000"),
        ("NEXUS_FLUSH_SECS", "86400"),
    ];
    {
        let dev = WranglerDev::start_with("wrangler.toml", Build::Test, &state, &shut);
        write_facts(&dev.url, entries)?;
    }
    let dev = WranglerDev::start_with(
        "wrangler.toml",
        Build::Test,
        &state,
        &[
            ("NEXUS_FLUSH_ENTRIES", "1000"),
            ("NEXUS_FLUSH_SECS", "0"),
            ("NEXUS_SNAPSHOT_EVERY", snapshot_every),
        ],
    );
    let c = Client::new(&dev.url)
        .map_err(|e| e.to_string())?
        .with_timeout(Duration::from_secs(600));
    let key = KeyFile::generate().map_err(|e| e.to_string())?;
    let last = builders::fact(key.key(), "bench/archive", json!({"n": "last"}), &[], None)
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    c.submit_fact(&last).map_err(|e| e.to_string())?;
    let archived = loop {
        let s = status(&dev.url)?;
        if s["cursor"]["seq"] == s["head"] && s["cursor"]["pending"].is_null() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("not archived within 10 minutes: {s}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let archive_s = started.elapsed().as_secs_f64();
    let head = archived["head"].as_u64().unwrap_or(0);
    eprintln!("archived {head} entries in {archive_s:.2} s");
    let wiped = agent(Duration::from_secs(30))
        .post(format!("{}/__test/wipe", dev.url))
        .send(&[][..])
        .map_err(|e| e.to_string())?;
    if wiped.status() != 200 {
        return Err(format!("wipe: {}", wiped.status()));
    }
    let started = Instant::now();
    let restored = c.health().map_err(|e| e.to_string())?.log_head;
    let restore_s = started.elapsed().as_secs_f64();
    if restored != head {
        return Err(format!("restored head {restored}, expected {head}"));
    }
    let _ = std::fs::remove_dir_all(&state);
    Ok(json!({
        "entries": head,
        "windows": archived["cursor"]["windows"],
        "archive_s": archive_s,
        "archive_entries_per_s": head as f64 / archive_s,
        "restore_s": restore_s,
        "restore_entries_per_s": head as f64 / restore_s,
        "snapshots": archived["snapshots"],
    }))
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("worker-archive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn main() -> ExitCode {
    let entries = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3_000);
    let snapshot_every = std::env::args().nth(2).unwrap_or_else(|| "16".to_owned());
    match run(entries, &snapshot_every) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("worker-archive: {e}");
            ExitCode::FAILURE
        }
    }
}
