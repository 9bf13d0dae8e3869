//! Tools beside the engine, for plugin authors, demos and tests: the sync path never uses
//! them (nothing in `sync`, `app`, `serve` or `host` depends on this module).
//!
//! - [`scaffold`] writes a plugin project from a template (`backflow plugin new`);
//! - [`conformance`] checks that a plugin file keeps the contract (`backflow plugin
//!   conformance`, the templates' tests);
//! - [`receiver`] is a local webhook endpoint that records what it receives and can behave
//!   like a real API's failures (`backflow receiver`, the end-to-end tests and benchmarks).

#![warn(missing_docs)]

pub mod conformance;
pub mod receiver;
pub mod scaffold;
