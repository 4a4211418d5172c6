//! `SessionServer`: a sequential job queue over a backing store.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};

use nexus_store::{
    BatchWrite, BlobStore, CasFailure, CommitOutcome, KeyValueStore, ObjectStore, StoreError,
    WriteBatch,
};

use crate::driver::{DEFAULT_MAX_ROUNDS, Executed, SessionError, StoreSession};
use crate::session::{Delta, FlushError, FlushReport, FlushStage, IoBufferSession};

/// Attempts (execute + flush) a [`SessionServer`] makes per job unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: usize = 4;

/// A finished job: its result and how it got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput<T> {
    /// What the job returned in its final round.
    pub value: T,
    /// What the flush wrote.
    pub report: FlushReport,
    /// Attempts made (1 unless a commit conflicted).
    pub attempts: usize,
    /// Rounds executed over all attempts.
    pub rounds: usize,
}

/// Why a queued job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Executing or hydrating failed (see [`SessionError`]).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Every attempt's commit conflicted with a concurrent writer.
    #[error("commit conflicted on each of {attempts} attempt(s)")]
    Conflict {
        /// Attempts made.
        attempts: usize,
        /// The last conflict's failed keys with their current values.
        failures: Vec<CasFailure>,
    },
    /// Flushing failed for a reason other than a conflict.
    #[error(transparent)]
    Flush(FlushError),
    /// The job panicked; nothing after the panic was written.
    #[error("the job panicked")]
    Panicked,
    /// The server stopped before running the job.
    #[error("the session server stopped before running the job")]
    ServerGone,
}

type Reply<T> = Result<JobOutput<T>, JobError>;

/// Attempt statistics handed to a job when it finishes.
struct JobStats {
    report: FlushReport,
    attempts: usize,
    rounds: usize,
}

/// A queued job with its result type erased. Executing and finishing are separate so
/// that a later group commit can execute several jobs before one flush.
trait ErasedJob: Send {
    /// Runs one round against `session`, keeping the result.
    fn execute(&mut self, session: &IoBufferSession);
    /// Answers the submitter.
    fn finish(self: Box<Self>, result: Result<JobStats, JobError>);
}

/// Where a finished job's answer goes.
type Answer<T> = Box<dyn FnOnce(Reply<T>) + Send>;

struct TypedJob<F, T> {
    job: F,
    output: Option<T>,
    reply: Answer<T>,
}

impl<F, T> ErasedJob for TypedJob<F, T>
where
    F: FnMut(&IoBufferSession) -> T + Send,
    T: Send,
{
    fn execute(&mut self, session: &IoBufferSession) {
        self.output = Some((self.job)(session));
    }

    fn finish(self: Box<Self>, result: Result<JobStats, JobError>) {
        let TypedJob { output, reply, .. } = *self;
        let answer = result.and_then(|stats| {
            // A job only finishes successfully after a round that ran it.
            let value = output.ok_or(JobError::Panicked)?;
            Ok(JobOutput {
                value,
                report: stats.report,
                attempts: stats.attempts,
                rounds: stats.rounds,
            })
        });
        // A panicking answer callback must not take the server thread (and every
        // queued job) down with it.
        let _ = catch_unwind(AssertUnwindSafe(move || reply(answer)));
    }
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Box<dyn ErasedJob>>,
    closed: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pop(&self) -> Option<Box<dyn ErasedJob>> {
        self.lock().jobs.pop_front()
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// The answer to one submitted job, delivered through a channel.
pub struct Ticket<T> {
    rx: mpsc::Receiver<Reply<T>>,
}

impl<T> fmt::Debug for Ticket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

impl<T> Ticket<T> {
    /// The answer if the job has finished (without blocking).
    pub fn try_take(&self) -> Option<Reply<T>> {
        match self.rx.try_recv() {
            Ok(reply) => Some(reply),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(JobError::ServerGone)),
        }
    }

    /// Blocks until the job has finished (native only: wasm has no thread to block).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(self) -> Reply<T> {
        self.rx.recv().unwrap_or(Err(JobError::ServerGone))
    }
}

/// A cloneable handle that enqueues jobs on a [`SessionServer`], from any thread.
#[derive(Clone)]
pub struct SessionClient {
    queue: Arc<Queue>,
}

impl fmt::Debug for SessionClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionClient")
            .field("pending", &self.queue.lock().jobs.len())
            .finish()
    }
}

impl SessionClient {
    /// Enqueues `job`. It will run (possibly several times: once per round and per
    /// attempt, each from scratch, so it must be deterministic given what it reads)
    /// against a session hydrated from the server's store; the final round's delta is
    /// flushed and the final round's result delivered through the ticket. A job
    /// submitted after the server stopped answers [`JobError::ServerGone`].
    pub fn submit<T, F>(&self, job: F) -> Ticket<T>
    where
        F: FnMut(&IoBufferSession) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = mpsc::channel();
        self.submit_with(job, move |answer| {
            // The submitter may have dropped its ticket; that is not an error.
            let _ = reply.send(answer);
        });
        Ticket { rx }
    }

    /// Like [`SessionClient::submit`], but hands the answer to `on_done` (called once,
    /// on the server's thread, right after the job's commit is durable) instead of a
    /// [`Ticket`]. An async host completes its own future there (a oneshot channel, say)
    /// so that no thread blocks per waiting request. A job submitted after the server
    /// stopped answers [`JobError::ServerGone`] at once, on the caller's thread. A panic
    /// in `on_done` is caught and dropped; the server goes on.
    pub fn submit_with<T, F, D>(&self, job: F, on_done: D)
    where
        F: FnMut(&IoBufferSession) -> T + Send + 'static,
        T: Send + 'static,
        D: FnOnce(Reply<T>) + Send + 'static,
    {
        let mut state = self.queue.lock();
        if state.closed {
            drop(state);
            on_done(Err(JobError::ServerGone));
            return;
        }
        state.jobs.push_back(Box::new(TypedJob {
            job,
            output: None,
            reply: Box::new(on_done),
        }));
        self.queue.ready.notify_one();
    }

    /// Jobs waiting to run.
    pub fn pending(&self) -> usize {
        self.queue.lock().jobs.len()
    }
}

/// A sequential job queue over a backing store: each job is hydrated, executed and
/// flushed before the next starts, so jobs never interleave. A commit conflict (another
/// writer changed a hydrated state) retries the job from hydration, up to a bound.
///
/// Natively, [`SessionServer::spawn`] runs it on its own thread, fed through
/// [`SessionClient`]s from any number of threads. On wasm (or natively, without a
/// thread) the host drives it with [`SessionServer::process_one`].
pub struct SessionServer<S> {
    store: S,
    queue: Arc<Queue>,
    max_rounds: usize,
    max_attempts: usize,
    after_commit: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl<S> fmt::Debug for SessionServer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionServer")
            .field("pending", &self.queue.lock().jobs.len())
            .field("max_rounds", &self.max_rounds)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl<S: KeyValueStore + BlobStore + ObjectStore> SessionServer<S> {
    /// A server over `store` with [`DEFAULT_MAX_ROUNDS`] rounds, [`DEFAULT_MAX_ATTEMPTS`]
    /// attempts, and every key-value put flushed before the commit.
    pub fn new(store: S) -> Self {
        Self {
            store,
            queue: Arc::default(),
            max_rounds: DEFAULT_MAX_ROUNDS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            after_commit: Arc::new(|_| false),
        }
    }

    /// Sets the bound on execution rounds per attempt.
    pub fn with_max_rounds(mut self, max_rounds: usize) -> Self {
        self.max_rounds = max_rounds.max(1);
        self
    }

    /// Sets the bound on attempts per job (a conflict starts a new attempt).
    pub fn with_max_attempts(mut self, max_attempts: usize) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// Selects the key-value puts flushed after the commit (see [`crate::Delta::flush`]).
    pub fn with_after_commit(
        mut self,
        after_commit: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.after_commit = Arc::new(after_commit);
        self
    }

    /// The backing store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// A handle for enqueuing jobs.
    pub fn client(&self) -> SessionClient {
        SessionClient {
            queue: Arc::clone(&self.queue),
        }
    }

    /// Enqueues a job (see [`SessionClient::submit`]).
    pub fn submit<T, F>(&self, job: F) -> Ticket<T>
    where
        F: FnMut(&IoBufferSession) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.client().submit(job)
    }

    /// Jobs waiting to run.
    pub fn pending(&self) -> usize {
        self.queue.lock().jobs.len()
    }

    /// Stops accepting jobs: later submissions answer [`JobError::ServerGone`]. Jobs
    /// already queued still run.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Runs the oldest queued job to completion (hydrate → execute → flush, retrying
    /// on conflict) and answers its ticket. Returns false if the queue was empty.
    pub fn process_one(&self) -> bool {
        let Some(mut job) = self.queue.pop() else {
            return false;
        };
        let result = catch_unwind(AssertUnwindSafe(|| self.attempt(job.as_mut())))
            .unwrap_or(Err(JobError::Panicked));
        job.finish(result);
        true
    }

    /// Executes `job` round by round, hydrating misses from the store, to its delta.
    fn execute_rounds(
        &self,
        job: &mut dyn ErasedJob,
        driver: &mut StoreSession,
    ) -> Result<Delta, SessionError> {
        loop {
            match driver.execute(|s| job.execute(s))? {
                Executed::Done((), delta) => return Ok(delta),
                Executed::NeedsHydration(misses) => driver.hydrate_from(&self.store, &misses)?,
            }
        }
    }

    fn attempt(&self, job: &mut dyn ErasedJob) -> Result<JobStats, JobError> {
        let mut driver = StoreSession::with_max_rounds(self.max_rounds);
        let mut rounds = 0;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let delta = self.execute_rounds(job, &mut driver);
            rounds += driver.rounds();
            match delta?.flush(&self.store, |k| (self.after_commit)(k)) {
                Ok(report) => {
                    return Ok(JobStats {
                        report,
                        attempts,
                        rounds,
                    });
                }
                Err(FlushError::Conflict { failures }) if attempts < self.max_attempts => {
                    driver.restart(&failures);
                }
                Err(FlushError::Conflict { failures }) => {
                    return Err(JobError::Conflict { attempts, failures });
                }
                Err(e) => return Err(JobError::Flush(e)),
            }
        }
    }
}

/// A job of a group in progress: its session driver and counters across attempts.
struct InFlight {
    job: Box<dyn ErasedJob>,
    driver: StoreSession,
    attempts: usize,
    rounds: usize,
}

impl<S: KeyValueStore + BlobStore + ObjectStore + BatchWrite> SessionServer<S> {
    /// **Group commit.** Takes up to `max_jobs` queued jobs, executes each in its own
    /// session (hydrated from the store as it stands before the group), and writes all
    /// their deltas with ONE [`BatchWrite::write_batch_group`] — one durable transaction
    /// on redb, so one `fsync` for the group instead of one per job.
    ///
    /// Each job's commit stays all-or-nothing on its own, in queue order. A job whose
    /// commit conflicts (an earlier job of the group, or another writer, changed a
    /// state it hydrated) is executed again from hydration in the next pass of the same
    /// call, up to the attempt bound; so of several jobs claiming one key, exactly one
    /// wins and the others re-run against the winner's state. Jobs that changed nothing
    /// finish without a write; a delta that deletes is flushed on its own.
    ///
    /// Returns how many jobs were taken (0: the queue was empty).
    pub fn process_group(&self, max_jobs: usize) -> usize {
        let mut flight = Vec::new();
        while flight.len() < max_jobs.max(1) {
            let Some(job) = self.queue.pop() else { break };
            flight.push(InFlight {
                job,
                driver: StoreSession::with_max_rounds(self.max_rounds),
                attempts: 0,
                rounds: 0,
            });
        }
        let taken = flight.len();
        while !flight.is_empty() {
            let mut writes: Vec<(InFlight, Delta, WriteBatch)> = Vec::new();
            for mut f in std::mem::take(&mut flight) {
                f.attempts += 1;
                let run = catch_unwind(AssertUnwindSafe(|| {
                    self.execute_rounds(f.job.as_mut(), &mut f.driver)
                }));
                f.rounds += f.driver.rounds();
                let delta = match run {
                    Err(_) => {
                        f.job.finish(Err(JobError::Panicked));
                        continue;
                    }
                    Ok(Err(e)) => {
                        f.job.finish(Err(JobError::Session(e)));
                        continue;
                    }
                    Ok(Ok(delta)) => delta,
                };
                if delta.is_empty() {
                    let report = delta.report(|k| (self.after_commit)(k), None);
                    self.finish_ok(f, report);
                    continue;
                }
                match delta.to_write_batch(|k| (self.after_commit)(k)) {
                    Some(batch) if batch.check().is_ok() => writes.push((f, delta, batch)),
                    // Deletes, or a key the store refuses: flush alone, so that one bad
                    // delta cannot refuse the whole group.
                    _ => match delta.flush(&self.store, |k| (self.after_commit)(k)) {
                        Ok(report) => self.finish_ok(f, report),
                        Err(FlushError::Conflict { failures }) => {
                            self.retry_or_fail(f, failures, &mut flight)
                        }
                        Err(e) => f.job.finish(Err(JobError::Flush(e))),
                    },
                }
            }
            if writes.is_empty() {
                continue;
            }
            let batches: Vec<WriteBatch> = writes.iter().map(|(_, _, b)| b.clone()).collect();
            match self.store.write_batch_group(&batches) {
                Ok(outcomes) => {
                    for ((f, delta, _), outcome) in writes.into_iter().zip(outcomes) {
                        match outcome {
                            CommitOutcome::Applied { first_seq } => {
                                let report = delta.report(|k| (self.after_commit)(k), first_seq);
                                self.finish_ok(f, report);
                            }
                            CommitOutcome::Conflict(failures) => {
                                self.retry_or_fail(f, failures, &mut flight)
                            }
                            other => f.job.finish(Err(JobError::Flush(FlushError::Store {
                                stage: FlushStage::Commit,
                                source: StoreError::Backend(format!(
                                    "unsupported commit outcome {other:?}"
                                )),
                            }))),
                        }
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for (f, _, _) in writes {
                        f.job.finish(Err(JobError::Flush(FlushError::Store {
                            stage: FlushStage::Commit,
                            source: StoreError::Backend(message.clone()),
                        })));
                    }
                }
            }
        }
        taken
    }

    fn finish_ok(&self, f: InFlight, report: FlushReport) {
        f.job.finish(Ok(JobStats {
            report,
            attempts: f.attempts,
            rounds: f.rounds,
        }));
    }

    fn retry_or_fail(
        &self,
        mut f: InFlight,
        failures: Vec<CasFailure>,
        flight: &mut Vec<InFlight>,
    ) {
        if f.attempts < self.max_attempts {
            f.driver.restart(&failures);
            flight.push(f);
        } else {
            let attempts = f.attempts;
            f.job.finish(Err(JobError::Conflict { attempts, failures }));
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use threaded::ServerThread;

#[cfg(not(target_arch = "wasm32"))]
mod threaded {
    use super::*;
    use std::thread::JoinHandle;

    /// A [`SessionServer`] running on its own thread. Dropping it (or
    /// [`ServerThread::shutdown`]) stops accepting jobs, runs those already queued, and
    /// joins the thread.
    pub struct ServerThread<S> {
        queue: Arc<Queue>,
        handle: Option<JoinHandle<SessionServer<S>>>,
    }

    impl<S> fmt::Debug for ServerThread<S> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ServerThread").finish_non_exhaustive()
        }
    }

    impl<S: KeyValueStore + BlobStore + ObjectStore + Send + 'static> SessionServer<S> {
        /// Moves the server onto a new thread that runs queued jobs one at a time.
        pub fn spawn(self) -> std::io::Result<ServerThread<S>> {
            let queue = Arc::clone(&self.queue);
            let handle = std::thread::Builder::new()
                .name("nexus-session-server".into())
                .spawn(move || {
                    while self.wait_for_job() {
                        self.process_one();
                    }
                    self
                })?;
            Ok(ServerThread {
                queue,
                handle: Some(handle),
            })
        }

        /// Blocks until a job is queued (true) or the queue is closed and empty (false).
        fn wait_for_job(&self) -> bool {
            let mut state = self.queue.lock();
            loop {
                if !state.jobs.is_empty() {
                    return true;
                }
                if state.closed {
                    return false;
                }
                state = self
                    .queue
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    impl<S: KeyValueStore + BlobStore + ObjectStore + BatchWrite + Send + 'static> SessionServer<S> {
        /// Moves the server onto a new thread that runs queued jobs in groups of up to
        /// `max_jobs` with one batched write each ([`SessionServer::process_group`]):
        /// jobs that arrive while a group is being written form the next group.
        pub fn spawn_grouped(self, max_jobs: usize) -> std::io::Result<ServerThread<S>> {
            let queue = Arc::clone(&self.queue);
            let handle = std::thread::Builder::new()
                .name("nexus-session-server".into())
                .spawn(move || {
                    while self.wait_for_job() {
                        self.process_group(max_jobs);
                    }
                    self
                })?;
            Ok(ServerThread {
                queue,
                handle: Some(handle),
            })
        }
    }

    impl<S> ServerThread<S> {
        /// A handle for enqueuing jobs.
        pub fn client(&self) -> SessionClient {
            SessionClient {
                queue: Arc::clone(&self.queue),
            }
        }

        /// Stops accepting jobs, runs the queued ones, joins the thread and gives back
        /// the server (and with it the store).
        pub fn shutdown(mut self) -> std::thread::Result<SessionServer<S>> {
            self.queue.close();
            match self.handle.take() {
                Some(handle) => handle.join(),
                None => Err(Box::new("session server thread already joined")),
            }
        }
    }

    impl<S> Drop for ServerThread<S> {
        fn drop(&mut self) {
            self.queue.close();
            if let Some(handle) = self.handle.take() {
                // A panic of the server thread has already been reported by the
                // panic hook; there is no one left to hand it to.
                let _ = handle.join();
            }
        }
    }
}
