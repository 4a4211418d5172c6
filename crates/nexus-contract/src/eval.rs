//! Incremental evaluation: Facts in, Hints out.
//!
//! The evaluator is fed the committed Facts in commit-log order, each with its commit
//! time `at` (the host's clock when the log entry was written, recorded in the entry):
//! windows, orderings and a Hint's time and expiry are reckoned in commit times, which
//! no author chooses, never in the `time` a record states. For each rule and group it
//! keeps the group's *open run*: the matching Facts since the group's last trigger whose
//! commit time is within the rule's window of the newest commit time seen. When the run
//! reaches the rule's threshold the rule *fires*: it emits a Hint for those Facts,
//! replacing the group's previous Hint, and the run starts afresh (so a group re-arms).
//! The Hints are a function of the log (the Facts, their order and commit times), so a
//! replay of the same log yields the same Hint records. State is bounded: a run holds
//! fewer than `threshold` Facts (as compact JSON), a group whose run and Hint have both
//! lapsed is dropped, and at most [`MAX_ERRORS`] diagnostics are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use cel::{Context, Value as Cel};
use nexus_core::{
    Content, Fact, FihHash, Hint, HintSource, Record, Selector, SigningKey, TopicGlob,
};
use serde_json::Value as Json;

use crate::expr::{cel_to_json, fact_to_cel, scalar_text};
use crate::syntax::{BodyValue, Contract, Part, Rule, Template};

/// Default budget of evaluation steps for one rule on one Fact.
pub const DEFAULT_MAX_STEPS: u64 = 2_000_000;

/// Most run-time diagnostics an evaluator keeps (the oldest are dropped first).
pub const MAX_ERRORS: usize = 1_000;

/// BLAKE3 key-derivation context of the key that signs a contract's Hints.
pub const CONTRACT_KEY_CONTEXT: &str = "neXus 2026-11 contract hint key v1";

/// The key that signs the Hints a contract emits: derived from the contract's hash,
/// so that anyone can re-derive (and so re-check) every Hint from the contract and
/// the Facts. It proves which contract a Hint claims to come from, not who ran it:
/// a Hint's authority is that re-evaluation yields it.
pub fn contract_key(contract: &FihHash) -> SigningKey {
    SigningKey::from_seed(&blake3::derive_key(
        CONTRACT_KEY_CONTEXT,
        contract.as_bytes(),
    ))
}

/// What one Fact changed: Hints that now apply, Hints that no longer do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HintDelta {
    /// New Hint records, signed with [`contract_key`].
    pub added: Vec<Record>,
    /// Hashes of Hints this evaluator emitted before and has replaced.
    pub removed: Vec<FihHash>,
}

impl HintDelta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Folds a later delta into this one (a Hint added then removed vanishes).
    pub fn extend(&mut self, later: HintDelta) {
        for gone in later.removed {
            if let Some(i) = self.added.iter().position(|r| r.hash() == gone) {
                self.added.remove(i);
            } else {
                self.removed.push(gone);
            }
        }
        self.added.extend(later.added);
    }
}

/// Why a rule could not be applied to a Fact (kept, not thrown: evaluation goes on
/// with the other rules and Facts, and the same inputs give the same diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A CEL expression failed at run time.
    #[error("rule `{rule}`: {what} failed on fact {fact}: {message}")]
    Expression {
        /// The rule.
        rule: String,
        /// Which part (`where`, `group`, `emit.reason`, …).
        what: &'static str,
        /// The Fact being evaluated.
        fact: FihHash,
        /// CEL's message.
        message: String,
    },
    /// The rule may use more evaluation steps than allowed (its static bound is over
    /// the evaluator's budget): the Fact is not kept for it.
    #[error("rule `{rule}` exceeded its budget of {limit} evaluation steps on fact {fact}")]
    StepLimit {
        /// The rule.
        rule: String,
        /// The Fact being evaluated.
        fact: FihHash,
        /// The budget.
        limit: u64,
    },
    /// The emitted Hint is not a valid record.
    #[error("rule `{rule}`: the Hint it emits for fact {fact} is invalid: {message}")]
    InvalidHint {
        /// The rule.
        rule: String,
        /// The Fact that completed the trigger.
        fact: FihHash,
        /// What is wrong.
        message: String,
    },
}

/// Why a Hint exists: the rule and the Facts behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The rule that emitted it.
    pub rule: String,
    /// The group's value (`null` for a rule without `group`).
    pub group: Json,
    /// The triggering Facts, oldest first.
    pub facts: Vec<FihHash>,
}

/// A matching Fact kept in a group's open run.
#[derive(Debug, Clone)]
struct Member {
    /// Its commit time.
    at: u64,
    hash: FihHash,
    /// The Fact as compact JSON (about its wire size; a decoded tree costs ~3×).
    fact: Arc<[u8]>,
}

#[derive(Debug, Default)]
struct Group {
    /// Matching Facts since the group's last trigger, in log order; fewer than the
    /// rule's threshold, each within the rule's window of the newest commit time.
    run: VecDeque<Member>,
    /// The Hint the group's last trigger emitted, with its expiry.
    hint: Option<(FihHash, Option<u64>)>,
    /// When the group lapses (see [`Group::deadline`]), as registered for the sweep.
    deadline: Option<u64>,
}

impl Group {
    /// The commit time after which nothing the group holds matters any more: its run
    /// has left the window and its Hint has expired. `None`: never (a run under a rule
    /// without a window, or a Hint without expiry).
    fn deadline(&self, within: Option<u64>) -> Option<u64> {
        let run = match self.run.back() {
            None => 0,
            Some(m) => m.at.checked_add(within?)?,
        };
        let hint = match self.hint {
            None => 0,
            Some((_, expires)) => expires?,
        };
        Some(run.max(hint))
    }
}

#[derive(Debug, Default)]
struct RuleState {
    groups: HashMap<String, Group>,
}

/// Evaluates one contract over a growing set of Facts.
pub struct Evaluator {
    contract: Arc<Contract>,
    key: SigningKey,
    max_steps: u64,
    rules: Vec<RuleState>,
    /// Rules by the first segment of their topic glob; `None` for globs starting with
    /// a wildcard.
    index: HashMap<String, Vec<usize>>,
    wild: Vec<usize>,
    hints: BTreeMap<FihHash, (Record, Explanation)>,
    errors: VecDeque<EvalError>,
    /// The newest commit time seen.
    watermark: u64,
    /// Groups by the commit time they lapse at: (deadline, rule, group).
    lapses: BTreeSet<(u64, usize, String)>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("contract", &self.contract.hash())
            .field("facts", &self.fact_count())
            .field("hints", &self.hints.len())
            .finish()
    }
}

impl Evaluator {
    /// A fresh evaluator (no Facts yet) with [`DEFAULT_MAX_STEPS`].
    pub fn new(contract: Arc<Contract>) -> Self {
        let mut index: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wild = Vec::new();
        for (i, r) in contract.rules().iter().enumerate() {
            match r.topic.as_str().split('/').next() {
                Some(first) if first != "*" && first != "**" => {
                    index.entry(first.to_owned()).or_default().push(i)
                }
                _ => wild.push(i),
            }
        }
        Self {
            key: contract_key(&contract.hash()),
            rules: contract
                .rules()
                .iter()
                .map(|_| RuleState::default())
                .collect(),
            contract,
            max_steps: DEFAULT_MAX_STEPS,
            index,
            wild,
            hints: BTreeMap::new(),
            errors: VecDeque::new(),
            watermark: 0,
            lapses: BTreeSet::new(),
        }
    }

    /// Sets the budget of evaluation steps per rule and Fact. It is compared with each
    /// rule's static bound ([`Rule::cost`]) before a Fact is kept: a rule whose bound
    /// is over it refuses every Fact alike ([`EvalError::StepLimit`]), whatever their
    /// order.
    pub fn with_max_steps(mut self, max_steps: u64) -> Self {
        self.max_steps = max_steps;
        self
    }

    /// The contract.
    pub fn contract(&self) -> &Arc<Contract> {
        &self.contract
    }

    /// Every Hint currently emitted, by hash.
    pub fn hints(&self) -> impl Iterator<Item = &Record> {
        self.hints.values().map(|(r, _)| r)
    }

    /// Why Hint `hash` was emitted (`None`: not one of this evaluator's).
    pub fn explain(&self, hash: &FihHash) -> Option<&Explanation> {
        self.hints.get(hash).map(|(_, e)| e)
    }

    /// The latest rule failures (at most [`MAX_ERRORS`]), oldest first.
    pub fn errors(&self) -> impl Iterator<Item = &EvalError> {
        self.errors.iter()
    }

    /// How many Facts the evaluator holds in its groups' open runs (the only Facts it
    /// keeps: fewer than `threshold` per group of a rule, and only while in its window).
    pub fn fact_count(&self) -> usize {
        self.rules
            .iter()
            .flat_map(|r| r.groups.values())
            .map(|g| g.run.len())
            .sum()
    }

    /// The newest commit time seen so far.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Adds the next committed Fact of the log, committed at `at` (the log entry's
    /// time); evaluates only the rules whose topic glob matches it. Feed each Fact
    /// once, in log order: the Hints are a function of that sequence. A Fact already
    /// in a group's open run is not counted twice.
    pub fn add_fact(&mut self, hash: FihHash, fact: &Fact, at: u64) -> HintDelta {
        let mut delta = HintDelta::default();
        self.watermark = self.watermark.max(at);
        let first = fact.topic.as_str().split('/').next().unwrap_or("");
        let mut candidates: Vec<usize> = self.index.get(first).cloned().unwrap_or_default();
        candidates.extend(&self.wild);
        candidates.sort_unstable();
        let mut value: Option<Cel> = None;
        let mut compact: Option<Arc<[u8]>> = None;
        for i in candidates {
            let contract = Arc::clone(&self.contract);
            let rule = &contract.rules()[i];
            if !rule.topic.matches(&fact.topic) {
                continue;
            }
            let value = value.get_or_insert_with(|| fact_to_cel(&hash, fact, at));
            match self.apply(i, rule, hash, fact, at, value, &mut compact) {
                Ok(d) => delta.extend(d),
                Err(e) => self.record_error(e),
            }
        }
        self.sweep();
        delta
    }

    fn record_error(&mut self, e: EvalError) {
        if self.errors.len() >= MAX_ERRORS {
            self.errors.pop_front();
        }
        self.errors.push_back(e);
    }

    /// Drops the groups that lapsed by the watermark, and their expired Hints (which
    /// do nothing any more: the host's active list drops them by itself).
    fn sweep(&mut self) {
        while let Some(first) = self.lapses.first() {
            if first.0 >= self.watermark {
                break;
            }
            let Some((deadline, i, key)) = self.lapses.pop_first() else {
                break;
            };
            let Some(rule) = self.rules.get_mut(i) else {
                continue;
            };
            if rule.groups.get(&key).and_then(|g| g.deadline) != Some(deadline) {
                continue;
            }
            if let Some((h, _)) = rule.groups.remove(&key).and_then(|g| g.hint) {
                self.hints.remove(&h);
            }
        }
    }

    /// Re-registers group `key` of rule `i` for the sweep after it changed.
    fn reschedule(&mut self, i: usize, key: &str, within: Option<u64>) {
        let Some(g) = self.rules[i].groups.get_mut(key) else {
            return;
        };
        let next = g.deadline(within);
        if next == g.deadline {
            return;
        }
        if let Some(old) = g.deadline.take() {
            self.lapses.remove(&(old, i, key.to_owned()));
        }
        g.deadline = next;
        if let Some(d) = next {
            self.lapses.insert((d, i, key.to_owned()));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        i: usize,
        rule: &Rule,
        hash: FihHash,
        fact: &Fact,
        at: u64,
        value: &Cel,
        compact: &mut Option<Arc<[u8]>>,
    ) -> Result<HintDelta, EvalError> {
        let expr_err = |what: &'static str, message: String| EvalError::Expression {
            rule: rule.name.clone(),
            what,
            fact: hash,
            message,
        };
        // The rule's static bound is checked before anything is kept, so that a rule
        // over budget refuses every Fact alike.
        if rule.cost() > self.max_steps {
            return Err(EvalError::StepLimit {
                rule: rule.name.clone(),
                fact: hash,
                limit: self.max_steps,
            });
        }
        let env = Arc::clone(self.contract.env());
        let mut ctx = Context::with_env(env);
        ctx.add_variable_from_value("fact", value.clone());
        if let Some(w) = &rule.where_ {
            match w.eval(&ctx).map_err(|m| expr_err("where", m))? {
                Cel::Bool(true) => {}
                Cel::Bool(false) => return Ok(HintDelta::default()),
                other => {
                    return Err(expr_err(
                        "where",
                        format!("expected a bool, got {:?}", other.type_of()),
                    ));
                }
            }
        }
        let group_key = match &rule.group {
            None => String::new(),
            Some(g) => {
                let v = g.eval(&ctx).map_err(|m| expr_err("group", m))?;
                let text = scalar_text(&v).ok_or_else(|| {
                    expr_err(
                        "group",
                        format!(
                            "expected a string, an integer or a bool, got {:?}",
                            v.type_of()
                        ),
                    )
                })?;
                // Distinct kinds of value stay distinct groups: "1" is not 1.
                cel_to_json(&v).map(|j| j.to_string()).unwrap_or(text)
            }
        };
        let watermark = self.watermark;
        let within = rule.within_ms;
        let group = self.rules[i].groups.entry(group_key.clone()).or_default();
        if group.run.iter().any(|m| m.hash == hash) {
            return Ok(HintDelta::default());
        }
        let fact_bytes = compact
            .get_or_insert_with(|| serde_json::to_vec(fact).unwrap_or_default().into())
            .clone();
        group.run.push_back(Member {
            at,
            hash,
            fact: fact_bytes,
        });
        // The window is reckoned from the newest commit time seen, so that what a run
        // holds never depends on when the sweep ran.
        if let Some(w) = within {
            while group
                .run
                .front()
                .is_some_and(|m| m.at.saturating_add(w) < watermark)
            {
                group.run.pop_front();
            }
        }
        if group.run.len() < rule.threshold {
            self.reschedule(i, &group_key, within);
            return Ok(HintDelta::default());
        }
        let trigger: Vec<Member> = group.run.drain(..).collect();
        let old = group.hint.take();
        let mut delta = HintDelta::default();
        if let Some((old, _)) = old {
            self.hints.remove(&old);
            delta.removed.push(old);
        }
        // The old Hint is gone whether or not the new one can be built: a failure here
        // is recorded, and the removal still reaches the host, so that it holds what a
        // replay of the same log holds (no Hint for this group).
        match self.build_hint(rule, &group_key, &trigger) {
            Ok((record, explanation)) => {
                let h = record.hash();
                let expires = match record.content() {
                    Content::Hint(hint) => hint.expires,
                    _ => None,
                };
                if let Some(g) = self.rules[i].groups.get_mut(&group_key) {
                    g.hint = Some((h, expires));
                }
                self.hints.insert(h, (record.clone(), explanation));
                delta.added.push(record);
            }
            Err(e) => self.record_error(e),
        }
        self.reschedule(i, &group_key, within);
        Ok(delta)
    }

    fn build_hint(
        &self,
        rule: &Rule,
        group_key: &str,
        trigger: &[Member],
    ) -> Result<(Record, Explanation), EvalError> {
        let Some(last) = trigger.last() else {
            return Err(EvalError::InvalidHint {
                rule: rule.name.clone(),
                fact: FihHash([0; 32]),
                message: "empty trigger".into(),
            });
        };
        let invalid = |message: String| EvalError::InvalidHint {
            rule: rule.name.clone(),
            fact: last.hash,
            message,
        };
        let mut facts: Vec<Cel> = Vec::with_capacity(trigger.len());
        for m in trigger {
            let fact: Fact = serde_json::from_slice(&m.fact)
                .map_err(|e| invalid(format!("a kept Fact does not decode: {e}")))?;
            facts.push(fact_to_cel(&m.hash, &fact, m.at));
        }
        let group: Json = if group_key.is_empty() {
            Json::Null
        } else {
            serde_json::from_str(group_key).unwrap_or(Json::Null)
        };
        let mut ctx = Context::with_env(Arc::clone(self.contract.env()));
        ctx.add_variable_from_value("fact", facts.last().cloned().unwrap_or(Cel::Null));
        ctx.add_variable_from_value("facts", Cel::List(Arc::new(facts)));
        ctx.add_variable_from_value("group", crate::expr::json_to_cel(&group));
        let render = |what: &'static str, t: &Template| -> Result<Json, EvalError> {
            render(t, &ctx).map_err(|message| EvalError::Expression {
                rule: rule.name.clone(),
                what,
                fact: last.hash,
                message,
            })
        };
        let emit = &rule.emit;
        let topic = match &emit.topic {
            None => None,
            Some(t) => {
                let text = match render("emit.topic", t)? {
                    Json::String(s) => s,
                    other => {
                        return Err(invalid(format!("emit.topic must be a string, got {other}")));
                    }
                };
                Some(
                    text.parse::<TopicGlob>()
                        .map_err(|e| invalid(format!("emit.topic {text:?}: {e}")))?,
                )
            }
        };
        let body = if emit.body.is_empty() {
            None
        } else {
            let mut m = serde_json::Map::new();
            for (k, v) in &emit.body {
                let value = match v {
                    BodyValue::Literal(j) => j.clone(),
                    BodyValue::Template(t) => render("emit.body", t)?,
                };
                m.insert(k.clone(), value);
            }
            Some(m)
        };
        let reason = match render("emit.reason", &emit.reason)? {
            Json::String(s) => s,
            other => other.to_string(),
        };
        let hint = Hint {
            selector: Selector { topic, body },
            effect: emit.effect,
            reason,
            source: Some(HintSource {
                contract: Some(self.contract.hash()),
                rule: Some(rule.name.clone()),
                facts: trigger.iter().map(|m| m.hash).collect(),
            }),
            expires: emit.expires_ms.map(|d| last.at.saturating_add(d)),
            author: self.key.author(),
            time: last.at,
        };
        let record = Record::sign(Content::Hint(hint), &self.key, self.contract.limits())
            .map_err(|e| invalid(e.to_string()))?;
        Ok((
            record,
            Explanation {
                rule: rule.name.clone(),
                group,
                facts: trigger.iter().map(|m| m.hash).collect(),
            },
        ))
    }
}

/// Renders a template: one hole alone yields its value as JSON; otherwise text.
fn render(t: &Template, ctx: &Context<'_, '_>) -> Result<Json, String> {
    if let [Part::Hole(e)] = t.parts.as_slice() {
        return cel_to_json(&e.eval(ctx)?);
    }
    let mut out = String::new();
    for p in &t.parts {
        match p {
            Part::Text(s) => out.push_str(s),
            Part::Hole(e) => {
                let v = e.eval(ctx)?;
                out.push_str(
                    &scalar_text(&v).ok_or_else(|| {
                        format!("cannot interpolate a {:?} into text", v.type_of())
                    })?,
                );
            }
        }
    }
    Ok(Json::String(out))
}
