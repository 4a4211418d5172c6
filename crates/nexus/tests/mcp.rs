//! `nexus mcp` driven by a real MCP client (the official Rust SDK's, `rmcp`), over stdio
//! and over streamable HTTP, against a real `nexus serve` (issue 13, item 1): tools,
//! resources, and notifications when a subscribed resource changes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{NEXUS, Server};
use nexus_client::{KeyFile, builders};
use nexus_core::Effect;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ErrorCode, ReadResourceRequestParams, ResourceContents,
    ResourceUpdatedNotificationParam, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RoleClient, RunningService, ServiceError};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Value, json};

type Mcp = RunningService<RoleClient, ()>;

async fn stdio_client(url: &str, key: &Path) -> Mcp {
    stdio_client_with(url, key, ()).await
}

/// `nexus mcp` on stdio for the server at `url`, signing with `key`.
fn mcp_process(url: &str, key: &Path) -> TokioChildProcess {
    let (url, key) = (url.to_owned(), key.to_owned());
    TokioChildProcess::new(tokio::process::Command::new(NEXUS).configure(move |cmd| {
        cmd.args(["--server", &url, "--key"])
            .arg(&key)
            .arg("mcp")
            .env("NEXUS_LOG", "warn");
    }))
    .expect("spawn nexus mcp")
}

async fn stdio_client_with<H: ClientHandler>(
    url: &str,
    key: &Path,
    handler: H,
) -> RunningService<RoleClient, H> {
    handler
        .serve(mcp_process(url, key))
        .await
        .expect("MCP handshake over stdio")
}

async fn call<H: ClientHandler>(
    mcp: &RunningService<RoleClient, H>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    mcp.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// The structured answer of a successful call.
fn ok(r: CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r.structured_content.expect("structured content")
}

/// The API error object of a failed call.
fn api_error(r: CallToolResult) -> Value {
    assert_eq!(r.is_error, Some(true), "{r:?}");
    r.structured_content.expect("structured error")["error"].clone()
}

/// A fresh open server, its URL, and an agent's key file in the same directory.
fn open_server() -> (tempfile::TempDir, Server, String, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let url = format!("http://{}", server.addr());
    let (_, key_path) = key_file(dir.path(), "agent");
    (dir, server, url, key_path)
}

fn key_file(dir: &Path, name: &str) -> (KeyFile, std::path::PathBuf) {
    let path = dir.join(name);
    let mut key = KeyFile::generate().expect("key");
    key.save(&path, false).expect("save key");
    (key, path)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_proposes_claims_and_resolves_and_sees_conflicts_as_tool_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let url = format!("http://{}", server.addr());
    let (alice, alice_path) = key_file(dir.path(), "alice");
    let (_, bob_path) = key_file(dir.path(), "bob");
    let a = stdio_client(&url, &alice_path).await;
    let b = stdio_client(&url, &bob_path).await;

    let tools: Vec<String> = a
        .list_all_tools()
        .await
        .expect("tools")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for want in [
        "propose_intent",
        "list_intents",
        "claim",
        "renew",
        "withdraw",
        "resolve",
        "submit_fact",
        "get_record",
        "provenance",
        "list_facts",
        "hints",
        "explain_hint",
        "verify_log",
    ] {
        assert!(
            tools.contains(&want.to_owned()),
            "{want} missing from {tools:?}"
        );
    }

    let proposed = ok(call(
        &a,
        "propose_intent",
        json!({"topic": "mcp/work", "body": {"n": 1}}),
    )
    .await);
    let intent = proposed["hash"].as_str().expect("hash").to_owned();
    let listed = ok(call(&b, "list_intents", json!({"topic": "mcp"})).await);
    assert_eq!(
        listed["intents"][0]["intent"]["hash"],
        intent.as_str(),
        "{listed}"
    );

    let lease = ok(call(&a, "claim", json!({"intent": intent, "lease_ms": 30_000})).await);
    let token = lease["token"].as_u64().expect("token");
    // The lost race: a tool error that keeps the API's code and names the holder.
    let lost = api_error(call(&b, "claim", json!({"intent": intent})).await);
    assert_eq!(lost["code"], "already_claimed", "{lost}");
    assert_eq!(lost["holder"], alice.author().to_string(), "{lost}");
    assert!(lost["lease_until"].is_u64(), "{lost}");

    let renewed = ok(call(&a, "renew", json!({"intent": intent, "token": token})).await);
    assert_eq!(renewed["token"], token);
    let resolved = ok(call(
        &a,
        "resolve",
        json!({"intent": intent, "token": token, "body": {"answer": 42}}),
    )
    .await);
    let fact = resolved["hash"].as_str().expect("fact hash").to_owned();
    let record = ok(call(&b, "get_record", json!({"id": fact})).await);
    assert_eq!(
        record["record"]["resolves"]["intent"],
        intent.as_str(),
        "{record}"
    );
    assert_eq!(record["record"]["topic"], "mcp/work");
    let prov = ok(call(&b, "provenance", json!({"id": fact})).await);
    assert!(
        prov["records"].as_array().expect("records").len() >= 2,
        "{prov}"
    );

    // A deny Hint (an operator's; an open server without operators lets every key
    // post one): a proposal under it is a tool error naming the Hint.
    let c = server.client();
    let selector = builders::selector(Some("mcp/denied/**"), None).expect("selector");
    let hint =
        builders::hint(alice.key(), selector, Effect::Deny, "mcp test: closed").expect("hint");
    c.submit_hint(&hint).expect("deny hint");
    let refused = api_error(
        call(
            &b,
            "propose_intent",
            json!({"topic": "mcp/denied/x", "body": 1}),
        )
        .await,
    );
    assert_eq!(refused["code"], "inadmissible", "{refused}");
    assert_eq!(refused["hint"], hint.hash().to_string(), "{refused}");
    let explained = ok(call(&b, "explain_hint", json!({"id": hint.hash().to_string()})).await);
    assert_eq!(explained["hint"]["reason"], "mcp test: closed");

    // Bad arguments are tool errors too, not protocol failures.
    let bad = call(&b, "claim", json!({"intent": "not-a-hash"})).await;
    assert_eq!(bad.is_error, Some(true), "{bad:?}");

    let verified = ok(call(&b, "verify_log", json!({"replay": true})).await);
    assert_eq!(verified["ok"], true, "{verified}");
    a.cancel().await.expect("close a");
    b.cancel().await.expect("close b");
}

struct Child9(Child);
impl Drop for Child9 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nexus mcp --http 127.0.0.1:0` for the server at `url`: the process and its
/// endpoint.
fn http_mcp(url: &str, key_path: &Path) -> (Child9, String) {
    let mut child = Command::new(NEXUS)
        .args(["--server", url, "--key"])
        .arg(key_path)
        .args(["mcp", "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nexus mcp --http");
    let stdout = child.stdout.take().expect("stdout");
    let child = Child9(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("line");
    let endpoint = line
        .trim()
        .strip_prefix("nexus mcp listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, endpoint)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_works_over_streamable_http() {
    let (_dir, _server, url, key_path) = open_server();
    let (child, endpoint) = http_mcp(&url, &key_path);
    let mcp: Mcp =
        ().serve(StreamableHttpClientTransport::from_uri(endpoint))
            .await
            .expect("MCP handshake over HTTP");
    let proposed = ok(call(
        &mcp,
        "propose_intent",
        json!({"topic": "mcp/http", "body": {"n": 2}}),
    )
    .await);
    let intent = proposed["hash"].as_str().expect("hash").to_owned();
    let lease = ok(call(&mcp, "claim", json!({"intent": intent})).await);
    assert_eq!(lease["token"], 1, "{lease}");
    mcp.cancel().await.expect("close");
    drop(child);
}

/// A client that passes on the URIs of `notifications/resources/updated`.
struct Updates(tokio::sync::mpsc::UnboundedSender<String>);

impl ClientHandler for Updates {
    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.uri);
    }
}

type Watching = RunningService<RoleClient, Updates>;

/// The next update, within 20 s.
async fn next_update(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
        .await
        .expect("a notification within 20 s")
        .expect("the client is still running")
}

/// The JSON of a resource read.
async fn read(mcp: &Watching, uri: &str) -> Result<Value, ServiceError> {
    let r = mcp
        .read_resource(ReadResourceRequestParams::new(uri))
        .await?;
    let [ResourceContents::TextResourceContents { text, uri: got, .. }] = r.contents.as_slice()
    else {
        panic!("one text content expected: {r:?}")
    };
    assert_eq!(got, uri);
    Ok(serde_json::from_str(text).expect("JSON"))
}

fn mcp_code(e: ServiceError) -> ErrorCode {
    match e {
        ServiceError::McpError(e) => e.code,
        other => panic!("an MCP error expected, got {other}"),
    }
}

/// Resources over `mcp` (its notifications on `rx`), with `server` the neXus server
/// it talks to: templates, reads, unknown ids, and a subscription to an Intent that
/// another agent claims.
async fn resources_and_subscriptions(
    mcp: &Watching,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    server: &Server,
    dir: &Path,
) {
    let templates: Vec<String> = mcp
        .list_all_resource_templates()
        .await
        .expect("templates")
        .into_iter()
        .map(|t| t.uri_template)
        .collect();
    assert_eq!(
        templates,
        ["nexus://record/{id}", "nexus://intent/{id}"],
        "{templates:?}"
    );
    let listed = mcp.list_all_resources().await.expect("resources");
    assert_eq!(listed[0].uri, "nexus://hints", "{listed:?}");

    let c = server.client();
    let (alice, _) = key_file(dir, "alice-res");
    let (bob, _) = key_file(dir, "bob-res");
    let intent = builders::propose(alice.key(), "mcp/res", json!({"n": 1}), &[]).expect("intent");
    let h = intent.hash().to_string();
    c.submit_intent(&intent).expect("propose");

    let record = read(mcp, &format!("nexus://record/{h}"))
        .await
        .expect("read");
    assert_eq!(record["record"]["hash"], h.as_str(), "{record}");
    assert_eq!(record["kind"], "intent", "{record}");
    let view = read(mcp, &format!("nexus://intent/{}", &h[..12]))
        .await
        .expect("read by prefix");
    assert_eq!(view["intent"]["hash"], h.as_str(), "{view}");
    assert!(view["state"]["holder"].is_null(), "{view}");
    let hints = read(mcp, "nexus://hints").await.expect("hints");
    assert!(hints.is_array(), "{hints}");

    let unknown = format!("nexus://record/{}", "0".repeat(64));
    let e = read(mcp, &unknown).await.expect_err("unknown record");
    assert_eq!(mcp_code(e), ErrorCode::RESOURCE_NOT_FOUND);
    let e = read(mcp, "nexus://nothing/here")
        .await
        .expect_err("unknown kind");
    assert_eq!(mcp_code(e), ErrorCode::RESOURCE_NOT_FOUND);

    // Subscriptions: to records (they never change) and unknown Intents, refused.
    #[allow(deprecated)] // resources/subscribe: the protocol of an initialize handshake
    let subscribe = |uri: String| mcp.subscribe(SubscribeRequestParams::new(uri));
    let e = subscribe(format!("nexus://record/{h}"))
        .await
        .expect_err("a record");
    assert_eq!(mcp_code(e), ErrorCode::INVALID_PARAMS);
    let e = subscribe(format!("nexus://intent/{}", "0".repeat(64)))
        .await
        .expect_err("no such Intent");
    assert_eq!(mcp_code(e), ErrorCode::RESOURCE_NOT_FOUND);
    let uri = format!("nexus://intent/{h}");
    subscribe(uri.clone()).await.expect("subscribe");

    // Another agent claims it: the subscriber is told, and the view shows the holder.
    let dep = c.deployment().expect("deployment");
    let claim = builders::claim(bob.key(), &dep, intent.hash(), 30_000).expect("claim");
    let lease = c.claim(&claim).expect("claimed");
    assert_eq!(next_update(rx).await, uri);
    let view = read(mcp, &uri).await.expect("read");
    assert_eq!(view["state"]["holder"], bob.author().to_string(), "{view}");
    assert_eq!(view["state"]["token"], lease.token, "{view}");

    // Unsubscribed, the resolution is not notified; the Hints' next change is, and it
    // comes after the resolution in the log, so it is the next notification.
    #[allow(deprecated)]
    mcp.unsubscribe(UnsubscribeRequestParams::new(uri.clone()))
        .await
        .expect("unsubscribe");
    subscribe("nexus://hints".into()).await.expect("hints");
    let fact = builders::fact(
        bob.key(),
        "mcp/res",
        json!({"done": true}),
        &[intent.hash()],
        Some((intent.hash(), lease.token)),
    )
    .expect("fact");
    c.submit_fact(&fact).expect("resolve");
    // GET /v1/intents/{id}, which the view reads: resolved now; a Fact is no Intent.
    let state = c.intent(&h).expect("intent").state;
    assert!(
        matches!(state, nexus_core::IntentState::Resolved { fact: f, .. } if f == fact.hash()),
        "{state:?}"
    );
    let e = c.intent(&fact.hash().to_string()).expect_err("a Fact");
    assert_eq!((e.status(), e.code()), (Some(422), Some("wrong_kind")));
    let e = c.intent(&"0".repeat(64)).expect_err("nothing");
    assert_eq!(e.status(), Some(404));
    let selector = builders::selector(Some("mcp/closed/**"), None).expect("selector");
    let hint = builders::hint(alice.key(), selector, Effect::Deny, "closed").expect("hint");
    c.submit_hint(&hint).expect("hint");
    assert_eq!(next_update(rx).await, "nexus://hints");
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_and_subscriptions_over_stdio() {
    let (dir, server, url, key_path) = open_server();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mcp = stdio_client_with(&url, &key_path, Updates(tx)).await;
    resources_and_subscriptions(&mcp, &mut rx, &server, dir.path()).await;
    mcp.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_and_subscriptions_over_streamable_http() {
    let (dir, server, url, key_path) = open_server();
    let (child, endpoint) = http_mcp(&url, &key_path);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mcp = Updates(tx)
        .serve(StreamableHttpClientTransport::from_uri(endpoint))
        .await
        .expect("MCP handshake over HTTP");
    resources_and_subscriptions(&mcp, &mut rx, &server, dir.path()).await;
    mcp.cancel().await.expect("close");
    drop(child);
}

/// Protocol 2026-07-28 (no initialize handshake): `subscriptions/listen` with an
/// Intent's URI is acknowledged with it and gets its update when it is claimed.
#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_listen_notifies_a_claim() {
    use rmcp::model::{ProtocolVersion, ServerNotification, SubscriptionFilter};
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
    let (dir, server, url, key_path) = open_server();
    let transport = mcp_process(&url, &key_path);
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    let mcp = ().serve_with_lifecycle(transport, lifecycle).await.expect("discover");
    let c = server.client();
    let (alice, _) = key_file(dir.path(), "alice-listen");
    let intent = builders::propose(alice.key(), "mcp/listen", json!(1), &[]).expect("intent");
    c.submit_intent(&intent).expect("propose");
    let uri = format!("nexus://intent/{}", intent.hash());
    let mut filter = SubscriptionFilter::new();
    filter.resource_subscriptions = Some(vec![uri.clone(), "nexus://record/x".into()]);
    let mut sub = mcp.listen(filter).await.expect("listen");
    assert_eq!(
        sub.acknowledged().resource_subscriptions,
        Some(vec![uri.clone()])
    );
    let mut next = async || {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), sub.next())
            .await
            .expect("within 20 s")
            .expect("a notification")
            .expect("open");
        let ServerNotification::ResourceUpdatedNotification(n) = n else {
            panic!("{n:?}")
        };
        n.params.uri
    };
    // Once as the listener starts (the acknowledgment came before it)...
    assert_eq!(next().await, uri);
    // ...and then for the claim, which committed after that.
    let dep = c.deployment().expect("deployment");
    let claim = builders::claim(alice.key(), &dep, intent.hash(), 30_000).expect("claim");
    c.claim(&claim).expect("claimed");
    assert_eq!(next().await, uri);
    mcp.cancel().await.expect("close");
}
