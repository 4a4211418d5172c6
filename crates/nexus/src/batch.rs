//! `nexus batch PLAN`: several writes, signed here with `--key`, committed by the server
//! in one atomic commit (`POST /v1/batch`, spec/api.md "Batches").
//!
//! The plan is JSON lines (blank lines and `#` comments skipped) or one JSON array, one
//! step per item:
//!
//! ```text
//! {"propose": {"topic": "chem/x", "body": {...}, "parents": ["@0", "9f0c1a2b"]}}
//! {"fact": {"topic": "chem/x", "body": {...}, "parents": [...], "resolves": "@0", "token": 1}}
//! {"claim": {"intent": "@0", "lease": "30s"}}
//! {"renew": {"intent": "9f0c1a2b", "token": 1, "lease": "30s"}}
//! {"withdraw": {"intent": "9f0c1a2b"}}
//! {"record": <a signed record>}      {"action": <a signed action>}
//! ```
//!
//! An id is a full hash, a prefix (≥ 8 hex digits, resolved by the server), or `@N`: the
//! record of step N (from 0) of this plan — so a plan can propose an Intent and claim
//! it, or resolve an Intent and propose follow-ups that derive from its Fact.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use nexus_client::builders;
use nexus_client::http::{BatchItem, BatchResult};
use nexus_client::{Client, KeyFile};
use nexus_core::{Action, Deployment, FihHash, Limits, Record};

use crate::Global;
use crate::cli::{client, load_key, out, parse_duration, resolve};

/// Most steps of one plan: the server's limit per batch.
const MAX_STEPS: usize = nexus_api::MAX_BATCH_ITEMS;

/// Reads the plan at `path` (`-`: standard input), signs it and commits it.
pub fn run(g: &Global, path: &Path) -> Result<()> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the plan from standard input")?;
        s
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the plan {}", path.display()))?
    };
    let steps = parse_plan(&text)?;
    let c = client(g)?;
    let mut signer = Signer {
        c: &c,
        key: None,
        g,
        deployment: None,
        made: Vec::new(),
    };
    let mut items = Vec::with_capacity(steps.len());
    for (n, step) in steps.iter().enumerate() {
        let item = signer
            .item(step)
            .with_context(|| format!("step {n} of the plan: {step}"))?;
        signer.made.push(match &item {
            BatchItem::Record(r) => Some(r.hash()),
            BatchItem::Action(_) => None,
        });
        items.push(item);
    }
    let results = c.batch(&items).map_err(|e| {
        let step = e.api().and_then(|a| a.detail("item")).cloned();
        let e = anyhow::Error::new(e);
        match step {
            Some(n) => e.context(format!("the batch failed at step {n}; nothing was stored")),
            None => e.context("the batch failed; nothing was stored"),
        }
    })?;
    out(g, json!({ "results": results }), || {
        let mut lines = vec![format!(
            "{} step{} committed in one commit",
            results.len(),
            if results.len() == 1 { "" } else { "s" }
        )];
        lines.extend(results.iter().enumerate().map(|(n, r)| describe(n, r)));
        lines.join("\n")
    });
    Ok(())
}

/// The plan's steps: a JSON array, or JSON lines.
fn parse_plan(text: &str) -> Result<Vec<Value>> {
    let trimmed = text.trim_start();
    let steps: Vec<Value> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).context("the plan is not a JSON array of steps")?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("line {} of the plan is not JSON", i + 1))
            })
            .collect::<Result<_>>()?
    };
    if steps.is_empty() {
        bail!("the plan has no steps");
    }
    if steps.len() > MAX_STEPS {
        bail!(
            "the plan has {} steps; a batch holds at most {MAX_STEPS}",
            steps.len()
        );
    }
    Ok(steps)
}

/// Signs steps, resolving ids.
struct Signer<'a> {
    c: &'a Client,
    key: Option<KeyFile>,
    g: &'a Global,
    deployment: Option<Deployment>,
    /// The record hash of each step so far (`None` for an action).
    made: Vec<Option<FihHash>>,
}

impl Signer<'_> {
    fn key(&mut self) -> Result<&KeyFile> {
        if self.key.is_none() {
            self.key = Some(load_key(self.g)?);
        }
        self.key.as_ref().context("no key")
    }

    fn deployment(&mut self) -> Result<Deployment> {
        if self.deployment.is_none() {
            self.deployment = Some(self.c.deployment()?);
        }
        self.deployment.clone().context("no deployment")
    }

    /// A full hash from `@N`, a full hash or a prefix.
    fn id(&self, v: &Value) -> Result<FihHash> {
        let s = v.as_str().context("an id is a string")?;
        if let Some(n) = s.strip_prefix('@') {
            let n: usize = n.parse().with_context(|| format!("{s:?} is not @<step>"))?;
            return match self.made.get(n) {
                Some(Some(h)) => Ok(*h),
                Some(None) => bail!("{s}: step {n} is an action, not a record"),
                None => bail!("{s}: a step may name only the steps before it"),
            };
        }
        resolve(self.c, s)
    }

    fn item(&mut self, step: &Value) -> Result<BatchItem> {
        let Some((verb, args)) = step
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            bail!(
                "a step is an object with one member: propose, fact, claim, renew, withdraw, record or action"
            );
        };
        let empty = Map::new();
        let a = args.as_object().unwrap_or(&empty);
        let text = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
        let lease = |a: &Map<String, Value>| -> Result<u64> {
            match a.get("lease") {
                None => Ok(30_000),
                Some(Value::Number(n)) => n.as_u64().context("lease is whole ms"),
                Some(Value::String(s)) => parse_duration(s).map_err(anyhow::Error::msg),
                Some(_) => bail!("lease is a duration (\"30s\") or ms"),
            }
        };
        let parents = |s: &Self| -> Result<Vec<FihHash>> {
            match a.get("parents") {
                None => Ok(vec![]),
                Some(Value::Array(ps)) => ps.iter().map(|p| s.id(p)).collect(),
                Some(_) => bail!("parents is an array of ids"),
            }
        };
        let body = a.get("body").cloned().unwrap_or_else(|| json!({}));
        Ok(match verb.as_str() {
            "propose" => {
                let topic = text("topic").context("propose needs a topic")?;
                let parents = parents(self)?;
                BatchItem::Record(builders::propose(
                    self.key()?.key(),
                    &topic,
                    body,
                    &parents,
                )?)
            }
            "fact" => {
                let topic = text("topic").context("a fact needs a topic")?;
                let parents = parents(self)?;
                let resolves = match (a.get("resolves"), a.get("token")) {
                    (Some(id), Some(t)) => {
                        Some((self.id(id)?, t.as_u64().context("token is a whole number")?))
                    }
                    (None, None) => None,
                    _ => bail!("resolves and token go together"),
                };
                BatchItem::Record(builders::fact(
                    self.key()?.key(),
                    &topic,
                    body,
                    &parents,
                    resolves,
                )?)
            }
            "claim" => {
                let intent = self.id(a.get("intent").context("claim needs an intent")?)?;
                let (d, ms) = (self.deployment()?, lease(a)?);
                BatchItem::Action(builders::claim(self.key()?.key(), &d, intent, ms)?)
            }
            "renew" => {
                let intent = self.id(a.get("intent").context("renew needs an intent")?)?;
                let token = a
                    .get("token")
                    .and_then(Value::as_u64)
                    .context("renew needs its claim's token")?;
                let (d, ms) = (self.deployment()?, lease(a)?);
                BatchItem::Action(builders::renew(self.key()?.key(), &d, intent, token, ms)?)
            }
            "withdraw" => {
                let intent = self.id(a.get("intent").context("withdraw needs an intent")?)?;
                let d = self.deployment()?;
                BatchItem::Action(builders::withdraw(self.key()?.key(), &d, intent)?)
            }
            "record" => BatchItem::Record(
                Record::from_value(args.clone(), &Limits::default())
                    .context("not a valid signed record")?,
            ),
            "action" => BatchItem::Action(
                Action::from_value(args.clone(), &Limits::default())
                    .context("not a valid signed action")?,
            ),
            other => bail!(
                "unknown step {other:?}: propose, fact, claim, renew, withdraw, record or action"
            ),
        })
    }
}

/// One result, for people.
fn describe(n: usize, r: &BatchResult) -> String {
    match r {
        BatchResult::Record(c) => match c.seq {
            Some(seq) if !c.duplicate => format!("  {n}: {} {} (seq {seq})", c.kind, c.hash),
            _ => format!("  {n}: {} {} was already committed", c.kind, c.hash),
        },
        BatchResult::Lease(l) => format!(
            "  {n}: leased {} token {} until {}",
            l.intent,
            l.token,
            crate::cli::fmt_time(l.lease_until)
        ),
        BatchResult::Withdrawn(w) => format!("  {n}: withdrew {}", w.intent),
        BatchResult::Retracted(r) => format!("  {n}: retracted Hint {}", r.hint),
    }
}
