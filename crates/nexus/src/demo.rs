//! `nexus demo`: a swarm of agents divides a seeded search through claims on one
//! board, under a governance contract, and the run ends with `verify --replay` of the
//! whole log and a summary.
//!
//! **Determinism.** Agents run concurrently, so who wins a claim, how many conflicts
//! and denials there are and how fast it goes are timing; they are shown live (stderr)
//! and after the summary, never in it. The summary (stdout) holds only what the seed
//! decides and the run must reach whatever the timing: the problem, the minimum the
//! search finds (checked against a direct scan), the Intents the search resolved, the
//! regions the contract denied (checked against the cursed ones), which agents crashed
//! holding which chunk (the driver makes those claims before the swarm starts) and
//! that `verify --replay` passed. So `nexus demo --seed S` prints the same summary
//! every time. A host that runs no contract (the Worker answers `POST /v1/contract`
//! with `501`) runs the same search ungoverned, and its summary says so.

mod board;
mod problem;
mod swarm;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nexus_client::{Client, VerifyOptions};
use nexus_core::{Content, FihHash, Intent, IntentState};
use serde_json::json;

use crate::Global;
use board::{Live, Snapshot};
use problem::{Best, CONTRACT, Problem};
use swarm::{Agent, Stats, agent_key, region_topic};

/// The options of `nexus demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Agents in the swarm, each with its own key.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub agents: u16,
    /// The seed that decides the problem, the failing regions and the crashing agents
    /// (default: a random one, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Lease of every claim (a crashed agent's work is taken over once it lapses).
    #[arg(long, default_value = "2s", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub lease: u64,
    /// Simulated work per Intent.
    #[arg(long, default_value = "25ms", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub work: u64,
    /// Give up if the board has not settled after this long.
    #[arg(long, default_value = "5m", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub timeout: u64,
    /// Keep the embedded server running after the run (until Ctrl-C), to look at it in
    /// the explorer at its URL.
    #[arg(long)]
    pub keep: bool,
    /// Open the explorer in the system's browser (implies --keep with the embedded server).
    #[arg(long)]
    pub open_browser: bool,
}

/// The server the demo runs against: an embedded one (a `nexus serve` child on a
/// temporary store, ended when this is dropped) or the one `--server` names.
struct Server {
    url: String,
    child: Option<(Child, tempfile::TempDir)>,
}

impl Server {
    /// Starts `nexus serve --open` (this executable) on a fresh temporary data
    /// directory, on a free loopback port, and waits for its address. A child process
    /// rather than a server in this process: it is exactly the server a user runs, and
    /// its store is closed and deleted however the demo ends.
    fn embedded() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("nexus-demo")
            .tempdir()
            .context("cannot create a temporary data directory (set TMPDIR)")?;
        let exe = std::env::current_exe().context("cannot find the nexus executable")?;
        let log = dir.path().join("serve.log");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--addr", "127.0.0.1:0", "--open", "--address-rate", "0"])
            .args(["--author-rate", "0"])
            .env_remove("NEXUS_READ_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("cannot start the embedded server (nexus serve)")?;
        let stdout = child.stdout.take().context("the server has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("cannot read the embedded server's address")?;
        let Some(url) = line.trim().strip_prefix("nexus listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("the embedded server did not start:\n{}", text.trim_end());
        };
        Ok(Server {
            url: url.to_owned(),
            child: Some((child, dir)),
        })
    }

    /// Waits for the embedded server to end (Ctrl-C ends it: it shares the terminal).
    fn wait(&mut self) -> Result<()> {
        if let Some((child, _)) = &mut self.child {
            child
                .wait()
                .context("cannot wait for the embedded server")?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((child, _dir)) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The deterministic outcome of a run (the summary).
struct Outcome {
    best: Best,
    searched: u64,
    denied: Vec<u32>,
    /// Whether the server runs the contract.
    governed: bool,
}

/// `nexus demo`.
pub fn run(g: &Global, server_given: bool, args: &DemoArgs) -> Result<ExitCode> {
    if args.work.saturating_mul(2) >= args.lease {
        bail!(
            "--work ({}) must be under half of --lease ({}): a live agent must finish \
             within its lease",
            crate::cli::fmt_duration(args.work),
            crate::cli::fmt_duration(args.lease)
        );
    }
    let seed = match args.seed {
        Some(s) => s,
        None => {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b)
                .map_err(|e| anyhow::anyhow!("cannot read OS randomness for a seed: {e}"))?;
            u64::from_le_bytes(b) % 1_000_000
        }
    };
    let agents = usize::from(args.agents);
    let mut server = if server_given {
        Server {
            url: g.server.clone(),
            child: None,
        }
    } else {
        Server::embedded()?
    };
    let g = Global {
        server: server.url.clone(),
        ..g.clone()
    };
    let c = crate::cli::client(&g)?;
    eprintln!(
        "neXus demo: {agents} agents on {} (seed {seed}; rerun with --seed {seed})",
        server.url
    );
    eprintln!("explorer: {}/", server.url);
    let problem = Arc::new(Problem::new(seed, agents));
    let outcome = swarm_run(&c, &problem, agents, args)?;
    let verified = crate::export::verify_server(
        &g,
        &server.url,
        &VerifyOptions {
            replay: true,
            ..VerifyOptions::default()
        },
        false,
    )?;
    let ok = verified.is_ok();
    print_summary(&g, &problem, agents, &outcome, &verified);
    if args.open_browser {
        let url = format!("{}/", server.url);
        if let Err(e) = open::that_detached(&url) {
            eprintln!("cannot open a browser ({e}): open {url} yourself");
        }
    }
    if (args.keep || args.open_browser) && server.child.is_some() {
        eprintln!(
            "serving the run at {}/ until Ctrl-C (the store is deleted then)",
            server.url
        );
        server.wait()?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Plans the search, deploys the contract, makes the crashing claims, runs the swarm
/// until the board settles and reads the outcome off the board.
fn swarm_run(
    c: &Client,
    problem: &Arc<Problem>,
    agents: usize,
    args: &DemoArgs,
) -> Result<Outcome> {
    let deployment = c
        .deployment()
        .context("cannot read the server's deployment id")?;
    // A fresh topic per run: a server keeps earlier runs (and their Hints) apart.
    let mut run_id = [0u8; 4];
    getrandom::getrandom(&mut run_id)
        .map_err(|e| anyhow::anyhow!("cannot read OS randomness for a run id: {e}"))?;
    let prefix = format!(
        "demo/{}",
        run_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let stats = Arc::new(Stats::default());
    let agent = |index: usize| Agent {
        index,
        key: agent_key(problem.seed, index),
        client: c.clone(),
        deployment: deployment.clone(),
        prefix: prefix.clone(),
        problem: Arc::clone(problem),
        stats: Arc::clone(&stats),
        lease_ms: args.lease,
        work: Duration::from_millis(args.work),
    };
    // The planner (agent 0's key) deploys the contract and proposes every chunk.
    let planner = agent(0);
    // A host that runs no contract (the Worker: `501 not_implemented`) still runs the
    // search: the failing regions then stop after MAX_ATTEMPTS tries per chunk.
    let governed = match crate::contract_cmd::current_hash(c) {
        Err(e) if not_implemented(&e) => false,
        expected => {
            match crate::contract_cmd::post_deployment(c, &planner.key, CONTRACT, expected?) {
                Err(e) if not_implemented(&e) => false,
                r => {
                    r.context("cannot deploy the demo's contract (the server must accept the demo's keys: serve with --open)")?;
                    true
                }
            }
        }
    };
    let mut chunks: Vec<(problem::Job, FihHash)> = Vec::new();
    for job in problem.initial_jobs() {
        let h = planner
            .propose(&job, &[])?
            .with_context(|| format!("the server refused the Intent {}", job.label()))?;
        chunks.push((job, h));
    }
    // The crashing agents claim their chunk first, then die holding it.
    let mut crashed: Vec<(usize, problem::Job, FihHash)> = Vec::new();
    for (index, job) in &problem.crashes {
        let h = chunks
            .iter()
            .find(|(j, _)| j == job)
            .map(|(_, h)| *h)
            .context("a crash names a chunk that was not proposed")?;
        agent(*index)
            .claim(h)?
            .with_context(|| format!("agent {index} could not claim {}", job.label()))?;
        crashed.push((*index, *job, h));
    }
    let live_agents: Vec<usize> = (0..agents)
        .filter(|i| !problem.crashes.iter().any(|(a, _)| a == i))
        .collect();
    stats.alive.store(live_agents.len(), Ordering::Relaxed);
    let live = Live::new(problem.search_intents());
    let handles: Vec<_> = live_agents
        .iter()
        .map(|&i| {
            let a = agent(i);
            std::thread::Builder::new()
                .name(format!("demo-agent-{i}"))
                .spawn(move || a.run())
                .context("cannot start an agent thread")
        })
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let watched = (|| -> Result<Snapshot> {
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let snap = Snapshot::read(c, &prefix, problem)?;
            live.update(&snap, &stats, agents);
            if snap.settled() {
                return Ok(snap);
            }
            if stats.alive.load(Ordering::Relaxed) == 0 {
                bail!("every agent stopped before the board settled");
            }
            if started.elapsed() > Duration::from_millis(args.timeout) {
                bail!(
                    "the board did not settle within {} (--timeout)",
                    crate::cli::fmt_duration(args.timeout)
                );
            }
        }
    })();
    stats.stop.store(true, Ordering::Relaxed);
    live.finish();
    let mut agent_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => agent_error = agent_error.or(Some(e)),
            Err(_) => agent_error = agent_error.or(Some(anyhow::anyhow!("an agent panicked"))),
        }
    }
    if let Some(e) = agent_error {
        return Err(e.context("an agent failed"));
    }
    let snap = watched?;
    eprintln!(
        "live (timing, not in the summary): {:.1}s, {} claims, {} conflicts, {} takeovers, \
         {} denials, {} fenced, {} throttled, {:.1} Facts/s",
        live.elapsed_secs(),
        stats.claims.load(Ordering::Relaxed),
        stats.conflicts.load(Ordering::Relaxed),
        stats.takeovers.load(Ordering::Relaxed),
        stats.denials.load(Ordering::Relaxed),
        stats.fenced.load(Ordering::Relaxed),
        stats.throttled.load(Ordering::Relaxed),
        live.facts_per_second(&stats),
    );
    outcome(c, problem, &prefix, &snap, &crashed, governed)
}

/// Whether the server answered `501 not_implemented`.
fn not_implemented(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<nexus_client::ClientError>())
        .any(|c| c.error_code() == Some(nexus_client::ErrorCode::NotImplemented))
}

/// Reads the outcome off the board and checks it against what the seed decides.
fn outcome(
    c: &Client,
    problem: &Problem,
    prefix: &str,
    snap: &Snapshot,
    crashed: &[(usize, problem::Job, FihHash)],
    governed: bool,
) -> Result<Outcome> {
    // The minimum, from the leaves' Facts on the board (not from the agents' memory).
    let q = nexus_client::http::FactQuery {
        topic: Some(prefix.to_owned()),
        limit: Some(500),
        ..Default::default()
    };
    let mut best: Option<Best> = None;
    for fact in c.all_facts(&q) {
        let fact = fact?;
        let Content::Fact(f) = fact.content() else {
            continue;
        };
        if f.body["status"] != "ok" {
            continue;
        }
        let b = (|| {
            Some(Best {
                value: f.body["min"].as_u64()?,
                region: u32::try_from(f.body["job"]["region"].as_u64()?).ok()?,
                x: f.body["x"].as_u64()?,
            })
        })()
        .with_context(|| format!("the Fact {} does not hold a result", fact.hash()))?;
        best = Some(best.map_or(b, |x| x.min(b)));
    }
    let best = best.context("the search found nothing")?;
    if Some(best) != problem.expected() {
        bail!(
            "the swarm found {best:?}, a direct scan {:?}",
            problem.expected()
        );
    }
    if snap.searched != problem.search_intents() {
        bail!(
            "the search resolved {} Intents, not {}",
            snap.searched,
            problem.search_intents()
        );
    }
    let denied: Vec<u32> = (0..problem.regions)
        .filter(|&r| {
            region_topic(prefix, r).parse().is_ok_and(|topic| {
                snap.denies_intent(&Intent {
                    topic,
                    body: json!({}),
                    parents: Vec::new(),
                    author: agent_key(0, 0).author(),
                    time: 0,
                })
            })
        })
        .collect();
    let expect_denied: &[u32] = if governed { &problem.cursed } else { &[] };
    if denied != expect_denied {
        bail!(
            "the contract denied regions {denied:?}, but the failing ones are {:?}",
            problem.cursed
        );
    }
    for (index, job, h) in crashed {
        let state = snap
            .intents
            .iter()
            .find(|(r, _)| r.hash() == *h)
            .map(|(_, s)| s);
        match state {
            Some(IntentState::Resolved { by, .. })
                if *by != agent_key(problem.seed, *index).author() => {}
            other => bail!(
                "{} (held by crashed agent {index}) was not taken over: {other:?}",
                job.label()
            ),
        }
    }
    Ok(Outcome {
        best,
        searched: snap.searched,
        denied,
        governed,
    })
}

fn print_summary(
    g: &Global,
    p: &Problem,
    agents: usize,
    o: &Outcome,
    verified: &Result<nexus_client::VerifyReport, nexus_client::VerifyError>,
) {
    let crashes: Vec<String> = p
        .crashes
        .iter()
        .map(|(a, j)| format!("agent {a} holding {}", j.label()))
        .collect();
    if g.json {
        say!(
            "{}",
            json!({
                "seed": p.seed, "agents": agents, "regions": p.regions,
                "points_per_region": problem::REGION_WIDTH,
                "minimum": {"value": o.best.value, "region": o.best.region, "x": o.best.x},
                "search_intents_resolved": o.searched,
                "denied_regions": o.denied,
                "governed": o.governed,
                "failing_regions": p.cursed,
                "crashed": p.crashes.iter().map(|(a, j)| json!({"agent": a, "job": j})).collect::<Vec<_>>(),
                "verified": verified.is_ok(),
                "verify_error": verified.as_ref().err().map(ToString::to_string),
            })
        );
        return;
    }
    let regions = |rs: &[u32]| {
        rs.iter()
            .map(|r| format!("r{r}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    say!(
        "neXus demo, seed {}: {agents} agents searched {} regions x {} points for the minimum of a hidden function",
        p.seed,
        p.regions,
        problem::REGION_WIDTH
    );
    say!(
        "  minimum        {} at r{}:{} (equals a direct scan)",
        o.best.value,
        o.best.region,
        o.best.x
    );
    say!(
        "  search         {} Intents resolved (chunks split into follow-up Intents down to {} points)",
        o.searched,
        problem::LEAF_WIDTH
    );
    if o.governed {
        say!(
            "  governance     contract denied {} after {} failed runs each (rule failure-budget)",
            regions(&o.denied),
            problem::FAILURE_BUDGET
        );
    } else {
        say!(
            "  governance     none (the server runs no contract): {} failed, {} tries per chunk",
            regions(&p.cursed),
            problem::MAX_ATTEMPTS
        );
    }
    say!(
        "  crashes        {} (leases lapsed, taken over)",
        if crashes.is_empty() {
            "none".to_owned()
        } else {
            crashes.join("; ")
        }
    );
    match verified {
        Ok(_) => say!(
            "  verify         --replay ok: every hash, signature and lifecycle step of the log"
        ),
        Err(e) => say!("  verify         --replay FAILED: {e}"),
    }
}
