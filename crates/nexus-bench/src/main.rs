//! `nexus-bench`: a load generator for the Intent cycle.
//!
//! K agents (threads, one kept-alive connection each) loop propose → claim → resolve
//! against neXus, etcd 3.4 or PostgreSQL, and the run reports cycles/s and p50/p99/max
//! latency per step. See `bench/peers.sh` for the three-way comparison and
//! BENCHMARKS.md §2 for results.
//!
//! ```text
//! nexus-bench nexus    --url http://127.0.0.1:7878      [--agents 64] [--cycles 200 | --duration 10] [--json]
//! nexus-bench etcd     --endpoint http://127.0.0.1:2379
//! nexus-bench postgres --dsn "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
//! ```

mod slow;
mod stats;
mod targets;
mod watchers;

use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use stats::Summary;
use targets::Target;

const USAGE: &str = "\
usage: nexus-bench TARGET [options]

targets:
  nexus    --url URL          a neXus server (nexus serve --open)
  etcd     --endpoint URL     etcd 3.4, v3 JSON gateway (http://127.0.0.1:2379)
  postgres --dsn DSN          PostgreSQL (\"host=… port=… user=… dbname=…\")

options:
  --agents K       concurrent agents, one thread and connection each (default 64)
  --cycles N       cycles per agent (default 100)
  --duration SECS  run for SECS seconds instead of a fixed count
  --warmup N       untimed cycles per agent before the start (default 2)
  --json           print one JSON object instead of the table
  --slow N         (nexus) hold N slow connections during the run: headers declaring a
                   60,000-byte body, one byte, then nothing; reopened when closed
  --watchers N     (nexus) hold N event streams (GET /v1/events) during the run and
                   report the delay from each entry's commit to its arrival";

/// Parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Where the load goes.
    pub target: Target,
    /// Concurrent agents.
    pub agents: usize,
    /// Cycles per agent (ignored with `duration`).
    pub cycles: u64,
    /// Run length instead of a count.
    pub duration: Option<Duration>,
    /// Untimed cycles per agent first.
    pub warmup: u64,
    /// JSON output.
    pub json: bool,
    /// Slow connections held during the run (nexus only).
    pub slow: usize,
    /// Event streams held during the run (nexus only).
    pub watchers: usize,
}

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Options> {
    let mut args = args.into_iter();
    let kind = args
        .next()
        .context("missing target (nexus, etcd or postgres)")?;
    let mut addr: Option<(String, String)> = None;
    let mut o = Options {
        target: Target::Nexus(String::new()),
        agents: 64,
        cycles: 100,
        duration: None,
        warmup: 2,
        json: false,
        slow: 0,
        watchers: 0,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" | "--endpoint" | "--dsn" => addr = Some((flag.clone(), value()?)),
            "--agents" => o.agents = value()?.parse().context("--agents")?,
            "--cycles" => o.cycles = value()?.parse().context("--cycles")?,
            "--duration" => {
                let secs: f64 = value()?.parse().context("--duration")?;
                if !(secs > 0.0 && secs.is_finite()) {
                    bail!("--duration must be positive");
                }
                o.duration = Some(Duration::from_secs_f64(secs));
            }
            "--warmup" => o.warmup = value()?.parse().context("--warmup")?,
            "--json" => o.json = true,
            "--slow" => o.slow = value()?.parse().context("--slow")?,
            "--watchers" => o.watchers = value()?.parse().context("--watchers")?,
            other => bail!("unknown option {other}"),
        }
    }
    if o.agents == 0 || (o.cycles == 0 && o.duration.is_none()) {
        bail!("--agents and --cycles must be at least 1");
    }
    let want = match kind.as_str() {
        "nexus" => "--url",
        "etcd" => "--endpoint",
        "postgres" => "--dsn",
        other => bail!("unknown target {other} (nexus, etcd or postgres)"),
    };
    let value = match addr {
        Some((flag, v)) if flag == want => v,
        Some((flag, _)) => bail!("{kind} takes {want}, not {flag}"),
        None => bail!("{kind} needs {want}"),
    };
    if (o.slow > 0 || o.watchers > 0) && kind != "nexus" {
        bail!("--slow and --watchers work with the nexus target only");
    }
    o.target = match kind.as_str() {
        "nexus" => Target::Nexus(value),
        "etcd" => Target::Etcd(value),
        _ => Target::Postgres(value),
    };
    Ok(o)
}

/// What one agent measured (µs per sample).
#[derive(Default)]
struct Samples {
    propose: Vec<u64>,
    claim: Vec<u64>,
    resolve: Vec<u64>,
    cycle: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn run_agent(
    opts: &Options,
    run: &str,
    index: usize,
    start: &Barrier,
    began: &std::sync::OnceLock<Instant>,
) -> Result<Samples> {
    let mut agent = opts.target.agent(run, index)?;
    let mut n = 0u64;
    let mut warm_error = None;
    for _ in 0..opts.warmup {
        n += 1;
        if let Err(e) = agent
            .propose(n)
            .and_then(|()| agent.claim())
            .and_then(|()| agent.resolve())
        {
            warm_error = Some(e);
            break;
        }
    }
    start.wait();
    if let Some(e) = warm_error {
        return Err(e.context("warm-up cycle failed"));
    }
    let t0 = *began.get_or_init(Instant::now);
    let mut s = Samples::default();
    let mut done = 0u64;
    loop {
        match opts.duration {
            Some(d) if t0.elapsed() >= d => break,
            None if done >= opts.cycles => break,
            _ => {}
        }
        done += 1;
        n += 1;
        let c0 = Instant::now();
        let r = (|| {
            agent.propose(n)?;
            let c1 = Instant::now();
            agent.claim()?;
            let c2 = Instant::now();
            agent.resolve()?;
            let c3 = Instant::now();
            Ok::<_, anyhow::Error>([c1 - c0, c2 - c1, c3 - c2, c3 - c0])
        })();
        match r {
            Ok([p, c, r, all]) => {
                s.propose.push(micros(p));
                s.claim.push(micros(c));
                s.resolve.push(micros(r));
                s.cycle.push(micros(all));
            }
            Err(e) => {
                s.errors += 1;
                s.first_error.get_or_insert_with(|| format!("{e:#}"));
                if s.errors >= 10 && s.cycle.is_empty() {
                    break; // nothing works: stop hammering
                }
            }
        }
    }
    Ok(s)
}

fn run(opts: &Options) -> Result<serde_json::Value> {
    opts.target.prepare()?;
    let mut seed = [0u8; 8];
    getrandom::getrandom(&mut seed).context("no OS randomness")?;
    let run = hex(&seed);
    let head_before = opts.target.log_head()?;
    let slow = match &opts.target {
        Target::Nexus(url) if opts.slow > 0 => Some(slow::SlowClients::start(url, opts.slow)?),
        _ => None,
    };
    let watchers = match &opts.target {
        Target::Nexus(url) if opts.watchers > 0 => {
            Some(watchers::Watchers::start(url, opts.watchers)?)
        }
        _ => None,
    };
    let start = Arc::new(Barrier::new(opts.agents + 1));
    let began = Arc::new(std::sync::OnceLock::new());
    let mut threads = Vec::with_capacity(opts.agents);
    for i in 0..opts.agents {
        let (o, r, st, b) = (
            opts.clone(),
            run.clone(),
            Arc::clone(&start),
            Arc::clone(&began),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("agent-{i}"))
                .stack_size(256 << 10)
                .spawn(move || run_agent(&o, &r, i, &st, &b))
                .context("cannot spawn an agent thread")?,
        );
    }
    start.wait();
    let t0 = *began.get_or_init(Instant::now);
    let cpu0 = cpu_seconds();
    let mut all = Samples::default();
    let mut failures = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Ok(s)) => {
                all.propose.extend(s.propose);
                all.claim.extend(s.claim);
                all.resolve.extend(s.resolve);
                all.cycle.extend(s.cycle);
                all.errors += s.errors;
                if all.first_error.is_none() {
                    all.first_error = s.first_error;
                }
            }
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(_) => failures.push("agent thread panicked".to_owned()),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let client_cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
    if let Some(f) = failures.first() {
        bail!("{} agent(s) failed to start: {f}", failures.len());
    }
    let cycles = all.cycle.len() as u64;
    let slow_counts = slow.as_ref().map(|s| {
        (
            s.opened.load(std::sync::atomic::Ordering::Relaxed),
            s.closed.load(std::sync::atomic::Ordering::Relaxed),
        )
    });
    drop(slow);
    let watched = watchers.map(|w| {
        w.finish(|| {
            // One more commit wakes every watcher to see the stop.
            if let Target::Nexus(url) = &opts.target {
                let _ = targets::poke(url);
            }
        })
    });
    let head_after = opts.target.log_head()?;
    let mut out = json!({
        "target": opts.target.name(),
        "agents": opts.agents,
        "cycles": cycles,
        "errors": all.errors,
        "first_error": all.first_error,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "cycles_per_s": (cycles as f64 / secs * 10.0).round() / 10.0,
        // The load generator's own CPU while timed (signing, HTTP, JSON), all threads.
        "client_cpu_s": client_cpu.map(|c| (c * 100.0).round() / 100.0),
    });
    if let Some((mut delays, least)) = watched {
        out["watchers"] = json!({
            "streams": opts.watchers,
            "fewest_entries_one_got": least,
            "delay": Summary::of(&mut delays).map_or(serde_json::Value::Null, Summary::to_json),
        });
    }
    if let Some((opened, closed)) = slow_counts {
        out["slow"] = json!({"held": opts.slow, "opened": opened, "closed_by_server": closed});
    }
    for (name, v) in [
        ("propose", &mut all.propose),
        ("claim", &mut all.claim),
        ("resolve", &mut all.resolve),
        ("cycle", &mut all.cycle),
    ] {
        out[name] = Summary::of(v).map_or(serde_json::Value::Null, Summary::to_json);
    }
    if let (Some(a), Some(b)) = (head_before, head_after) {
        // Every acknowledged write is one commit in the log: 3 per cycle (plus the
        // warm-up's and whatever failed cycles managed).
        let acked = 3 * (cycles + opts.warmup * opts.agents as u64);
        out["log_commits"] = json!(b - a);
        out["log_commits_expected_at_least"] = json!(acked);
        if b - a < acked {
            bail!(
                "the log grew by {} but {acked} writes were acknowledged",
                b - a
            );
        }
    }
    Ok(out)
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`
/// (Linux; `None` elsewhere). The clock tick is USER_HZ, 100 on Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_seconds_of(&stat)
}

/// utime + stime of a `/proc/PID/stat` line, in seconds.
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    // Fields after the command name in parentheses: 3 = state, …, 14 = utime, 15 = stime.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn print_table(v: &serde_json::Value) {
    println!(
        "{} agents={} cycles={} errors={} in {:.2} s: {:.1} cycles/s",
        v["target"].as_str().unwrap_or("?"),
        v["agents"],
        v["cycles"],
        v["errors"],
        v["seconds"].as_f64().unwrap_or(0.0),
        v["cycles_per_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  {:<8} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "step", "count", "p50 ms", "p99 ms", "max ms", "mean ms"
    );
    for step in ["propose", "claim", "resolve", "cycle"] {
        let s = &v[step];
        println!(
            "  {:<8} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            step,
            s["count"],
            s["p50_ms"].as_f64().unwrap_or(f64::NAN),
            s["p99_ms"].as_f64().unwrap_or(f64::NAN),
            s["max_ms"].as_f64().unwrap_or(f64::NAN),
            s["mean_ms"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if let Some(e) = v["first_error"].as_str() {
        println!("  first error: {e}");
    }
    if v["watchers"].is_object() {
        let w = &v["watchers"];
        println!(
            "  watchers: {} streams, commit -> event p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; fewest entries one got: {}",
            w["streams"],
            w["delay"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
            w["delay"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            w["delay"]["max_ms"].as_f64().unwrap_or(f64::NAN),
            w["fewest_entries_one_got"]
        );
    }
    if v["slow"].is_object() {
        println!(
            "  slow connections: {} held, {} opened, {} closed by the server",
            v["slow"]["held"], v["slow"]["opened"], v["slow"]["closed_by_server"]
        );
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nexus-bench: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(v) => {
            if opts.json {
                println!("{v}");
            } else {
                print_table(&v);
            }
            if v["errors"].as_u64().unwrap_or(0) > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("nexus-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Options> {
        parse_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn defaults_and_targets() {
        let o = parse("nexus --url http://127.0.0.1:1").expect("ok");
        assert_eq!(o.target, Target::Nexus("http://127.0.0.1:1".into()));
        assert_eq!(
            (o.agents, o.cycles, o.duration, o.warmup, o.json),
            (64, 100, None, 2, false)
        );
        let o = parse("etcd --endpoint http://e --agents 16 --cycles 5 --json").expect("ok");
        assert_eq!(o.target, Target::Etcd("http://e".into()));
        assert_eq!((o.agents, o.cycles, o.json), (16, 5, true));
        let o = parse("postgres --dsn host=x --duration 2.5 --warmup 0").expect("ok");
        assert_eq!(o.target, Target::Postgres("host=x".into()));
        assert_eq!(
            (o.duration, o.warmup),
            (Some(Duration::from_millis(2500)), 0)
        );
    }

    #[test]
    fn proc_stat_cpu_fields() {
        let line = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0";
        assert_eq!(cpu_seconds_of(line), Some(3.25));
        assert_eq!(cpu_seconds_of("garbage"), None);
        assert!(cpu_seconds().is_some_and(|c| c >= 0.0));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for bad in [
            "",
            "redis --url x",
            "nexus",
            "nexus --dsn x",
            "etcd --url x",
            "nexus --url x --agents 0",
            "nexus --url x --agents many",
            "nexus --url x --cycles",
            "nexus --url x --duration -1",
            "nexus --url x --frobnicate",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
