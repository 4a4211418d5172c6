//! N coordinator shards (issue 12; spec/shards.md): their configuration, names and
//! stubs, the calls to them, and the resolver's async driver (the coordinator's alarm
//! runs it). What is decided over the shards is decided in `nexus-shard`'s sans-IO
//! machines; this module only performs their calls.
//!
//! Configuration (`[vars]`):
//! - `NEXUS_SHARDS`: the number of coordinator shards, 1 to [`MAX_WORKER_SHARDS`]
//!   (default 1: today's single coordinator, byte for byte);
//! - `NEXUS_SHARD_LOCATIONS`: comma-separated location hints, one per shard (`""` or
//!   a missing entry: none; shard 0's falls back to `NEXUS_DO_LOCATION`);
//! - `NEXUS_LOCK_TTL_MS`: when a cross-shard transaction's lock counts as stalled
//!   (default [`LOCK_TTL_MS`]; tests shorten it).
//!
//! Shard 0 is the object named [`COORDINATOR_NAME`] (today's); shard `i > 0` is named
//! `coordinator/shard/<i>`.

use worker::{Env, Method, ObjectNamespace, Request, RequestInit, Stub};

use nexus_shard::{LOCK_TTL_MS, Lost, Resolution, Resolver, ShardMap, ShardStep};
use nexus_store::{CommitOutcome, StoreError, StoreResult};

use crate::kv::backend;
use crate::protocol::{COMMIT_PATH, CommitReply, CommitRequest, READ_PATH, ReadReply, ReadRequest};
use crate::{COORDINATOR_NAME, DO_BINDING};

/// Most coordinator shards a Worker may be configured with.
pub const MAX_WORKER_SHARDS: usize = 64;
/// Most calls one resolution or sharded read makes before it gives up.
pub const MAX_SHARD_STEPS: usize = 64;

/// A configuration the Worker refuses to run with (answered `500 storage`, naming
/// the variable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {name}={value:?} {why}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub why: &'static str,
}

/// The shards of this deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// The placement over the shards.
    pub map: ShardMap,
    /// Each shard's location hint.
    pub locations: Vec<Option<String>>,
    /// The lock TTL (ms).
    pub lock_ttl_ms: u64,
}

impl ShardConfig {
    /// The configuration from the variables' values (`None`: unset).
    pub fn parse(
        shards: Option<&str>,
        locations: Option<&str>,
        do_location: Option<&str>,
        lock_ttl_ms: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let text = shards
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("1");
        let bad = |why| ConfigError {
            name: "NEXUS_SHARDS",
            value: text.to_owned(),
            why,
        };
        let n: usize = text.parse().map_err(|_| bad("is not a number"))?;
        if !(1..=MAX_WORKER_SHARDS).contains(&n) {
            return Err(bad("is out of range (1..=64)"));
        }
        let map = ShardMap::new(n).map_err(|_| bad("is out of range (1..=64)"))?;
        let hint = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let mut hints: Vec<Option<String>> = locations
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split(',').map(hint).collect())
            .unwrap_or_default();
        if hints.len() > n {
            return Err(ConfigError {
                name: "NEXUS_SHARD_LOCATIONS",
                value: locations.unwrap_or_default().to_owned(),
                why: "names more shards than NEXUS_SHARDS",
            });
        }
        hints.resize(n, None);
        if hints[0].is_none() {
            hints[0] = do_location.and_then(hint);
        }
        let ttl = match lock_ttl_ms.map(str::trim).filter(|s| !s.is_empty()) {
            None => LOCK_TTL_MS,
            Some(t) => t.parse().map_err(|_| ConfigError {
                name: "NEXUS_LOCK_TTL_MS",
                value: t.to_owned(),
                why: "is not a number of milliseconds",
            })?,
        };
        Ok(Self {
            map,
            locations: hints,
            lock_ttl_ms: ttl,
        })
    }

    /// The configuration from the Worker's (or a coordinator's) variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let var = |name: &str| env.var(name).ok().map(|v| v.to_string());
        Self::parse(
            var("NEXUS_SHARDS").as_deref(),
            var("NEXUS_SHARD_LOCATIONS").as_deref(),
            var("NEXUS_DO_LOCATION").as_deref(),
            var("NEXUS_LOCK_TTL_MS").as_deref(),
        )
    }

    /// The number of shards.
    pub fn n(&self) -> usize {
        self.map.shards()
    }

    /// Shard `i`'s stub, created with its location hint (a hint counts only when the
    /// object is first created: spec/shards.md, "Location hints").
    pub fn stub(&self, namespace: &ObjectNamespace, i: usize) -> worker::Result<Stub> {
        let name = shard_name(i);
        match self.locations.get(i).cloned().flatten() {
            Some(hint) => namespace.get_by_name_with_location_hint(&name, &hint),
            None => namespace.get_by_name(&name),
        }
    }

    /// Every shard's stub, shard 0 first.
    pub fn stubs(&self, env: &Env) -> worker::Result<Vec<Stub>> {
        let namespace = env.durable_object(DO_BINDING)?;
        (0..self.n()).map(|i| self.stub(&namespace, i)).collect()
    }
}

/// The object name of shard `i`.
pub fn shard_name(i: usize) -> String {
    if i == 0 {
        COORDINATOR_NAME.to_owned()
    } else {
        format!("{COORDINATOR_NAME}/shard/{i}")
    }
}

/// The shard an object named `name` is (0 for today's name, or an unknown one).
pub fn shard_of_name(name: Option<&str>) -> usize {
    name.and_then(|n| n.strip_prefix(COORDINATOR_NAME))
        .and_then(|rest| rest.strip_prefix("/shard/"))
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
}

/// The header that tells a coordinator which shard it is (sent to shards `i > 0`: an
/// object reached through another Worker may not see its own name).
pub const SHARD_HEADER: &str = "x-nexus-shard";

/// One `POST path` to shard `shard`'s stub with a JSON body, its JSON answer (any
/// status but 200 is an error carrying the body).
pub async fn call_stub<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
    stub: &Stub,
    shard: usize,
    path: &str,
    request: &Q,
) -> StoreResult<A> {
    let body = serde_json::to_string(request).map_err(|e| backend("coordinator", e))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    if shard > 0 {
        let headers = worker::Headers::new();
        headers
            .set(SHARD_HEADER, &shard.to_string())
            .map_err(|e| backend("coordinator", e))?;
        init.with_headers(headers);
    }
    let req = Request::new_with_init(&format!("https://coordinator{path}"), &init)
        .map_err(|e| backend("coordinator", e))?;
    let mut resp = stub
        .fetch_with_request(req)
        .await
        .map_err(|e| backend("coordinator", e))?;
    let bytes = resp.bytes().await.map_err(|e| backend("coordinator", e))?;
    if resp.status_code() != 200 {
        return Err(backend(
            "coordinator",
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| backend("coordinator answer", e))
}

/// `/read` of state keys on shard `shard`'s stub.
pub async fn read_keys(
    stub: &Stub,
    shard: usize,
    keys: Vec<String>,
) -> StoreResult<Vec<Option<Vec<u8>>>> {
    let n = keys.len();
    let req = ReadRequest {
        keys,
        ..ReadRequest::default()
    };
    let reply: ReadReply = call_stub(stub, shard, READ_PATH, &req).await?;
    if reply.values.len() != n {
        return Err(backend(
            "coordinator read",
            "answer does not match the request",
        ));
    }
    Ok(reply.values.into_iter().map(|v| v.map(|h| h.0)).collect())
}

/// `/commit` of a protocol commit on shard `shard`'s stub (its index: none to add).
pub async fn commit_on(
    stub: &Stub,
    shard: usize,
    commit: &nexus_store::Commit,
) -> StoreResult<CommitOutcome> {
    let req = CommitRequest::new(commit);
    let reply: CommitReply = call_stub(stub, shard, COMMIT_PATH, &req).await?;
    Ok(reply.outcome())
}

/// The shard index a coordinator's sweep gives its own shard when it does not know its
/// index: its calls go to the local storage.
pub const THIS_SHARD: usize = usize::MAX;

/// Runs a resolver to its end over the shards' stubs: `local` answers the calls to
/// shard `me` (the coordinator's own storage), `stub(i)` gives the others'.
/// A failed call counts as [`Lost`] (every resolver call is idempotent) and is sent
/// again, at most [`MAX_SHARD_STEPS`] calls in all.
pub async fn run_resolver<L, S>(
    mut r: Resolver,
    me: usize,
    local: &L,
    stub: S,
) -> StoreResult<Resolution>
where
    L: nexus_store::ObjectStore,
    S: Fn(usize) -> worker::Result<Stub>,
{
    for _ in 0..MAX_SHARD_STEPS {
        match r.poll() {
            ShardStep::Done(result) => {
                return result.map_err(|e| StoreError::Backend(e.to_string()));
            }
            ShardStep::Read { shard, keys } => {
                let values = if shard == me {
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    local.get_states(&refs)
                } else {
                    match stub(shard) {
                        Ok(s) => read_keys(&s, shard, keys).await,
                        Err(e) => Err(backend("stub", e)),
                    }
                };
                r.feed_read(shard, values.map_err(|_| Lost));
            }
            ShardStep::Call { shard, commit } => {
                let answer = if shard == me {
                    local.commit(&commit)
                } else {
                    match stub(shard) {
                        Ok(s) => commit_on(&s, shard, &commit).await,
                        Err(e) => Err(backend("stub", e)),
                    }
                };
                r.feed(shard, answer.map_err(|_| Lost));
            }
        }
    }
    Err(StoreError::Backend(format!(
        "resolver gave up after {MAX_SHARD_STEPS} calls"
    )))
}

/// `GET /v1/health`'s answer with the member `shards: n` (the number of coordinator
/// shards); any other answer as it is.
pub fn with_shard_count(mut r: nexus_api::Response, n: usize) -> nexus_api::Response {
    if let Ok(serde_json::Value::Object(mut body)) = serde_json::from_slice(&r.body) {
        body.insert("shards".to_owned(), n.into());
        if let Ok(bytes) = serde_json::to_vec(&body) {
            r.body = bytes;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_config_defaults_to_one_and_refuses_bad_values() {
        let one = ShardConfig::parse(None, None, Some("weur"), None).expect("default");
        assert_eq!(one.n(), 1);
        assert_eq!(one.locations, vec![Some("weur".to_owned())]);
        assert_eq!(one.lock_ttl_ms, LOCK_TTL_MS);
        let four = ShardConfig::parse(Some("4"), Some(",enam,,apac"), Some("weur"), Some("200"))
            .expect("four");
        assert_eq!(four.n(), 4);
        assert_eq!(
            four.locations,
            vec![
                Some("weur".to_owned()),
                Some("enam".to_owned()),
                None,
                Some("apac".to_owned())
            ]
        );
        assert_eq!(four.lock_ttl_ms, 200);
        for bad in ["0", "65", "x", "-1"] {
            let e = ShardConfig::parse(Some(bad), None, None, None).expect_err(bad);
            assert_eq!(e.name, "NEXUS_SHARDS");
        }
        let e = ShardConfig::parse(Some("2"), Some("a,b,c"), None, None).expect_err("3 hints");
        assert_eq!(e.name, "NEXUS_SHARD_LOCATIONS");
        let e = ShardConfig::parse(None, None, None, Some("soon")).expect_err("ttl");
        assert_eq!(e.name, "NEXUS_LOCK_TTL_MS");
    }

    #[test]
    fn shard_names_round_trip() {
        assert_eq!(shard_name(0), "coordinator");
        assert_eq!(shard_name(3), "coordinator/shard/3");
        for i in [0, 1, 63] {
            assert_eq!(shard_of_name(Some(&shard_name(i))), i);
        }
        assert_eq!(shard_of_name(None), 0);
        assert_eq!(shard_of_name(Some("other")), 0);
    }
}
