//! The deterministic neXus core.
//!
//! Pure, synchronous, platform-free Rust (builds for `wasm32-unknown-unknown`): time is
//! an input, storage is reached only through the `nexus-store` traits, and nothing here
//! spawns, sleeps, or reads a clock.
//!
//! * [`canonical`] — RFC 8785 canonical JSON restricted to i53 integers;
//! * [`crypto`] — [`FihHash`] (BLAKE3, domain-separated) and Ed25519 authorship;
//! * [`record`] — Fact, Intent, Hint, signed lifecycle actions, validation;
//! * [`lifecycle`] — Intent states, fencing tokens and the errors of each transition;
//! * [`storage`] — the [`ColdStorage`](storage::ColdStorage) and
//!   [`FlushCapable`](storage::FlushCapable) traits and [`CompositeColdStorage`], which
//!   binds the three tiers and runs every operation as one atomic commit.

pub mod archive;
pub mod canonical;
pub mod crypto;
pub mod lifecycle;
pub mod record;
pub mod storage;

pub use crypto::{AuthorKey, FihHash, Signature, SigningKey};
pub use lifecycle::{CoreError, CoreResult, IntentState};
pub use record::{
    Action, ActionContent, Content, Deployment, Effect, Fact, Hint, HintSource, Intent, Kind,
    Limits, Record, Resolves, Selector, Signed, Topic, TopicGlob, ValidationError,
};
pub use storage::{
    ActionLedger, ActiveHint, Applied, Archived, ColdStorage, CompositeColdStorage, FlushCapable,
    FlushReport, IntentListing, Lease, LogEntry, Page, Submitted, TimeRange,
};

/// The README's examples, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
