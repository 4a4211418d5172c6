//! `nexus mcp`: neXus as tools for LLM agents, over the Model Context Protocol (the
//! official Rust SDK, `rmcp`), on stdio (how agent hosts launch tools) or streamable
//! HTTP (`--http ADDR`, at `/mcp`). It talks to a neXus server (`--server`) and signs
//! with the agent's own key (`--key`), as the CLI does: it is a client, and every rule
//! is the server's.
//!
//! An API error comes back as a tool error whose structured content is the API's
//! error object (`status`, `code`, `message` and its named fields such as `holder`,
//! `lease_until`, `hint` and `reason`), so that a model can act on it.
//!
//! Records, Intents' states and the Hints in force are also resources, and a client
//! may subscribe to the ones that change ([`resources`]).

mod resources;

use std::sync::Arc;

use anyhow::{Context, Result};
use nexus_client::http::{FactQuery, HintItem, IntentItem, IntentQuery, RecordInfo};
use nexus_client::{Client, ClientError, KeyFile, builders};
use nexus_core::FihHash;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, RoleServer, SubscriptionContext};
use rmcp::{ErrorData, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

/// Default lease of a claim made through MCP.
const DEFAULT_LEASE_MS: u64 = 60_000;

/// The MCP server of one session: a neXus client, the key it signs with, the
/// process's change feed and the session's subscriptions.
#[derive(Clone)]
pub struct NexusMcp {
    client: Client,
    key: Arc<KeyFile>,
    changes: Arc<resources::Changes>,
    subscriptions: Arc<resources::Subscriptions>,
}

/// A failure inside a tool, before or after the API answered.
enum Failure {
    /// The API refused: its error object.
    Api(Value),
    /// Anything else (bad arguments, the server unreachable).
    Other(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e.api() {
            // The API's error object as the server sent it: status, code, message and
            // the named fields.
            Some(api) => {
                let mut obj = match &api.details {
                    Value::Object(m) => m.clone(),
                    _ => serde_json::Map::new(),
                };
                obj.insert("status".into(), json!(api.status));
                obj.insert("code".into(), json!(api.code.to_string()));
                obj.insert("message".into(), json!(api.message));
                Failure::Api(Value::Object(obj))
            }
            None => Failure::Other(e.to_string()),
        }
    }
}

impl From<nexus_client::BuildError> for Failure {
    fn from(e: nexus_client::BuildError) -> Self {
        Failure::Other(format!("cannot build the record: {e}"))
    }
}

/// The tool result of `done`: the answer as structured content (and as text), or a
/// tool error with the API's error object.
fn result(done: Result<Value, Failure>) -> CallToolResult {
    match done {
        Ok(v) => CallToolResult::structured(v),
        Err(Failure::Api(e)) => CallToolResult::structured_error(json!({"error": e})),
        Err(Failure::Other(m)) => CallToolResult::error(vec![ContentBlock::text(m)]),
    }
}

fn hash(what: &str, s: &str) -> Result<FihHash, Failure> {
    s.parse()
        .map_err(|e| Failure::Other(format!("{what}: not a record hash (64 hex digits): {e}")))
}

fn hashes(what: &str, v: &[String]) -> Result<Vec<FihHash>, Failure> {
    v.iter().map(|s| hash(what, s)).collect()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, Failure> {
    serde_json::to_value(v).map_err(|e| Failure::Other(format!("cannot encode the answer: {e}")))
}

/// A record as `get_record` and `nexus://record/{id}` answer it.
fn record_json(r: &RecordInfo) -> Value {
    json!({"record": r.record.to_value(), "kind": r.kind, "parents": r.parents})
}

/// An Intent as `list_intents` and `nexus://intent/{id}` answer it.
fn intent_json(i: &IntentItem) -> Value {
    json!({"intent": i.record.to_value(), "state": i.state, "priority": i.priority})
}

/// The Hints in force as `hints` and `nexus://hints` answer them.
fn hints_json(h: &[HintItem]) -> Result<Value, Failure> {
    to_json(&h)
}

/// `propose_intent`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ProposeArgs {
    /// Topic, `/`-separated segments (e.g. `chem/solubility`).
    pub topic: String,
    /// What the work is: any JSON value.
    pub body: Value,
    /// Records this Intent builds on (hashes).
    #[serde(default)]
    pub parents: Vec<String>,
}

/// `list_intents`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ListIntentsArgs {
    /// `available` (default: what can be claimed now), `claimed`, `resolved` or `withdrawn`.
    pub state: Option<String>,
    /// Only under this topic (subtopics included).
    pub topic: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// `next` of the previous page.
    pub cursor: Option<String>,
}

/// `claim`, `withdraw`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct IntentArgs {
    /// The Intent's hash.
    pub intent: String,
    /// Lease in milliseconds (claims only; default 60000).
    pub lease_ms: Option<u64>,
}

/// `renew`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RenewArgs {
    /// The Intent's hash.
    pub intent: String,
    /// The fencing token your claim returned.
    pub token: u64,
    /// New lease in milliseconds from now (default 60000).
    pub lease_ms: Option<u64>,
}

/// `resolve`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ResolveArgs {
    /// The Intent's hash.
    pub intent: String,
    /// The fencing token your claim returned.
    pub token: u64,
    /// The result: any JSON value.
    pub body: Value,
    /// Topic of the Fact (default: the Intent's topic).
    pub topic: Option<String>,
    /// Other records the result builds on (the Intent is always a parent).
    #[serde(default)]
    pub parents: Vec<String>,
}

/// `submit_fact`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FactArgs {
    /// Topic.
    pub topic: String,
    /// The observation: any JSON value.
    pub body: Value,
    /// Records it builds on.
    #[serde(default)]
    pub parents: Vec<String>,
}

/// `get_record`, `provenance`, `explain_hint`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct IdArgs {
    /// A record's hash (or a prefix of at least 8 hex digits).
    pub id: String,
    /// Provenance only: levels above the record (default 16, at most 64).
    pub depth: Option<u32>,
}

/// `list_facts`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ListFactsArgs {
    /// Only under this topic (subtopics included).
    pub topic: Option<String>,
    /// Only Facts at or after this time (ms since the epoch).
    pub since: Option<u64>,
    /// Only Facts before this time (ms since the epoch).
    pub until: Option<u64>,
    /// Page size.
    pub limit: Option<u32>,
    /// `next` of the previous page.
    pub cursor: Option<String>,
}

/// `verify_log`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct VerifyArgs {
    /// Also replay the Intent lifecycle (tokens, leases, admissibility) at each entry's time.
    #[serde(default)]
    pub replay: bool,
}

impl NexusMcp {
    /// A server for `client`, signing with `key`.
    pub fn new(client: Client, key: KeyFile) -> Self {
        Self {
            changes: Arc::new(resources::Changes::new(client.clone())),
            client,
            key: Arc::new(key),
            subscriptions: Arc::default(),
        }
    }

    /// A server for a new session: the same client, key and change feed, no
    /// subscriptions.
    pub fn session(&self) -> Self {
        Self {
            subscriptions: Arc::default(),
            ..self.clone()
        }
    }

    /// Runs `f` on a blocking thread with the client (reads of resources).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Client) -> Result<T, ErrorData> + Send + 'static,
    ) -> Result<T, ErrorData> {
        let client = self.client.clone();
        tokio::task::spawn_blocking(move || f(&client))
            .await
            .unwrap_or_else(|_| Err(ErrorData::internal_error("the read panicked", None)))
    }

    /// Runs `f` on a blocking thread (the client is synchronous) and makes its
    /// outcome the tool's result.
    async fn run(
        &self,
        f: impl FnOnce(&Client, &KeyFile) -> Result<Value, Failure> + Send + 'static,
    ) -> CallToolResult {
        let (client, key) = (self.client.clone(), Arc::clone(&self.key));
        let done = tokio::task::spawn_blocking(move || f(&client, &key))
            .await
            .unwrap_or_else(|_| Err(Failure::Other("the tool panicked".into())));
        result(done)
    }
}

#[tool_router]
impl NexusMcp {
    #[tool(
        description = "Propose a new Intent: a piece of work for some agent to do. \
        Use it to split a problem into tasks others can claim. Answers the Intent's hash \
        (its id) and its position in the log. Refused with code `inadmissible` (naming \
        the Hint and its reason) when a deny Hint in force covers the topic."
    )]
    async fn propose_intent(&self, Parameters(a): Parameters<ProposeArgs>) -> CallToolResult {
        self.run(move |c, k| {
            let parents = hashes("parents", &a.parents)?;
            let rec = builders::propose(k.key(), &a.topic, a.body, &parents)?;
            to_json(&c.submit_intent(&rec)?)
        })
        .await
    }

    #[tool(
        description = "List Intents, highest Hint priority first. Default: the ones \
        available to claim now. Use it to find work; follow `next` for more."
    )]
    async fn list_intents(&self, Parameters(a): Parameters<ListIntentsArgs>) -> CallToolResult {
        self.run(move |c, _| {
            let page = c.intents(&IntentQuery {
                state: Some(a.state.unwrap_or_else(|| "available".into())),
                topic: a.topic,
                limit: a.limit,
                cursor: a.cursor,
            })?;
            let intents: Vec<Value> = page.intents.iter().map(intent_json).collect();
            Ok(json!({"intents": intents, "next": page.next}))
        })
        .await
    }

    #[tool(
        description = "Claim an Intent for yourself with a lease (default 60 s). \
        Answers the fencing token and when the lease ends: pass the token to `renew` \
        and `resolve`. If another agent holds it, this fails with code \
        `already_claimed` naming the holder and its lease end: pick other work, or \
        wait until the lease lapses (then anyone may take it over)."
    )]
    async fn claim(&self, Parameters(a): Parameters<IntentArgs>) -> CallToolResult {
        self.run(move |c, k| {
            let intent = hash("intent", &a.intent)?;
            let dep = c.deployment()?;
            let action = builders::claim(
                k.key(),
                &dep,
                intent,
                a.lease_ms.unwrap_or(DEFAULT_LEASE_MS),
            )?;
            to_json(&c.claim(&action)?)
        })
        .await
    }

    #[tool(
        description = "Extend the lease of an Intent you hold, with your fencing \
        token. Fails with `stale_token` if your claim lapsed and someone took it over: \
        stop working on it."
    )]
    async fn renew(&self, Parameters(a): Parameters<RenewArgs>) -> CallToolResult {
        self.run(move |c, k| {
            let intent = hash("intent", &a.intent)?;
            let dep = c.deployment()?;
            let action = builders::renew(
                k.key(),
                &dep,
                intent,
                a.token,
                a.lease_ms.unwrap_or(DEFAULT_LEASE_MS),
            )?;
            to_json(&c.renew(&action)?)
        })
        .await
    }

    #[tool(
        description = "Withdraw an Intent you proposed (only its proposer may), so \
        nobody works on it any more."
    )]
    async fn withdraw(&self, Parameters(a): Parameters<IntentArgs>) -> CallToolResult {
        self.run(move |c, k| {
            let intent = hash("intent", &a.intent)?;
            let dep = c.deployment()?;
            let action = builders::withdraw(k.key(), &dep, intent)?;
            to_json(&c.withdraw(&action)?)
        })
        .await
    }

    #[tool(
        description = "Resolve an Intent you hold: submit the Fact with its result, \
        with your fencing token. The Intent is then done. Fails with `stale_token` if \
        your lease lapsed and someone else took the Intent over."
    )]
    async fn resolve(&self, Parameters(a): Parameters<ResolveArgs>) -> CallToolResult {
        self.run(move |c, k| {
            let intent = hash("intent", &a.intent)?;
            let topic = match a.topic {
                Some(t) => t,
                None => {
                    let rec = c.record(&a.intent)?.record;
                    rec.content()
                        .topic()
                        .map(ToString::to_string)
                        .ok_or_else(|| Failure::Other(format!("{intent} is not an Intent")))?
                }
            };
            let mut parents = vec![intent];
            parents.extend(hashes("parents", &a.parents)?);
            parents.dedup();
            let rec = builders::fact(k.key(), &topic, a.body, &parents, Some((intent, a.token)))?;
            to_json(&c.submit_fact(&rec)?)
        })
        .await
    }

    #[tool(
        description = "Submit a Fact: an observation or result not tied to a claim \
        (to resolve an Intent you hold, use `resolve`). Facts feed the governance \
        contract, which may emit Hints."
    )]
    async fn submit_fact(&self, Parameters(a): Parameters<FactArgs>) -> CallToolResult {
        self.run(move |c, k| {
            let parents = hashes("parents", &a.parents)?;
            let rec = builders::fact(k.key(), &a.topic, a.body, &parents, None)?;
            to_json(&c.submit_fact(&rec)?)
        })
        .await
    }

    #[tool(
        description = "Get one record (Intent, Fact or Hint) by hash, verified, with \
        its parents."
    )]
    async fn get_record(&self, Parameters(a): Parameters<IdArgs>) -> CallToolResult {
        self.run(move |c, _| Ok(record_json(&c.record(&a.id)?)))
            .await
    }

    #[tool(
        description = "The provenance of a record: the records it builds on, level \
        by level (breadth first), every one verified."
    )]
    async fn provenance(&self, Parameters(a): Parameters<IdArgs>) -> CallToolResult {
        self.run(move |c, _| {
            let p = c.provenance(&a.id, a.depth)?;
            let records: Vec<Value> = p.records.iter().map(|r| r.to_value()).collect();
            Ok(json!({"root": p.root, "records": records}))
        })
        .await
    }

    #[tool(
        description = "List Facts, oldest first, by topic and time. Follow `next` \
        for more."
    )]
    async fn list_facts(&self, Parameters(a): Parameters<ListFactsArgs>) -> CallToolResult {
        self.run(move |c, _| {
            let page = c.facts(&FactQuery {
                topic: a.topic,
                since: a.since,
                until: a.until,
                limit: a.limit,
                cursor: a.cursor,
            })?;
            let facts: Vec<Value> = page.facts.iter().map(|f| f.to_value()).collect();
            Ok(json!({"facts": facts, "next": page.next}))
        })
        .await
    }

    #[tool(
        description = "The Hints in force (deny, allow, priority), which decide \
        which Intents may be proposed and claimed and in what order."
    )]
    async fn hints(&self) -> CallToolResult {
        self.run(move |c, _| hints_json(&c.hints()?)).await
    }

    #[tool(
        description = "Explain a Hint: who made it, and for a contract's Hint the \
        rule and the Facts that triggered it. Use it to understand an `inadmissible` \
        refusal."
    )]
    async fn explain_hint(&self, Parameters(a): Parameters<IdArgs>) -> CallToolResult {
        self.run(move |c, _| {
            let rec = c.record(&a.id)?.record;
            let nexus_core::Content::Hint(hint) = rec.content() else {
                return Err(Failure::Other(format!("{} is not a Hint", rec.hash())));
            };
            let mut facts = Vec::new();
            if let Some(source) = &hint.source {
                for f in &source.facts {
                    facts.push(c.record(&f.to_hex())?.record.to_value());
                }
            }
            Ok(json!({"hint": rec.to_value(), "source_facts": facts}))
        })
        .await
    }

    #[tool(
        description = "Verify the server's whole commit log offline: every hash, \
        signature, link and sequence number (with `replay`, also tokens, leases and \
        admissibility). Answers the counts, or the first bad entry."
    )]
    async fn verify_log(&self, Parameters(a): Parameters<VerifyArgs>) -> CallToolResult {
        self.run(move |c, _| {
            let mut export = Vec::new();
            let entries: Vec<Value> = c.log_entries(1).collect::<Result<_, _>>()?;
            for e in &entries {
                export.extend_from_slice(e.to_string().as_bytes());
                export.push(b'\n');
            }
            let options = nexus_client::VerifyOptions {
                replay: a.replay,
                ..Default::default()
            };
            match nexus_client::verify_export_with(export.as_slice(), &options, |_| {}) {
                Ok(r) => Ok(json!({"ok": true, "entries": r.lines, "records": r.records,
                    "actions": r.actions, "head": r.head})),
                Err(e) => Ok(json!({"ok": false, "line": e.line, "seq": e.seq,
                    "hash": e.hash.map(|h| h.to_hex()), "problem": e.problem.to_string()})),
            }
        })
        .await
    }
}

#[tool_handler]
impl ServerHandler for NexusMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        ServerConfig::new(capabilities).with_instructions(
            "neXus is a shared blackboard where agents divide work. Find work with \
             list_intents, claim one (you get a fencing token and a lease), do it, and \
             resolve it with your result; renew the lease if the work takes longer. \
             Propose new Intents for work you discover. A conflict means another agent \
             holds the Intent: pick another. Deny Hints (see hints, explain_hint) make \
             some topics inadmissible. Resources: nexus://record/{id} (a record), \
             nexus://intent/{id} (an Intent's state; subscribe to hear when it is \
             claimed or resolved) and nexus://hints.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        self.blocking(move |c| resources::read(c, &uri))
            .await
            .map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let uri = request.uri;
        let changes = Arc::clone(&self.changes);
        let (key, rx) = self
            .blocking(move |c| {
                let key = resources::subscription_key(c, &uri)?;
                Ok(((key, uri), changes.receiver()?))
            })
            .await?;
        self.subscriptions.add(key.0, key.1)?;
        self.subscriptions.forward(rx, context.peer);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let uri = request.uri;
        // The key of an Intent named by a prefix needs a read; if that fails, the
        // subscription is found by the URI it was made with.
        let key = self
            .blocking({
                let uri = uri.clone();
                move |c| resources::subscription_key(c, &uri)
            })
            .await
            .ok();
        self.subscriptions.remove(key.as_deref(), &uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let uris = resources::listenable(requested.resource_subscriptions.as_deref()?);
        let mut filter = SubscriptionFilter::new();
        filter.resource_subscriptions = Some(uris);
        Some(filter)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let accepted = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let changes = Arc::clone(&self.changes);
        let mut rx = self.blocking(move |_| changes.receiver()).await?;
        // The SDK acknowledges a listen before it calls this, so an entry may commit
        // between the acknowledgment and the receiver above. Each accepted view is
        // therefore notified once now, after the receiver exists: a client that reads
        // it on that notification sees every change since, and every later change
        // notifies again.
        for uri in &accepted {
            if context
                .sink()
                .notify_resource_updated(uri.clone())
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        loop {
            let change = tokio::select! {
                () = context.cancelled() => return Ok(()),
                c = rx.recv() => match c {
                    Ok(c) => c,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
            };
            for uri in resources::touched_of(&accepted, &change) {
                if context.sink().notify_resource_updated(uri).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// `nexus mcp [--http ADDR]`: serves until stdin closes (stdio) or until interrupted
/// (HTTP).
pub fn run(client: Client, key: KeyFile, http: Option<std::net::SocketAddr>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = NexusMcp::new(client, key);
        match http {
            None => {
                let service = server
                    .serve(rmcp::transport::stdio())
                    .await
                    .context("MCP over stdio failed to start")?;
                service.waiting().await.context("MCP over stdio")?;
            }
            Some(addr) => {
                use rmcp::transport::streamable_http_server::{
                    StreamableHttpServerConfig, StreamableHttpService,
                    session::local::LocalSessionManager,
                };
                let service = StreamableHttpService::new(
                    move || Ok(server.session()),
                    Arc::new(LocalSessionManager::default()),
                    StreamableHttpServerConfig::default(),
                );
                let router = axum::Router::new().nest_service("/mcp", service);
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let local = listener.local_addr().context("listener has no address")?;
                println!("nexus mcp listening on http://{local}/mcp");
                axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await
                    .context("MCP over HTTP")?;
            }
        }
        anyhow::Ok(())
    })
}
