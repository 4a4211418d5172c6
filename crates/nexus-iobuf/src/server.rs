//! `SessionServer`: a sequential job queue over a backing store.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};

use nexus_store::{
    BatchWrite, BlobStore, CasFailure, CommitOutcome, KeyValueStore, ObjectStore, StoreError,
    WriteBatch,
};

use crate::drive::{DriveConfig, Driver, StateSource, Step, flush_batch};
use crate::driver::{DEFAULT_MAX_ROUNDS, SessionError};
use crate::session::{FlushError, FlushReport, FlushStage, IoBufferSession, Misses};

/// Attempts (execute + flush) a [`SessionServer`] makes per job unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: usize = 4;

/// A finished job: its result and how it got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput<T> {
    /// What the job returned in its final round.
    pub value: T,
    /// What the flush wrote.
    pub report: FlushReport,
    /// Attempts made (1 unless a commit conflicted or an answer was verified).
    pub attempts: usize,
    /// Rounds executed over all attempts.
    pub rounds: usize,
    /// Commits refused on the way (each followed by a new attempt).
    pub conflicts: usize,
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

/// What a queued job asks of the server next (a [`Step`] with its result type erased).
enum Asks {
    Hydrate(Misses),
    Commit(WriteBatch),
    Done,
}

/// A queued job with its result type erased: a [`Driver`] (made with the server's
/// configuration when the job did not bring its own) and where its answer goes.
trait ErasedJob: Send {
    /// Polls the job's driver (running a round of the job when it can); a panicking
    /// job finishes with [`JobError::Panicked`].
    fn poll(&mut self, config: &DriveConfig) -> Asks;
    /// The session to hydrate (`None` before the first poll).
    fn session(&self) -> Option<&IoBufferSession>;
    /// Feeds a hydration's result.
    fn hydrated(&mut self, result: Result<(), StoreError>);
    /// Feeds a commit's result.
    fn committed(&mut self, result: Result<CommitOutcome, FlushError>);
    /// Answers the submitter with the finished result.
    fn finish(self: Box<Self>);
}

/// Where a finished job's answer goes.
type Answer<T> = Box<dyn FnOnce(Reply<T>) + Send>;

/// A job is either a bare closure (made into a driver at its first poll, with the
/// server's configuration) or a driver its submitter built.
enum Work<F, T> {
    Job(Option<F>),
    Driver(Box<Driver<F, T>>),
}

struct TypedJob<F, T> {
    work: Work<F, T>,
    result: Option<Reply<T>>,
    reply: Answer<T>,
}

impl<F, T> TypedJob<F, T>
where
    F: FnMut(&IoBufferSession) -> T,
{
    fn driver(&mut self, config: &DriveConfig) -> Option<&mut Driver<F, T>> {
        if let Work::Job(job) = &mut self.work {
            let job = job.take()?;
            self.work = Work::Driver(Box::new(Driver::new(job, Misses::default(), *config)));
        }
        match &mut self.work {
            Work::Driver(d) => Some(d),
            Work::Job(_) => None,
        }
    }
}

impl<F, T> ErasedJob for TypedJob<F, T>
where
    F: FnMut(&IoBufferSession) -> T + Send,
    T: Send,
{
    fn poll(&mut self, config: &DriveConfig) -> Asks {
        let Some(driver) = self.driver(config) else {
            self.result = Some(Err(JobError::Panicked));
            return Asks::Done;
        };
        match catch_unwind(AssertUnwindSafe(|| driver.poll())) {
            Ok(Step::Hydrate { misses, .. }) => Asks::Hydrate(misses),
            Ok(Step::Commit(batch)) => Asks::Commit(batch),
            Ok(Step::Done(result)) => {
                self.result = Some(result);
                Asks::Done
            }
            Err(_) => {
                self.result = Some(Err(JobError::Panicked));
                Asks::Done
            }
        }
    }

    fn session(&self) -> Option<&IoBufferSession> {
        match &self.work {
            Work::Driver(d) => Some(d.session()),
            Work::Job(_) => None,
        }
    }

    fn hydrated(&mut self, result: Result<(), StoreError>) {
        if let Work::Driver(d) = &mut self.work {
            match result {
                Ok(()) => d.hydrated(StateSource::Store),
                Err(e) => d.hydrate_failed(e),
            }
        }
    }

    fn committed(&mut self, result: Result<CommitOutcome, FlushError>) {
        if let Work::Driver(d) = &mut self.work {
            d.committed(result);
        }
    }

    fn finish(self: Box<Self>) {
        let TypedJob { result, reply, .. } = *self;
        let answer = result.unwrap_or(Err(JobError::Panicked));
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
        self.enqueue(Work::Job(Some(job)), Box::new(on_done));
    }

    /// Enqueues a [`Driver`] the caller built (with its own read set and
    /// configuration, which take the place of the server's) and hands its answer to
    /// `on_done`, as [`SessionClient::submit_with`] does.
    pub fn submit_driver<T, F, D>(&self, driver: Driver<F, T>, on_done: D)
    where
        F: FnMut(&IoBufferSession) -> T + Send + 'static,
        T: Send + 'static,
        D: FnOnce(Reply<T>) + Send + 'static,
    {
        self.enqueue(Work::Driver(Box::new(driver)), Box::new(on_done));
    }

    fn enqueue<T, F>(&self, work: Work<F, T>, reply: Answer<T>)
    where
        F: FnMut(&IoBufferSession) -> T + Send + 'static,
        T: Send + 'static,
    {
        let mut state = self.queue.lock();
        if state.closed {
            drop(state);
            reply(Err(JobError::ServerGone));
            return;
        }
        state.jobs.push_back(Box::new(TypedJob {
            work,
            result: None,
            reply,
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
/// [`SessionClient`]s from any number of threads; without a thread, a host drives it
/// with [`SessionServer::process_one`]. An async host (the Cloudflare Worker) does not
/// queue jobs here: it polls each job's [`Driver`](crate::Driver) itself and awaits its
/// bindings between steps.
pub struct SessionServer<S> {
    store: S,
    queue: Arc<Queue>,
    config: DriveConfig,
}

impl<S> fmt::Debug for SessionServer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionServer")
            .field("pending", &self.queue.lock().jobs.len())
            .field("config", &self.config)
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
            config: DriveConfig {
                max_rounds: DEFAULT_MAX_ROUNDS,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                ..DriveConfig::default()
            },
        }
    }

    /// Sets the bound on execution rounds per attempt (for jobs submitted without a
    /// driver of their own).
    pub fn with_max_rounds(mut self, max_rounds: usize) -> Self {
        self.config.max_rounds = max_rounds.max(1);
        self
    }

    /// Sets the bound on attempts per job (a conflict starts a new attempt).
    pub fn with_max_attempts(mut self, max_attempts: usize) -> Self {
        self.config.max_attempts = max_attempts.max(1);
        self
    }

    /// Selects the key-value puts flushed after the commit (see [`DriveConfig`]).
    pub fn with_after_commit(mut self, after_commit: fn(&str) -> bool) -> Self {
        self.config.after_commit = after_commit;
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
    /// on conflict, as its [`Driver`] says) and answers it. Returns false if the queue
    /// was empty.
    pub fn process_one(&self) -> bool {
        let Some(mut job) = self.queue.pop() else {
            return false;
        };
        loop {
            match self.advance(job.as_mut()) {
                None => break,
                Some(batch) => {
                    let result = flush_batch(&self.store, &batch);
                    job.committed(result);
                }
            }
        }
        job.finish();
        true
    }

    /// Polls `job`, hydrating from the store, until it asks for a commit (returned) or
    /// finishes (`None`).
    fn advance(&self, job: &mut dyn ErasedJob) -> Option<WriteBatch> {
        loop {
            match job.poll(&self.config) {
                Asks::Hydrate(misses) => {
                    let result = match job.session() {
                        Some(session) => session.hydrate_from(&self.store, &misses),
                        None => Err(StoreError::Backend("job has no session".into())),
                    };
                    job.hydrated(result);
                }
                Asks::Commit(batch) => return Some(batch),
                Asks::Done => return None,
            }
        }
    }
}

impl<S: KeyValueStore + BlobStore + ObjectStore + BatchWrite> SessionServer<S> {
    /// **Group commit.** Takes up to `max_jobs` queued jobs, executes each in its own
    /// session (hydrated from the store as it stands before the group), and writes all
    /// their batches with ONE [`BatchWrite::write_batch_group`] — one durable
    /// transaction on redb, so one `fsync` for the group instead of one per job.
    ///
    /// Each job's commit stays all-or-nothing on its own, in queue order, and carries
    /// the read checks of every state the job read: a job whose commit conflicts
    /// (an earlier job of the group, or another writer, changed a state it wrote *or
    /// read*) is executed again from hydration in the next pass of the same call, up to
    /// the attempt bound. So the group's commits are serializable in log order: of
    /// several jobs claiming one key exactly one wins, and a claim executed before a
    /// deny Hint committed earlier in the group re-runs against that Hint. Jobs that
    /// changed nothing finish without a write.
    ///
    /// Returns how many jobs were taken (0: the queue was empty).
    pub fn process_group(&self, max_jobs: usize) -> usize {
        let mut flight: Vec<Box<dyn ErasedJob>> = Vec::new();
        while flight.len() < max_jobs.max(1) {
            let Some(job) = self.queue.pop() else { break };
            flight.push(job);
        }
        let taken = flight.len();
        while !flight.is_empty() {
            let mut writes: Vec<(Box<dyn ErasedJob>, WriteBatch)> = Vec::new();
            for mut job in std::mem::take(&mut flight) {
                match self.advance(job.as_mut()) {
                    None => job.finish(),
                    // A key the store refuses would refuse the whole group: that job
                    // alone fails.
                    Some(batch) => match batch.check() {
                        Ok(()) => writes.push((job, batch)),
                        Err(source) => {
                            job.committed(Err(FlushError::Store {
                                stage: FlushStage::Commit,
                                source,
                            }));
                            flight.push(job);
                        }
                    },
                }
            }
            if writes.is_empty() {
                continue;
            }
            let batches: Vec<WriteBatch> = writes.iter().map(|(_, b)| b.clone()).collect();
            match self.store.write_batch_group(&batches) {
                Ok(outcomes) => {
                    for ((mut job, _), outcome) in writes.into_iter().zip(outcomes) {
                        job.committed(Ok(outcome));
                        flight.push(job);
                    }
                }
                Err(e) => {
                    for (mut job, _) in writes {
                        job.committed(Err(FlushError::Store {
                            stage: FlushStage::Commit,
                            source: e.clone(),
                        }));
                        flight.push(job);
                    }
                }
            }
        }
        taken
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
