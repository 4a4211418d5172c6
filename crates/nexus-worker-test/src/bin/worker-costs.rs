//! `worker-costs URL [CYCLES]`: runs CYCLES (default 20) propose → claim → resolve
//! cycles against a neXus Worker and prints, as one JSON object, the mean of each
//! `x-nexus-metrics` field per step (KV/R2 reads and writes, Durable Object calls, …)
//! and the median wall time. For BENCHMARKS.md (`bench/worker.sh`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use nexus_client::KeyFile;
use nexus_client::builders;
use nexus_worker_test::agent;
use serde_json::{Value, json};

type Costs = BTreeMap<String, f64>;

fn post(agent: &ureq::Agent, url: &str, path: &str, body: &[u8]) -> Result<(Value, Costs), String> {
    let mut resp = agent
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .send(body)
        .map_err(|e| format!("POST {path}: {e}"))?;
    let costs = resp
        .headers()
        .get("x-nexus-metrics")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("POST {path}: no x-nexus-metrics header"))?
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect();
    let status = resp.status().as_u16();
    let body: Value = resp
        .body_mut()
        .read_json()
        .map_err(|e| format!("POST {path}: {e}"))?;
    if status >= 300 {
        return Err(format!("POST {path}: {status} {body}"));
    }
    Ok((body, costs))
}

fn run(url: &str, cycles: usize) -> Result<Value, String> {
    let agent = agent(Duration::from_secs(30));
    let key = KeyFile::generate().map_err(|e| e.to_string())?;
    let mut sums: BTreeMap<&str, Costs> = BTreeMap::new();
    let mut add = |step: &'static str, costs: Costs| {
        let sum = sums.entry(step).or_default();
        for (k, v) in costs {
            *sum.entry(k).or_default() += v;
        }
    };
    let deployment = nexus_client::Client::new(url)
        .and_then(|c| c.deployment())
        .map_err(|e| e.to_string())?;
    for n in 0..cycles {
        let intent = builders::propose(key.key(), "bench/costs", json!({"n": n}), &[])
            .map_err(|e| e.to_string())?;
        add(
            "propose",
            post(&agent, url, "/v1/intents", &intent.to_json())?.1,
        );
        let claim = builders::claim(key.key(), &deployment, intent.hash(), 30_000)
            .map_err(|e| e.to_string())?;
        let path = format!("/v1/intents/{}/claim", intent.hash());
        let (lease, costs) = post(&agent, url, &path, &claim.to_json())?;
        add("claim", costs);
        let token = lease["token"].as_u64().ok_or("no token")?;
        let fact = builders::fact(
            key.key(),
            "bench/costs",
            json!({"n": n}),
            &[intent.hash()],
            Some((intent.hash(), token)),
        )
        .map_err(|e| e.to_string())?;
        add(
            "resolve",
            post(&agent, url, "/v1/facts", &fact.to_json())?.1,
        );
    }
    let per_step: BTreeMap<&str, Costs> = sums
        .into_iter()
        .map(|(step, sum)| {
            let mean = sum
                .into_iter()
                .map(|(k, v)| (k, (v / cycles as f64 * 100.0).round() / 100.0))
                .collect();
            (step, mean)
        })
        .collect();
    Ok(json!({ "cycles": cycles, "mean_per_request": per_step }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first() else {
        eprintln!("usage: worker-costs URL [CYCLES]");
        return ExitCode::from(2);
    };
    let cycles = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(20);
    match run(url.trim_end_matches('/'), cycles) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("worker-costs: {e}");
            ExitCode::FAILURE
        }
    }
}
