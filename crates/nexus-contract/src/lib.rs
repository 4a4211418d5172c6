//! `contract.nex`, the neXus governance language: a contract reads the accumulated
//! Facts and emits Hints that decide which Intents are admissible.
//!
//! Pure and deterministic (builds for `wasm32-unknown-unknown`, no clock, no async
//! runtime): the same contract and the same commit log (its Facts, in log order, with
//! their commit times) give the same Hints, byte for byte; the times authors state in
//! their records decide nothing. The language is specified in `spec/contract.md`.
//!
//! * [`Contract::parse`] — parse and check (`nexus contract check`): positions, unknown
//!   fields, type errors, unknown functions and cost bounds are all reported here,
//!   before deployment;
//! * [`Evaluator`] — incremental evaluation: [`Evaluator::add_fact`] runs only the
//!   rules whose topic the Fact matches and returns the [`HintDelta`];
//! * [`UpgradePolicy::authorize`] — who may deploy the next version;
//! * [`governance`] — the contract in the store: the CAS-moved pointer, history,
//!   deployment and committing emitted Hints.
//!
//! ```
//! use std::sync::Arc;
//! use nexus_contract::{Contract, Evaluator};
//! use nexus_core::{Content, Fact, Record, SigningKey};
//!
//! let source = r#"
//! contract = "budget"
//!
//! [[rule]]
//! name = "chem-budget"
//! topic = "chem/**"
//! where = "fact.body.status == 'failed'"
//! threshold = 2
//! emit = { effect = "deny", topic = "chem/**", reason = "${size(facts)} failures under chem/" }
//! "#;
//! let contract = Arc::new(Contract::parse("budget.nex", source)?);
//! let mut eval = Evaluator::new(contract);
//! let alice = SigningKey::from_seed(&[1; 32]);
//! for t in 0..2 {
//!     let fact = Fact {
//!         topic: "chem/run".parse()?,
//!         body: serde_json::json!({"status": "failed"}),
//!         parents: vec![],
//!         resolves: None,
//!         author: alice.author(),
//!         time: 1_000 + t,
//!     };
//!     let rec = Record::sign(Content::Fact(fact.clone()), &alice, &Default::default())?;
//!     // The log entry's commit time, not the author's `time`, decides the window.
//!     eval.add_fact(rec.hash(), &fact, 1_700_000_000_000 + t);
//! }
//! let hint = eval.hints().next().expect("the budget is spent");
//! let Content::Hint(h) = hint.content() else { unreachable!() };
//! assert_eq!(h.reason, "2 failures under chem/");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod eval;
mod expr;
pub mod governance;
mod syntax;
mod upgrade;

pub use error::{ContractError, ContractErrors};
pub use eval::{
    CONTRACT_KEY_CONTEXT, DEFAULT_MAX_STEPS, EvalError, Evaluator, Explanation, HintDelta,
    contract_key,
};
pub use expr::{FACT_FIELDS, MAX_EXPR_COST};
pub use syntax::{
    CONTRACT_HASH_CONTEXT, Contract, MAX_CONTRACT_STEPS, MAX_UPGRADE_KEYS, Quorum, Rule,
    UpgradePolicy, contract_hash,
};
pub use upgrade::UpgradeError;
