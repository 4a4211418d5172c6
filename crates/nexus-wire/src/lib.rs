//! The wire of the neXus v1 API (`spec/api.md`), as types shared by the server
//! (`nexus-api`) and the client (`nexus-client`): the JSON bodies of the answers
//! ([`body`]) and the error codes with their statuses ([`ErrorCode`]).
//!
//! This crate is small on purpose: a client depends on it without the server's request
//! handling (jobs, governance, the store bridge). With the `openapi` feature the types
//! also describe themselves for the OpenAPI document (`utoipa::ToSchema`), and the
//! descriptions of the wire forms of records and actions are in `schema`.

pub mod body;
mod code;
#[cfg(feature = "openapi")]
pub mod schema;

pub use body::*;
pub use code::{AnyErrorCode, ErrorCode, UnknownErrorCode};

/// Seconds between the heartbeats of a `GET /v1/events` stream with nothing to send
/// (spec/api.md, "Live events"): what a client's idle timeout is reckoned from.
pub const HEARTBEAT_SECS: u64 = 15;
