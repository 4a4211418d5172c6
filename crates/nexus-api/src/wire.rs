//! The JSON bodies the API sends, as types: one definition with the client, in
//! `nexus-wire` (re-exported here). Records and actions travel in their wire form (see
//! `spec/README.md`); the `Wire*` types exist only to describe it in the OpenAPI
//! document.

pub use nexus_wire::body::*;
pub use nexus_wire::schema::*;
