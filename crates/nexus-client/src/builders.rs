//! Signed records and actions, stamped with the current time.
//!
//! Each builder validates its input against the default [`Limits`] (what every host
//! accepts unless configured otherwise), hashes and signs. The `*_at` variants take the
//! time explicitly (ms since the Unix epoch), for tests and replays. Actions are signed
//! for one deployment (wire format v2): the id a server shows in `GET /v1/health`
//! ([`Client::deployment`](crate::Client::deployment)); every other server refuses them.
//!
//! ```
//! use nexus_client::builders::{claim, fact, propose};
//! use nexus_core::{Deployment, SigningKey};
//! use serde_json::json;
//!
//! let alice = SigningKey::from_seed(&[1; 32]);
//! let bob = SigningKey::from_seed(&[2; 32]);
//! let deployment: Deployment = "0123456789abcdef0123456789abcdef".parse()?;
//! let intent = propose(&alice, "chem/solubility", json!({"compound": "NaCl"}), &[])?;
//! let claim = claim(&bob, &deployment, intent.hash(), 30_000)?;
//! // …the server answers the claim with fencing token 1…
//! let answer = fact(&bob, "chem/solubility", json!({"g_per_l": 360}), &[intent.hash()],
//!                   Some((intent.hash(), 1)))?;
//! # let _ = (claim, answer);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use nexus_core::{
    Action, ActionContent, Content, Deployment, Effect, Fact, FihHash, Hint, HintSource, Intent,
    Limits, Record, Resolves, Selector, SigningKey, Topic, TopicGlob, ValidationError,
};
use serde_json::Value;

/// Why a record or action could not be built: its content is invalid (bad topic,
/// oversized body, non-integer number, duplicate parent, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct BuildError(#[from] pub ValidationError);

/// The current time in ms since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Signs any record content with `key` (which must be its author).
pub fn sign_record(key: &SigningKey, content: Content) -> Result<Record, BuildError> {
    Ok(Record::sign(content, key, &Limits::default())?)
}

/// Signs any action content with `key` (which must be its author).
pub fn sign_action(key: &SigningKey, content: ActionContent) -> Result<Action, BuildError> {
    Ok(Action::sign(content, key, &Limits::default())?)
}

/// A topic glob for a Hint selector (`*` one segment, a final `**` any number).
pub fn glob(pattern: &str) -> Result<TopicGlob, BuildError> {
    Ok(pattern.parse()?)
}

/// A Hint selector: a topic glob and/or top-level body members that must be equal.
/// `body`, when given, must be a JSON object.
pub fn selector(topic: Option<&str>, body: Option<Value>) -> Result<Selector, BuildError> {
    let topic = topic.map(glob).transpose()?;
    let body = match body {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            return Err(BuildError(ValidationError::Malformed(
                "a selector body must be a JSON object".into(),
            )));
        }
    };
    Ok(Selector { topic, body })
}

/// An Intent proposed now.
pub fn propose(
    key: &SigningKey,
    topic: &str,
    body: Value,
    parents: &[FihHash],
) -> Result<Record, BuildError> {
    propose_at(key, topic, body, parents, now_ms())
}

/// An Intent proposed at `time`.
pub fn propose_at(
    key: &SigningKey,
    topic: &str,
    body: Value,
    parents: &[FihHash],
    time: u64,
) -> Result<Record, BuildError> {
    let topic: Topic = topic.parse()?;
    sign_record(
        key,
        Content::Intent(Intent {
            topic,
            body,
            parents: parents.to_vec(),
            author: key.author(),
            time,
        }),
    )
}

/// A Fact observed now; `resolves = Some((intent, token))` resolves that Intent with
/// the fencing token of the author's claim.
pub fn fact(
    key: &SigningKey,
    topic: &str,
    body: Value,
    parents: &[FihHash],
    resolves: Option<(FihHash, u64)>,
) -> Result<Record, BuildError> {
    fact_at(key, topic, body, parents, resolves, now_ms())
}

/// A Fact observed at `time`.
pub fn fact_at(
    key: &SigningKey,
    topic: &str,
    body: Value,
    parents: &[FihHash],
    resolves: Option<(FihHash, u64)>,
    time: u64,
) -> Result<Record, BuildError> {
    let topic: Topic = topic.parse()?;
    sign_record(
        key,
        Content::Fact(Fact {
            topic,
            body,
            parents: parents.to_vec(),
            resolves: resolves.map(|(intent, token)| Resolves { intent, token }),
            author: key.author(),
            time,
        }),
    )
}

/// A Hint emitted now, with no source and no expiry (see [`hint_at`] for both).
pub fn hint(
    key: &SigningKey,
    selector: Selector,
    effect: Effect,
    reason: &str,
) -> Result<Record, BuildError> {
    hint_at(key, selector, effect, reason, None, None, now_ms())
}

/// A Hint emitted at `time`, optionally naming its source (contract, rule, triggering
/// Facts) and when it expires (ms since the Unix epoch).
pub fn hint_at(
    key: &SigningKey,
    selector: Selector,
    effect: Effect,
    reason: &str,
    source: Option<HintSource>,
    expires: Option<u64>,
    time: u64,
) -> Result<Record, BuildError> {
    sign_record(
        key,
        Content::Hint(Hint {
            selector,
            effect,
            reason: reason.to_owned(),
            source,
            expires,
            author: key.author(),
            time,
        }),
    )
}

/// A claim on `intent` for `lease_ms`, made now, for `deployment`.
pub fn claim(
    key: &SigningKey,
    deployment: &Deployment,
    intent: FihHash,
    lease_ms: u64,
) -> Result<Action, BuildError> {
    claim_at(key, deployment, intent, lease_ms, now_ms())
}

/// A claim made at `time`.
pub fn claim_at(
    key: &SigningKey,
    deployment: &Deployment,
    intent: FihHash,
    lease_ms: u64,
    time: u64,
) -> Result<Action, BuildError> {
    sign_action(
        key,
        ActionContent::Claim {
            intent,
            lease_ms,
            author: key.author(),
            deployment: Some(deployment.clone()),
            time,
        },
    )
}

/// A renewal of the claim with fencing `token` for another `lease_ms` from now.
pub fn renew(
    key: &SigningKey,
    deployment: &Deployment,
    intent: FihHash,
    token: u64,
    lease_ms: u64,
) -> Result<Action, BuildError> {
    renew_at(key, deployment, intent, token, lease_ms, now_ms())
}

/// A renewal made at `time`.
pub fn renew_at(
    key: &SigningKey,
    deployment: &Deployment,
    intent: FihHash,
    token: u64,
    lease_ms: u64,
    time: u64,
) -> Result<Action, BuildError> {
    sign_action(
        key,
        ActionContent::Renew {
            intent,
            token,
            lease_ms,
            author: key.author(),
            deployment: Some(deployment.clone()),
            time,
        },
    )
}

/// A withdrawal of `intent` (by its proposer), made now.
pub fn withdraw(
    key: &SigningKey,
    deployment: &Deployment,
    intent: FihHash,
) -> Result<Action, BuildError> {
    withdraw_at(key, deployment, intent, now_ms())
}

/// A withdrawal made at `time`.
pub fn withdraw_at(
    key: &SigningKey,
    deployment: &Deployment,
    intent: FihHash,
    time: u64,
) -> Result<Action, BuildError> {
    sign_action(
        key,
        ActionContent::Withdraw {
            intent,
            author: key.author(),
            deployment: Some(deployment.clone()),
            time,
        },
    )
}

/// A retraction of Hint `hint` (by its author, or an operator key), made now, for
/// `deployment`.
pub fn retract(
    key: &SigningKey,
    deployment: &Deployment,
    hint: FihHash,
) -> Result<Action, BuildError> {
    retract_at(key, deployment, hint, now_ms())
}

/// A retraction made at `time`.
pub fn retract_at(
    key: &SigningKey,
    deployment: &Deployment,
    hint: FihHash,
    time: u64,
) -> Result<Action, BuildError> {
    sign_action(
        key,
        ActionContent::Retract {
            hint,
            author: key.author(),
            deployment: Some(deployment.clone()),
            time,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::Kind;
    use serde_json::json;

    fn k(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32])
    }

    #[test]
    fn builders_produce_verifiable_wire_forms() {
        let a = k(1);
        let before = now_ms();
        let i = propose(&a, "chem/solubility", json!({"c": "NaCl"}), &[]).expect("intent");
        assert!(i.content().time() >= before);
        assert_eq!(i.content().kind(), Kind::Intent);
        let f = fact(
            &a,
            "chem/solubility",
            json!(1),
            &[i.hash()],
            Some((i.hash(), 1)),
        )
        .expect("fact");
        let sel = selector(Some("chem/**"), Some(json!({"c": "NaCl"}))).expect("sel");
        let h = hint(&a, sel, Effect::Priority(3), "first").expect("hint");
        let limits = Limits::default();
        for r in [&i, &f, &h] {
            assert_eq!(&Record::from_json(&r.to_json(), &limits).expect("ok"), r);
        }
        let d: Deployment = "d".parse().expect("deployment");
        let c = claim(&a, &d, i.hash(), 30_000).expect("claim");
        let r = renew(&a, &d, i.hash(), 1, 30_000).expect("renew");
        let w = withdraw(&a, &d, i.hash()).expect("withdraw");
        for x in [&c, &r, &w] {
            assert_eq!(&Action::from_json(&x.to_json(), &limits).expect("ok"), x);
            assert_eq!(x.content().intent(), Some(&i.hash()));
        }
    }

    #[test]
    fn invalid_input_is_an_error() {
        let a = k(1);
        assert!(propose(&a, "bad topic", json!(1), &[]).is_err());
        assert!(propose(&a, "t", json!(1.5), &[]).is_err());
        let p = FihHash::of_canonical(b"p");
        assert!(propose(&a, "t", json!(1), &[p, p]).is_err());
        assert!(selector(Some("a/**/b"), None).is_err());
        assert!(selector(None, Some(json!([1]))).is_err());
        assert!(hint(&a, Selector::default(), Effect::Deny, "").is_err());
    }

    #[test]
    fn explicit_times_are_deterministic() {
        let a = k(4);
        let x = propose_at(&a, "t", json!(1), &[], 5).expect("x");
        let y = propose_at(&a, "t", json!(1), &[], 5).expect("y");
        assert_eq!(x.hash(), y.hash());
        assert_eq!(x.sig(), y.sig());
    }
}
