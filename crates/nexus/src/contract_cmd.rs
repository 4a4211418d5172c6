//! `nexus contract check|deploy|show` and `nexus hints [--explain ID]`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use nexus_client::builders;
use nexus_client::{Client, ClientError, ErrorCode};
use nexus_contract::Contract;
use nexus_contract::governance::DEPLOY_TOPIC;
use nexus_core::{Content, FihHash, Record};
use serde_json::{Value, json};

use crate::Global;
use crate::cli::{client, describe_record, fmt_time, load_key, out, short};

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// `nexus contract check FILE`: parses and checks locally; every problem is printed as
/// `FILE:LINE:COLUMN: message`. Answers whether it passed.
pub fn check(g: &Global, file: &Path) -> Result<bool> {
    let src = read(file)?;
    let name = file.display().to_string();
    match Contract::parse(&name, &src) {
        Ok(c) => {
            out(
                g,
                json!({"ok": true, "name": c.name(), "hash": c.hash(), "rules": c.rules().iter().map(|r| r.name.clone()).collect::<Vec<_>>()}),
                || {
                    format!(
                        "ok: contract {:?} ({} rules), hash {}",
                        c.name(),
                        c.rules().len(),
                        c.hash()
                    )
                },
            );
            Ok(true)
        }
        Err(errs) => {
            if g.json {
                let list: Vec<Value> = errs
                    .0
                    .iter()
                    .map(|e| json!({"file": e.file, "line": e.line, "column": e.column, "message": e.message}))
                    .collect();
                say!("{}", json!({"ok": false, "errors": list}));
            } else {
                for e in &errs.0 {
                    eprintln!("{e}");
                }
                eprintln!("{} problem(s): not deployable", errs.0.len());
            }
            Ok(false)
        }
    }
}

/// The hash of the contract in force (`None`: none deployed).
pub(crate) fn current_hash(c: &Client) -> Result<Option<FihHash>> {
    match c.get_json("/v1/contract") {
        Ok((_, v)) => Ok(v["hash"].as_str().and_then(|h| h.parse().ok())),
        Err(e) if e.error_code() == Some(ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sends a deployment of `src` signed by `key`, expecting `expected` in force: the
/// server's answer (`version`, `hash`, `previous`, `duplicate`).
pub(crate) fn post_deployment(
    c: &Client,
    key: &nexus_core::SigningKey,
    src: &str,
    expected: Option<FihHash>,
) -> Result<serde_json::Value> {
    let rec = builders::fact(
        key,
        DEPLOY_TOPIC,
        json!({"source": src, "expected": expected.map(|h| h.to_hex())}),
        &[],
        None,
    )?;
    let (_, v) = c
        .post_json("/v1/contract", &rec.to_json())
        .context("deployment refused")?;
    Ok(v)
}

/// `nexus contract deploy FILE [--expect HASH|none]`.
pub fn deploy(g: &Global, file: &Path, expect: Option<&str>) -> Result<()> {
    let src = read(file)?;
    let contract = Contract::parse(&file.display().to_string(), &src)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the contract does not check; nothing was sent")?;
    let c = client(g)?;
    let expected = match expect {
        Some("none") => None,
        Some(h) => Some(
            h.parse::<FihHash>()
                .context("--expect takes a contract hash or `none`")?,
        ),
        None => current_hash(&c)?,
    };
    let key = load_key(g)?;
    let v = post_deployment(&c, key.key(), &src, expected)?;
    out(g, v.clone(), || {
        format!(
            "deployed contract {:?} version {} ({}){}\n  replaces {}",
            contract.name(),
            v["version"],
            v["hash"].as_str().unwrap_or_default(),
            if v["duplicate"] == true {
                " (already deployed)"
            } else {
                ""
            },
            v["previous"].as_str().unwrap_or("nothing"),
        )
    });
    Ok(())
}

/// `nexus contract show [--history]`.
pub fn show(g: &Global, history: bool) -> Result<()> {
    let c = client(g)?;
    if history {
        let (_, v) = c.get_json("/v1/contract/history")?;
        out(g, v.clone(), || {
            let versions = v["versions"].as_array().cloned().unwrap_or_default();
            if versions.is_empty() {
                return "no contract was ever deployed".into();
            }
            let mut s =
                String::from("version  deployed                  hash          name  (deployer)");
            for e in versions {
                s.push_str(&format!(
                    "\n{:>7}  {}  {}  {}  ({}){}",
                    e["version"],
                    fmt_time(e["at"].as_u64().unwrap_or(0)),
                    e["hash"]
                        .as_str()
                        .unwrap_or_default()
                        .get(..12)
                        .unwrap_or_default(),
                    e["name"].as_str().unwrap_or_default(),
                    e["deployer"]
                        .as_str()
                        .unwrap_or_default()
                        .get(..12)
                        .unwrap_or_default(),
                    match e["approvals"].as_array().map(Vec::len) {
                        Some(n) if n > 0 => format!(", {n} approvals"),
                        _ => String::new(),
                    }
                ));
            }
            s
        });
        return Ok(());
    }
    match c.get_json("/v1/contract") {
        Ok((_, v)) => out(g, v.clone(), || {
            format!(
                "contract {:?} version {} ({})\n\n{}",
                v["name"].as_str().unwrap_or_default(),
                v["version"],
                v["hash"].as_str().unwrap_or_default(),
                v["source"].as_str().unwrap_or_default().trim_end()
            )
        }),
        Err(e) if e.error_code() == Some(ErrorCode::NotFound) => {
            out(g, json!({"contract": null}), || {
                "no contract is deployed".into()
            })
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn fetch(c: &Client, id: &str) -> Result<Record, ClientError> {
    c.record(id).map(|r| r.record)
}

/// `nexus hints --explain ID`: the Hint, the rule that emitted it and the Facts behind it.
pub fn explain(g: &Global, id: &str) -> Result<()> {
    let c = client(g)?;
    let rec = fetch(&c, id).with_context(|| format!("cannot fetch hint {id}"))?;
    let Content::Hint(hint) = rec.content() else {
        bail!("{} is a {}, not a hint", rec.hash(), rec.content().kind());
    };
    let Some(source) = &hint.source else {
        out(g, json!({"hint": rec.to_value(), "source": null}), || {
            format!(
                "{}\n  inserted directly by {} (no contract rule)",
                describe_record(&rec),
                hint.author
            )
        });
        return Ok(());
    };
    let mut facts = Vec::new();
    for f in &source.facts {
        facts.push(fetch(&c, &f.to_hex()).with_context(|| format!("cannot fetch fact {f}"))?);
    }
    // The rule's text, when the emitting contract is the one in force.
    let contract = match c.get_json("/v1/contract") {
        Ok((_, v)) => Some(v),
        Err(e) if e.error_code() == Some(ErrorCode::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let in_force = contract
        .as_ref()
        .is_some_and(|v| v["hash"].as_str() == source.contract.map(|h| h.to_hex()).as_deref());
    let rule = if in_force {
        contract
            .as_ref()
            .and_then(|v| v["source"].as_str())
            .and_then(|s| Contract::parse("contract.nex", s).ok())
            .and_then(|parsed| {
                let name = source.rule.as_deref()?;
                parsed.rules().iter().find(|r| r.name == name).map(|r| {
                    json!({
                        "name": r.name, "topic": r.topic.as_str(), "where": r.where_source,
                        "group": r.group_source, "threshold": r.threshold, "within_ms": r.within_ms,
                    })
                })
            })
    } else {
        None
    };
    let doc = json!({
        "hint": rec.to_value(),
        "contract": source.contract,
        "in_force": in_force,
        "rule": rule.clone().unwrap_or_else(|| json!({"name": source.rule})),
        "facts": facts.iter().map(Record::to_value).collect::<Vec<_>>(),
    });
    out(g, doc, || {
        let mut s = format!(
            "hint {}\n  {} — {}\n  emitted by rule {:?} of contract {}{}",
            rec.hash(),
            match hint.effect {
                nexus_core::Effect::Deny => "deny".to_owned(),
                nexus_core::Effect::Allow => "allow".to_owned(),
                nexus_core::Effect::Priority(p) => format!("priority {p:+}"),
            },
            hint.reason,
            source.rule.as_deref().unwrap_or("?"),
            source.contract.map(|h| h.to_hex()).unwrap_or_default(),
            if in_force {
                " (in force)"
            } else {
                " (no longer in force)"
            }
        );
        if let Some(r) = &rule {
            s.push_str(&format!(
                "\n  rule: topic {}{}{}, threshold {}{}",
                r["topic"].as_str().unwrap_or_default(),
                r["where"]
                    .as_str()
                    .map(|w| format!(", where `{w}`"))
                    .unwrap_or_default(),
                r["group"]
                    .as_str()
                    .map(|w| format!(", group by `{w}`"))
                    .unwrap_or_default(),
                r["threshold"],
                r["within_ms"]
                    .as_u64()
                    .map(|w| format!(" within {}", crate::cli::fmt_duration(w)))
                    .unwrap_or_default(),
            ));
        }
        s.push_str(&format!("\n  because of {} fact(s):", facts.len()));
        for f in &facts {
            if let Content::Fact(fact) = f.content() {
                s.push_str(&format!(
                    "\n    {}  {}  {}  {}  by {}",
                    short(&f.hash()),
                    fmt_time(fact.time),
                    fact.topic,
                    fact.body,
                    short(&fact.author)
                ));
            }
        }
        s
    });
    Ok(())
}
