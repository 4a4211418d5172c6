//! Incremental evaluation: Facts in, Hints out.
//!
//! Each rule keeps, per group, the ordered set of matching Facts (by time, then hash)
//! and its *trigger*: the earliest Fact `e` (in that order) such that at least
//! `threshold` matching Facts of the group lie at or before `e` within `within` of
//! it, together with those `threshold` latest Facts. That trigger is a function of the
//! set of Facts alone, so the Hints are the same whatever order the Facts arrive in;
//! adding a Fact later than the trigger changes nothing, which keeps a commit's cost to
//! the rules whose topic its Facts match, not a rescan.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

type Member = (u64, FihHash);

#[derive(Debug, Default)]
struct Group {
    members: BTreeSet<Member>,
    trigger: Option<Vec<Member>>,
    hint: Option<FihHash>,
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
    facts: HashMap<FihHash, Arc<Fact>>,
    hints: BTreeMap<FihHash, (Record, Explanation)>,
    errors: BTreeMap<(usize, FihHash), EvalError>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("contract", &self.contract.hash())
            .field("facts", &self.facts.len())
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
            facts: HashMap::new(),
            hints: BTreeMap::new(),
            errors: BTreeMap::new(),
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

    /// Every rule failure so far, by rule and Fact.
    pub fn errors(&self) -> impl Iterator<Item = &EvalError> {
        self.errors.values()
    }

    /// How many distinct Facts some rule matched (`where` true): the only ones the
    /// evaluator keeps.
    pub fn fact_count(&self) -> usize {
        self.facts.len()
    }

    /// Adds a committed Fact; evaluates only the rules whose topic glob matches it.
    /// Adding a Fact twice changes nothing: a kept Fact is skipped, and evaluating any
    /// other again finds the same groups and triggers (each a function of the set of
    /// Facts), so nothing is kept for the Facts no rule matched.
    pub fn add_fact(&mut self, hash: FihHash, fact: &Fact) -> HintDelta {
        let mut delta = HintDelta::default();
        if self.facts.contains_key(&hash) {
            return delta;
        }
        let first = fact.topic.as_str().split('/').next().unwrap_or("");
        let mut candidates: Vec<usize> = self.index.get(first).cloned().unwrap_or_default();
        candidates.extend(&self.wild);
        candidates.sort_unstable();
        let mut value: Option<Cel> = None;
        let mut shared: Option<Arc<Fact>> = None;
        for i in candidates {
            let contract = Arc::clone(&self.contract);
            let rule = &contract.rules()[i];
            if !rule.topic.matches(&fact.topic) {
                continue;
            }
            let value = value.get_or_insert_with(|| fact_to_cel(&hash, fact));
            match self.apply(i, rule, hash, fact, value, &mut shared) {
                Ok(d) => delta.extend(d),
                Err(e) => {
                    self.errors.insert((i, hash), e);
                }
            }
        }
        delta
    }

    fn apply(
        &mut self,
        i: usize,
        rule: &Rule,
        hash: FihHash,
        fact: &Fact,
        value: &Cel,
        shared: &mut Option<Arc<Fact>>,
    ) -> Result<HintDelta, EvalError> {
        let expr_err = |what: &'static str, message: String| EvalError::Expression {
            rule: rule.name.clone(),
            what,
            fact: hash,
            message,
        };
        // The rule's static bound is checked before anything is kept, so that a rule
        // over budget refuses every Fact alike, whatever their order.
        if rule.cost() > self.max_steps {
            return Err(EvalError::StepLimit {
                rule: rule.name.clone(),
                fact: hash,
                limit: self.max_steps,
            });
        }
        let mut steps = 0u64;
        let env = Arc::clone(self.contract.env());
        let mut ctx = Context::with_env(env);
        ctx.add_variable_from_value("fact", value.clone());
        if let Some(w) = &rule.where_ {
            steps += w.cost();
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
                steps += g.cost();
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
        let member = (fact.time, hash);
        let max_steps = self.max_steps;
        let group = self.rules[i].groups.entry(group_key.clone()).or_default();
        group.members.insert(member);
        let Some(new) = next_trigger(group, member, rule, max_steps, &mut steps) else {
            // Within the static bound this cannot happen; should it, the Fact is not
            // kept, rather than kept without its trigger recomputed.
            group.members.remove(&member);
            return Err(EvalError::StepLimit {
                rule: rule.name.clone(),
                fact: hash,
                limit: max_steps,
            });
        };
        let shared = shared.get_or_insert_with(|| Arc::new(fact.clone()));
        self.facts.entry(hash).or_insert_with(|| Arc::clone(shared));
        if new == group.trigger {
            return Ok(HintDelta::default());
        }
        group.trigger = new.clone();
        let old = group.hint.take();
        let mut delta = HintDelta::default();
        if let Some(old) = old {
            self.hints.remove(&old);
            delta.removed.push(old);
        }
        if let Some(trigger) = new {
            // The old Hint is gone whether or not the new one can be built: a failure
            // here is recorded, and the removal still reaches the host, so that it
            // holds what a replay of the same Facts holds (no Hint for this group).
            match self.build_hint(rule, &group_key, &trigger) {
                Ok((record, explanation)) => {
                    let h = record.hash();
                    if let Some(g) = self.rules[i].groups.get_mut(&group_key) {
                        g.hint = Some(h);
                    }
                    self.hints.insert(h, (record.clone(), explanation));
                    delta.added.push(record);
                }
                Err(e) => {
                    self.errors.insert((i, hash), e);
                }
            }
        }
        Ok(delta)
    }

    fn build_hint(
        &self,
        rule: &Rule,
        group_key: &str,
        trigger: &[Member],
    ) -> Result<(Record, Explanation), EvalError> {
        let Some(&(_, last_hash)) = trigger.last() else {
            return Err(EvalError::InvalidHint {
                rule: rule.name.clone(),
                fact: FihHash([0; 32]),
                message: "empty trigger".into(),
            });
        };
        let invalid = |message: String| EvalError::InvalidHint {
            rule: rule.name.clone(),
            fact: last_hash,
            message,
        };
        let facts: Vec<Cel> = trigger
            .iter()
            .filter_map(|(_, h)| self.facts.get(h).map(|f| fact_to_cel(h, f)))
            .collect();
        let last = self
            .facts
            .get(&last_hash)
            .ok_or_else(|| invalid("the triggering Fact is not known".into()))?;
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
                fact: last_hash,
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
                facts: trigger.iter().map(|(_, h)| *h).collect(),
            }),
            expires: emit.expires_ms.map(|d| last.time.saturating_add(d)),
            author: self.key.author(),
            time: last.time,
        };
        let record = Record::sign(Content::Hint(hint), &self.key, self.contract.limits())
            .map_err(|e| invalid(e.to_string()))?;
        Ok((
            record,
            Explanation {
                rule: rule.name.clone(),
                group,
                facts: trigger.iter().map(|(_, h)| *h).collect(),
            },
        ))
    }
}

/// The group's trigger after `x` joined it (see the module docs); `None` in the outer
/// option when the step budget ran out.
fn next_trigger(
    group: &Group,
    x: Member,
    rule: &Rule,
    max_steps: u64,
    steps: &mut u64,
) -> Option<Option<Vec<Member>>> {
    let k = rule.threshold;
    let old_end = group.trigger.as_ref().and_then(|t| t.last().copied());
    if old_end.is_some_and(|end| x > end) {
        return Some(group.trigger.clone());
    }
    let Some(w) = rule.within_ms else {
        *steps += k as u64;
        if *steps > max_steps {
            return None;
        }
        if group.members.len() < k {
            return Some(None);
        }
        return Some(Some(group.members.iter().take(k).copied().collect()));
    };
    for &e in group.members.range(x..) {
        if old_end.is_some_and(|end| e > end) || e.0 > x.0.saturating_add(w) {
            break;
        }
        *steps += k as u64;
        if *steps > max_steps {
            return None;
        }
        let mut run: Vec<Member> = group.members.range(..=e).rev().take(k).copied().collect();
        if run.len() == k && run.last().is_some_and(|first| e.0 - first.0 <= w) {
            run.reverse();
            return Some(Some(run));
        }
    }
    Some(group.trigger.clone())
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
