//! `contract.nex`: parsing and checking (grammar in `spec/contract.md`).
//!
//! The rule structure is TOML, read with `serde` into types that refuse unknown keys,
//! so that positions and "expected one of …" messages come from the `toml` crate;
//! every expression inside it is CEL, compiled and checked by [`crate::expr`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use cel::Env;
use nexus_core::{AuthorKey, Effect, FihHash, Limits, Topic, TopicGlob};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{ContractError, ContractErrors, SourceMap};
use crate::eval::DEFAULT_MAX_STEPS;
use crate::expr::{self, Expr, ExprError, Scope, Want};

/// BLAKE3 key-derivation context of a contract's hash (its blob's address).
pub const CONTRACT_HASH_CONTEXT: &str = "neXus 2026-11 contract v1";

/// Most keys an `[upgrade]` table lists: an upgrade check reads each key's approvals
/// (see [`crate::governance::MAX_APPROVALS_SCANNED`]).
pub const MAX_UPGRADE_KEYS: usize = 64;

/// The budget of a whole contract on one Fact: the sum of its rules' static bounds
/// ([`Rule::cost`]) may not exceed it (the checker refuses a contract above it). A
/// Fact may match every rule, so this bounds what evaluating one Fact costs, whatever
/// the number of rules: the rules of a contract share the budget one rule has
/// ([`DEFAULT_MAX_STEPS`]).
pub const MAX_CONTRACT_STEPS: u64 = DEFAULT_MAX_STEPS;

/// The hash that names a contract: BLAKE3 (domain-separated) of its source bytes.
pub fn contract_hash(source: &[u8]) -> FihHash {
    FihHash(
        blake3::Hasher::new_derive_key(CONTRACT_HASH_CONTEXT)
            .update(source)
            .finalize()
            .into(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContract {
    contract: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    upgrade: Option<Spanned<RawUpgrade>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpgrade {
    #[serde(default)]
    keys: Vec<Spanned<String>>,
    #[serde(default)]
    quorum: Option<Spanned<u64>>,
    #[serde(default)]
    approvals: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    topic: Spanned<String>,
    #[serde(default, rename = "where")]
    where_: Option<Spanned<String>>,
    #[serde(default)]
    group: Option<Spanned<String>>,
    #[serde(default)]
    threshold: Option<Spanned<u64>>,
    #[serde(default)]
    within: Option<Spanned<String>>,
    emit: Spanned<RawEmit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmit {
    effect: Spanned<String>,
    #[serde(default)]
    priority: Option<Spanned<i64>>,
    #[serde(default)]
    topic: Option<Spanned<String>>,
    #[serde(default)]
    body: Option<BTreeMap<String, Spanned<toml::Value>>>,
    reason: Spanned<String>,
    #[serde(default)]
    expires: Option<Spanned<String>>,
}

/// A checked contract, ready to evaluate.
pub struct Contract {
    name: String,
    description: Option<String>,
    hash: FihHash,
    source: Arc<str>,
    upgrade: UpgradePolicy,
    rules: Vec<Rule>,
    env: Arc<Env>,
    limits: Limits,
}

/// Who may replace this contract with the next version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradePolicy {
    /// Keys allowed to deploy the next version (empty: any key the host allows).
    pub keys: BTreeSet<AuthorKey>,
    /// With a quorum, approvals from distinct `keys` are needed instead.
    pub quorum: Option<Quorum>,
}

/// An upgrade quorum: `count` approval Facts, from distinct allowed keys, under
/// `topic`, whose body is `{"contract": "<hash of the new version>", "replaces":
/// "<hash of the version in force>", …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// How many distinct keys must approve.
    pub count: usize,
    /// Where approvals are posted.
    pub topic: Topic,
}

/// One named rule.
#[derive(Debug)]
pub struct Rule {
    /// Its name, unique in the contract.
    pub name: String,
    /// The Facts it reads.
    pub topic: TopicGlob,
    /// The text of its `where` expression, if any.
    pub where_source: Option<String>,
    /// The text of its `group` expression, if any.
    pub group_source: Option<String>,
    pub(crate) where_: Option<Expr>,
    pub(crate) group: Option<Expr>,
    /// How many matching Facts (in one group, within the window) trigger it.
    pub threshold: usize,
    /// The window over Fact times, in ms (`None`: unbounded).
    pub within_ms: Option<u64>,
    pub(crate) emit: Emit,
}

impl Rule {
    /// The static bound of the evaluation steps this rule takes on one Fact: its
    /// `where` and `group` costs, its `emit` templates' costs, and
    /// `threshold × (threshold + 2)` for finding the trigger (a new Fact is checked
    /// as the trigger's end against at most `threshold + 2` Facts of its group, each
    /// by looking at `threshold` Facts; see `spec/contract.md` §4).
    pub fn cost(&self) -> u64 {
        let k = self.threshold as u64;
        let exprs = [&self.where_, &self.group]
            .into_iter()
            .flatten()
            .map(Expr::cost)
            .chain(self.emit.templates().map(Template::cost));
        exprs.fold(k.saturating_mul(k + 2), u64::saturating_add)
    }
}

#[derive(Debug)]
pub(crate) struct Emit {
    pub(crate) effect: Effect,
    pub(crate) topic: Option<Template>,
    pub(crate) body: Vec<(String, BodyValue)>,
    pub(crate) reason: Template,
    pub(crate) expires_ms: Option<u64>,
}

impl Emit {
    fn templates(&self) -> impl Iterator<Item = &Template> {
        let body = self.body.iter().filter_map(|(_, v)| match v {
            BodyValue::Template(t) => Some(t),
            BodyValue::Literal(_) => None,
        });
        self.topic.iter().chain(body).chain([&self.reason])
    }
}

#[derive(Debug)]
pub(crate) enum BodyValue {
    Literal(serde_json::Value),
    Template(Template),
}

/// Text with `${cel}` holes. A template that is one hole alone yields the
/// expression's value; otherwise each hole's scalar is interpolated.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) parts: Vec<Part>,
}

impl Template {
    fn cost(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(_) => 0,
                Part::Hole(e) => e.cost(),
            })
            .fold(0, u64::saturating_add)
    }
}

#[derive(Debug)]
pub(crate) enum Part {
    Text(String),
    Hole(Expr),
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("upgrade", &self.upgrade)
            .field("rules", &self.rules)
            .finish()
    }
}

impl Contract {
    /// Parses and checks `source`, read from `file` (used in error positions), against
    /// the default record limits.
    pub fn parse(file: &str, source: &str) -> Result<Contract, ContractErrors> {
        Self::parse_with_limits(file, source, &Limits::default())
    }

    /// [`parse`](Self::parse) against `limits` (a threshold may not exceed
    /// `max_parents`, a reason `max_reason_bytes`; expression costs follow
    /// `max_body_bytes`).
    pub fn parse_with_limits(
        file: &str,
        source: &str,
        limits: &Limits,
    ) -> Result<Contract, ContractErrors> {
        let map = SourceMap::new(file, source);
        let raw: RawContract = toml::from_str(source).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let message = e.message().trim_end().replace('\n', " ");
            ContractErrors(vec![map.error(offset, message)])
        })?;
        let env = Arc::new(Env::stdlib());
        let mut cx = Cx {
            map: &map,
            env: &env,
            limits,
            errors: Vec::new(),
        };
        let name = raw.contract.get_ref().clone();
        if name.trim().is_empty() {
            cx.at(
                raw.contract.span(),
                "`contract` must name the contract (a non-empty string)",
            );
        }
        let upgrade = raw.upgrade.map(|u| cx.upgrade(u)).unwrap_or_default();
        let mut names = BTreeSet::new();
        let mut rules = Vec::new();
        let mut total: u64 = 0;
        for r in raw.rules {
            let span = r.span();
            let r = r.into_inner();
            let name_span = r.name.span();
            if !names.insert(r.name.get_ref().clone()) {
                cx.at(
                    r.name.span(),
                    format!("a rule named `{}` is already defined", r.name.get_ref()),
                );
            }
            if let Some(rule) = cx.rule(r, span) {
                let before = total;
                total = total.saturating_add(rule.cost());
                if before <= MAX_CONTRACT_STEPS && total > MAX_CONTRACT_STEPS {
                    cx.at(
                        name_span,
                        format!(
                            "rule `{}` brings the contract to up to {total} evaluation steps \
                             on one Fact (all its rules together: one Fact may reach every \
                             rule); the budget is {MAX_CONTRACT_STEPS}",
                            rule.name
                        ),
                    );
                }
                rules.push(rule);
            }
        }
        if !cx.errors.is_empty() {
            let mut errors = cx.errors;
            errors.sort_by_key(|e| (e.line, e.column));
            return Err(ContractErrors(errors));
        }
        Ok(Contract {
            name,
            description: raw.description,
            hash: contract_hash(source.as_bytes()),
            source: Arc::from(source),
            upgrade,
            rules,
            env,
            limits: limits.clone(),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its description, if it has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Its hash (the address of its blob).
    pub fn hash(&self) -> FihHash {
        self.hash
    }

    /// Its source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Who may deploy the next version.
    pub fn upgrade(&self) -> &UpgradePolicy {
        &self.upgrade
    }

    /// Its rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub(crate) fn env(&self) -> &Arc<Env> {
        &self.env
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }
}

struct Cx<'a> {
    map: &'a SourceMap<'a>,
    env: &'a Env,
    limits: &'a Limits,
    errors: Vec<ContractError>,
}

impl Cx<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(self.map.error(span.start, message));
    }

    /// Where the text of a string value starts in the file, if the file spells it
    /// verbatim (a basic or literal string without escapes), so that positions
    /// inside the string map to the file exactly; otherwise its opening quote.
    fn text_start(&self, span: &Range<usize>, value: &str) -> (usize, bool) {
        let raw = self.map.src().get(span.clone()).unwrap_or("");
        for quote in ["\"\"\"", "'''", "\"", "'"] {
            let Some(inner) = raw.strip_prefix(quote).and_then(|r| r.strip_suffix(quote)) else {
                continue;
            };
            if inner == value {
                return (span.start + quote.len(), true);
            }
            // A newline right after an opening `"""` or `'''` is not part of the string.
            if quote.len() == 3 {
                for nl in ["\n", "\r\n"] {
                    if inner.strip_prefix(nl) == Some(value) {
                        return (span.start + quote.len() + nl.len(), true);
                    }
                }
            }
        }
        (span.start, false)
    }

    fn expr_errors(&mut self, span: &Range<usize>, text: &str, base: usize, errs: Vec<ExprError>) {
        let (start, exact) = self.text_start(span, text);
        for e in errs {
            let offset = if exact {
                start + base + e.offset
            } else {
                span.start
            };
            self.errors.push(self.map.error(offset, e.message));
        }
    }

    fn expr(&mut self, s: &Spanned<String>, scope: Scope, want: Want) -> Option<Expr> {
        match expr::compile(self.env, s.get_ref(), scope, want, self.limits) {
            Ok(e) => Some(e),
            Err(errs) => {
                self.expr_errors(&s.span(), s.get_ref(), 0, errs);
                None
            }
        }
    }

    fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<u64> {
        match humantime::parse_duration(s.get_ref()) {
            Ok(d)
                if d.as_millis() > 0
                    && d.as_millis() <= nexus_core::canonical::MAX_SAFE_INTEGER as u128 =>
            {
                Some(d.as_millis() as u64)
            }
            Ok(_) => {
                self.at(s.span(), format!("`{what}` must be a positive duration"));
                None
            }
            Err(e) => {
                self.at(
                    s.span(),
                    format!("`{what}`: expected a duration such as \"90s\", \"15m\", \"24h\" or \"7days\" ({e})"),
                );
                None
            }
        }
    }

    fn upgrade(&mut self, u: Spanned<RawUpgrade>) -> UpgradePolicy {
        let span = u.span();
        let u = u.into_inner();
        let mut keys = BTreeSet::new();
        for k in &u.keys {
            match k.get_ref().parse::<AuthorKey>() {
                Ok(key) => {
                    if !keys.insert(key) {
                        self.at(k.span(), "this key is listed twice");
                    }
                }
                Err(e) => self.at(
                    k.span(),
                    format!("expected an author key (64 lowercase hex digits): {e}"),
                ),
            }
        }
        let quorum = match (&u.quorum, &u.approvals) {
            (None, None) => None,
            (Some(q), Some(t)) => {
                // Not `as usize`: on a 32-bit target 2^32 + 1 would pass as 1.
                let count = usize::try_from(*q.get_ref()).unwrap_or(usize::MAX);
                if count == 0 || count > keys.len() {
                    self.at(
                        q.span(),
                        format!(
                            "`quorum` must be between 1 and the number of `keys` ({})",
                            keys.len()
                        ),
                    );
                }
                match t.get_ref().parse::<Topic>() {
                    Ok(topic) => Some(Quorum { count, topic }),
                    Err(e) => {
                        self.at(t.span(), format!("`approvals` must be a topic: {e}"));
                        None
                    }
                }
            }
            (Some(q), None) => {
                self.at(
                    q.span(),
                    "`quorum` needs `approvals`, the topic approval Facts are posted under",
                );
                None
            }
            (None, Some(t)) => {
                self.at(
                    t.span(),
                    "`approvals` needs `quorum`, how many distinct keys must approve",
                );
                None
            }
        };
        if u.keys.is_empty() {
            self.at(
                span,
                "[upgrade] needs `keys`: the author keys allowed to upgrade (or approve)",
            );
        }
        if let Some(k) = u.keys.get(MAX_UPGRADE_KEYS) {
            self.at(
                k.span(),
                format!(
                    "`keys` lists at most {MAX_UPGRADE_KEYS} keys (an upgrade check reads \
                     each one's approvals)"
                ),
            );
        }
        UpgradePolicy { keys, quorum }
    }

    fn rule(&mut self, r: RawRule, _span: Range<usize>) -> Option<Rule> {
        let name_span = r.name.span();
        let before = self.errors.len();
        let name = r.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.at(
                r.name.span(),
                "a rule name must be letters, digits, `_` or `-`",
            );
        }
        let topic = match r.topic.get_ref().parse::<TopicGlob>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.at(
                    r.topic.span(),
                    format!("`topic`: expected a topic glob such as \"chem/**\": {e}"),
                );
                None
            }
        };
        let where_ = r
            .where_
            .as_ref()
            .and_then(|w| self.expr(w, Scope::Fact, Want::Bool));
        let group = r
            .group
            .as_ref()
            .and_then(|g| self.expr(g, Scope::Fact, Want::Scalar));
        let threshold = match &r.threshold {
            None => 1,
            Some(t) => {
                // Not `as usize`: on a 32-bit target 2^32 + 1 would pass as 1.
                let n = usize::try_from(*t.get_ref()).unwrap_or(usize::MAX);
                if n == 0 || n > self.limits.max_parents {
                    self.at(
                        t.span(),
                        format!("`threshold` must be between 1 and {} (a Hint names at most that many Facts)", self.limits.max_parents),
                    );
                }
                n
            }
        };
        let within_ms = r.within.as_ref().and_then(|w| self.duration(w, "within"));
        let emit = self.emit(r.emit);
        if self.errors.len() > before {
            return None;
        }
        let rule = Rule {
            name,
            topic: topic?,
            where_source: r.where_.map(|w| w.into_inner()),
            group_source: r.group.map(|g| g.into_inner()),
            where_,
            group,
            threshold,
            within_ms,
            emit: emit?,
        };
        if rule.cost() > DEFAULT_MAX_STEPS {
            self.at(
                name_span,
                format!(
                    "rule `{}` may take up to {} evaluation steps on one Fact (its \
                     expressions and templates together, and finding its trigger); \
                     the budget is {DEFAULT_MAX_STEPS}",
                    rule.name,
                    rule.cost()
                ),
            );
            return None;
        }
        Some(rule)
    }

    fn emit(&mut self, e: Spanned<RawEmit>) -> Option<Emit> {
        let e = e.into_inner();
        let effect = match (e.effect.get_ref().as_str(), &e.priority) {
            ("deny", None) => Some(Effect::Deny),
            ("allow", None) => Some(Effect::Allow),
            ("priority", Some(p)) => Some(Effect::Priority(*p.get_ref())),
            ("priority", None) => {
                self.at(
                    e.effect.span(),
                    "effect \"priority\" needs `priority = n` beside it",
                );
                None
            }
            ("deny" | "allow", Some(p)) => {
                self.at(p.span(), "`priority` goes only with effect = \"priority\"");
                None
            }
            (other, _) => {
                self.at(
                    e.effect.span(),
                    format!(
                        "unknown effect {other:?}: expected \"deny\", \"allow\" or \"priority\""
                    ),
                );
                None
            }
        };
        let topic = e.topic.as_ref().and_then(|t| {
            let tpl = self.template(t, Want::Scalar)?;
            if let [Part::Text(text)] = tpl.parts.as_slice()
                && let Err(err) = text.parse::<TopicGlob>()
            {
                self.at(t.span(), format!("`topic`: expected a topic glob: {err}"));
            }
            Some(tpl)
        });
        let mut body = Vec::new();
        for (k, v) in e.body.unwrap_or_default() {
            let span = v.span();
            match v.into_inner() {
                toml::Value::String(s) => {
                    let spanned = Spanned::new(span, s);
                    if let Some(t) = self.template(&spanned, Want::Json) {
                        body.push((k, BodyValue::Template(t)));
                    }
                }
                other => match toml_to_json(&other) {
                    Ok(j) => body.push((k, BodyValue::Literal(j))),
                    Err(m) => self.at(span, m),
                },
            }
        }
        let reason = self.template(&e.reason, Want::Scalar);
        if e.reason.get_ref().is_empty() || e.reason.get_ref().len() > self.limits.max_reason_bytes
        {
            self.at(
                e.reason.span(),
                format!(
                    "`reason` must be 1 to {} bytes",
                    self.limits.max_reason_bytes
                ),
            );
        }
        let expires_ms = e.expires.as_ref().and_then(|x| self.duration(x, "expires"));
        Some(Emit {
            effect: effect?,
            topic,
            body,
            reason: reason?,
            expires_ms,
        })
    }

    fn template(&mut self, s: &Spanned<String>, want: Want) -> Option<Template> {
        let text = s.get_ref();
        let mut parts = Vec::new();
        let mut rest = 0usize;
        let mut ok = true;
        let mut lit = String::new();
        while let Some(found) = text[rest..].find('$') {
            let at = rest + found;
            if text[at..].starts_with("$${") {
                lit.push_str(&text[rest..at]);
                lit.push_str("${");
                rest = at + 3;
                continue;
            }
            if !text[at..].starts_with("${") {
                lit.push_str(&text[rest..=at]);
                rest = at + 1;
                continue;
            }
            lit.push_str(&text[rest..at]);
            let open = at + 2;
            let Some(close) = hole_end(&text[open..]).map(|c| open + c) else {
                self.expr_errors(
                    &s.span(),
                    text,
                    0,
                    vec![ExprError {
                        offset: at,
                        message: "`${` is not closed: expected `}` after the expression".into(),
                    }],
                );
                return None;
            };
            if !lit.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut lit)));
            }
            let inner = &text[open..close];
            let whole = at == 0 && close + 1 == text.len();
            let hole_want = if whole { want } else { Want::Scalar };
            match expr::compile(self.env, inner, Scope::Emit, hole_want, self.limits) {
                Ok(e) => parts.push(Part::Hole(e)),
                Err(errs) => {
                    self.expr_errors(&s.span(), text, open, errs);
                    ok = false;
                }
            }
            rest = close + 1;
        }
        lit.push_str(&text[rest..]);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        ok.then_some(Template { parts })
    }
}

/// Byte index of the `}` closing a `${` hole whose expression starts `s` (braces
/// of map literals nest; quoted strings are skipped).
fn hole_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn toml_to_json(v: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Float(_) => return Err("record bodies hold integers only: no floats".into()),
        toml::Value::Datetime(_) => {
            return Err(
                "record bodies cannot hold dates: use a string or ms since the epoch".into(),
            );
        }
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}
