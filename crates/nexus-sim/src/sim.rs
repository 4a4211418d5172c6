//! The scheduler: interleaves the requests of a workload step by step over the
//! simulated fabric, each one a `nexus_api::Job`'s own [`Driver`], and performs the
//! I/O each [`Step`] asks for as the Worker host does (bridge.rs).

use std::collections::BTreeMap;
use std::rc::Rc;

use nexus_api::{Prepared, Request, Response};
use nexus_iobuf::{Driver, FlushError, FlushStage, IoBufferSession, Misses, StateSource, Step};
use nexus_shard::{
    CrossCommit, CrossError, LOCK_TTL_MS, Lost, Resolution, Resolver, ShardMap, ShardStep,
};
use nexus_store::{BatchPut, CommitOutcome, LOG_HEAD_KEY, PutPhase, StoreError, Tier, WriteBatch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fabric::{Broken, Coordinator, Fabric, Isolate, Kv, R2};
use crate::history::{Answer, Call, History, ReqKind, SignedRequest};
use crate::workload::{Hold, MAX_SENDS, Workload, skew};

/// Where the Worker keeps records in KV, and their copy in R2 (`r2::RECORD_PREFIX`).
const RECORD_PREFIX: &str = "r/";

/// Global time at which every history starts (ms since the Unix epoch).
pub const T0: u64 = 1_764_000_000_000;

/// Which faults a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// The answer of a finished write is lost on its way to the client.
    pub lost_response: bool,
    /// The coordinator resets during a call: a read fails, a commit fails before
    /// applying, or applies and its reply is lost.
    pub reset: bool,
    /// KV writes reach each isolate after a delay of up to [`KV_LAG_MS`].
    pub kv_lag: bool,
    /// Index entries written after the commit are dropped.
    pub lost_index: bool,
    /// The clock jumps past leases now and then.
    pub lapse: bool,
    /// Isolate and agent clocks are off global time by up to [`SKEW_MS`].
    pub skew: bool,
    /// An isolate is recycled: its state cache starts empty.
    pub evict: bool,
    /// With several shards: a coordinating isolate dies between the calls of a
    /// cross-shard commit (before a call, or right after it applied), leaving its
    /// transaction to the resolvers and alarms.
    pub stall: bool,
}

/// Names of the faults, as `--faults` takes them.
pub const FAULT_NAMES: [&str; 8] = [
    "lost-response",
    "reset",
    "kv-lag",
    "lost-index",
    "lapse",
    "skew",
    "evict",
    "stall",
];

/// Longest KV propagation delay, ms.
pub const KV_LAG_MS: u64 = 3_000;
/// Largest clock skew of an isolate or agent, ms.
pub const SKEW_MS: u64 = 2_000;

impl Faults {
    /// Every fault.
    pub fn all() -> Self {
        Self {
            lost_response: true,
            reset: true,
            kv_lag: true,
            lost_index: true,
            lapse: true,
            skew: true,
            evict: true,
            stall: true,
        }
    }

    /// No fault.
    pub fn none() -> Self {
        Self {
            lost_response: false,
            reset: false,
            kv_lag: false,
            lost_index: false,
            lapse: false,
            skew: false,
            evict: false,
            stall: false,
        }
    }

    fn flags(&mut self) -> [&mut bool; 8] {
        [
            &mut self.lost_response,
            &mut self.reset,
            &mut self.kv_lag,
            &mut self.lost_index,
            &mut self.lapse,
            &mut self.skew,
            &mut self.evict,
            &mut self.stall,
        ]
    }

    /// Parses `all`, `none`, or a comma-separated list of [`FAULT_NAMES`].
    pub fn parse(s: &str) -> Result<Self, crate::SimError> {
        match s {
            "all" => return Ok(Self::all()),
            "none" => return Ok(Self::none()),
            _ => {}
        }
        let mut f = Self::none();
        for name in s.split(',').filter(|n| !n.is_empty()) {
            let i = FAULT_NAMES
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| crate::SimError::UnknownFault(name.to_owned()))?;
            *f.flags()[i] = true;
        }
        Ok(f)
    }

    /// The `--faults` argument that gives these faults.
    pub fn to_arg(&self) -> String {
        let mut copy = *self;
        let on: Vec<&str> = copy
            .flags()
            .into_iter()
            .zip(FAULT_NAMES)
            .filter(|(f, _)| **f)
            .map(|(_, n)| n)
            .collect();
        match on.len() {
            0 => "none".to_owned(),
            n if n == FAULT_NAMES.len() => "all".to_owned(),
            _ => on.join(","),
        }
    }
}

/// How to run one history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The faults injected.
    pub faults: Faults,
    /// How the coordinator is broken (for the checker's own test).
    pub broken: Broken,
    /// Requests per history (retries not counted); `None`: drawn from the seed.
    pub requests: Option<usize>,
    /// Coordinator shards (1: today's single coordinator; at most
    /// [`nexus_shard::MAX_SHARDS`]).
    pub shards: usize,
}

impl Default for Options {
    /// Every fault, the real coordinator, sizes drawn from the seed.
    fn default() -> Self {
        Self {
            faults: Faults::all(),
            broken: Broken::None,
            requests: None,
            shards: 1,
        }
    }
}

impl Options {
    /// The command line that reruns `seed` with these options.
    pub fn repro(&self, seed: u64) -> String {
        let mut cmd = format!(
            "cargo run -p nexus-sim --release -- --seed {seed} --faults {}",
            self.faults.to_arg()
        );
        if self.broken != Broken::None {
            cmd.push_str(&format!(" --broken {}", self.broken.name()));
        }
        if let Some(n) = self.requests {
            cmd.push_str(&format!(" --requests {n}"));
        }
        if self.shards > 1 {
            cmd.push_str(&format!(" --shards {}", self.shards));
        }
        cmd
    }
}

/// A job's driver behind a trait object (`Job::driver` returns an unnamed type).
trait Drive {
    fn poll(&mut self) -> Step<nexus_api::Outcome>;
    fn session(&self) -> &IoBufferSession;
    fn hydrated(&mut self, source: StateSource);
    fn hydrate_failed(&mut self, error: StoreError);
    fn committed(&mut self, result: Result<CommitOutcome, FlushError>);
}

impl<J> Drive for Driver<J, nexus_api::Outcome>
where
    J: FnMut(&IoBufferSession) -> nexus_api::Outcome,
{
    fn poll(&mut self) -> Step<nexus_api::Outcome> {
        Driver::poll(self)
    }
    fn session(&self) -> &IoBufferSession {
        Driver::session(self)
    }
    fn hydrated(&mut self, source: StateSource) {
        Driver::hydrated(self, source)
    }
    fn hydrate_failed(&mut self, error: StoreError) {
        Driver::hydrate_failed(self, error)
    }
    fn committed(&mut self, result: Result<CommitOutcome, FlushError>) {
        Driver::committed(self, result)
    }
}

enum Progress {
    /// The driver runs; the next pick polls it.
    Driving(Box<dyn Drive>),
    /// The driver's batch is being committed over the shards, one call per pick.
    Crossing(Box<Crossing>),
    /// The host finished with this answer; the next pick delivers it.
    Answered(Response),
}

/// A batch committing over the shards: its driver waits for the outcome.
struct Crossing {
    driver: Box<dyn Drive>,
    cc: CrossCommit,
    batch: WriteBatch,
}

struct InFlight {
    id: usize,
    request: Rc<SignedRequest>,
    isolate: usize,
    now: u64,
    sent: u64,
    /// How many times this signed request was sent, this time included.
    sends: u32,
    progress: Progress,
}

/// A running simulation of one seed.
struct Sim {
    rng: ChaCha8Rng,
    options: Options,
    fabric: Fabric,
    workload: Workload,
    time: u64,
    step: u64,
    in_flight: Vec<InFlight>,
    calls: Vec<Call>,
    next_id: usize,
    trace: Vec<String>,
    injected: BTreeMap<&'static str, u64>,
    /// Transaction nonces handed out (unique per commit attempt).
    nonces: u64,
}

/// Runs the history of `seed` with `options` to its end (every request answered).
pub fn run(seed: u64, options: &Options) -> History {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let faults = options.faults;
    let skew_bound = if faults.skew { SKEW_MS } else { 0 };
    let isolates = rng.gen_range(1..=4);
    let agents = rng.gen_range(2..=5);
    let requests = options.requests.unwrap_or_else(|| rng.gen_range(20..=60));
    let shards = options.shards.clamp(1, nexus_shard::MAX_SHARDS);
    let fabric = Fabric {
        // The deployment id the Worker's coordinator writes on first use (replicated:
        // on every shard).
        coordinators: (0..shards)
            .map(|_| Coordinator {
                states: BTreeMap::from([(
                    nexus_core::storage::keys::DEPLOYMENT.to_owned(),
                    crate::workload::DEPLOYMENT.as_bytes().to_vec(),
                )]),
                broken: options.broken,
            })
            .collect(),
        map: ShardMap::new(shards).unwrap_or_default(),
        kv: Kv::default(),
        r2: R2::default(),
        isolates: (0..isolates)
            .map(|_| Isolate::new(skew(&mut rng, skew_bound)))
            .collect(),
    };
    let workload = Workload::new(&mut rng, agents, requests, skew_bound);
    let mut sim = Sim {
        rng,
        options: *options,
        fabric,
        workload,
        time: T0,
        step: 0,
        in_flight: Vec::new(),
        calls: Vec::new(),
        next_id: 0,
        trace: Vec::new(),
        injected: BTreeMap::new(),
        nonces: 0,
    };
    let skews: Vec<i64> = sim.fabric.isolates.iter().map(|i| i.skew).collect();
    let agent_skews: Vec<i64> = sim.workload.agents.iter().map(|a| a.skew).collect();
    sim.log(format!(
        "seed {seed}: {isolates} isolates (skew ms {skews:?}), {agents} agents (skew ms \
         {agent_skews:?}), {requests} requests, faults {}, coordinator {}",
        faults.to_arg(),
        options.broken.name()
    ));
    sim.run();
    sim.settle_all();
    let mut shard_states: Vec<BTreeMap<String, Vec<u8>>> = sim
        .fabric
        .coordinators
        .into_iter()
        .map(|c| c.states)
        .collect();
    let states = shard_states.remove(0);
    History {
        seed,
        calls: sim.calls,
        intents: sim.workload.info,
        states,
        other_shards: shard_states,
        kv: sim.fabric.kv.converged(),
        blobs: sim.fabric.r2.blobs,
        trace: sim.trace,
        steps: sim.step,
        injected: sim.injected,
    }
}

fn short(h: &impl std::fmt::Display) -> String {
    h.to_string().chars().take(8).collect()
}

impl Sim {
    fn log(&mut self, line: String) {
        let t = i128::from(self.time) - i128::from(T0);
        self.trace
            .push(format!("{:>5} t={t:>+7}ms  {line}", self.step));
    }

    fn inject(&mut self, fault: &'static str) {
        *self.injected.entry(fault).or_default() += 1;
    }

    fn chance(&mut self, on: bool, p: f64) -> bool {
        on && self.rng.gen_bool(p)
    }

    fn run(&mut self) {
        loop {
            self.step += 1;
            self.time += self.rng.gen_range(0..=40);
            let faults = self.options.faults;
            if self.chance(faults.lapse, 0.015) {
                let jump = self.rng.gen_range(1_500..=5_000);
                self.time += jump;
                self.inject("lapse");
                self.log(format!("clock jumps {jump} ms (leases lapse)"));
            }
            if self.sharded() && self.rng.gen_bool(0.02) {
                let s = self.rng.gen_range(0..self.fabric.coordinators.len());
                self.alarm(s, self.time);
            }
            if self.chance(faults.evict, 0.01) {
                let i = self.rng.gen_range(0..self.fabric.isolates.len());
                self.fabric.isolates[i].cache.clear();
                self.inject("evict");
                self.log(format!("isolate {i} recycled: its state cache is empty"));
            }
            let ready: Vec<usize> = self.workload.ready().collect();
            let choices = ready.len() + self.in_flight.len();
            if choices == 0 {
                break;
            }
            let pick = self.rng.gen_range(0..choices);
            if pick < ready.len() {
                self.send(ready[pick]);
            } else {
                self.advance(pick - ready.len());
            }
        }
    }

    /// Agent `a` sends its next request to a random isolate.
    fn send(&mut self, a: usize) {
        let (request, sends) = self.workload.next(&mut self.rng, a, self.time);
        self.workload.agents[a].busy = true;
        let isolate = self.rng.gen_range(0..self.fabric.isolates.len());
        let iso = &self.fabric.isolates[isolate];
        let now = iso.now(self.time);
        let req = Request::new(request.method, &request.target, request.body.clone());
        let progress = match iso.api.prepare(&req) {
            Prepared::Job(job) => {
                let cache_ok = job.is_write();
                let driver = job.driver(&iso.api.config().limits, now, cache_ok);
                Progress::Driving(Box::new(driver))
            }
            Prepared::Respond(_, r) => Progress::Answered(r),
            Prepared::Metrics => Progress::Answered(iso.api.metrics().response()),
            Prepared::Events(_) => Progress::Answered(nexus_api::not_implemented(
                nexus_api::Route::Events,
                "the simulator models no event streams",
            )),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.log(format!(
            "#{id} a{a}@i{isolate} sends {} (request {}, now {:+})",
            describe(&request.kind),
            short(&request.hash),
            i128::from(now) - i128::from(T0)
        ));
        self.in_flight.push(InFlight {
            id,
            request,
            isolate,
            now,
            sent: self.step,
            sends: sends + 1,
            progress,
        });
    }

    /// Advances in-flight request `i` by one step.
    fn advance(&mut self, i: usize) {
        let (id, isolate) = (self.in_flight[i].id, self.in_flight[i].isolate);
        let placeholder = Progress::Answered(nexus_api::storage_error("placeholder"));
        let mut driver = match std::mem::replace(&mut self.in_flight[i].progress, placeholder) {
            Progress::Driving(driver) => driver,
            Progress::Crossing(c) => {
                self.in_flight[i].progress = self.cross_step(id, isolate, *c);
                return;
            }
            Progress::Answered(response) => {
                let done = self.in_flight.swap_remove(i);
                self.deliver(done, response);
                return;
            }
        };
        self.in_flight[i].progress = match driver.poll() {
            Step::Hydrate { misses, cache_ok } => {
                let line = match self.hydrate(isolate, driver.session(), &misses, cache_ok) {
                    Ok(source) => {
                        driver.hydrated(source);
                        format!("hydrates {} key(s) from {source:?}", misses.len())
                    }
                    Err(e) => {
                        let line = format!("hydration fails: {e}");
                        driver.hydrate_failed(e);
                        line
                    }
                };
                self.log(format!("#{id} {line}"));
                Progress::Driving(driver)
            }
            Step::Commit(batch)
                if self.sharded()
                    && !(batch.commit.is_empty() && batch.commit.reads.is_empty()) =>
            {
                self.begin_cross(id, isolate, driver, batch)
            }
            Step::Commit(batch) => {
                let result = self.flush(id, isolate, &batch);
                driver.committed(result);
                Progress::Driving(driver)
            }
            // The answer travels: it arrives at a later pick.
            Step::Done(result) => {
                Progress::Answered(self.fabric.isolates[isolate].api.finish(result))
            }
        };
    }

    /// The answer reaches the agent (or is lost on the way).
    fn deliver(&mut self, done: InFlight, response: Response) {
        let a = done.request.agent;
        let lost = self.chance(self.options.faults.lost_response, 0.05);
        let answer = if lost {
            self.inject("lost-response");
            Answer::Lost {
                real: response.status,
            }
        } else {
            Answer::Http {
                status: response.status,
                code: response.code.map(|c| c.as_str().to_owned()),
                body: response.json_body(),
            }
        };
        let body = String::from_utf8_lossy(&response.body)
            .chars()
            .take(160)
            .collect::<String>();
        self.log(format!(
            "#{} answered {}{} {body}",
            done.id,
            response.status,
            if lost {
                " — LOST on the way (caller sees no answer)"
            } else {
                ""
            },
        ));
        let agent = &mut self.workload.agents[a];
        agent.busy = false;
        // Clients retry the same signed request after a 5xx or no answer.
        if answer.unknown() && done.sends < MAX_SENDS {
            agent.retry = Some((done.request.clone(), done.sends));
        }
        if answer.acknowledged() {
            agent.acked.push(done.request.clone());
        }
        if let Answer::Http {
            status: 200, body, ..
        } = &answer
            && let ReqKind::Claim { intent, .. } | ReqKind::Renew { intent, .. } =
                &done.request.kind
            && let (Some(token), Some(lease_until)) =
                (body["token"].as_u64(), body["lease_until"].as_u64())
        {
            agent.holds.insert(*intent, Hold { token, lease_until });
        }
        self.calls.push(Call {
            id: done.id,
            request: done.request,
            isolate: done.isolate,
            now: done.now,
            sent: done.sent,
            answered: self.step,
            answer,
        });
    }

    /// KV delays for a write now: one per isolate.
    fn kv_delays(&mut self) -> Vec<u64> {
        let n = self.fabric.isolates.len();
        if self.options.faults.kv_lag {
            (0..n).map(|_| self.rng.gen_range(0..=KV_LAG_MS)).collect()
        } else {
            vec![0; n]
        }
    }

    /// Hydrates `misses` for isolate `iso` as the Worker does: KV (records fall back
    /// to their R2 copy while KV lags), R2, and states from the isolate's cache when
    /// `cache_ok` (a key never seen counts as absent; listings need the coordinator),
    /// else one coordinator read.
    fn hydrate(
        &mut self,
        iso: usize,
        session: &IoBufferSession,
        misses: &Misses,
        cache_ok: bool,
    ) -> Result<StateSource, StoreError> {
        let now = self.time;
        let kv = &self.fabric.kv;
        let r2 = &self.fabric.r2;
        session
            .kv_buf()
            .hydrate_batch(misses.kv_keys.iter().map(|k| {
                let v = kv.get(k, iso, now).or_else(|| {
                    k.starts_with(RECORD_PREFIX)
                        .then(|| r2.blobs.get(k).cloned())
                        .flatten()
                });
                (k.clone(), v)
            }));
        for q in &misses.kv_lists {
            session.kv_buf().hydrate_list(q, kv.list(q, iso, now));
        }
        for k in &misses.blob_keys {
            session
                .blob_buf()
                .hydrate(k.clone(), r2.blobs.get(k).cloned());
        }
        for q in &misses.blob_lists {
            session.blob_buf().hydrate_list(q, r2.list(q));
        }
        if misses.state_keys.is_empty() && misses.state_lists.is_empty() {
            return Ok(StateSource::Store);
        }
        if cache_ok && misses.state_lists.is_empty() {
            let cache = &self.fabric.isolates[iso].cache;
            session.object_buf().hydrate_batch(
                misses
                    .state_keys
                    .iter()
                    .map(|k| (k.clone(), cache.get(k).cloned().flatten())),
            );
            let cached = misses.state_keys.iter().any(|k| k != LOG_HEAD_KEY);
            return Ok(if cached {
                StateSource::Cache
            } else {
                StateSource::Store
            });
        }
        if self.chance(self.options.faults.reset, 0.02) {
            self.inject("reset");
            return Err(StoreError::Backend(
                "coordinator: the Durable Object was reset during /read".into(),
            ));
        }
        let values = if self.sharded() {
            self.read_settled(iso, &misses.state_keys)
        } else {
            self.fabric.read(&misses.state_keys)
        };
        let fabric = &self.fabric;
        let states: Vec<(String, Option<Vec<u8>>)> =
            misses.state_keys.iter().cloned().zip(values).collect();
        session.object_buf().hydrate_batch(states.iter().cloned());
        for q in &misses.state_lists {
            session.object_buf().hydrate_list(q, fabric.list(q));
        }
        self.fabric.isolates[iso].remember(states);
        Ok(StateSource::Store)
    }

    /// One put: a blob to R2; a KV entry to KV (visible after each isolate's delay),
    /// and a record's copy to R2 too.
    fn put(&mut self, p: &BatchPut) {
        match p.tier {
            Tier::Blob => {
                self.fabric.r2.blobs.insert(p.key.clone(), p.value.clone());
            }
            Tier::Kv => {
                let delays = self.kv_delays();
                self.fabric.kv.put(&p.key, &p.value, self.time, &delays);
                if p.key.starts_with(RECORD_PREFIX) {
                    self.fabric.r2.blobs.insert(p.key.clone(), p.value.clone());
                }
            }
        }
    }

    /// Writes a batch as the Worker does: R2 blobs and KV records (each with its R2
    /// copy) first, then ONE coordinator commit (ops + read checks + log), then the
    /// KV index entries (which may be lost), then deletes.
    fn flush(
        &mut self,
        id: usize,
        iso: usize,
        batch: &WriteBatch,
    ) -> Result<CommitOutcome, FlushError> {
        for p in batch.puts_in(PutPhase::BeforeCommit) {
            self.put(p);
        }
        let commit = &batch.commit;
        let outcome = if commit.is_empty() && commit.reads.is_empty() {
            CommitOutcome::Applied { first_seq: None }
        } else {
            let reset = self.chance(self.options.faults.reset, 0.04);
            let before = reset && self.rng.gen_bool(0.5);
            if before {
                self.inject("reset");
                self.log(format!("#{id} commit: coordinator reset BEFORE applying"));
                return Err(commit_failed("reset before the commit applied"));
            }
            let outcome = self.fabric.coordinators[0]
                .commit(commit)
                .map_err(|source| FlushError::Store {
                    stage: FlushStage::Commit,
                    source,
                })?;
            self.log(format!(
                "#{id} commit ({} op(s), {} read check(s)): {}",
                commit.ops.len(),
                commit.reads.len(),
                outcome_line(&outcome)
            ));
            if reset {
                self.inject("reset");
                let applied = matches!(outcome, CommitOutcome::Applied { .. });
                self.log(format!(
                    "#{id} coordinator reset AFTER the commit ({}): its reply is lost",
                    if applied { "applied" } else { "refused" }
                ));
                return Err(commit_failed("reset after the commit: reply lost"));
            }
            outcome
        };
        self.settle(id, iso, batch, outcome)
    }

    /// What follows a commit's outcome, as the Worker does it: the isolate's cache
    /// learns what the commit read and wrote (or the conflict's current values); after
    /// an applied commit the index entries (which may be lost) and the deletes.
    fn settle(
        &mut self,
        id: usize,
        iso: usize,
        batch: &WriteBatch,
        outcome: CommitOutcome,
    ) -> Result<CommitOutcome, FlushError> {
        let commit = &batch.commit;
        let cache = &mut self.fabric.isolates[iso];
        match &outcome {
            CommitOutcome::Applied { .. } => {
                // What the commit read and wrote is what the coordinator now holds.
                cache.remember(
                    commit
                        .reads
                        .iter()
                        .map(|r| (r.key.clone(), r.value.clone()))
                        .chain(commit.ops.iter().map(|op| (op.key.clone(), op.new.clone()))),
                );
            }
            CommitOutcome::Conflict(failures) => {
                cache.remember(failures.iter().map(|f| (f.key.clone(), f.current.clone())));
                return Ok(outcome);
            }
            _ => return Ok(outcome),
        }
        let mut lost = 0;
        for p in batch.puts_in(PutPhase::AfterCommit) {
            if self.chance(self.options.faults.lost_index, 0.2) {
                lost += 1;
                continue;
            }
            self.put(p);
        }
        if lost > 0 {
            *self.injected.entry("lost-index").or_default() += lost;
            self.log(format!(
                "#{id} {lost} index entr(y/ies) lost after the commit"
            ));
        }
        for d in &batch.deletes {
            match d.tier {
                Tier::Kv => self.fabric.kv.delete(&d.key),
                Tier::Blob => {
                    self.fabric.r2.blobs.remove(&d.key);
                }
            }
        }
        Ok(outcome)
    }
}

/// The sharded fabric: commits over several coordinators ([`nexus_shard`]).
impl Sim {
    fn sharded(&self) -> bool {
        self.fabric.coordinators.len() > 1
    }

    /// Starts committing `batch` over the shards: the puts before the commit point,
    /// then a [`CrossCommit`] whose calls the next picks send, one each.
    fn begin_cross(
        &mut self,
        id: usize,
        iso: usize,
        mut driver: Box<dyn Drive>,
        batch: WriteBatch,
    ) -> Progress {
        for p in batch.puts_in(PutPhase::BeforeCommit) {
            self.put(p);
        }
        let now = self.fabric.isolates[iso].now(self.time);
        self.nonces += 1;
        match CrossCommit::new(&self.fabric.map, &batch.commit, now, self.nonces) {
            Ok(cc) => {
                let parts = cc.split().participants();
                self.log(format!(
                    "#{id} commit over shard(s) {parts:?}{}",
                    if parts.len() > 1 {
                        format!(
                            ": txn {}, primary {}",
                            short(cc.txn()),
                            cc.split().primary()
                        )
                    } else {
                        String::new()
                    }
                ));
                Progress::Crossing(Box::new(Crossing { driver, cc, batch }))
            }
            Err(e) => {
                driver.committed(Err(FlushError::Store {
                    stage: FlushStage::Commit,
                    source: e.into(),
                }));
                Progress::Driving(driver)
            }
        }
    }

    /// One call of a commit over the shards (or its end), with the faults of a call:
    /// the coordinating isolate dies (stall), the shard resets before or after
    /// applying (the answer is lost: the protocol sends again).
    fn cross_step(&mut self, id: usize, iso: usize, c: Crossing) -> Progress {
        let Crossing {
            mut driver,
            mut cc,
            batch,
        } = c;
        let (shard, commit) = match cc.poll() {
            ShardStep::Call { shard, commit } => (shard, commit),
            ShardStep::Read { .. } => {
                return Progress::Crossing(Box::new(Crossing { driver, cc, batch }));
            }
            ShardStep::Done(result) => {
                let result = self.cross_done(id, iso, &batch, &cc, result);
                driver.committed(result);
                return Progress::Driving(driver);
            }
        };
        let faults = self.options.faults;
        if self.chance(faults.stall, 0.01) {
            let applied = self.rng.gen_bool(0.5);
            if applied {
                let _ = self.fabric.coordinators[shard].commit(&commit);
            }
            self.inject("stall");
            self.log(format!(
                "#{id} the coordinating isolate dies {} its call to shard {shard}: txn {} stalls",
                if applied { "right after" } else { "before" },
                short(cc.txn())
            ));
            driver.committed(Err(commit_failed("the isolate died mid-commit")));
            return Progress::Driving(driver);
        }
        let reset = self.chance(faults.reset, 0.04);
        if reset && self.rng.gen_bool(0.5) {
            self.inject("reset");
            self.log(format!(
                "#{id} shard {shard} reset BEFORE applying: the answer is lost"
            ));
            cc.feed(shard, Err(Lost));
            return Progress::Crossing(Box::new(Crossing { driver, cc, batch }));
        }
        let outcome = match self.fabric.coordinators[shard].commit(&commit) {
            Ok(o) => o,
            Err(source) => {
                driver.committed(Err(FlushError::Store {
                    stage: FlushStage::Commit,
                    source,
                }));
                return Progress::Driving(driver);
            }
        };
        self.log(format!(
            "#{id} shard {shard}: {} ({} op(s), {} read check(s))",
            outcome_line(&outcome),
            commit.ops.len(),
            commit.reads.len()
        ));
        if reset {
            self.inject("reset");
            self.log(format!(
                "#{id} shard {shard} reset AFTER the call: its answer is lost"
            ));
            cc.feed(shard, Err(Lost));
        } else {
            cc.feed(shard, Ok(outcome));
        }
        Progress::Crossing(Box::new(Crossing { driver, cc, batch }))
    }

    /// A commit over the shards finished: settle it as a single commit is; a conflict
    /// on stale locks first resolves them (the retry will find them gone).
    fn cross_done(
        &mut self,
        id: usize,
        iso: usize,
        batch: &WriteBatch,
        cc: &CrossCommit,
        result: Result<CommitOutcome, CrossError>,
    ) -> Result<CommitOutcome, FlushError> {
        let outcome = match result {
            Ok(o) => o,
            Err(CrossError::OutcomeUnknown { shard }) => {
                self.log(format!(
                    "#{id} shard {shard}'s answer was lost: outcome unknown"
                ));
                return Err(commit_failed("reset after the commit: reply lost"));
            }
            Err(e) => {
                return Err(FlushError::Store {
                    stage: FlushStage::Commit,
                    source: StoreError::Backend(e.to_string()),
                });
            }
        };
        if matches!(outcome, CommitOutcome::Conflict(_)) {
            let now = self.fabric.isolates[iso].now(self.time);
            for met in cc.locks_met() {
                let r = self.run_resolver(Resolver::for_lock(met.shard, met.lock.clone(), now));
                self.log(format!(
                    "#{id} met a lock of txn {} on shard {}: {r:?}",
                    short(&met.lock.txn),
                    met.shard
                ));
            }
        }
        self.settle(id, iso, batch, outcome)
    }

    /// Reads `keys` at their homes as a sharded host must: with each key's lock row;
    /// a lock of a decided (or stale) transaction is settled and the keys read again,
    /// one of an undecided young transaction leaves the value standing.
    fn read_settled(&mut self, iso: usize, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let now = self.fabric.isolates[iso].now(self.time);
        for _ in 0..4 {
            let locks: Vec<(usize, nexus_shard::Lock)> = keys
                .iter()
                .filter_map(|k| {
                    let s = self.fabric.map.home(k);
                    let v = self.fabric.coordinators[s]
                        .states
                        .get(&nexus_shard::protocol::lock_key(k))?;
                    Some((s, nexus_shard::Lock::decode(v).ok()?))
                })
                .collect();
            let mut settled = false;
            for (s, lock) in locks {
                let txn = short(&lock.txn);
                let r = self.run_resolver(Resolver::for_lock(s, lock, now));
                self.log(format!(
                    "a read met a lock of txn {txn} on shard {s}: {r:?}"
                ));
                settled |= !matches!(r, Ok(Resolution::Young { .. }));
            }
            if !settled {
                break;
            }
        }
        self.fabric.read(keys)
    }

    /// Runs a resolver against the shards (its calls are not faulted: a resolver that
    /// dies is one that never ran, and the next reader or alarm runs another).
    fn run_resolver(&mut self, mut r: Resolver) -> Result<Resolution, String> {
        for _ in 0..64 {
            match r.poll() {
                ShardStep::Read { shard, keys } => {
                    let values = self.fabric.coordinators[shard].read(&keys);
                    r.feed_read(shard, Ok(values));
                }
                ShardStep::Call { shard, commit } => {
                    match self.fabric.coordinators[shard].commit(&commit) {
                        Ok(o) => r.feed(shard, Ok(o)),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                ShardStep::Done(result) => return result.map_err(|e| e.to_string()),
            }
        }
        Err("the resolver did not finish".to_owned())
    }

    /// Shard `s`'s alarm at `now`: resolves its stale parts.
    fn alarm(&mut self, s: usize, now: u64) {
        let rows: Vec<(String, Vec<u8>)> = self.fabric.coordinators[s]
            .states
            .range(nexus_shard::protocol::XPART_PREFIX.to_owned()..)
            .take_while(|(k, _)| k.starts_with(nexus_shard::protocol::XPART_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if rows.is_empty() {
            return;
        }
        match nexus_shard::sweep(s, &rows, now) {
            Ok(plan) => {
                for r in plan.resolvers {
                    let result = self.run_resolver(r);
                    self.log(format!("alarm of shard {s}: {result:?}"));
                }
            }
            Err(e) => self.log(format!("alarm of shard {s}: {e}")),
        }
    }

    /// After the last answer: time passes beyond every lock's TTL and every shard's
    /// alarm runs, so no transaction is left pending.
    fn settle_all(&mut self) {
        if !self.sharded() {
            return;
        }
        self.time += LOCK_TTL_MS + 2 * SKEW_MS;
        for s in 0..self.fabric.coordinators.len() {
            self.alarm(s, self.time);
        }
    }
}

/// A commit's outcome for the trace.
fn outcome_line(outcome: &CommitOutcome) -> String {
    match outcome {
        CommitOutcome::Applied { first_seq } => format!("applied, first seq {first_seq:?}"),
        CommitOutcome::Conflict(f) => format!(
            "conflict on {}",
            f.iter()
                .map(|f| f.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}

fn commit_failed(why: &str) -> FlushError {
    FlushError::Store {
        stage: FlushStage::Commit,
        source: StoreError::Backend(format!("coordinator: {why}")),
    }
}

/// A short description of a request for the trace.
pub fn describe(kind: &ReqKind) -> String {
    match kind {
        ReqKind::Propose { intent } => format!("propose {}", short(intent)),
        ReqKind::Hint {
            hint,
            effect,
            selector,
            expires,
        } => format!(
            "hint {} {effect:?} {} until {}",
            short(hint),
            serde_json::to_string(selector).unwrap_or_default(),
            expires.map_or("never".to_owned(), |e| format!(
                "{:+}",
                e as i128 - T0 as i128
            ))
        ),
        ReqKind::Claim { intent, lease_ms } => format!("claim {} for {lease_ms} ms", short(intent)),
        ReqKind::Renew {
            intent,
            token,
            lease_ms,
        } => format!("renew {} token {token} for {lease_ms} ms", short(intent)),
        ReqKind::Resolve {
            intent,
            token,
            fact,
        } => format!(
            "resolve {} token {token} by fact {}",
            short(intent),
            short(fact)
        ),
        ReqKind::Withdraw { intent } => format!("withdraw {}", short(intent)),
    }
}
