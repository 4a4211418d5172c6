//! Write batches: an IoBuffer session's writes in flush order, applied together.

use crate::{
    BlobStore, Commit, CommitOutcome, KeyValueStore, ObjectStore, StoreResult, check_commit,
    check_key,
};

/// Which tier a [`BatchPut`] writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The key-value tier ([`KeyValueStore`]).
    Kv,
    /// The blob tier ([`BlobStore`]).
    Blob,
}

/// When a [`BatchPut`] takes effect, relative to the commit of its [`WriteBatch`]
/// (the flush order of design §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PutPhase {
    /// An idempotent write that goes before the commit point (an immutable,
    /// content-addressed record or blob): it is kept even when the commit conflicts,
    /// since writing it again later changes nothing.
    BeforeCommit,
    /// A write that depends on the commit (a write-once index entry): it is applied
    /// only when the commit applies.
    AfterCommit,
}

/// One key-value or blob write of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPut {
    /// The tier written to.
    pub tier: Tier,
    /// The key (checked with [`check_key`]).
    pub key: String,
    /// The value stored.
    pub value: Vec<u8>,
    /// Whether the write survives a conflicting commit.
    pub phase: PutPhase,
}

/// One key-value or blob delete of a [`WriteBatch`]: applied after the commit, and only
/// when it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchDelete {
    /// The tier deleted from.
    pub tier: Tier,
    /// The key (checked with [`check_key`]).
    pub key: String,
}

/// Key-value entries, blobs and a [`Commit`] written in one durable transaction by
/// [`BatchWrite::write_batch_group`], in the flush order of design §5.
///
/// When the commit applies, everything applies. When it conflicts, only the puts marked
/// [`PutPhase::BeforeCommit`] apply (they are idempotent by contract); the commit's ops
/// and log entries, the [`PutPhase::AfterCommit`] puts and the deletes do not. Either
/// way the batch costs at most one `fsync`, and none when nothing changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The key-value and blob writes, applied in order (a later put of the same key wins).
    pub puts: Vec<BatchPut>,
    /// The all-or-nothing commit of the object tier (its ops, read checks and log).
    pub commit: Commit,
    /// Key-value and blob deletes, applied last, only when the commit applies.
    pub deletes: Vec<BatchDelete>,
}

impl WriteBatch {
    /// A batch carrying `commit` and no puts yet.
    pub fn new(commit: Commit) -> Self {
        Self {
            puts: Vec::new(),
            commit,
            deletes: Vec::new(),
        }
    }

    /// Adds a delete (after the commit, only if it applies).
    pub fn delete(&mut self, tier: Tier, key: impl Into<String>) -> &mut Self {
        self.deletes.push(BatchDelete {
            tier,
            key: key.into(),
        });
        self
    }

    /// The puts of `phase`, in order.
    pub fn puts_in(&self, phase: PutPhase) -> impl Iterator<Item = &BatchPut> {
        self.puts.iter().filter(move |p| p.phase == phase)
    }

    /// True when writing the batch would change nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.commit.is_empty() && self.deletes.is_empty()
    }

    /// Adds a key-value write.
    pub fn kv(
        &mut self,
        phase: PutPhase,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.put(Tier::Kv, phase, key, value)
    }

    /// Adds a blob write.
    pub fn blob(
        &mut self,
        phase: PutPhase,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.put(Tier::Blob, phase, key, value)
    }

    fn put(
        &mut self,
        tier: Tier,
        phase: PutPhase,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.puts.push(BatchPut {
            tier,
            key: key.into(),
            value: value.into(),
            phase,
        });
        self
    }

    /// Checks every key of the batch before it touches a store.
    pub fn check(&self) -> StoreResult<()> {
        for put in &self.puts {
            check_key(&put.key)?;
        }
        for delete in &self.deletes {
            check_key(&delete.key)?;
        }
        check_commit(&self.commit)
    }
}

/// A store that applies several [`WriteBatch`]es at once — the native server's group
/// commit: many requests' writes in one durable transaction.
pub trait BatchWrite {
    /// Applies `batches` in order, each with the semantics of [`WriteBatch`] and each
    /// commit all-or-nothing on its own (later batches see the effects of earlier
    /// applied ones), and returns each batch's commit outcome. Every key is checked
    /// first: an invalid key refuses the whole group and nothing applies. Durable
    /// stores make the whole group durable at once.
    fn write_batch_group(&self, batches: &[WriteBatch]) -> StoreResult<Vec<CommitOutcome>>;
}

/// Applies one batch through the ordinary traits, in flush order (puts before the
/// commit, the commit, puts after it, deletes): for stores without a transaction
/// spanning the tiers. Atomic only as far as `commit` is.
pub fn write_batch_in_order<S>(store: &S, batch: &WriteBatch) -> StoreResult<CommitOutcome>
where
    S: KeyValueStore + BlobStore + ObjectStore + ?Sized,
{
    batch.check()?;
    let put = |p: &BatchPut| match p.tier {
        Tier::Kv => store.set(&p.key, &p.value),
        Tier::Blob => store.put_blob(&p.key, &p.value),
    };
    for p in batch
        .puts
        .iter()
        .filter(|p| p.phase == PutPhase::BeforeCommit)
    {
        put(p)?;
    }
    let outcome = store.commit(&batch.commit)?;
    if matches!(outcome, CommitOutcome::Applied { .. }) {
        for p in batch
            .puts
            .iter()
            .filter(|p| p.phase == PutPhase::AfterCommit)
        {
            put(p)?;
        }
        for d in &batch.deletes {
            match d.tier {
                Tier::Kv => store.delete(&d.key)?,
                Tier::Blob => store.delete_blob(&d.key)?,
            }
        }
    }
    Ok(outcome)
}
