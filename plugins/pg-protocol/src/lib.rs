//! `pg-protocol`: what the PostgreSQL plugins share. One connection over a WASI socket
//! (`wire`: startup, trust/password/MD5/SCRAM authentication, message exchange), TLS inside
//! the sandbox (`tls`), and PostgreSQL types to and from backflow values (`types`). The
//! postgres source and the postgres-destination both compile it in; it uses only the SDK's
//! world-independent parts, so it builds in either plugin's world.

pub mod tls;
pub mod types;
pub mod wire;

/// Re-exported so the plugins use the very version this crate speaks.
pub use postgres_protocol;
