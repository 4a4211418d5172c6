//! The cold tier's format (spec/archive.md): the commit log archived as JSON lines per
//! flush window, each window described by a manifest chained to the previous one, and
//! snapshots of the hot state, chunked. Everything here is pure: the rules of when a
//! window closes, what its bytes are, what a manifest and a snapshot hold, and what a
//! restore checks. [`CompositeColdStorage::flush`](crate::FlushCapable::flush) and
//! [`CompositeColdStorage::capture_hot_state`](crate::CompositeColdStorage::capture_hot_state)
//! apply them to the stores; hosts only do the I/O and decide when to call them.
//!
//! # Order of writes (crash safety)
//!
//! A flush first fixes its window in the object tier (`flush/cursor` gains `pending`,
//! by compare-and-swap), then writes the archive blob, then the manifest blob, and only
//! then moves the cursor past the window (compare-and-swap again). A flush interrupted
//! anywhere is retried from the pending window, which yields the same bytes under the
//! same keys; so windows never overlap and never leave a gap.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::record::Record;
use crate::storage::LogEntry;

/// Version of the archive, manifest and snapshot formats.
pub const FORMAT: u32 = 1;
/// Default most entries in one window.
pub const DEFAULT_WINDOW_ENTRIES: u64 = 1_000;
/// Default most time, ms, between the first entry of a window and its close.
pub const DEFAULT_WINDOW_MS: u64 = 10_000;
/// Most bytes of one snapshot chunk: half a Durable Object value (2 MB), so a chunk
/// fits any blob tier and any DO value with room to spare.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Blob keys of the cold tier. Every key is flat under its prefix (one directory of a
/// directory-backed blob store), and sorts in log order.
pub mod keys {
    /// Prefix of the windows' archives.
    pub const ARCHIVE_PREFIX: &str = "archive/log/";
    /// Prefix of the windows' manifests.
    pub const MANIFEST_PREFIX: &str = "archive/manifest/";
    /// Prefix of snapshots (manifests and chunks).
    pub const SNAPSHOT_PREFIX: &str = "snapshot/";

    /// The archive of log entries `first..=last`.
    pub fn archive(first: u64, last: u64) -> String {
        format!("{ARCHIVE_PREFIX}{first:020}-{last:020}.jsonl")
    }
    /// The manifest of the window starting at `first`.
    pub fn manifest(first: u64) -> String {
        format!("{MANIFEST_PREFIX}{first:020}.json")
    }
    /// The manifest of the snapshot reflecting the log up to `head`.
    pub fn snapshot(head: u64) -> String {
        format!("{SNAPSHOT_PREFIX}{head:020}.json")
    }
    /// Chunk `index` of the snapshot reflecting the log up to `head`.
    pub fn snapshot_chunk(head: u64, index: usize) -> String {
        format!("{SNAPSHOT_PREFIX}{head:020}.chunk{index:06}")
    }
    /// The head of a snapshot manifest key, `None` for any other key.
    pub fn parse_snapshot(key: &str) -> Option<u64> {
        let n = key.strip_prefix(SNAPSHOT_PREFIX)?.strip_suffix(".json")?;
        (n.len() == 20).then(|| n.parse().ok()).flatten()
    }
}

/// Why a cold tier's content is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A manifest or snapshot is not the JSON of its format.
    #[error("{key}: not a format {FORMAT} document: {reason}")]
    Malformed {
        /// Its key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A window does not start right after the previous one.
    #[error(
        "{key}: window {window} covers seq {first}..={last}, expected it to start at seq {expected}"
    )]
    Gap {
        /// The manifest's key.
        key: String,
        /// Its window number.
        window: u64,
        /// Its first seq.
        first: u64,
        /// Its last seq.
        last: u64,
        /// The seq it should start at.
        expected: u64,
    },
    /// A manifest's window number does not follow the previous one's.
    #[error("{key}: window number {found}, expected {expected}")]
    WindowNumber {
        /// The manifest's key.
        key: String,
        /// Its window number.
        found: u64,
        /// The expected one.
        expected: u64,
    },
    /// A manifest does not name the previous manifest's hash.
    #[error(
        "{key}: names previous manifest {found}, but the previous manifest hashes to {expected}"
    )]
    Chain {
        /// The manifest's key.
        key: String,
        /// The hash it names (`none` for none).
        found: String,
        /// The previous manifest's hash (`none` for the first window).
        expected: String,
    },
    /// A blob named by a manifest is missing.
    #[error("{key} is missing")]
    Missing {
        /// The missing blob.
        key: String,
    },
    /// A blob's bytes are not those its manifest states.
    #[error("{key}: {what} is {found}, its manifest states {stated}")]
    Content {
        /// The blob.
        key: String,
        /// What differs (`BLAKE3`, `length`).
        what: &'static str,
        /// What the blob has.
        found: String,
        /// What the manifest states.
        stated: String,
    },
    /// A line of an archive is not the entry its place calls for.
    #[error("{key} line {line}: {problem}")]
    Line {
        /// The archive.
        key: String,
        /// 1-based line number within it.
        line: u64,
        /// What is wrong.
        problem: String,
    },
    /// A manifest's checkpoint is refused: malformed, not signed by the expected key,
    /// not of the window's last seq, or not the root of the tree rebuilt from the log.
    #[error("{key}: the checkpoint is refused: {reason}")]
    Checkpoint {
        /// The manifest's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// No snapshot can serve: none is covered by the archives.
    #[error("snapshot of seq {head} is past the archives' last seq {archived}")]
    SnapshotAhead {
        /// The snapshot's head.
        head: u64,
        /// The last archived seq.
        archived: u64,
    },
}

/// When a window closes: every `max_entries` entries or once its first entry is
/// `max_age_ms` old (by the entries' own commit time `at`, compared with the host's
/// clock), whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPolicy {
    /// Most entries in one window (at least 1).
    pub max_entries: u64,
    /// Most ms between a window's first entry's commit and its close.
    pub max_age_ms: u64,
}

impl Default for WindowPolicy {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_WINDOW_ENTRIES,
            max_age_ms: DEFAULT_WINDOW_MS,
        }
    }
}

impl WindowPolicy {
    /// The last seq of the window to close now, if one is due: the log holds entries
    /// up to `head`, everything up to `cursor` is archived, and the first entry after it
    /// committed at `first_at`.
    pub fn close(&self, cursor: u64, head: u64, first_at: u64, now: u64) -> Option<u64> {
        let max = self.max_entries.max(1);
        if head <= cursor {
            return None;
        }
        let full = cursor.saturating_add(max);
        if head >= full {
            return Some(full);
        }
        (now.saturating_sub(first_at) >= self.max_age_ms).then_some(head)
    }

    /// In how many ms from `now` [`close`](Self::close) will close a window (0: it
    /// does now), for the same arguments; `None` when nothing is unarchived.
    pub fn due_in(&self, cursor: u64, head: u64, first_at: u64, now: u64) -> Option<u64> {
        if head <= cursor {
            return None;
        }
        if self.close(cursor, head, first_at, now).is_some() {
            return Some(0);
        }
        Some(first_at.saturating_add(self.max_age_ms).saturating_sub(now))
    }
}

/// A window fixed in the flush cursor before its archive is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// First seq.
    pub first: u64,
    /// Last seq.
    pub last: u64,
    /// Host time the window closed, ms (the manifest's `closed_at`).
    pub closed_at: u64,
}

/// The object tier's `flush/cursor`: how far the log is archived and the chain's end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushCursor {
    /// Last archived seq (0: none).
    pub seq: u64,
    /// Windows archived.
    pub windows: u64,
    /// BLAKE3 of the last window's manifest (`None` before the first).
    pub manifest: Option<String>,
    /// The window being archived, if a flush is under way (or was interrupted).
    pub pending: Option<Pending>,
}

impl FlushCursor {
    /// Reads the stored cursor (absent: nothing archived yet).
    pub fn decode(key: &str, bytes: Option<&[u8]>) -> Result<Self, ArchiveError> {
        match bytes {
            None => Ok(Self::default()),
            Some(b) => serde_json::from_slice(b).map_err(|e| malformed(key, &e)),
        }
    }

    /// The stored encoding.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What one window's manifest states: its range, its archive's bytes, the previous
/// manifest (a hash chain: a dropped, reordered or altered window breaks it) and, once
/// the commit log has a Merkle tree, the checkpoint of its last seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Window number, 1-based.
    pub window: u64,
    /// First seq.
    pub first: u64,
    /// Last seq (the tree size after the window).
    pub last: u64,
    /// The archive's key.
    pub archive: String,
    /// The archive's length in bytes.
    pub bytes: u64,
    /// BLAKE3 of the archive, hex.
    pub blake3: String,
    /// BLAKE3 of the previous window's manifest bytes (`None` for window 1).
    pub prev: Option<String>,
    /// The signed checkpoint of tree size `last`, when the host has one.
    pub checkpoint: Option<Value>,
    /// Host time the window closed, ms.
    pub closed_at: u64,
}

/// A manifest's `checkpoint` (stored under `key`, of tree size `size`), verified:
/// signed by `expected` (a verifier key), else by the key it names (self-asserted:
/// only a pinned key proves who signed). `None` when the manifest has none.
pub fn verify_manifest_checkpoint(
    key: &str,
    checkpoint: Option<&Value>,
    size: u64,
    expected: Option<&str>,
) -> Result<Option<(nexus_tlog::SignedCheckpoint, nexus_tlog::Checkpoint)>, ArchiveError> {
    let Some(v) = checkpoint else {
        return Ok(None);
    };
    let refused = |reason: String| ArchiveError::Checkpoint {
        key: key.to_owned(),
        reason,
    };
    let signed: nexus_tlog::SignedCheckpoint =
        serde_json::from_value(v.clone()).map_err(|e| refused(e.to_string()))?;
    let cp = signed
        .verify(expected)
        .map_err(|e| refused(e.to_string()))?;
    if cp.size != size {
        return Err(refused(format!(
            "it is of tree size {}, the manifest ends at seq {size}",
            cp.size
        )));
    }
    Ok(Some((signed, cp)))
}

impl Manifest {
    /// [`verify_manifest_checkpoint`] of this window's checkpoint (tree size `last`).
    pub fn verified_checkpoint(
        &self,
        expected: Option<&str>,
    ) -> Result<Option<(nexus_tlog::SignedCheckpoint, nexus_tlog::Checkpoint)>, ArchiveError> {
        verify_manifest_checkpoint(
            &keys::manifest(self.first),
            self.checkpoint.as_ref(),
            self.last,
            expected,
        )
    }

    /// The stored encoding (what `prev` of the next manifest hashes).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored manifest.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, ArchiveError> {
        let m: Self = serde_json::from_slice(bytes).map_err(|e| malformed(key, &e))?;
        if m.format != FORMAT {
            return Err(malformed(key, &format!("format {}", m.format)));
        }
        if m.last < m.first {
            return Err(malformed(key, &"last seq before first seq"));
        }
        Ok(m)
    }
}

/// BLAKE3 of `bytes`, lowercase hex (the hash manifests and snapshots state).
pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// One archive line: exactly a line of `nexus export` (`{"at":…,"record":{…},"seq":…}`
/// with the JSON object members as `serde_json` writes a parsed export line), so that
/// the concatenation of a chain's archives is an export of the log.
pub fn encode_line(seq: u64, entry: &LogEntry, record: Option<&Record>) -> Option<Vec<u8>> {
    let mut m = Map::new();
    m.insert("seq".into(), Value::from(seq));
    match entry {
        LogEntry::Record { at, .. } => {
            let rec: Value = serde_json::from_slice(&record?.to_json()).ok()?;
            m.insert("at".into(), Value::from(*at));
            m.insert("record".into(), rec);
        }
        LogEntry::Action { action, at } => {
            m.insert("at".into(), Value::from(*at));
            m.insert("action".into(), action.clone());
        }
    }
    let mut line = serde_json::to_vec(&Value::Object(m)).ok()?;
    line.push(b'\n');
    Some(line)
}

/// The chain of manifests read from the blob tier, checked link by link.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// The manifests, in window order.
    pub windows: Vec<Manifest>,
    /// BLAKE3 of the last manifest's bytes.
    pub head_hash: Option<String>,
}

impl Chain {
    /// Appends the manifest stored under `key` as `bytes`, checking that it follows
    /// the chain: next window number, first seq right after the last one, `prev` the
    /// hash of the last manifest.
    pub fn push(&mut self, key: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let m = Manifest::decode(key, bytes)?;
        let (expected_window, expected_first) = match self.windows.last() {
            None => (1, 1),
            Some(p) => (p.window + 1, p.last + 1),
        };
        if m.first != expected_first {
            return Err(ArchiveError::Gap {
                key: key.to_owned(),
                window: m.window,
                first: m.first,
                last: m.last,
                expected: expected_first,
            });
        }
        if m.window != expected_window {
            return Err(ArchiveError::WindowNumber {
                key: key.to_owned(),
                found: m.window,
                expected: expected_window,
            });
        }
        if m.prev != self.head_hash {
            let show = |h: &Option<String>| h.clone().unwrap_or_else(|| "none".into());
            return Err(ArchiveError::Chain {
                key: key.to_owned(),
                found: show(&m.prev),
                expected: show(&self.head_hash),
            });
        }
        self.head_hash = Some(blake3_hex(bytes));
        self.windows.push(m);
        Ok(())
    }

    /// The last archived seq (0: none).
    pub fn last_seq(&self) -> u64 {
        self.windows.last().map_or(0, |m| m.last)
    }
}

/// Checks an archive's bytes against its manifest: one line per seq of the window, in
/// order ([`archive_lines`]), then length and BLAKE3 ([`check_archive_bytes`]).
/// Answers the lines.
pub fn check_archive<'a>(m: &Manifest, bytes: &'a [u8]) -> Result<Vec<&'a [u8]>, ArchiveError> {
    let lines = archive_lines(m, bytes)?;
    check_archive_bytes(m, bytes)?;
    Ok(lines)
}

/// The lines of an archive, checked to be one per seq of its window, in order (a
/// dropped or reordered line is named by its line number).
pub fn archive_lines<'a>(m: &Manifest, bytes: &'a [u8]) -> Result<Vec<&'a [u8]>, ArchiveError> {
    let key = &m.archive;
    let lines: Vec<&[u8]> = bytes
        .split_inclusive(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\n").unwrap_or(l))
        .collect();
    for (i, line) in lines.iter().enumerate() {
        let at = |problem: String| ArchiveError::Line {
            key: key.clone(),
            line: i as u64 + 1,
            problem,
        };
        let expected = m.first + i as u64;
        let seq = line_seq(line).map_err(at)?;
        if seq != expected {
            return Err(at(format!("seq {seq}, expected seq {expected}")));
        }
    }
    let count = m.last - m.first + 1;
    if lines.len() as u64 != count {
        return Err(ArchiveError::Line {
            key: key.clone(),
            line: lines.len() as u64 + 1,
            problem: format!(
                "ends after {} lines, the window has {count} entries (seq {}..={})",
                lines.len(),
                m.first,
                m.last
            ),
        });
    }
    Ok(lines)
}

/// Checks an archive's length and BLAKE3 against its manifest.
pub fn check_archive_bytes(m: &Manifest, bytes: &[u8]) -> Result<(), ArchiveError> {
    let key = &m.archive;
    if bytes.len() as u64 != m.bytes {
        return Err(ArchiveError::Content {
            key: key.clone(),
            what: "length",
            found: bytes.len().to_string(),
            stated: m.bytes.to_string(),
        });
    }
    let found = blake3_hex(bytes);
    if found != m.blake3 {
        return Err(ArchiveError::Content {
            key: key.clone(),
            what: "BLAKE3",
            found,
            stated: m.blake3.clone(),
        });
    }
    Ok(())
}

/// The `seq` of an archive line.
pub fn line_seq(line: &[u8]) -> Result<u64, String> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(line)
        .map(|s| s.seq)
        .map_err(|e| format!("not a log entry line: {e}"))
}

/// Whether an object-tier key is part of the hot state a snapshot holds: everything
/// but the commit log and the committed-record markers, which a restore rebuilds
/// from the archives.
pub fn is_hot_key(key: &str) -> bool {
    !key.starts_with(nexus_store::LOG_PREFIX)
        && !key.starts_with(crate::storage::keys::COMMITTED_PREFIX)
}

/// The hot state as of log seq `head`: every hot object-tier key and its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotState {
    /// The log seq the state reflects.
    pub head: u64,
    /// Key → value (values are UTF-8: every hot value is JSON or text).
    pub states: BTreeMap<String, String>,
}

/// One chunk of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// Its blob key.
    pub key: String,
    /// Its length.
    pub bytes: u64,
    /// Its BLAKE3, hex.
    pub blake3: String,
}

/// A snapshot's manifest, written after its chunks: the snapshot exists once this does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The log seq the state reflects (the tree size of its checkpoint).
    pub head: u64,
    /// The signed checkpoint of tree size `head`, when the host has one.
    pub checkpoint: Option<Value>,
    /// The chunks, in order: their concatenation is the [`HotState`]'s JSON.
    pub chunks: Vec<ChunkRef>,
    /// BLAKE3 of that concatenation.
    pub blake3: String,
    /// Host time of the capture, ms.
    pub taken_at: u64,
}

/// A snapshot ready to be written: chunk blobs (key, bytes) first, then the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotBlobs {
    /// The chunks.
    pub chunks: Vec<(String, Vec<u8>)>,
    /// The manifest's key.
    pub manifest_key: String,
    /// The manifest.
    pub manifest: SnapshotManifest,
}

impl HotState {
    /// Cuts the state's JSON into chunks of at most `chunk_bytes` and describes them.
    pub fn to_blobs(&self, chunk_bytes: usize, taken_at: u64) -> SnapshotBlobs {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let chunks: Vec<(String, Vec<u8>)> = bytes
            .chunks(chunk_bytes.max(1))
            .enumerate()
            .map(|(i, c)| (keys::snapshot_chunk(self.head, i), c.to_vec()))
            .collect();
        let manifest = SnapshotManifest {
            format: FORMAT,
            head: self.head,
            checkpoint: None,
            chunks: chunks
                .iter()
                .map(|(key, b)| ChunkRef {
                    key: key.clone(),
                    bytes: b.len() as u64,
                    blake3: blake3_hex(b),
                })
                .collect(),
            blake3: blake3_hex(&bytes),
            taken_at,
        };
        SnapshotBlobs {
            chunks,
            manifest_key: keys::snapshot(self.head),
            manifest,
        }
    }

    /// Reassembles a snapshot from its manifest and its chunks (as `get` reads them),
    /// checking every chunk and the whole.
    pub fn from_blobs(
        manifest_key: &str,
        manifest: &[u8],
        mut get: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<(SnapshotManifest, Self), ArchiveError> {
        let m: SnapshotManifest =
            serde_json::from_slice(manifest).map_err(|e| malformed(manifest_key, &e))?;
        if m.format != FORMAT {
            return Err(malformed(manifest_key, &format!("format {}", m.format)));
        }
        let mut all = Vec::new();
        for c in &m.chunks {
            let b = get(&c.key).ok_or_else(|| ArchiveError::Missing { key: c.key.clone() })?;
            let found = blake3_hex(&b);
            if found != c.blake3 {
                return Err(ArchiveError::Content {
                    key: c.key.clone(),
                    what: "BLAKE3",
                    found,
                    stated: c.blake3.clone(),
                });
            }
            all.extend_from_slice(&b);
        }
        let found = blake3_hex(&all);
        if found != m.blake3 {
            return Err(ArchiveError::Content {
                key: manifest_key.to_owned(),
                what: "BLAKE3 of the chunks",
                found,
                stated: m.blake3.clone(),
            });
        }
        let state: Self = serde_json::from_slice(&all).map_err(|e| malformed(manifest_key, &e))?;
        if state.head != m.head {
            return Err(malformed(
                manifest_key,
                &"state head differs from the manifest's",
            ));
        }
        Ok((m, state))
    }
}

/// The restore's final check of the log's extent: the rebuilt log ends where the chain
/// ends, and the snapshot used lies within it. (That the rebuilt Merkle tree's root is
/// the last checkpoint's is `nexus_api::restore::check_tree`, which reads the store.)
pub fn check_restored(
    chain: &Chain,
    snapshot_head: Option<u64>,
    restored_head: u64,
) -> Result<(), ArchiveError> {
    let archived = chain.last_seq();
    if let Some(head) = snapshot_head
        && head > archived
    {
        return Err(ArchiveError::SnapshotAhead { head, archived });
    }
    if restored_head != archived {
        return Err(ArchiveError::Gap {
            key: "restored log".into(),
            window: chain.windows.len() as u64,
            first: 1,
            last: restored_head,
            expected: archived,
        });
    }
    Ok(())
}

fn malformed(key: &str, e: &dyn std::fmt::Display) -> ArchiveError {
    ArchiveError::Malformed {
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_window_closes_at_n_entries_or_after_t() {
        let p = WindowPolicy {
            max_entries: 10,
            max_age_ms: 1_000,
        };
        assert_eq!(p.close(0, 0, 0, 5_000), None, "nothing to archive");
        assert_eq!(p.close(0, 25, 100, 100), Some(10), "full window first");
        assert_eq!(p.close(10, 13, 100, 1_099), None, "young and not full");
        assert_eq!(p.close(10, 13, 100, 1_100), Some(13), "old enough");
    }

    #[test]
    fn due_in_says_when_close_will_close() {
        let p = WindowPolicy {
            max_entries: 10,
            max_age_ms: 1_000,
        };
        assert_eq!(p.due_in(5, 5, 0, 5_000), None, "nothing to archive");
        assert_eq!(p.due_in(0, 25, 100, 100), Some(0), "full: now");
        assert_eq!(p.due_in(10, 13, 100, 400), Some(700), "young: at first + T");
        assert_eq!(p.due_in(10, 13, 100, 1_100), Some(0), "old enough: now");
        for now in [100, 400, 1_099, 1_100, 3_000] {
            let wait = p.due_in(10, 13, 100, now).unwrap();
            assert_eq!(
                p.close(10, 13, 100, now + wait),
                Some(13),
                "at {now} + {wait}"
            );
        }
    }

    fn manifest(window: u64, first: u64, last: u64, prev: Option<String>) -> Manifest {
        Manifest {
            format: FORMAT,
            window,
            first,
            last,
            archive: keys::archive(first, last),
            bytes: 0,
            blake3: blake3_hex(b""),
            prev,
            checkpoint: None,
            closed_at: 0,
        }
    }

    #[test]
    fn the_chain_refuses_gaps_overlaps_reorders_and_broken_links() {
        let m1 = manifest(1, 1, 5, None).encode();
        let h1 = blake3_hex(&m1);
        let mut c = Chain::default();
        c.push("m1", &m1).unwrap();
        let gap = manifest(2, 7, 9, Some(h1.clone())).encode();
        assert!(matches!(
            c.clone().push("g", &gap),
            Err(ArchiveError::Gap { expected: 6, .. })
        ));
        let overlap = manifest(2, 5, 9, Some(h1.clone())).encode();
        assert!(matches!(
            c.clone().push("o", &overlap),
            Err(ArchiveError::Gap { .. })
        ));
        let unlinked = manifest(2, 6, 9, Some(blake3_hex(b"other"))).encode();
        assert!(matches!(
            c.clone().push("u", &unlinked),
            Err(ArchiveError::Chain { .. })
        ));
        let renumbered = manifest(3, 6, 9, Some(h1.clone())).encode();
        assert!(matches!(
            c.clone().push("r", &renumbered),
            Err(ArchiveError::WindowNumber { .. })
        ));
        c.push("m2", &manifest(2, 6, 9, Some(h1)).encode()).unwrap();
        assert_eq!(c.last_seq(), 9);
    }

    fn archive(lines: &[&str]) -> (Manifest, Vec<u8>) {
        let bytes: Vec<u8> = lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect();
        let mut m = manifest(1, 1, lines.len() as u64, None);
        m.bytes = bytes.len() as u64;
        m.blake3 = blake3_hex(&bytes);
        (m, bytes)
    }

    #[test]
    fn an_archive_is_checked_line_by_line_then_by_hash() {
        let good = [r#"{"seq":1}"#, r#"{"seq":2}"#, r#"{"seq":3}"#];
        let (m, bytes) = archive(&good);
        assert_eq!(check_archive(&m, &bytes).unwrap().len(), 3);
        let dropped = [r#"{"seq":1}"#, r#"{"seq":3}"#];
        let (_, b) = archive(&dropped);
        let e = check_archive(&m, &b).unwrap_err();
        assert!(matches!(e, ArchiveError::Line { line: 2, .. }), "{e}");
        let reordered = [r#"{"seq":2}"#, r#"{"seq":1}"#, r#"{"seq":3}"#];
        let (_, b) = archive(&reordered);
        assert!(matches!(
            check_archive(&m, &b),
            Err(ArchiveError::Line { line: 1, .. })
        ));
        let changed = [r#"{"seq":1}"#, r#"{"seq":2,"x":1}"#, r#"{"seq":3}"#];
        let (_, b) = archive(&changed);
        assert!(matches!(
            check_archive(&m, &b),
            Err(ArchiveError::Content { .. })
        ));
    }

    #[test]
    fn a_snapshot_is_chunked_and_reassembled_checked() {
        let mut s = HotState {
            head: 42,
            ..HotState::default()
        };
        for i in 0..100 {
            s.states.insert(format!("intent/{i:04}"), "x".repeat(50));
        }
        let blobs = s.to_blobs(1_000, 7);
        assert!(blobs.chunks.len() > 5, "{} chunks", blobs.chunks.len());
        assert!(blobs.chunks.iter().all(|(_, b)| b.len() <= 1_000));
        let store: BTreeMap<String, Vec<u8>> = blobs.chunks.iter().cloned().collect();
        let manifest = serde_json::to_vec(&blobs.manifest).unwrap();
        let (_, back) =
            HotState::from_blobs(&blobs.manifest_key, &manifest, |k| store.get(k).cloned())
                .unwrap();
        assert_eq!(back, s);
        let mut bad = store.clone();
        if let Some(v) = bad.values_mut().nth(2) {
            v[0] ^= 1;
        }
        let e = HotState::from_blobs(&blobs.manifest_key, &manifest, |k| bad.get(k).cloned());
        assert!(matches!(e, Err(ArchiveError::Content { .. })));
        assert_eq!(keys::parse_snapshot(&blobs.manifest_key), Some(42));
        assert_eq!(keys::parse_snapshot(&blobs.chunks[0].0), None);
    }
}
