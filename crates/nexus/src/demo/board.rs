//! What the driver reads off the server while the swarm runs, and the live view of it
//! on stderr: a progress bar and a compact table (Intents by state, claims, conflicts,
//! takeovers, denials, Facts/s). On a terminal only; elsewhere the live view is silent.

use std::io::IsTerminal as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nexus_client::Client;
use nexus_client::http::IntentQuery;
use nexus_core::{Content, Effect, Intent, IntentState, Record, Selector};

use super::problem::Problem;
use super::swarm::{Stats, job_of};

/// The run's Intents by state, read from the server.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Available and admissible.
    pub available: u64,
    /// Available but denied by a Hint in force.
    pub denied: u64,
    /// Claimed (lease live or lapsed).
    pub claimed: u64,
    /// Resolved.
    pub resolved: u64,
    /// Resolved, outside the cursed regions: the search's progress.
    pub searched: u64,
    /// Every Intent of the run, with its state.
    pub intents: Vec<(Record, IntentState)>,
    /// The selectors of the deny Hints in force.
    pub denies: Vec<Selector>,
}

impl Snapshot {
    /// Reads the Intents under `prefix` and the Hints in force.
    pub fn read(c: &Client, prefix: &str, problem: &Problem) -> Result<Self> {
        let denies: Vec<Selector> = c
            .hints()?
            .iter()
            .filter_map(|h| h.content())
            .filter(|h| h.effect == Effect::Deny)
            .map(|h| h.selector.clone())
            .collect();
        let q = IntentQuery {
            topic: Some(prefix.to_owned()),
            limit: Some(500),
            ..IntentQuery::default()
        };
        let mut s = Snapshot {
            denies,
            ..Snapshot::default()
        };
        for item in c.all_intents(&q) {
            let item = item?;
            match &item.state {
                IntentState::Available { .. } => {
                    if s.is_denied(&item.record) {
                        s.denied += 1;
                    } else {
                        s.available += 1;
                    }
                }
                IntentState::Claimed { .. } => s.claimed += 1,
                IntentState::Resolved { .. } => {
                    s.resolved += 1;
                    if job_of(&item.record).is_some_and(|j| !problem.is_cursed(j.region)) {
                        s.searched += 1;
                    }
                }
                IntentState::Withdrawn { .. } => {}
            }
            s.intents.push((item.record, item.state));
        }
        Ok(s)
    }

    /// Whether a deny Hint in force selects this Intent record.
    pub fn is_denied(&self, record: &Record) -> bool {
        match record.content() {
            Content::Intent(i) => self.denies_intent(i),
            _ => false,
        }
    }

    /// Whether a deny Hint in force selects `intent`.
    pub fn denies_intent(&self, intent: &Intent) -> bool {
        self.denies.iter().any(|s| s.selects(intent))
    }

    /// Nothing left to do: no claim outstanding, nothing admissible available.
    pub fn settled(&self) -> bool {
        self.claimed == 0 && self.available == 0 && !self.intents.is_empty()
    }
}

/// The live view.
pub struct Live {
    bar: ProgressBar,
    table: ProgressBar,
    started: Instant,
    _multi: MultiProgress,
}

impl Live {
    /// A live view of a search of `total` Intents (drawn only on a terminal).
    pub fn new(total: u64) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let bar = multi.add(ProgressBar::new(total));
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed:>4} [{bar:40.cyan/blue}] {pos}/{len} search Intents resolved",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let table = multi.add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("{msg}") {
            table.set_style(style);
        }
        Live {
            bar,
            table,
            started: Instant::now(),
            _multi: multi,
        }
    }

    /// Redraws from a snapshot and the counters.
    pub fn update(&self, s: &Snapshot, stats: &Stats, agents: usize) {
        self.bar.set_position(s.searched);
        self.table.set_message(format!(
            "  intents  available {:>4}  claimed {:>3}  resolved {:>4}  denied {:>3}\n  \
             swarm    claims {:>5}  conflicts {:>4}  takeovers {:>2}  denials {:>3}  \
             fenced {:>2}  {:>6.1} Facts/s  agents {}/{}",
            s.available,
            s.claimed,
            s.resolved,
            s.denied,
            stats.claims.load(Ordering::Relaxed),
            stats.conflicts.load(Ordering::Relaxed),
            stats.takeovers.load(Ordering::Relaxed),
            stats.denials.load(Ordering::Relaxed),
            stats.fenced.load(Ordering::Relaxed),
            self.facts_per_second(stats),
            stats.alive.load(Ordering::Relaxed),
            agents,
        ));
    }

    /// Facts committed per second since the start.
    pub fn facts_per_second(&self, stats: &Stats) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        stats.facts.load(Ordering::Relaxed) as f64 / secs
    }

    /// Seconds since the start.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Removes the live view from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        self.table.finish_and_clear();
    }
}
