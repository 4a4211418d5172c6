//! The three systems under load, each behind [`Agent`]: one agent is one thread with
//! one connection (kept alive), walking one Intent at a time through propose → claim →
//! resolve.
//!
//! Equivalent semantics on every target:
//! * **propose** — a new Intent, state `available`, durable when acknowledged;
//! * **claim** — compare-and-swap `available` → `claimed` by this agent, with a lease
//!   and a fencing token; fails if anyone else holds it;
//! * **resolve** — only if still claimed by this agent with that token: state
//!   `resolved` and a Fact stored, atomically.
//!
//! The proposer claims and resolves its own Intent (no cross-agent hand-off): that
//! keeps the cycle count exact and never produces a lost race, so every step is a
//! successful write.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use nexus_client::{Client, KeyFile, builders};
use nexus_core::FihHash;
use serde_json::{Value, json};

/// Lease asked for by every claim (all targets).
pub const LEASE_MS: u64 = 30_000;

/// One agent's connection and its Intent in flight.
pub trait Agent: Send {
    /// Proposes Intent number `n` of this agent.
    fn propose(&mut self, n: u64) -> Result<()>;
    /// Claims the Intent just proposed.
    fn claim(&mut self) -> Result<()>;
    /// Resolves it with a Fact, presenting the claim's fencing token.
    fn resolve(&mut self) -> Result<()>;
}

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A neXus server (`nexus serve`), base URL.
    Nexus(String),
    /// etcd 3.4's v3 JSON gateway, base URL (`http://127.0.0.1:2379`).
    Etcd(String),
    /// PostgreSQL, a libpq-style connection string.
    Postgres(String),
}

impl Target {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Nexus(_) => "nexus",
            Target::Etcd(_) => "etcd",
            Target::Postgres(_) => "postgres",
        }
    }

    /// One-time setup before agents connect (Postgres: the tables).
    pub fn prepare(&self) -> Result<()> {
        match self {
            Target::Postgres(dsn) => pg::prepare(dsn),
            Target::Nexus(url) => {
                Client::new(url)?
                    .health()
                    .with_context(|| format!("neXus at {url} does not answer"))?;
                Ok(())
            }
            Target::Etcd(url) => {
                etcd::Conn::new(url)
                    .post("/v3/kv/range", &json!({"key": B64.encode("health")}))
                    .with_context(|| format!("etcd at {url} does not answer"))?;
                Ok(())
            }
        }
    }

    /// A new agent number `index` of run `run` (its own key / connection).
    pub fn agent(&self, run: &str, index: usize) -> Result<Box<dyn Agent>> {
        Ok(match self {
            Target::Nexus(url) => Box::new(NexusAgent::new(url, index)?),
            Target::Etcd(url) => Box::new(etcd::EtcdAgent::new(url, run, index)?),
            Target::Postgres(dsn) => Box::new(pg::PgAgent::new(dsn, run, index)?),
        })
    }

    /// The neXus log head (for the acknowledged-writes check), `None` elsewhere.
    pub fn log_head(&self) -> Result<Option<u64>> {
        match self {
            Target::Nexus(url) => Ok(Some(Client::new(url)?.health()?.log_head)),
            _ => Ok(None),
        }
    }
}

// ---- neXus ----

/// A neXus agent: its own Ed25519 key; signs every record and action itself.
struct NexusAgent {
    client: Client,
    key: KeyFile,
    index: usize,
    n: u64,
    intent: Option<FihHash>,
    token: Option<u64>,
    /// The server's deployment id; `None`: a server older than wire format v2 (a
    /// baseline binary), whose claims are signed as version 1.
    deployment: Option<nexus_core::Deployment>,
}

/// Commits one Intent on the neXus server at `url` (wakes its event streams).
pub fn poke(url: &str) -> Result<()> {
    let client = Client::new(url)?.with_timeout(Duration::from_secs(30));
    let key = KeyFile::generate()?;
    let record = builders::propose(key.key(), "bench/poke", json!({"poke": true}), &[])?;
    client.submit(&record)?;
    Ok(())
}

impl NexusAgent {
    fn new(url: &str, index: usize) -> Result<Self> {
        let client = Client::new(url)?.with_timeout(Duration::from_secs(60));
        let deployment = match client.health()?.deployment {
            Some(d) => Some(d.parse().context("the server's deployment id")?),
            None => None,
        };
        Ok(Self {
            client,
            key: KeyFile::generate()?,
            index,
            n: 0,
            intent: None,
            token: None,
            deployment,
        })
    }
}

impl Agent for NexusAgent {
    fn propose(&mut self, n: u64) -> Result<()> {
        let record = builders::propose(
            self.key.key(),
            "bench/cycle",
            json!({"agent": self.index, "n": n, "task": "measure"}),
            &[],
        )?;
        let done = self.client.submit(&record)?;
        if done.duplicate {
            bail!("intent {} was already stored", done.hash);
        }
        self.n = n;
        self.intent = Some(record.hash());
        self.token = None;
        Ok(())
    }

    fn claim(&mut self) -> Result<()> {
        let intent = self.intent.context("nothing proposed")?;
        let claim = builders::sign_action(
            self.key.key(),
            nexus_core::ActionContent::Claim {
                intent,
                lease_ms: LEASE_MS,
                author: self.key.author(),
                deployment: self.deployment.clone(),
                time: builders::now_ms(),
            },
        )?;
        let lease = self.client.claim(&claim)?;
        self.token = Some(lease.token);
        Ok(())
    }

    fn resolve(&mut self) -> Result<()> {
        let intent = self.intent.take().context("nothing proposed")?;
        let token = self.token.take().context("nothing claimed")?;
        let fact = builders::fact(
            self.key.key(),
            "bench/cycle",
            json!({"agent": self.index, "n": self.n, "result": 42}),
            &[intent],
            Some((intent, token)),
        )?;
        self.client.submit(&fact)?;
        Ok(())
    }
}

// ---- etcd ----

mod etcd {
    use super::*;

    /// One keep-alive HTTP connection to the v3 JSON gateway.
    pub struct Conn {
        base: String,
        agent: ureq::Agent,
    }

    impl Conn {
        pub fn new(base: &str) -> Self {
            Self {
                base: base.trim_end_matches('/').to_owned(),
                // The same HTTP agent settings as the neXus client's, so that both HTTP
                // peers pay the same client costs.
                agent: nexus_client::http::http_agent(Duration::from_secs(60)),
            }
        }

        pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
            let url = format!("{}{path}", self.base);
            let bytes = serde_json::to_vec(body)?;
            let mut r = self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(&bytes[..])
                .with_context(|| format!("POST {url}"))?;
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string()?;
            if status != 200 {
                bail!("POST {url}: HTTP {status}: {text}");
            }
            Ok(serde_json::from_str(&text)?)
        }
    }

    /// etcd answers int64 as JSON strings.
    fn int(v: &Value) -> Option<i64> {
        match v {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub struct EtcdAgent {
        conn: Conn,
        run: String,
        index: usize,
        lease: i64,
        n: u64,
        holder: String,
        /// The claim's revision: the intent key's mod_revision, used as fencing token.
        token: Option<i64>,
    }

    impl EtcdAgent {
        pub fn new(url: &str, run: &str, index: usize) -> Result<Self> {
            let conn = Conn::new(url);
            // One lease per agent, long enough for any run (granting one per claim
            // would add a round trip per cycle).
            let granted = conn.post("/v3/lease/grant", &json!({"TTL": 3600}))?;
            let lease = int(&granted["ID"]).context("lease grant: no ID")?;
            Ok(Self {
                conn,
                run: run.to_owned(),
                index,
                lease,
                n: 0,
                holder: format!("claimed/{run}-{index}"),
                token: None,
            })
        }

        fn key(&self) -> String {
            B64.encode(format!("intent/{}-{}-{}", self.run, self.index, self.n))
        }
    }

    impl Agent for EtcdAgent {
        fn propose(&mut self, n: u64) -> Result<()> {
            self.n = n;
            self.token = None;
            self.conn.post(
                "/v3/kv/put",
                &json!({"key": self.key(), "value": B64.encode("available")}),
            )?;
            Ok(())
        }

        fn claim(&mut self) -> Result<()> {
            let key = self.key();
            let r = self.conn.post(
                "/v3/kv/txn",
                &json!({
                    "compare": [{"key": key, "result": "EQUAL", "target": "VALUE",
                                 "value": B64.encode("available")}],
                    "success": [{"request_put": {"key": key, "value": B64.encode(&self.holder),
                                                 "lease": self.lease.to_string()}}],
                }),
            )?;
            if r["succeeded"] != Value::Bool(true) {
                bail!("etcd claim lost: {r}");
            }
            self.token = Some(int(&r["header"]["revision"]).context("no revision")?);
            Ok(())
        }

        fn resolve(&mut self) -> Result<()> {
            let token = self.token.take().context("nothing claimed")?;
            let key = self.key();
            let fact = B64.encode(format!("fact/{}-{}-{}", self.run, self.index, self.n));
            let body = json!({"agent": self.index, "n": self.n, "result": 42}).to_string();
            let r = self.conn.post(
                "/v3/kv/txn",
                &json!({
                    "compare": [
                        {"key": key, "result": "EQUAL", "target": "VALUE",
                         "value": B64.encode(&self.holder)},
                        {"key": key, "result": "EQUAL", "target": "MOD",
                         "mod_revision": token.to_string()},
                    ],
                    "success": [
                        {"request_put": {"key": key, "value": B64.encode("resolved")}},
                        {"request_put": {"key": fact, "value": B64.encode(body)}},
                    ],
                }),
            )?;
            if r["succeeded"] != Value::Bool(true) {
                bail!("etcd resolve refused: {r}");
            }
            Ok(())
        }
    }
}

// ---- PostgreSQL ----

mod pg {
    use super::*;
    use postgres::{NoTls, Statement};

    const SCHEMA: &str = "
        CREATE TABLE IF NOT EXISTS intents (
            id text PRIMARY KEY,
            state text NOT NULL,
            holder text,
            token bigint NOT NULL DEFAULT 0,
            lease_until timestamptz,
            body text NOT NULL);
        CREATE TABLE IF NOT EXISTS facts (
            id text PRIMARY KEY,
            intent text NOT NULL REFERENCES intents(id),
            author text NOT NULL,
            body text NOT NULL);";

    pub fn prepare(dsn: &str) -> Result<()> {
        let mut c = postgres::Client::connect(dsn, NoTls)
            .with_context(|| format!("cannot connect to Postgres ({dsn})"))?;
        c.batch_execute(SCHEMA)?;
        let sc: String = c.query_one("SHOW synchronous_commit", &[])?.get(0);
        let fsync: String = c.query_one("SHOW fsync", &[])?.get(0);
        if sc != "on" || fsync != "on" {
            bail!("Postgres must run with fsync=on and synchronous_commit=on (has {fsync}, {sc})");
        }
        Ok(())
    }

    pub struct PgAgent {
        client: postgres::Client,
        insert: Statement,
        claim: Statement,
        resolve: Statement,
        fact: Statement,
        run: String,
        index: usize,
        holder: String,
        n: u64,
        token: Option<i64>,
    }

    impl PgAgent {
        pub fn new(dsn: &str, run: &str, index: usize) -> Result<Self> {
            let mut client = postgres::Client::connect(dsn, NoTls)?;
            let insert = client
                .prepare("INSERT INTO intents (id, state, body) VALUES ($1, 'available', $2)")?;
            let claim = client.prepare(
                "UPDATE intents SET state = 'claimed', holder = $2, token = token + 1, \
                 lease_until = now() + make_interval(secs => $3) \
                 WHERE id = $1 AND state = 'available' RETURNING token",
            )?;
            let resolve = client.prepare(
                "UPDATE intents SET state = 'resolved' \
                 WHERE id = $1 AND state = 'claimed' AND holder = $2 AND token = $3 \
                 AND lease_until > now()",
            )?;
            let fact = client
                .prepare("INSERT INTO facts (id, intent, author, body) VALUES ($1, $2, $3, $4)")?;
            Ok(Self {
                client,
                insert,
                claim,
                resolve,
                fact,
                run: run.to_owned(),
                index,
                holder: format!("{run}-{index}"),
                n: 0,
                token: None,
            })
        }

        fn id(&self) -> String {
            format!("{}-{}-{}", self.run, self.index, self.n)
        }
    }

    impl Agent for PgAgent {
        fn propose(&mut self, n: u64) -> Result<()> {
            self.n = n;
            self.token = None;
            let body = json!({"agent": self.index, "n": n, "task": "measure"}).to_string();
            let id = self.id();
            self.client.execute(&self.insert, &[&id, &body])?;
            Ok(())
        }

        fn claim(&mut self) -> Result<()> {
            let id = self.id();
            let secs = LEASE_MS as f64 / 1000.0;
            let row = self
                .client
                .query_opt(&self.claim, &[&id, &self.holder, &secs])?
                .ok_or_else(|| anyhow!("postgres claim lost: {id} is not available"))?;
            self.token = Some(row.get(0));
            Ok(())
        }

        fn resolve(&mut self) -> Result<()> {
            let token = self.token.take().context("nothing claimed")?;
            let id = self.id();
            let body = json!({"agent": self.index, "n": self.n, "result": 42}).to_string();
            let mut tx = self.client.transaction()?;
            let changed = tx.execute(&self.resolve, &[&id, &self.holder, &token])?;
            if changed != 1 {
                bail!("postgres resolve refused: {id} not claimed by us with token {token}");
            }
            tx.execute(&self.fact, &[&id, &id, &self.holder, &body])?;
            tx.commit()?;
            Ok(())
        }
    }
}
