//! Concurrency scenarios that every host must survive with a log that replays
//! (design §5, "Isolation: serializable"), parameterised by base URLs: the native
//! `nexus serve` (`tests/serializable.rs`) and the Worker under `wrangler dev`
//! (`crates/nexus-worker-test/tests/worker.rs`, which includes this file by `#[path]`).
//!
//! * [`deny_hint_race`]: per round, N Intents are proposed, then their N claims and one
//!   deny Hint selecting all of them are sent at the same moment (N + 1 concurrent
//!   requests, each valid on its own). A claim that the Hint denies must not commit
//!   after the Hint (issue 10).
//! * [`mixed`]: many clients at once, every round, each doing one seeded random
//!   operation: proposals, Hints (deny, allow, priority; with and without expiry),
//!   claims, takeovers after a lease lapsed (leases of 1–2.5 s), renewals, resolves with
//!   fencing tokens, withdrawals and, where the host governs ([`MixedConfig::contracts`]),
//!   contract freezes and quorum-approved upgrades.
//! * [`check_log`]: the whole log, exported, passes the replay verifier (the code of
//!   `nexus verify --replay`), no Intent is resolved twice, and each fencing token of an
//!   Intent was handed to one holder only (checked against what the clients were told).
//!
//! Long runs: `NEXUS_RACE_ROUNDS`, `NEXUS_RACE_INTENTS`, `NEXUS_MIXED_ROUNDS`,
//! `NEXUS_MIXED_CLIENTS` and `NEXUS_MIXED_SEED` override the CI defaults (see
//! [`env_u64`]). Each scenario writes under a random topic prefix of its own.
//!
//! It needs `nexus-client`, `nexus-core`, `nexus-contract` and `serde_json` only.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nexus_client::builders::{self, now_ms};
use nexus_client::verify::VerifyOptions;
use nexus_client::{Client, ClientError, KeyFile, VerifyReport};
use nexus_contract::contract_hash;
use nexus_contract::governance::DEPLOY_TOPIC;
use nexus_core::{Action, ActionContent, Content, Effect, FihHash, Limits, Record, SigningKey};
use serde_json::{Value, json};

/// `name` from the environment as a number, else `default` (a malformed value panics
/// rather than silently running the CI count).
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A client for `url`, with a timeout long enough for a loaded 2-core machine.
pub fn client(url: &str) -> Client {
    Client::new(url)
        .expect("base URL")
        .with_timeout(Duration::from_secs(30))
}

/// A short random tag for topic prefixes, so that scenarios can share a store.
fn tag() -> String {
    KeyFile::generate().expect("key").author().to_string()[..12].to_owned()
}

/// A small deterministic generator (SplitMix64): one seed reproduces every choice.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// A signing key drawn from the generator.
    pub fn key(&mut self) -> SigningKey {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        SigningKey::from_seed(&seed)
    }
}

/// The whole commit log of `url`, as exported (JSON lines).
pub fn export(url: &str) -> Vec<u8> {
    let mut out = Vec::new();
    client(url)
        .export(1, &mut out)
        .unwrap_or_else(|e| panic!("export {url}: {e}"));
    out
}

/// Runs the replay verifier of `nexus verify --replay` over the log of `url`.
pub fn replay(url: &str) -> Result<VerifyReport, String> {
    replay_export(&export(url))
}

/// Runs the replay verifier of `nexus verify --replay` over an export.
pub fn replay_export(export: &[u8]) -> Result<VerifyReport, String> {
    let options = VerifyOptions {
        replay: true,
        ..VerifyOptions::default()
    };
    nexus_client::verify_export_with(export, &options, |_| {}).map_err(|e| e.to_string())
}

/// One entry of the log, parsed.
enum Entry {
    Record(Record),
    Action(Action),
}

fn parse_log(export: &[u8]) -> Vec<(u64, Entry)> {
    let limits = Limits::default();
    export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let v: Value = serde_json::from_slice(line).expect("log entry");
            let seq = v["seq"].as_u64().expect("seq");
            let entry = if let Some(r) = v.get("record") {
                Entry::Record(
                    Record::from_json(&serde_json::to_vec(r).expect("json"), &limits)
                        .expect("record"),
                )
            } else {
                Entry::Action(
                    Action::from_json(&serde_json::to_vec(&v["action"]).expect("json"), &limits)
                        .expect("action"),
                )
            };
            (seq, entry)
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The deny-Hint race (issue 10)

/// What [`deny_hint_race`] did.
#[derive(Debug, Default)]
pub struct RaceReport {
    /// Rounds run.
    pub rounds: u64,
    /// Claims that won (committed before their round's Hint).
    pub claimed: u64,
    /// Claims refused `403 inadmissible` by their round's Hint.
    pub denied: u64,
    /// Claims refused `409 conflict` (a host may answer a lost race so rather than
    /// retry it).
    pub conflicts: u64,
    /// The first round whose log shows a claim committed after the deny Hint that
    /// selects it, with what the log shows; the race stops there.
    pub violation: Option<String>,
}

/// Runs `rounds` rounds of the deny-Hint race against `urls` (requests spread over
/// them, round-robin), `intents` Intents a round: each round proposes them (one thread
/// each), then, released by one barrier, sends their claims (each by a key of its own)
/// and one deny Hint selecting all of them, then reads the round's log entries and
/// checks that no claim committed after the Hint. Stops at the first round that breaks
/// that. Any answer other than a lease, `403 inadmissible` naming the Hint or `409
/// conflict` panics.
pub fn deny_hint_race(urls: &[String], rounds: u64, intents: usize) -> RaceReport {
    let clients: Vec<Client> = urls.iter().map(|u| client(u)).collect();
    let tag = tag();
    let proposer = KeyFile::generate().expect("key");
    let warden = KeyFile::generate().expect("key");
    let claimers: Vec<KeyFile> = (0..intents)
        .map(|_| KeyFile::generate().expect("key"))
        .collect();
    let mut report = RaceReport::default();
    let started = Instant::now();
    for round in 0..rounds {
        let topic = format!("race/{tag}/r{round}");
        let from = clients[0].health().expect("health").log_head + 1;
        let proposals: Vec<Record> = (0..intents)
            .map(|i| {
                builders::propose(
                    proposer.key(),
                    &format!("{topic}/i{i}"),
                    json!({"i": i}),
                    &[],
                )
                .expect("intent")
            })
            .collect();
        let deployment = clients[0].deployment().expect("deployment");
        let claims: Vec<Action> = proposals
            .iter()
            .zip(&claimers)
            .map(|(p, k)| builders::claim(k.key(), &deployment, p.hash(), 60_000).expect("claim"))
            .collect();
        let now = now_ms();
        let deny = builders::hint_at(
            warden.key(),
            builders::selector(Some(&format!("{topic}/**")), None).expect("selector"),
            Effect::Deny,
            "race: no more claims",
            None,
            // Expiring, so that the active Hints stay few over a long run.
            Some(now + 20_000),
            now,
        )
        .expect("deny");
        let barrier = Barrier::new(intents + 1);
        let (claimed, hinted) = thread::scope(|s| {
            let claimers: Vec<_> = proposals
                .iter()
                .zip(&claims)
                .enumerate()
                .map(|(i, (p, claim))| {
                    let (c, barrier) = (&clients[i % clients.len()], &barrier);
                    s.spawn(move || {
                        // Never panic before the barrier: the others would wait forever.
                        let proposed = c.submit(p);
                        barrier.wait();
                        proposed.map_err(|e| format!("propose: {e}"))?;
                        Ok::<_, String>(c.claim(claim))
                    })
                })
                .collect();
            let hinter = {
                let (c, barrier) = (&clients[intents % clients.len()], &barrier);
                let deny = &deny;
                s.spawn(move || {
                    barrier.wait();
                    c.submit(deny)
                })
            };
            let claimed: Vec<_> = claimers
                .into_iter()
                .map(|h| h.join().expect("claimer thread"))
                .collect();
            (claimed, hinter.join().expect("hint thread"))
        });
        let hint_seq = hinted
            .unwrap_or_else(|e| panic!("round {round}: the deny Hint: {e}"))
            .seq
            .expect("seq");
        for (i, r) in claimed.into_iter().enumerate() {
            match r.unwrap_or_else(|e| panic!("round {round}: intent {i}: {e}")) {
                Ok(lease) => {
                    assert_eq!(lease.token, 1, "round {round}");
                    report.claimed += 1;
                }
                Err(e) if e.code() == Some("conflict") => report.conflicts += 1,
                Err(e) if e.code() == Some("inadmissible") => {
                    let hint = e.api().and_then(|a| a.detail("hint")).cloned();
                    assert_eq!(hint, Some(json!(deny.hash())), "round {round}: {e}");
                    report.denied += 1;
                }
                Err(e) => panic!("round {round}: claim {i}: {e}"),
            }
        }
        report.rounds = round + 1;
        // The log of the round: every committed claim must come before the Hint.
        let late: Vec<u64> = clients[0]
            .log_entries(from)
            .map(|e| e.expect("log"))
            .filter(|e| e.get("action").is_some())
            .map(|e| e["seq"].as_u64().expect("seq"))
            .filter(|&seq| seq > hint_seq)
            .collect();
        if !late.is_empty() {
            report.violation = Some(format!(
                "round {round} (of {rounds}): {} claim(s) committed at seq {late:?}, after the \
                 deny Hint at seq {hint_seq} that selects them",
                late.len()
            ));
            break;
        }
    }
    eprintln!(
        "deny-hint race: {} rounds of {intents} claims + 1 Hint in {:.1?}: {} claimed, {} denied, \
         {} conflicts",
        report.rounds,
        started.elapsed(),
        report.claimed,
        report.denied,
        report.conflicts
    );
    report
}

/// How [`deny_hint_race_replays`] runs.
#[derive(Debug, Clone, Copy)]
pub struct RaceConfig {
    /// Rounds (`NEXUS_RACE_ROUNDS`).
    pub rounds: u64,
    /// Intents, hence concurrent claims, a round (`NEXUS_RACE_INTENTS`, default 32).
    pub intents: usize,
}

impl RaceConfig {
    /// The configuration from the environment, `rounds` rounds by default.
    pub fn from_env(rounds: u64) -> RaceConfig {
        RaceConfig {
            rounds: env_u64("NEXUS_RACE_ROUNDS", rounds),
            intents: usize::try_from(env_u64("NEXUS_RACE_INTENTS", 32)).expect("intents"),
        }
    }
}

/// Runs [`deny_hint_race`] against `urls`, then checks the whole log of `urls[0]` with
/// the replay verifier: panics, naming the first bad round and the verifier's
/// complaint, unless every round ran and the log replays.
pub fn deny_hint_race_replays(urls: &[String], config: RaceConfig) -> RaceReport {
    let RaceConfig { rounds, intents } = config;
    let race = deny_hint_race(urls, rounds, intents);
    match (&race.violation, replay(&urls[0])) {
        (None, Ok(_)) => {}
        (violation, replayed) => panic!(
            "the log is not serializable: {}; verify --replay: {}",
            violation
                .as_deref()
                .unwrap_or("no claim after its round's Hint"),
            match replayed {
                Ok(r) => format!("passes ({} entries)", r.lines),
                Err(e) => e,
            }
        ),
    }
    assert_eq!(race.rounds, rounds);
    assert_eq!(
        race.claimed + race.denied + race.conflicts,
        rounds * intents as u64
    );
    race
}

// ---------------------------------------------------------------------------------
// The mixed scenario

/// How [`mixed`] runs.
#[derive(Debug, Clone)]
pub struct MixedConfig {
    /// Seeds every choice (printed; `NEXUS_MIXED_SEED`). Threads still interleave as
    /// the machine schedules them, so a seed reproduces the operations, not their order.
    pub seed: u64,
    /// Client threads (`NEXUS_MIXED_CLIENTS`).
    pub clients: usize,
    /// Rounds: every client does one operation a round, all released by one barrier
    /// (`NEXUS_MIXED_ROUNDS`).
    pub rounds: u64,
    /// Deploy a contract and, during the run, freeze topics through it and upgrade it
    /// by quorum. Only for hosts that govern: the Worker answers `POST /v1/contract`
    /// with `501 not_implemented`, so its runs leave contracts out.
    pub contracts: bool,
}

impl MixedConfig {
    /// The configuration from the environment, `rounds` rounds and 8 clients by
    /// default, the seed from the clock unless `NEXUS_MIXED_SEED` is set.
    pub fn from_env(rounds: u64, contracts: bool) -> MixedConfig {
        MixedConfig {
            seed: env_u64("NEXUS_MIXED_SEED", now_ms()),
            clients: usize::try_from(env_u64("NEXUS_MIXED_CLIENTS", 8)).expect("clients"),
            rounds: env_u64("NEXUS_MIXED_ROUNDS", rounds),
            contracts,
        }
    }
}

/// A lease a client was granted: the claim's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The Intent.
    pub intent: FihHash,
    /// The claim action.
    pub claim: FihHash,
    /// Its holder.
    pub holder: String,
    /// The fencing token.
    pub token: u64,
    /// Whether the answer said takeover.
    pub takeover: bool,
}

/// A resolution a client was told committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The Intent.
    pub intent: FihHash,
    /// The resolving Fact.
    pub fact: FihHash,
    /// The token it carried.
    pub token: u64,
}

/// What [`mixed`] did.
#[derive(Debug, Default)]
pub struct MixedReport {
    /// Outcomes by `operation:result` (`claim:ok`, `renew:stale_token`, …).
    pub outcomes: BTreeMap<String, u64>,
    /// Every lease granted by a claim or takeover.
    pub granted: Vec<Granted>,
    /// Every resolution that committed.
    pub resolved: Vec<Resolution>,
    /// Answers no correct host gives (an unexpected status or code), with where.
    pub failures: Vec<String>,
}

/// Refusals a correct host may answer a racing client: the operation lost to another.
const LOST_RACE: &[&str] = &[
    "already_claimed",
    "lease_expired",
    "not_holder",
    "stale_token",
    "already_resolved",
    "withdrawn",
    "inadmissible",
    "conflict",
    "too_many_hints",
    "stale_contract",
    "upgrade_refused",
];

/// Topics per run: `mix/TAG/t{0..TOPICS}/s{0..SUBTOPICS}`.
const TOPICS: u64 = 4;
const SUBTOPICS: u64 = 4;
/// Body `lane` values (selectors of narrow Hints).
const LANES: u64 = 8;
/// Claims and takeovers pick among the newest this many Intents (more contention).
const RECENT: usize = 24;

/// An Intent as the clients last saw it.
#[derive(Debug, Clone)]
struct Known {
    hash: FihHash,
    topic: String,
    proposer: usize,
    /// The last lease granted on it that a client saw: (token, lease_until).
    lease: Option<(u64, u64)>,
    /// Resolved or withdrawn, as far as a client saw.
    done: bool,
}

struct World<'a> {
    config: &'a MixedConfig,
    clients: Vec<Client>,
    tag: String,
    stewards: Vec<SigningKey>,
    intents: Mutex<Vec<Known>>,
    report: Mutex<MixedReport>,
    failed: AtomicBool,
}

/// One client thread's own view.
struct Agent {
    idx: usize,
    key: SigningKey,
    rng: Rng,
    /// Leases it holds, as far as it knows: (intent, token).
    leases: Vec<(FihHash, u64)>,
    /// Intents it proposed.
    proposed: Vec<FihHash>,
}

/// The contract of a mixed run, version `version`: upgrades need two of the three
/// stewards' approvals; a steward's Fact under `TAG/gov/freeze` naming a topic emits a
/// Hint over it, deny in even versions and priority −1 in odd ones (so an upgrade both
/// freezes and thaws, and replaces the Hints of the version before).
pub fn contract_source(tag: &str, stewards: &[SigningKey], version: u64) -> String {
    let quoted = |q: char| {
        stewards
            .iter()
            .map(|s| format!("{q}{}{q}", s.author()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let emit = if version.is_multiple_of(2) {
        r#"effect = "deny""#
    } else {
        r#"effect = "priority", priority = -1"#
    };
    format!(
        r#"contract = "mixed-{tag}"
description = "the mixed scenario's contract, version {version}"

[upgrade]
keys = [{keys}]
quorum = 2
approvals = "mix/{tag}/gov/upgrade"

[[rule]]
name = "freeze"
topic = "mix/{tag}/gov/freeze"
where = "fact.author in [{singles}] && type(fact.body.topic) == string"
group = "fact.body.topic"
emit = {{ {emit}, topic = "${{group}}/**", reason = "frozen by a steward" }}
"#,
        keys = quoted('"'),
        singles = quoted('\''),
    )
}

/// A deployment of `source` over `expected`, signed by `key`.
fn deployment(key: &SigningKey, source: &str, expected: Option<FihHash>) -> Record {
    builders::fact(
        key,
        DEPLOY_TOPIC,
        json!({"source": source, "expected": expected.map(|h| h.to_hex())}),
        &[],
        None,
    )
    .expect("deployment")
}

/// The hash of the contract in force at `c`.
fn contract_in_force(c: &Client) -> Result<Option<FihHash>, ClientError> {
    match c.get_json("/v1/contract") {
        Ok((_, v)) => Ok(v["hash"].as_str().map(|h| h.parse().expect("hash"))),
        Err(e) if e.code() == Some("not_found") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs the mixed scenario against `urls` (client `i` talks to `urls[i % len]`): with
/// contracts, first deploys version 0; then `rounds` rounds of one random operation
/// per client (see the [module docs](self)). Answers what the clients saw; a host
/// that answers something no correct host answers is listed in `failures` (the run
/// goes on, so that the log can still be checked).
pub fn mixed(urls: &[String], config: &MixedConfig) -> MixedReport {
    eprintln!(
        "mixed scenario: seed {} (NEXUS_MIXED_SEED), {} clients, {} rounds, contracts {}",
        config.seed, config.clients, config.rounds, config.contracts
    );
    let mut rng = Rng::new(config.seed);
    let world = World {
        config,
        clients: urls.iter().map(|u| client(u)).collect(),
        tag: tag(),
        stewards: (0..3).map(|_| rng.key()).collect(),
        intents: Mutex::new(Vec::new()),
        report: Mutex::new(MixedReport::default()),
        failed: AtomicBool::new(false),
    };
    if config.contracts {
        let source = contract_source(&world.tag, &world.stewards, 0);
        let c = &world.clients[0];
        let expected = contract_in_force(c).expect("GET /v1/contract");
        c.post_json(
            "/v1/contract",
            &deployment(&world.stewards[0], &source, expected).to_json(),
        )
        .expect("deploy the first version");
    }
    let barrier = Barrier::new(config.clients);
    let started = Instant::now();
    thread::scope(|s| {
        for idx in 0..config.clients {
            let mut agent = Agent {
                idx,
                key: rng.key(),
                rng: Rng::new(rng.next_u64()),
                leases: Vec::new(),
                proposed: Vec::new(),
            };
            let (world, barrier) = (&world, &barrier);
            s.spawn(move || {
                for round in 0..world.config.rounds {
                    barrier.wait();
                    if world.failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    agent.step(world, round);
                }
            });
        }
    });
    let report = world.report.into_inner().expect("report");
    eprintln!(
        "mixed scenario (seed {}): {} operations in {:.1?}: {:?}",
        config.seed,
        report.outcomes.values().sum::<u64>(),
        started.elapsed(),
        report.outcomes
    );
    report
}

impl Agent {
    fn client<'w>(&self, world: &'w World) -> &'w Client {
        &world.clients[self.idx % world.clients.len()]
    }

    /// Counts `op`'s outcome; an answer no correct host gives fails the run.
    fn outcome<T>(&self, world: &World, op: &str, round: u64, r: &Result<T, ClientError>) {
        let result = match r {
            Ok(_) => "ok".to_owned(),
            Err(e) => match e.code() {
                Some(code) if LOST_RACE.contains(&code) => code.to_owned(),
                _ => {
                    world.failed.store(true, Ordering::Relaxed);
                    world.report.lock().expect("report").failures.push(format!(
                        "seed {}, client {}, round {round}, {op}: {e}",
                        world.config.seed, self.idx
                    ));
                    "unexpected".to_owned()
                }
            },
        };
        *world
            .report
            .lock()
            .expect("report")
            .outcomes
            .entry(format!("{op}:{result}"))
            .or_default() += 1;
    }

    fn step(&mut self, world: &World, round: u64) {
        let contracts = world.config.contracts;
        match self.rng.below(100) {
            0..14 => self.propose(world, round),
            14..30 => self.claim(world, round, false),
            30..40 => self.claim(world, round, true),
            40..50 => self.renew(world, round),
            50..64 => self.resolve(world, round),
            64..69 => self.withdraw(world, round),
            69..93 => self.hint(world, round),
            93..96 if contracts => self.freeze(world, round),
            96..100 if contracts => self.upgrade(world, round),
            _ => self.propose(world, round),
        }
    }

    fn topic(&mut self, world: &World) -> String {
        format!(
            "mix/{}/t{}/s{}",
            world.tag,
            self.rng.below(TOPICS),
            self.rng.below(SUBTOPICS)
        )
    }

    fn propose(&mut self, world: &World, round: u64) {
        let topic = self.topic(world);
        let body = json!({"lane": self.rng.below(LANES), "by": self.idx, "round": round});
        let intent = builders::propose(&self.key, &topic, body, &[]).expect("intent");
        let r = self.client(world).submit(&intent);
        self.outcome(world, "propose", round, &r);
        if r.is_ok() {
            self.proposed.push(intent.hash());
            world.intents.lock().expect("intents").push(Known {
                hash: intent.hash(),
                topic,
                proposer: self.idx,
                lease: None,
                done: false,
            });
        }
    }

    /// A claim of one of the newest Intents, or (`takeover`) of one whose last lease a
    /// client saw has lapsed (a plain claim when there is none).
    fn claim(&mut self, world: &World, round: u64, takeover: bool) {
        let now = now_ms();
        let target = {
            let intents = world.intents.lock().expect("intents");
            let lapsed: Vec<&Known> = intents
                .iter()
                .filter(|k| !k.done && k.lease.is_some_and(|(_, until)| until < now))
                .collect();
            if takeover && !lapsed.is_empty() {
                Some(lapsed[self.rng.below(lapsed.len() as u64) as usize].hash)
            } else if intents.is_empty() {
                None
            } else {
                let recent = &intents[intents.len().saturating_sub(RECENT)..];
                Some(recent[self.rng.below(recent.len() as u64) as usize].hash)
            }
        };
        let Some(intent) = target else {
            return self.propose(world, round);
        };
        let lease_ms = self.rng.range(1_000, 2_500);
        let claim = builders::claim(
            &self.key,
            &self.client(world).deployment().expect("deployment"),
            intent,
            lease_ms,
        )
        .expect("claim");
        let r = self.client(world).claim(&claim);
        self.outcome(
            world,
            if takeover { "takeover" } else { "claim" },
            round,
            &r,
        );
        if let Ok(lease) = r {
            self.leases.push((intent, lease.token));
            world.report.lock().expect("report").granted.push(Granted {
                intent,
                claim: claim.hash(),
                holder: self.key.author().to_string(),
                token: lease.token,
                takeover: lease.takeover,
            });
            let mut intents = world.intents.lock().expect("intents");
            if let Some(k) = intents.iter_mut().find(|k| k.hash == intent)
                && k.lease.is_none_or(|(t, _)| t < lease.token)
            {
                k.lease = Some((lease.token, lease.lease_until));
            }
        }
    }

    /// One of its leases, at random (None: it holds none).
    fn pick_lease(&mut self) -> Option<(usize, FihHash, u64)> {
        if self.leases.is_empty() {
            return None;
        }
        let i = self.rng.below(self.leases.len() as u64) as usize;
        Some((i, self.leases[i].0, self.leases[i].1))
    }

    fn renew(&mut self, world: &World, round: u64) {
        let Some((i, intent, token)) = self.pick_lease() else {
            return self.claim(world, round, false);
        };
        let lease_ms = self.rng.range(1_000, 2_000);
        let renew = builders::renew(
            &self.key,
            &self.client(world).deployment().expect("deployment"),
            intent,
            token,
            lease_ms,
        )
        .expect("renew");
        let r = self.client(world).renew(&renew);
        self.outcome(world, "renew", round, &r);
        match r {
            Ok(lease) => {
                let mut intents = world.intents.lock().expect("intents");
                if let Some(k) = intents.iter_mut().find(|k| k.hash == intent)
                    && k.lease.is_some_and(|(t, _)| t == lease.token)
                {
                    k.lease = Some((lease.token, lease.lease_until));
                }
            }
            Err(_) => {
                self.leases.swap_remove(i);
            }
        }
    }

    fn resolve(&mut self, world: &World, round: u64) {
        let Some((i, intent, token)) = self.pick_lease() else {
            return self.claim(world, round, false);
        };
        self.leases.swap_remove(i);
        let topic = world
            .intents
            .lock()
            .expect("intents")
            .iter()
            .find(|k| k.hash == intent)
            .map(|k| k.topic.clone())
            .expect("a known intent");
        let body = json!({"by": self.idx, "round": round, "ok": self.rng.chance(3, 4)});
        let fact = builders::fact(&self.key, &topic, body, &[intent], Some((intent, token)))
            .expect("fact");
        let r = self.client(world).submit(&fact);
        self.outcome(world, "resolve", round, &r);
        if r.is_ok() {
            world
                .report
                .lock()
                .expect("report")
                .resolved
                .push(Resolution {
                    intent,
                    fact: fact.hash(),
                    token,
                });
            self.mark_done(world, intent);
        }
    }

    fn mark_done(&self, world: &World, intent: FihHash) {
        let mut intents = world.intents.lock().expect("intents");
        if let Some(k) = intents.iter_mut().find(|k| k.hash == intent) {
            k.done = true;
        }
    }

    fn withdraw(&mut self, world: &World, round: u64) {
        if self.proposed.is_empty() {
            return self.propose(world, round);
        }
        let i = self.rng.below(self.proposed.len() as u64) as usize;
        let intent = self.proposed.swap_remove(i);
        let action = builders::withdraw(
            &self.key,
            &self.client(world).deployment().expect("deployment"),
            intent,
        )
        .expect("withdraw");
        let r = self.client(world).withdraw(&action);
        self.outcome(world, "withdraw", round, &r);
        if r.is_ok() {
            self.mark_done(world, intent);
        }
    }

    /// A deny, allow or priority Hint over a topic (expiring in 0.3–3 s), or over one
    /// subtopic and lane (one in four of them never expires).
    fn hint(&mut self, world: &World, round: u64) {
        let now = now_ms();
        let narrow = self.rng.chance(1, 3);
        let selector = if narrow {
            let topic = self.topic(world);
            builders::selector(Some(&topic), Some(json!({"lane": self.rng.below(LANES)})))
        } else {
            let topic = format!("mix/{}/t{}/**", world.tag, self.rng.below(TOPICS));
            builders::selector(Some(&topic), None)
        }
        .expect("selector");
        let expires =
            (!(narrow && self.rng.chance(1, 4))).then(|| now + self.rng.range(300, 3_000));
        let effect = match self.rng.below(3) {
            0 => Effect::Deny,
            1 => Effect::Allow,
            _ => Effect::Priority(i64::try_from(self.rng.range(0, 15)).expect("small") - 5),
        };
        let reason = format!("mixed: client {} round {round}", self.idx);
        let hint = builders::hint_at(&self.key, selector, effect, &reason, None, expires, now)
            .expect("hint");
        let r = self.client(world).submit(&hint);
        self.outcome(world, "hint", round, &r);
    }

    /// A steward's Fact that makes the contract freeze one topic.
    fn freeze(&mut self, world: &World, round: u64) {
        let steward = &world.stewards[self.rng.below(3) as usize];
        let topic = format!("mix/{}/t{}", world.tag, self.rng.below(TOPICS));
        let fact = builders::fact(
            steward,
            &format!("mix/{}/gov/freeze", world.tag),
            json!({"topic": topic, "by": self.idx, "round": round}),
            &[],
            None,
        )
        .expect("freeze");
        let r = self.client(world).submit(&fact);
        self.outcome(world, "freeze", round, &r);
    }

    /// An upgrade to a new version: two stewards approve it (naming the version in
    /// force), then this client deploys it by compare-and-swap from that version.
    fn upgrade(&mut self, world: &World, round: u64) {
        let c = self.client(world);
        let current = match contract_in_force(c) {
            Ok(h) => h,
            Err(e) => return self.outcome(world, "upgrade", round, &Err::<(), _>(e)),
        };
        let version = round * world.config.clients as u64 + self.idx as u64 + 1;
        let source = contract_source(&world.tag, &world.stewards, version);
        let hash = contract_hash(source.as_bytes());
        let skip = self.rng.below(3) as usize;
        for (i, steward) in world.stewards.iter().enumerate() {
            if i == skip {
                continue;
            }
            let approval = builders::fact(
                steward,
                &format!("mix/{}/gov/upgrade", world.tag),
                json!({"contract": hash, "replaces": current}),
                &[],
                None,
            )
            .expect("approval");
            let r = c.submit(&approval);
            self.outcome(world, "approve", round, &r);
        }
        let r = c.post_json(
            "/v1/contract",
            &deployment(&self.key, &source, current).to_json(),
        );
        self.outcome(world, "upgrade", round, &r);
    }
}

/// What every mixed run must have done at least once (it would not test much
/// otherwise); with contracts, also [`REQUIRED_WITH_CONTRACTS`].
pub const REQUIRED: &[&str] = &[
    "claim:ok",
    "takeover:ok",
    "renew:ok",
    "resolve:ok",
    "withdraw:ok",
    "hint:ok",
];

/// What a mixed run with [`MixedConfig::contracts`] must also have done.
pub const REQUIRED_WITH_CONTRACTS: &[&str] = &["freeze:ok", "approve:ok", "upgrade:ok"];

/// Runs [`mixed`] against `urls`, then [`check_log`] on `urls[0]`, and checks that
/// each operation of [`REQUIRED`] (and, with contracts, [`REQUIRED_WITH_CONTRACTS`])
/// succeeded at least once.
pub fn mixed_replays(urls: &[String], config: &MixedConfig) -> LogCheck {
    let report = mixed(urls, config);
    let check = check_log(&urls[0], &report, config.seed);
    eprintln!("mixed scenario (seed {}): {check:?}", config.seed);
    let contract_ops = if config.contracts {
        REQUIRED_WITH_CONTRACTS
    } else {
        &[]
    };
    for op in REQUIRED.iter().chain(contract_ops) {
        assert!(
            report.outcomes.get(*op).is_some_and(|n| *n > 0),
            "seed {}: no {op} in {:?}",
            config.seed,
            report.outcomes
        );
    }
    check
}

/// What [`check_log`] found, for the test's summary.
#[derive(Debug)]
pub struct LogCheck {
    /// The replay verifier's report.
    pub verified: VerifyReport,
    /// Intents resolved.
    pub resolved: usize,
    /// Claims in the log.
    pub claims: usize,
}

/// Checks the log of `url` after a [`mixed`] run (`seed` only names the run in
/// messages): no failures were seen, the replay verifier passes, no Intent is resolved
/// twice, every lease the clients were granted is in the log with the token the log's
/// order gives it (the k-th committed claim of an Intent holds token k), so no two
/// holders were told the same token, and every resolution they were told of is the
/// log's one resolution of that Intent, with the token it carried.
pub fn check_log(url: &str, report: &MixedReport, seed: u64) -> LogCheck {
    assert!(
        report.failures.is_empty(),
        "seed {seed}: answers no correct host gives:\n{}",
        report.failures.join("\n")
    );
    let export = export(url);
    let verified =
        replay_export(&export).unwrap_or_else(|e| panic!("seed {seed}: verify --replay: {e}"));
    let log = parse_log(&export);
    let mut tokens: HashMap<FihHash, u64> = HashMap::new();
    let mut claim_token: HashMap<FihHash, (FihHash, u64, String)> = HashMap::new();
    let mut resolutions: HashMap<FihHash, (FihHash, u64, u64)> = HashMap::new();
    for (seq, entry) in &log {
        match entry {
            Entry::Action(a) => {
                if let ActionContent::Claim { intent, author, .. } = a.content() {
                    let t = tokens.entry(*intent).or_default();
                    *t += 1;
                    claim_token.insert(a.hash(), (*intent, *t, author.to_string()));
                }
            }
            Entry::Record(r) => {
                if let Content::Fact(f) = r.content()
                    && let Some(res) = &f.resolves
                    && let Some((first, _, at)) =
                        resolutions.insert(res.intent, (r.hash(), res.token, *seq))
                {
                    panic!(
                        "seed {seed}: intent {} resolved twice: by {first} (seq {at}) and by {} \
                         (seq {seq})",
                        res.intent,
                        r.hash()
                    );
                }
            }
        }
    }
    let mut told: HashMap<(FihHash, u64), &Granted> = HashMap::new();
    for g in &report.granted {
        if let Some(other) = told.insert((g.intent, g.token), g) {
            panic!(
                "seed {seed}: two holders were told token {}: {other:?} and {g:?}",
                g.token
            );
        }
        let logged = claim_token.get(&g.claim);
        assert_eq!(
            logged,
            Some(&(g.intent, g.token, g.holder.clone())),
            "seed {seed}: a granted lease and the log disagree: {g:?}"
        );
        assert_eq!(g.takeover, g.token > 1, "seed {seed}: {g:?}");
    }
    let mut seen = HashSet::new();
    for r in &report.resolved {
        assert!(
            seen.insert(r.intent),
            "seed {seed}: two resolutions told: {r:?}"
        );
        let (fact, token, _) = resolutions
            .get(&r.intent)
            .unwrap_or_else(|| panic!("seed {seed}: a resolution missing from the log: {r:?}"));
        assert_eq!((fact, token), (&r.fact, &r.token), "seed {seed}: {r:?}");
    }
    LogCheck {
        verified,
        resolved: resolutions.len(),
        claims: claim_token.len(),
    }
}
