//! The client side of neXus, shared by the `nexus` CLI, the integration tests and the
//! load generator.
//!
//! * [`keys`] — [`KeyFile`]: an agent's Ed25519 key from OS randomness, saved privately
//!   (`$NEXUS_HOME/key` or `~/.config/nexus/key` by default);
//! * [`builders`] — signed Intents, Facts, Hints, claims, renewals and withdrawals,
//!   stamped with the current time;
//! * [`verify`] — offline verification of an export (`nexus verify FILE`) and writing
//!   one;
//! * [`http`] — [`Client`], a blocking client for every route of the v1 API
//!   (spec/api.md), with the server's errors as [`ApiError`].
//!
//! Native only: it reads the OS random source, the file system and the network.

pub mod builders;
pub mod http;
pub mod keys;
pub mod verify;

pub use builders::BuildError;
pub use http::{AnyErrorCode, ApiError, Client, ClientError, ErrorCode, EventOptions, EventStream};
pub use keys::{KeyError, KeyFile};
pub use verify::{
    Problem, ReplayStore, VerifyError, VerifyOptions, VerifyReport, export_to, export_tree,
    first_difference, verify_export, verify_export_on, verify_export_with,
};
