//! The driver: execute, hydrate the misses, re-execute from scratch, bounded.

use nexus_store::{BlobStore, CasFailure, KeyValueStore, ObjectStore, StoreError};

use crate::session::{Delta, IoBufferSession, Misses};

/// Rounds a [`StoreSession`] allows unless told otherwise.
pub const DEFAULT_MAX_ROUNDS: usize = 8;

/// The result of one [`StoreSession::execute`] step.
#[derive(Debug)]
pub enum Executed<T> {
    /// The job read something that was not hydrated. Its result and writes were
    /// discarded; hydrate these (e.g. with async bindings) and execute again.
    NeedsHydration(Misses),
    /// The job ran on hydrated data only: its result and the drained delta to flush.
    Done(T, Delta),
}

/// Why a session could not finish.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The job still missed data after the allowed number of rounds.
    #[error("job still missed {} key(s) or listing(s) after {rounds} round(s)", misses.len())]
    TooManyRounds {
        /// Rounds executed.
        rounds: usize,
        /// What the last round missed.
        misses: Box<Misses>,
    },
    /// Hydrating from the source store failed.
    #[error("hydration failed: {0}")]
    Hydrate(#[from] StoreError),
}

/// Drives one job over an [`IoBufferSession`]: execute, and while the job misses data,
/// hydrate it and re-execute from scratch, at most `max_rounds` times.
///
/// The job must be deterministic given what it reads (the same reads give the same
/// writes and result): a round with misses is thrown away entirely, so only the final
/// round's writes reach the delta. An async host loops over [`StoreSession::execute`]
/// and hydrates between steps with its own bindings; a sync host calls
/// [`StoreSession::run`].
///
/// One `StoreSession` serves one job. After a failed flush (a conflict), start a new
/// one (see [`StoreSession::restart`]): the old one assumed its delta would apply.
#[derive(Debug, Clone)]
pub struct StoreSession {
    session: IoBufferSession,
    max_rounds: usize,
    rounds: usize,
}

impl Default for StoreSession {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreSession {
    /// A driver over a fresh session, allowing [`DEFAULT_MAX_ROUNDS`] rounds.
    pub fn new() -> Self {
        Self::with_max_rounds(DEFAULT_MAX_ROUNDS)
    }

    /// A driver allowing at most `max_rounds` executions (at least one).
    pub fn with_max_rounds(max_rounds: usize) -> Self {
        Self {
            session: IoBufferSession::new(),
            max_rounds: max_rounds.max(1),
            rounds: 0,
        }
    }

    /// The session, e.g. to hydrate what the request names before the first round.
    pub fn session(&self) -> &IoBufferSession {
        &self.session
    }

    /// Rounds executed so far.
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// The bound on rounds.
    pub fn max_rounds(&self) -> usize {
        self.max_rounds
    }

    /// Discards the session (hydrated view included) and the round count, for a new
    /// attempt after a flush conflict. The conflict's current values are hydrated into
    /// the fresh session, so the keys that changed need no extra round.
    pub fn restart(&mut self, failures: &[CasFailure]) {
        self.session = IoBufferSession::new();
        self.rounds = 0;
        self.session
            .object_buf()
            .hydrate_batch(failures.iter().map(|f| (f.key.clone(), f.current.clone())));
    }

    /// Runs one round of `job` from scratch (undrained writes and misses of earlier
    /// rounds are dropped first).
    ///
    /// Returns [`Executed::Done`] with the drained delta when the round missed nothing,
    /// [`Executed::NeedsHydration`] when it did, and [`SessionError::TooManyRounds`]
    /// when it did and this was the last allowed round.
    pub fn execute<T>(
        &mut self,
        job: impl FnOnce(&IoBufferSession) -> T,
    ) -> Result<Executed<T>, SessionError> {
        if self.rounds >= self.max_rounds {
            return Err(SessionError::TooManyRounds {
                rounds: self.rounds,
                misses: Box::new(self.session.misses()),
            });
        }
        self.session.rollback();
        self.rounds += 1;
        let out = job(&self.session);
        let misses = self.session.misses();
        if misses.is_empty() {
            return Ok(Executed::Done(out, self.session.drain()));
        }
        self.session.rollback();
        if self.rounds >= self.max_rounds {
            return Err(SessionError::TooManyRounds {
                rounds: self.rounds,
                misses: Box::new(misses),
            });
        }
        Ok(Executed::NeedsHydration(misses))
    }

    /// Hydrates `misses` from a sync store.
    pub fn hydrate_from<S>(&self, source: &S, misses: &Misses) -> Result<(), SessionError>
    where
        S: KeyValueStore + BlobStore + ObjectStore + ?Sized,
    {
        Ok(self.session.hydrate_from(source, misses)?)
    }

    /// Executes `job` to completion, hydrating misses from `source` between rounds.
    /// Nothing is written to `source`: flush the returned delta with
    /// [`Delta::flush`].
    pub fn run<S, T>(
        &mut self,
        source: &S,
        mut job: impl FnMut(&IoBufferSession) -> T,
    ) -> Result<(T, Delta), SessionError>
    where
        S: KeyValueStore + BlobStore + ObjectStore + ?Sized,
    {
        loop {
            match self.execute(&mut job)? {
                Executed::Done(out, delta) => return Ok((out, delta)),
                Executed::NeedsHydration(misses) => self.hydrate_from(source, &misses)?,
            }
        }
    }
}
