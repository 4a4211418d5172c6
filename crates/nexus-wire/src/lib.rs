//! The wire of the neXus v1 API (`spec/api.md`), as types shared by the server
//! (`nexus-api`) and the client (`nexus-client`): the error codes with their statuses.
//!
//! This crate is small on purpose: a client depends on it without the server's request
//! handling. With the `openapi` feature the types also describe themselves for the
//! OpenAPI document (`utoipa::ToSchema`).

mod code;

pub use code::{AnyErrorCode, ErrorCode, UnknownErrorCode};
