//! [`merge_order`]: the shard logs merged into one order for the whole deployment.

use std::collections::HashMap;

use crate::protocol::{ProtocolEntry, TxnId};

/// Why the shard logs do not merge into one order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// A shard's entries are not numbered densely in ascending order.
    #[error("shard {shard}: log seq {seq} follows seq {prev}; a shard's log is numbered densely")]
    Gap {
        /// The shard.
        shard: usize,
        /// The seq before.
        prev: u64,
        /// The seq found.
        seq: u64,
    },
    /// A protocol entry could not be read.
    #[error("shard {shard} seq {seq}: corrupt protocol entry: {reason}")]
    Corrupt {
        /// The shard.
        shard: usize,
        /// The entry.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A `commit` names a secondary whose log has no `prepared` entry of its txn.
    #[error(
        "shard {shard} seq {seq}: the commit of txn {txn} names secondary {secondary}, whose log has no prepared entry of it"
    )]
    MissingPrepared {
        /// The primary.
        shard: usize,
        /// The commit entry.
        seq: u64,
        /// The transaction.
        txn: TxnId,
        /// The secondary.
        secondary: usize,
    },
    /// A `release` names a primary whose log has no `commit` entry of its txn.
    #[error(
        "shard {shard} seq {seq}: the release of txn {txn} names primary {primary}, whose log has no commit entry of it"
    )]
    MissingCommit {
        /// The secondary.
        shard: usize,
        /// The release entry.
        seq: u64,
        /// The transaction.
        txn: TxnId,
        /// The primary named.
        primary: usize,
    },
    /// A `commit` says more of its own entries follow than its log holds.
    #[error(
        "shard {shard} seq {seq}: the commit of txn {txn} is followed by {entries} entries of its own, the log ends before"
    )]
    ShortCommit {
        /// The primary.
        shard: usize,
        /// The commit entry.
        seq: u64,
        /// The transaction.
        txn: TxnId,
        /// Entries it announces.
        entries: usize,
    },
    /// An entry must follow the creation of a write-once key no entry created.
    #[error(
        "shard {shard} seq {seq}: must follow the entry that created {key:?}, which no log holds"
    )]
    MissingDependency {
        /// The shard.
        shard: usize,
        /// The entry.
        seq: u64,
        /// The key.
        key: String,
    },
    /// The order constraints form a cycle (no correct set of logs does).
    #[error(
        "the logs' order constraints form a cycle (shard {shard} seq {seq} can never come next)"
    )]
    Cycle {
        /// The first shard whose next entry is blocked.
        shard: usize,
        /// That entry.
        seq: u64,
    },
}

/// The key a core log entry creates: `{"type":"record","hash":h}` commits `rec/{h}`.
fn created_key(entry: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(entry).ok()?;
    if v.get("type")?.as_str()? != "record" {
        return None;
    }
    Some(format!("rec/{}", v.get("hash")?.as_str()?))
}

/// Merges the logs of the shards (`logs[i]`: shard `i`'s `(seq, entry)` pairs, dense
/// and ascending) into one order, as `(shard, seq)` pairs (spec/shards.md, "One order
/// for the whole deployment"). Each shard's entries keep their order; across shards:
///
/// * a `commit` entry comes after the `prepared` entries of its txn on every secondary
///   it names;
/// * a `release` entry comes after its `commit` and the transaction's own entries
///   that follow it (the commit and its entries are taken together);
/// * an entry that read write-once keys of other shards (a `commit`'s `after`, an
///   `after` entry) comes after the entries that created them (`record` entries);
/// * otherwise the lowest shard index first.
///
/// One shard's log is its own order, unchanged.
pub fn merge_order(logs: &[Vec<(u64, Vec<u8>)>]) -> Result<Vec<(usize, u64)>, MergeError> {
    let n = logs.len();
    let mut parsed: Vec<Vec<Option<ProtocolEntry>>> = Vec::with_capacity(n);
    let mut prepared: HashMap<(usize, &TxnId), usize> = HashMap::new();
    let mut commits: HashMap<&TxnId, (usize, usize)> = HashMap::new();
    let mut created: HashMap<String, (usize, usize)> = HashMap::new();
    for (s, log) in logs.iter().enumerate() {
        for w in log.windows(2) {
            if w[1].0 != w[0].0 + 1 {
                return Err(MergeError::Gap {
                    shard: s,
                    prev: w[0].0,
                    seq: w[1].0,
                });
            }
        }
        let mut entries = Vec::with_capacity(log.len());
        for (seq, bytes) in log {
            let e = ProtocolEntry::decode(bytes).map_err(|e| MergeError::Corrupt {
                shard: s,
                seq: *seq,
                reason: e.to_string(),
            })?;
            entries.push(e);
        }
        parsed.push(entries);
    }
    for (s, entries) in parsed.iter().enumerate() {
        for (i, e) in entries.iter().enumerate() {
            match e {
                Some(ProtocolEntry::Prepared { txn }) => {
                    prepared.insert((s, txn), i);
                }
                Some(ProtocolEntry::Commit {
                    txn, entries: k, ..
                }) => {
                    if i + k >= entries.len() {
                        return Err(MergeError::ShortCommit {
                            shard: s,
                            seq: logs[s][i].0,
                            txn: txn.clone(),
                            entries: *k,
                        });
                    }
                    commits.insert(txn, (s, i + k));
                }
                Some(_) => {}
                None => {
                    if let Some(key) = created_key(&logs[s][i].1) {
                        created.entry(key).or_insert((s, i));
                    }
                }
            }
        }
    }
    // Each entry's predecessors on other shards: (shard, index).
    let mut deps: Vec<Vec<Vec<(usize, usize)>>> = Vec::with_capacity(n);
    // How many entries after each one are taken with it (a commit's own entries).
    let mut group: Vec<Vec<usize>> = Vec::with_capacity(n);
    for (s, entries) in parsed.iter().enumerate() {
        let mut d = vec![Vec::new(); entries.len()];
        let mut g = vec![0; entries.len()];
        for (i, e) in entries.iter().enumerate() {
            let seq = logs[s][i].0;
            let after_keys = |keys: &[String], d: &mut Vec<(usize, usize)>| {
                for key in keys {
                    match created.get(key) {
                        Some(&at) => d.push(at),
                        None => {
                            return Err(MergeError::MissingDependency {
                                shard: s,
                                seq,
                                key: key.clone(),
                            });
                        }
                    }
                }
                Ok(())
            };
            match e {
                Some(ProtocolEntry::Commit {
                    txn,
                    secondaries,
                    entries: k,
                    after,
                }) => {
                    for &sec in secondaries {
                        match prepared.get(&(sec, txn)) {
                            Some(&p) => d[i].push((sec, p)),
                            None => {
                                return Err(MergeError::MissingPrepared {
                                    shard: s,
                                    seq,
                                    txn: txn.clone(),
                                    secondary: sec,
                                });
                            }
                        }
                    }
                    after_keys(after, &mut d[i])?;
                    g[i] = *k;
                }
                Some(ProtocolEntry::Release { txn, primary }) => match commits.get(txn) {
                    Some(&(p, end)) if p == *primary => d[i].push((p, end)),
                    _ => {
                        return Err(MergeError::MissingCommit {
                            shard: s,
                            seq,
                            txn: txn.clone(),
                            primary: *primary,
                        });
                    }
                },
                Some(ProtocolEntry::After { keys }) => after_keys(keys, &mut d[i])?,
                _ => {}
            }
        }
        deps.push(d);
        group.push(g);
    }
    let total: usize = logs.iter().map(Vec::len).sum();
    let mut heads = vec![0usize; n];
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let ready = (0..n).find(|&s| {
            heads[s] < logs[s].len() && deps[s][heads[s]].iter().all(|&(ds, di)| heads[ds] > di)
        });
        let Some(s) = ready else {
            let s = (0..n).find(|&s| heads[s] < logs[s].len()).unwrap_or(0);
            return Err(MergeError::Cycle {
                shard: s,
                seq: logs[s].get(heads[s]).map_or(0, |e| e.0),
            });
        };
        let take = 1 + group[s][heads[s]];
        for _ in 0..take {
            out.push((s, logs[s][heads[s]].0));
            heads[s] += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(e: ProtocolEntry) -> Vec<u8> {
        e.encode()
    }

    fn record(h: &str) -> Vec<u8> {
        format!(r#"{{"type":"record","hash":"{h}","kind":"fact","at":1}}"#).into_bytes()
    }

    fn numbered(entries: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
        (1..).zip(entries).collect()
    }

    #[test]
    fn one_log_is_its_own_order() {
        let log = numbered(vec![record("a"), record("b")]);
        assert_eq!(merge_order(&[log]).expect("merge"), vec![(0, 1), (0, 2)]);
        assert_eq!(merge_order(&[]).expect("merge"), vec![]);
    }

    #[test]
    fn commits_follow_prepares_releases_follow_commits_and_readers_follow_creators() {
        let t = TxnId("t1".into());
        // Shard 0: a record, then the secondary's prepared and release of t1.
        let s0 = numbered(vec![
            record("a"),
            entry(ProtocolEntry::Prepared { txn: t.clone() }),
            entry(ProtocolEntry::Release {
                txn: t.clone(),
                primary: 1,
            }),
            record("c"),
        ]);
        // Shard 1: a single-shard commit that read rec/a (on shard 0), then t1's commit
        // with its one entry.
        let s1 = numbered(vec![
            entry(ProtocolEntry::After {
                keys: vec!["rec/a".into()],
            }),
            record("b"),
            entry(ProtocolEntry::Commit {
                txn: t.clone(),
                secondaries: vec![0],
                entries: 1,
                after: vec![],
            }),
            record("t"),
        ]);
        let order = merge_order(&[s0.clone(), s1.clone()]).expect("merge");
        assert_eq!(
            order,
            vec![
                (0, 1),
                (0, 2),
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (0, 3),
                (0, 4)
            ]
        );
        // Without its prepared entry the commit has nothing to follow.
        let broken = vec![s0[0].clone()];
        assert!(matches!(
            merge_order(&[broken, s1.clone()]),
            Err(MergeError::MissingPrepared { .. })
        ));
        // A release whose commit is missing.
        assert!(matches!(
            merge_order(&[s0.clone(), vec![]]),
            Err(MergeError::MissingCommit { .. })
        ));
        // A read of a record no log created.
        let orphan = numbered(vec![
            entry(ProtocolEntry::After {
                keys: vec!["rec/zz".into()],
            }),
            record("d"),
        ]);
        assert!(matches!(
            merge_order(&[orphan]),
            Err(MergeError::MissingDependency { .. })
        ));
        // Gaps are refused.
        assert!(matches!(
            merge_order(&[vec![(1, record("a")), (3, record("b"))]]),
            Err(MergeError::Gap { .. })
        ));
    }

    #[test]
    fn constraints_that_cannot_hold_are_a_cycle() {
        // Shard 0 releases t1 before preparing t2; shard 1 commits t2 before t1.
        let (t1, t2) = (TxnId("t1".into()), TxnId("t2".into()));
        let s0 = numbered(vec![
            entry(ProtocolEntry::Prepared { txn: t1.clone() }),
            entry(ProtocolEntry::Release {
                txn: t1.clone(),
                primary: 1,
            }),
            entry(ProtocolEntry::Prepared { txn: t2.clone() }),
        ]);
        let commit = |txn: &TxnId| {
            entry(ProtocolEntry::Commit {
                txn: txn.clone(),
                secondaries: vec![0],
                entries: 0,
                after: vec![],
            })
        };
        let s1 = numbered(vec![commit(&t2), commit(&t1)]);
        assert!(matches!(
            merge_order(&[s0, s1]),
            Err(MergeError::Cycle { .. })
        ));
    }
}
