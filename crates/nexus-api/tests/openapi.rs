//! The OpenAPI document: valid JSON, OpenAPI 3.1, every route of `spec/api.md`, and
//! identical to the committed `spec/openapi.json` (`NEXUS_BLESS=1` rewrites it).

#![allow(clippy::unwrap_used)]

use serde_json::Value;

use nexus_api::{Request, Route, openapi_json};

const SPEC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec");

/// `(method, path)` of every route in the tables of `spec/api.md`.
fn spec_routes() -> Vec<(String, String)> {
    let md = std::fs::read_to_string(format!("{SPEC_DIR}/api.md")).unwrap();
    md.lines()
        .filter_map(|line| {
            let cell = line.strip_prefix("| `")?;
            let (route, _) = cell.split_once('`')?;
            let (method, path) = route.split_once(' ')?;
            if !matches!(method, "GET" | "POST") {
                return None;
            }
            let path = path.split('?').next()?;
            Some((method.to_owned(), path.to_owned()))
        })
        .collect()
}

#[test]
fn document_is_openapi_31_and_lists_every_route() {
    let doc: Value = serde_json::from_str(&openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = spec_routes();
    assert_eq!(routes.len(), 18, "{routes:?}");
    for (method, path) in &routes {
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
        assert!(op["responses"]["200"].is_object() || op["responses"]["201"].is_object());
    }
    // The API's own route table agrees with the spec.
    for r in Route::ALL {
        assert!(
            routes.contains(&(r.method().to_owned(), r.template().to_owned())),
            "{r} is not in spec/api.md"
        );
    }
    for name in [
        "Created",
        "ErrorBody",
        "Record",
        "Action",
        "IntentList",
        "LogBody",
    ] {
        assert!(
            doc["components"]["schemas"].get(name).is_some()
                || doc["components"]["schemas"]
                    .as_object()
                    .unwrap()
                    .values()
                    .any(|s| s["title"] == name),
            "schema {name} missing"
        );
    }
}

#[test]
fn document_is_stable_and_matches_spec_openapi_json() {
    let doc = openapi_json();
    assert_eq!(doc, openapi_json());
    let path = format!("{SPEC_DIR}/openapi.json");
    if std::env::var_os("NEXUS_BLESS").is_some() {
        std::fs::write(&path, &doc).unwrap();
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run with NEXUS_BLESS=1 to write it)"));
    assert!(
        committed == doc,
        "spec/openapi.json differs from the generated document; run \
         `NEXUS_BLESS=1 cargo test -p nexus-api --test openapi` and review the diff"
    );
}

#[test]
fn the_served_document_is_the_generated_one() {
    let api = nexus_api::Api::default();
    let r = api.run_sync(
        &nexus_store::MemoryStore::new(),
        &Request::new("GET", "/v1/openapi.json", vec![]),
        0,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    assert_eq!(String::from_utf8(r.body).unwrap(), openapi_json());
}
