//! Hint authority and withdrawal, on any host whose configuration names `operator` as
//! an operator key and lets `agent` and `other` write as agents (spec/api.md, "Hint
//! authority, withdrawal and quotas").

use nexus_client::{Client, ClientError, builders};
use nexus_core::{Effect, Record, Selector, SigningKey};
use serde_json::json;

/// A Hint on every Intent.
pub fn everything(k: &SigningKey, effect: Effect, reason: &str) -> Record {
    builders::hint(k, Selector::default(), effect, reason).expect("hint")
}

/// Status and code of an error answer.
pub fn code(e: &ClientError) -> (Option<u16>, Option<&str>) {
    (e.status(), e.code())
}

/// Whether `hint` is in force.
pub fn in_force(c: &Client, hint: &Record) -> bool {
    c.hints()
        .expect("hints")
        .iter()
        .any(|h| h.hash == hint.hash())
}

/// An agent's deny and allow are refused (nothing stored), its priority Hint is
/// accepted; an operator's deny applies. A Hint is retracted by its author or an
/// operator, not by another agent; a retracted Hint is no longer in force.
pub fn authority_and_retract(
    url: &str,
    operator: &SigningKey,
    agent: &SigningKey,
    other: &SigningKey,
) {
    let c = Client::new(url).expect("client");
    let topic = format!("authority/{}", &agent.author().to_string()[..8]);
    let head = c.health().expect("health").log_head;
    for effect in [Effect::Deny, Effect::Allow] {
        let e = c
            .submit(&everything(agent, effect, "agent"))
            .expect_err("an agent's deny or allow");
        assert_eq!(code(&e), (Some(403), Some("hint_not_permitted")));
    }
    assert_eq!(c.health().expect("health").log_head, head, "nothing stored");
    let propose = |n: u64| {
        let i = builders::propose(agent, &topic, json!({"n": n}), &[]).expect("intent");
        c.submit(&i)
    };
    propose(1).expect("proposals go on");

    // The agent's own priority Hint: another agent may not retract it, its author may.
    let mine = everything(agent, Effect::Priority(3), "mine");
    c.submit(&mine).expect("priority Hint");
    let e = c
        .retract(
            &builders::retract(other, &c.deployment().expect("deployment"), mine.hash())
                .expect("retract"),
        )
        .expect_err("not its author");
    assert_eq!(code(&e), (Some(403), Some("hint_not_permitted")));
    assert!(in_force(&c, &mine));
    let r = c
        .retract(
            &builders::retract(agent, &c.deployment().expect("deployment"), mine.hash())
                .expect("retract"),
        )
        .expect("its author retracts it");
    assert_eq!(r.hint, mine.hash());
    assert!(!in_force(&c, &mine));
    let e = c
        .retract(
            &builders::retract(agent, &c.deployment().expect("deployment"), mine.hash())
                .expect("retract"),
        )
        .expect_err("no longer in force");
    assert_eq!(code(&e), (Some(404), Some("not_found")));

    // An operator's deny applies; the operator retracts it, and the Intent is admitted.
    let selector = builders::selector(Some(&format!("{topic}/**")), None).expect("selector");
    let deny = builders::hint(operator, selector, Effect::Deny, "operator").expect("hint");
    c.submit(&deny).expect("an operator's deny");
    let sub = |n: u64| {
        let i =
            builders::propose(agent, &format!("{topic}/x"), json!({"n": n}), &[]).expect("intent");
        c.submit(&i)
    };
    let e = sub(2).expect_err("denied");
    assert_eq!(code(&e), (Some(403), Some("inadmissible")));
    let e = c
        .retract(
            &builders::retract(agent, &c.deployment().expect("deployment"), deny.hash())
                .expect("retract"),
        )
        .expect_err("an agent may not retract an operator's Hint");
    assert_eq!(code(&e), (Some(403), Some("hint_not_permitted")));
    c.retract(
        &builders::retract(operator, &c.deployment().expect("deployment"), deny.hash())
            .expect("retract"),
    )
    .expect("the operator retracts it");
    sub(3).expect("admitted again");

    // An operator retracts an agent's Hint too.
    let theirs = everything(other, Effect::Priority(1), "theirs");
    c.submit(&theirs).expect("priority Hint");
    c.retract(
        &builders::retract(
            operator,
            &c.deployment().expect("deployment"),
            theirs.hash(),
        )
        .expect("retract"),
    )
    .expect("an operator retracts anyone's Hint");
    assert!(!in_force(&c, &theirs));
}
