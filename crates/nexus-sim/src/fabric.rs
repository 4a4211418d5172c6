//! The simulated fabric: the coordinator Durable Object, Workers KV with propagation
//! lag, R2, and the isolates with their state caches — plain data, no I/O.

use std::collections::BTreeMap;

use nexus_api::{Api, ApiConfig};
use nexus_iobuf::ListQuery;
use nexus_shard::ShardMap;
use nexus_store::{Commit, CommitOutcome, StoreResult, apply_commit, list_range};

/// A deliberately broken coordinator, to show that the checker catches what it breaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Broken {
    /// The real coordinator: [`apply_commit`] with every op and read check.
    #[default]
    None,
    /// Drops `Commit::reads` before applying: read checks switched off (the
    /// isolation level of the native host before issue 10).
    StripReads,
    /// Drops the read checks and ignores every op's expected value (a plain
    /// overwrite instead of a compare-and-swap).
    IgnoreExpected,
}

impl Broken {
    /// The name `--broken` takes (`none` for the real coordinator).
    pub fn name(self) -> &'static str {
        match self {
            Broken::None => "none",
            Broken::StripReads => "strip-reads",
            Broken::IgnoreExpected => "ignore-expected",
        }
    }

    /// Parses [`Broken::name`].
    pub fn parse(s: &str) -> Option<Self> {
        [Broken::None, Broken::StripReads, Broken::IgnoreExpected]
            .into_iter()
            .find(|b| b.name() == s)
    }
}

/// The coordinator Durable Object: the object tier, applying each commit atomically
/// with [`apply_commit`] (the same function the memory store uses), one at a time.
#[derive(Debug, Clone, Default)]
pub struct Coordinator {
    /// Every state, commit log included.
    pub states: BTreeMap<String, Vec<u8>>,
    /// How the coordinator is broken, if at all.
    pub broken: Broken,
}

impl Coordinator {
    /// Reads states (one `/read` call).
    pub fn read(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        keys.iter().map(|k| self.states.get(k).cloned()).collect()
    }

    /// Lists state keys.
    pub fn list(&self, q: &ListQuery) -> Vec<String> {
        list_range(&self.states, &q.prefix, q.start_after.as_deref(), q.limit)
    }

    /// Applies a commit (one `/commit` call), as broken as configured.
    pub fn commit(&mut self, commit: &Commit) -> StoreResult<CommitOutcome> {
        match self.broken {
            Broken::None => apply_commit(&mut self.states, commit),
            Broken::StripReads => {
                let mut c = commit.clone();
                c.reads.clear();
                apply_commit(&mut self.states, &c)
            }
            Broken::IgnoreExpected => {
                let mut c = commit.clone();
                c.reads.clear();
                for op in &mut c.ops {
                    op.expected = self.states.get(&op.key).cloned();
                }
                apply_commit(&mut self.states, &c)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct KvEntry {
    value: Vec<u8>,
    /// Global time from which each isolate sees the entry.
    visible_at: Vec<u64>,
}

/// Workers KV: eventually consistent. A write becomes visible to each isolate after
/// its own delay; before that the isolate reads the key as absent.
#[derive(Debug, Clone, Default)]
pub struct Kv {
    entries: BTreeMap<String, KvEntry>,
}

impl Kv {
    /// Writes `key` at global time `now`, visible to isolate `i` from `now + delays[i]`.
    /// A second write of the same value keeps the earlier visibility (KV values are
    /// written once; a retry rewrites the same bytes).
    pub fn put(&mut self, key: &str, value: &[u8], now: u64, delays: &[u64]) {
        let visible_at: Vec<u64> = delays.iter().map(|d| now + d).collect();
        match self.entries.get_mut(key) {
            Some(e) if e.value == value => {
                for (old, new) in e.visible_at.iter_mut().zip(visible_at) {
                    *old = (*old).min(new);
                }
            }
            _ => {
                self.entries.insert(
                    key.to_owned(),
                    KvEntry {
                        value: value.to_vec(),
                        visible_at,
                    },
                );
            }
        }
    }

    /// Removes `key` (at once, everywhere: neXus never deletes KV entries in this
    /// workload).
    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// What isolate `isolate` reads for `key` at global time `now`.
    pub fn get(&self, key: &str, isolate: usize, now: u64) -> Option<Vec<u8>> {
        self.entries
            .get(key)
            .filter(|e| e.visible_at.get(isolate).is_some_and(|t| *t <= now))
            .map(|e| e.value.clone())
    }

    /// What isolate `isolate` lists at global time `now`.
    pub fn list(&self, q: &ListQuery, isolate: usize, now: u64) -> Vec<String> {
        let visible: BTreeMap<String, ()> = self
            .entries
            .iter()
            .filter(|(_, e)| e.visible_at.get(isolate).is_some_and(|t| *t <= now))
            .map(|(k, _)| (k.clone(), ()))
            .collect();
        list_range(&visible, &q.prefix, q.start_after.as_deref(), q.limit)
    }

    /// Every entry, lag over (what KV converges to).
    pub fn converged(&self) -> BTreeMap<String, Vec<u8>> {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }
}

/// R2: strongly consistent blobs (and the R2 copy of every record, which the Worker
/// reads when KV has not caught up yet).
#[derive(Debug, Clone, Default)]
pub struct R2 {
    /// Every blob.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl R2 {
    /// Lists blob keys.
    pub fn list(&self, q: &ListQuery) -> Vec<String> {
        list_range(&self.blobs, &q.prefix, q.start_after.as_deref(), q.limit)
    }
}

/// One Worker isolate: its clock skew, its cache of states last seen at the
/// coordinator (possibly stale), and its API instance.
#[derive(Debug)]
pub struct Isolate {
    /// Offset of this isolate's clock from global time, ms.
    pub skew: i64,
    /// States this isolate last saw (`None`: seen absent).
    pub cache: BTreeMap<String, Option<Vec<u8>>>,
    /// The API, with its own metrics.
    pub api: Api,
}

impl Isolate {
    /// An isolate whose clock is `skew` ms off global time.
    pub fn new(skew: i64) -> Self {
        Self {
            skew,
            cache: BTreeMap::new(),
            api: Api::new(ApiConfig {
                open: true,
                ..ApiConfig::default()
            }),
        }
    }

    /// This isolate's clock at global time `global`.
    pub fn now(&self, global: u64) -> u64 {
        global.saturating_add_signed(self.skew)
    }

    /// Remembers states as now held by the coordinator.
    pub fn remember(&mut self, entries: impl IntoIterator<Item = (String, Option<Vec<u8>>)>) {
        self.cache.extend(entries);
    }
}

/// The whole fabric.
#[derive(Debug)]
pub struct Fabric {
    /// The coordinator shards (one: the single coordinator of today's Worker).
    pub coordinators: Vec<Coordinator>,
    /// Where each key lives over the coordinators.
    pub map: ShardMap,
    /// Workers KV.
    pub kv: Kv,
    /// R2.
    pub r2: R2,
    /// The isolates.
    pub isolates: Vec<Isolate>,
}

impl Fabric {
    /// Reads states (one `/read` call per shard involved), each key from its home.
    pub fn read(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        if self.coordinators.len() == 1 {
            return self.coordinators[0].read(keys);
        }
        keys.iter()
            .map(|k| self.coordinators[self.map.home(k)].states.get(k).cloned())
            .collect()
    }

    /// Lists state keys over the shards (each key from its home).
    pub fn list(&self, q: &ListQuery) -> Vec<String> {
        if self.coordinators.len() == 1 {
            return self.coordinators[0].list(q);
        }
        let mut keys: Vec<String> = self
            .coordinators
            .iter()
            .enumerate()
            .flat_map(|(s, c)| {
                let map = self.map;
                list_range(&c.states, &q.prefix, q.start_after.as_deref(), usize::MAX)
                    .into_iter()
                    .filter(move |k| map.home(k) == s)
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys.truncate(q.limit);
        keys
    }
}
