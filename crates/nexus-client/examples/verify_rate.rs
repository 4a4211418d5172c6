//! `nexus verify` throughput against the strict-verification rate, in one run
//! (BENCHMARKS.md §9): writes a synthetic export of propose / claim / resolve cycles
//! by 16 agents (or reads the one given), measures strict Ed25519 verification alone
//! on one core, then verifies the export sequentially and on every core.
//!
//! ```sh
//! cargo run -p nexus-client --release --example verify_rate -- [ENTRIES] [--keep FILE]
//! ```

use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use nexus_client::builders::{claim_at, fact_at, propose_at};
use nexus_client::{VerifyOptions, verify_export_with};
use nexus_core::{FihHash, SigningKey};
use serde_json::json;

const T: u64 = 1_764_000_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let entries: u64 = args.first().map_or(Ok(240_000), |a| a.parse())?;
    let keep = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1));
    let dir = tempfile::tempdir()?;
    let path = keep.map_or_else(|| dir.path().join("export.jsonl"), Into::into);
    let dep: nexus_core::Deployment = "bench".parse()?;
    let agents: Vec<SigningKey> = (0..16u8)
        .map(|i| SigningKey::from_seed(&[i + 1; 32]))
        .collect();

    // The export: cycles of propose (agent a), claim and resolve (agent a+1).
    let started = Instant::now();
    let mut out = BufWriter::new(std::fs::File::create(&path)?);
    let mut seq = 0u64;
    let mut write = |out: &mut BufWriter<std::fs::File>, v: serde_json::Value| {
        seq += 1;
        let mut line = v;
        line["seq"] = json!(seq);
        line["at"] = json!(T + seq);
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
    };
    let mut i = 0u64;
    while i * 3 < entries {
        let (a, b) = (&agents[(i % 16) as usize], &agents[((i + 1) % 16) as usize]);
        let t = T + i * 3;
        let intent = propose_at(a, "bench/cycle", json!({"i": i}), &[], t)?;
        let h: FihHash = intent.hash();
        write(&mut out, json!({"record": intent.to_value()}))?;
        let claim = claim_at(b, &dep, h, 30_000, t + 1)?;
        write(&mut out, json!({"action": claim.to_value()}))?;
        let fact = fact_at(
            b,
            "bench/cycle",
            json!({"ok": true}),
            &[h],
            Some((h, 1)),
            t + 2,
        )?;
        write(&mut out, json!({"record": fact.to_value()}))?;
        i += 1;
    }
    out.flush()?;
    drop(out);
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "export: {seq} entries, {bytes} bytes ({} B/entry), written in {:.1} s",
        bytes / seq.max(1),
        started.elapsed().as_secs_f64()
    );

    // Strict verification alone, one core.
    let n = 50_000u64;
    let sigs: Vec<(nexus_core::AuthorKey, FihHash, nexus_core::Signature)> = (0..n)
        .map(|i| {
            let k = &agents[(i % 16) as usize];
            let h = FihHash::of_canonical(&i.to_le_bytes());
            (k.author(), h, k.sign(&h))
        })
        .collect();
    let t0 = Instant::now();
    let ok = sigs.iter().filter(|(a, h, s)| a.verify(h, s)).count() as u64;
    assert_eq!(ok, n);
    let strict = n as f64 / t0.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("strict Ed25519 verification, one core: {strict:.0}/s; cores: {cores}");

    for (label, threads, replay) in [
        ("sequential (--threads 1)", 1, false),
        ("every core (default)", 0, false),
        ("--replay, sequential", 1, true),
        ("--replay, every core", 0, true),
    ] {
        let options = VerifyOptions {
            threads,
            replay,
            ..VerifyOptions::default()
        };
        let t0 = Instant::now();
        let file = BufReader::with_capacity(1 << 16, std::fs::File::open(&path)?);
        let report = verify_export_with(file, &options, |_| {})?;
        let rate = report.lines as f64 / t0.elapsed().as_secs_f64();
        println!(
            "{label}: {} entries in {:.2} s = {rate:.0} entries/s = {:.2} of cores x strict rate",
            report.lines,
            t0.elapsed().as_secs_f64(),
            rate / (strict * cores as f64)
        );
    }
    Ok(())
}
