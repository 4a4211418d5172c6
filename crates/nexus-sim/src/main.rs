//! `nexus-sim`: runs seeded histories of the simulated fabric and judges them.
//!
//! ```text
//! nexus-sim --seed N [--trace]     one history; its trace on a violation (or --trace)
//! nexus-sim --seeds N [--from S]   seeds S..S+N; stops at the first violation
//!   --faults all|none|a,b,…        faults (default all): lost-response, reset, kv-lag,
//!                                  lost-index, lapse, skew, evict, stall
//!   --broken strip-reads|ignore-expected   a deliberately broken coordinator
//!   --requests N                   requests per history (default: drawn from the seed)
//!   --shards N                     coordinator shards (default 1); with more, commits
//!                                  that span shards run nexus-shard's protocol
//! nexus-sim --throughput [--service-ms S] [--rtt-ms R] [--batch-share F] [--duration-s D]
//!           [--clients C]     (C clients per shard, default 16)
//!                                  the throughput model of N = 1, 2, 4, 8 shards
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use nexus_sim::{Broken, Faults, Options, SimError, run_seed};

struct Args {
    seed: Option<u64>,
    /// The throughput model instead of seeds (`--throughput`), with its settings.
    model: Option<nexus_sim::throughput::ModelConfig>,
    seeds: u64,
    from: u64,
    trace: bool,
    keep_going: bool,
    options: Options,
}

fn usage() -> &'static str {
    "usage: nexus-sim (--seed N [--trace] | --seeds N [--from S] [--keep-going]) \
     [--faults all|none|LIST] [--broken strip-reads|ignore-expected] [--requests N] [--shards N]\n\
     or: nexus-sim --throughput [--service-ms S] [--rtt-ms R] [--batch-share F] [--duration-s D] [--clients C]"
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seed: None,
        model: None,
        seeds: 100,
        from: 0,
        trace: false,
        keep_going: false,
        options: Options::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--seed" => args.seed = Some(number(value()?)?),
            "--seeds" => args.seeds = number(value()?)?,
            "--from" => args.from = number(value()?)?,
            "--trace" => args.trace = true,
            "--keep-going" => args.keep_going = true,
            "--faults" => {
                args.options.faults = Faults::parse(&value()?).map_err(|e| e.to_string())?;
            }
            "--broken" => {
                let v = value()?;
                args.options.broken = Broken::parse(&v)
                    .ok_or_else(|| SimError::UnknownBroken(v.clone()).to_string())?;
            }
            "--throughput" => args.model = Some(args.model.unwrap_or_default()),
            "--service-ms" | "--rtt-ms" | "--batch-share" | "--duration-s" | "--clients" => {
                let v = value()?;
                let x: f64 = v.parse().map_err(|e| format!("{flag} {v}: {e}"))?;
                if !x.is_finite() || x < 0.0 {
                    return Err(format!("{flag} takes a number ≥ 0"));
                }
                let m = args.model.get_or_insert_with(Default::default);
                match flag.as_str() {
                    "--service-ms" => m.service_ms = x,
                    "--rtt-ms" => m.rtt_ms = x,
                    "--batch-share" => m.batch_share = x.min(1.0),
                    "--clients" => m.clients_per_shard = (x as usize).clamp(1, 1_000),
                    _ => m.duration_ms = x * 1_000.0,
                }
            }
            "--shards" => {
                let n = number(value()?)?;
                let n = usize::try_from(n).map_err(|e| format!("--shards: {e}"))?;
                if n == 0 || n > nexus_shard::MAX_SHARDS {
                    return Err(format!("--shards takes 1 to {}", nexus_shard::MAX_SHARDS));
                }
                args.options.shards = n;
            }
            "--requests" => {
                let n = number(value()?)?;
                args.options.requests =
                    Some(usize::try_from(n).map_err(|e| format!("--requests: {e}"))?);
            }
            "-h" | "--help" => return Err(usage().to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(model) = args.model {
        println!(
            "throughput model: {} ms per call at a shard object, {} ms round trip, {:.0}% \
             batches of two Intents, {} clients per shard, {} s measured after {} s \
             (simulated time)\n",
            model.service_ms,
            model.rtt_ms,
            model.batch_share * 100.0,
            model.clients_per_shard,
            model.duration_ms / 1_000.0,
            model.warmup_ms / 1_000.0
        );
        print!("{}", nexus_sim::throughput::table(&model, &[1, 2, 4, 8]));
        return ExitCode::SUCCESS;
    }
    if let Some(seed) = args.seed {
        let run = run_seed(seed, &args.options);
        if args.trace && run.verdict.violations.is_empty() {
            for line in &run.history.trace {
                println!("{line}");
            }
        }
        print!("{}", run.report());
        return if run.verdict.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let started = Instant::now();
    let (mut requests, mut entries, mut steps, mut failed) = (0u64, 0u64, 0u64, Vec::new());
    let mut largest = 0usize;
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    let mut injected: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in args.from..args.from.saturating_add(args.seeds) {
        let run = run_seed(seed, &args.options);
        requests += run.history.calls.len() as u64;
        for c in &run.history.calls {
            let key = format!("{} {}", c.request.kind.verb(), c.answer.label());
            *tally.entry(key).or_default() += 1;
        }
        largest = largest.max(run.history.calls.len());
        for (fault, n) in &run.history.injected {
            *injected.entry(fault).or_default() += n;
        }
        entries += run.verdict.log_entries;
        steps += run.history.steps;
        if !run.verdict.violations.is_empty() {
            if failed.is_empty() {
                print!("{}", run.report());
            }
            eprintln!(
                "seed {seed}: {} violation(s); reproduce: {}",
                run.verdict.violations.len(),
                args.options.repro(seed)
            );
            failed.push(seed);
            if !args.keep_going {
                break;
            }
        }
        let done = seed - args.from + 1;
        if done % 1000 == 0 {
            eprintln!("{done} seeds, {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let n = args.seeds.max(1);
    println!(
        "{} seed(s) from {} with faults {} (coordinator {}, {} shard(s)): {} violating; {requests} requests \
         ({:.1} per history, largest {largest}), {entries} log entries ({:.1} per history), \
         {steps} steps; {secs:.1} s, {:.1} seeds/s",
        args.seeds,
        args.from,
        args.options.faults.to_arg(),
        args.options.broken.name(),
        args.options.shards,
        failed.len(),
        requests as f64 / n as f64,
        entries as f64 / n as f64,
        n as f64 / secs.max(1e-9),
    );
    let answers: Vec<String> = tally.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    println!("answers: {}", answers.join(", "));
    let faults: Vec<String> = injected.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    println!("faults injected: {}", faults.join(", "));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
