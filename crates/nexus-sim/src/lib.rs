//! A deterministic simulator of the Cloudflare fabric neXus runs on, and a checker
//! that judges every history it produces (issue 10, part 3).
//!
//! One seed gives one history, byte for byte: a [`ChaCha8Rng`](rand_chacha::ChaCha8Rng)
//! seeded from it makes every choice, and there are no threads, clocks or I/O. A
//! history is:
//!
//! * **the fabric** ([`fabric`]): several isolates, each with its own cache of states
//!   (possibly stale) and its own clock skew; the coordinator Durable Object, applying
//!   each commit atomically with [`nexus_store::apply_commit`]; Workers KV, where each
//!   write reaches each isolate after its own delay (reads before that see absent; a
//!   record falls back to its R2 copy, as the Worker does); and R2, strongly consistent;
//! * **the workload** ([`workload`]): agents proposing Intents, posting deny / allow /
//!   priority Hints, claiming, taking over lapsed claims, renewing, resolving with
//!   their fencing token (sometimes a stale one), withdrawing, retrying the very same
//!   signed request after a 5xx or a lost answer, and sending acknowledged ones again;
//! * **the scheduler** ([`sim`]): each request is the [`nexus_api::Job::driver`] the
//!   hosts run — the same driver and core, nothing re-implemented — and at every step
//!   the scheduler picks at random which request advances (or which agent sends) and
//!   performs the I/O its [`nexus_iobuf::Step`] asks for against the fabric, as the
//!   Worker's bridge does: states from the isolate cache when `cache_ok`, KV and R2
//!   puts before ONE coordinator commit (ops + read checks + log), index entries after;
//! * **faults** ([`Faults`]), each switchable: a lost answer after a commit applied, a
//!   coordinator reset mid-call (before or after applying), KV lag and lost index
//!   writes, lease lapses (the clock jumps), bounded clock skew, isolate recycling.
//!
//! The [`check`] module judges it: the committed log replays (`verify --replay`'s
//! verifier), claims are linearizable per Intent ([`wgl`] against [`model`]), no double
//! claim, no acknowledged write lost. [`run_seed`] does both; a failing seed prints a
//! reproduction ([`Options::repro`]) that replays exactly:
//!
//! ```text
//! cargo run -p nexus-sim --release -- --seed 12345 --faults all
//! cargo run -p nexus-sim --release -- --seeds 10000            # the long run
//! ```
//!
//! ```
//! use nexus_sim::{Options, run_seed};
//!
//! let run = run_seed(7, &Options::default());
//! assert!(run.verdict.violations.is_empty(), "{}", run.report());
//! assert!(run.verdict.log_entries > 0);
//! ```

pub mod check;
pub mod fabric;
pub mod history;
pub mod model;
pub mod sim;
pub mod throughput;
pub mod wgl;
pub mod workload;

pub use check::{Verdict, Violation, check};
pub use fabric::Broken;
pub use history::History;
pub use sim::{FAULT_NAMES, Faults, Options, run};

/// Errors of the simulator's options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// `--faults` named a fault that does not exist.
    #[error("unknown fault {0:?} (known: all, none, {known})", known = FAULT_NAMES.join(", "))]
    UnknownFault(String),
    /// `--broken` named no known breakage.
    #[error("unknown --broken {0:?} (known: none, strip-reads, ignore-expected)")]
    UnknownBroken(String),
}

/// One seed, run and judged.
#[derive(Debug)]
pub struct SeedRun {
    /// The options it ran with.
    pub options: Options,
    /// The history.
    pub history: History,
    /// The checker's verdict.
    pub verdict: Verdict,
}

/// Runs the history of `seed` and judges it.
pub fn run_seed(seed: u64, options: &Options) -> SeedRun {
    let history = run(seed, options);
    let verdict = check(&history);
    SeedRun {
        options: *options,
        history,
        verdict,
    }
}

impl SeedRun {
    /// A report for a person: the verdict, the reproduction and (when something is
    /// wrong) the trace of the history.
    pub fn report(&self) -> String {
        let h = &self.history;
        let mut out = format!(
            "seed {}: {} request(s), {} step(s), {} log entr(y/ies), faults injected {:?}\n",
            h.seed,
            h.calls.len(),
            h.steps,
            self.verdict.log_entries,
            h.injected
        );
        if self.verdict.violations.is_empty() {
            out.push_str("ok: no violation\n");
            return out;
        }
        for v in &self.verdict.violations {
            out.push_str(&format!("VIOLATION: {v}\n"));
        }
        out.push_str(&format!(
            "reproduce: {}\ntrace:\n",
            self.options.repro(h.seed)
        ));
        for line in &h.trace {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("log:\n");
        out.push_str(&self.verdict.export);
        out
    }
}
