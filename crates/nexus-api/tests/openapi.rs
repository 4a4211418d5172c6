//! The OpenAPI document: valid JSON, OpenAPI 3.1, every route of `spec/api.md`, and
//! identical to the committed `spec/openapi.json` (`NEXUS_BLESS=1` rewrites it).

#![allow(clippy::unwrap_used)]

use serde_json::Value;

use nexus_api::{ErrorCode, Request, Route, openapi_json};

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
    assert_eq!(routes.len(), Route::ALL.len(), "{routes:?}");
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

/// `s` without its parenthesised parts (nested ones too).
fn strip_parens(s: &str) -> String {
    let mut depth = 0usize;
    s.chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => return depth == 0,
            }
            false
        })
        .collect()
}

/// `(status, code)` of every code in the error table of `spec/api.md`.
fn spec_error_codes() -> Vec<(u16, String)> {
    let md = std::fs::read_to_string(format!("{SPEC_DIR}/api.md")).unwrap();
    let table = md.split("\n## Errors\n").nth(1).unwrap();
    let table = table.split("\n## ").next().unwrap();
    let mut codes = vec![];
    for line in table.lines() {
        let Some((status, rest)) = line.strip_prefix("| ").and_then(|l| l.split_once(" | ")) else {
            continue;
        };
        let Ok(status) = status.parse::<u16>() else {
            continue;
        };
        for code in strip_parens(rest).split('`').skip(1).step_by(2) {
            codes.push((status, code.to_owned()));
        }
    }
    codes
}

#[test]
fn the_error_codes_of_spec_api_md_are_the_enum() {
    let mut spec = spec_error_codes();
    let mut ours: Vec<(u16, String)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.status(), c.as_str().to_owned()))
        .collect();
    spec.sort();
    ours.sort();
    assert_eq!(spec, ours, "spec/api.md's error table and ErrorCode differ");
}

#[test]
fn the_openapi_document_lists_the_enum_and_only_its_codes() {
    let doc: Value = serde_json::from_str(&openapi_json()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let code = schemas["ErrorDetail"]["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["properties"].get("code"))
        .expect("ErrorDetail has a code");
    assert_eq!(code["$ref"], "#/components/schemas/ErrorCode");
    let listed: Vec<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, ours);
    // Each error response of each operation names codes of its status.
    let mut named = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let status: u16 = status.parse().unwrap();
                if status < 400 {
                    continue;
                }
                let text = strip_parens(response["description"].as_str().unwrap());
                // "code, code (details), code: why".
                for part in text.split(',') {
                    let word = part.split(':').next().unwrap_or_default().trim();
                    let code = ErrorCode::from_wire(word)
                        .unwrap_or_else(|| panic!("{method} {path} {status}: {word:?}"));
                    assert_eq!(code.status(), status, "{method} {path}: {word}");
                    named += 1;
                }
            }
        }
    }
    assert!(named > 30, "{named}");
}
