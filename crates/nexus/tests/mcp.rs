//! `nexus mcp` driven by a real MCP client (the official Rust SDK's, `rmcp`), over stdio
//! and over streamable HTTP, against a real `nexus serve` (issue 13, item 1).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{NEXUS, Server};
use nexus_client::{KeyFile, builders};
use nexus_core::Effect;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{Value, json};

type Mcp = RunningService<RoleClient, ()>;

async fn stdio_client(url: &str, key: &Path) -> Mcp {
    let (url, key) = (url.to_owned(), key.to_owned());
    let transport =
        TokioChildProcess::new(tokio::process::Command::new(NEXUS).configure(move |cmd| {
            cmd.args(["--server", &url, "--key"])
                .arg(&key)
                .arg("mcp")
                .env("NEXUS_LOG", "warn");
        }))
        .expect("spawn nexus mcp");
    ().serve(transport).await.expect("MCP handshake over stdio")
}

async fn call(mcp: &Mcp, tool: &str, args: Value) -> CallToolResult {
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

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_works_over_streamable_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), true);
    let url = format!("http://{}", server.addr());
    let (_, key_path) = key_file(dir.path(), "agent");
    let mut child = Command::new(NEXUS)
        .args(["--server", &url, "--key"])
        .arg(&key_path)
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
