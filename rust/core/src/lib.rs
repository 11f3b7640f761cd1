//! kubemetrics-core: the pure-Rust engine behind kubemetrics.
//!
//! Data walks one way: `parse` (kubelet text → [`parse::Batch`]) → `store`
//! (last/prev points, rates → [`snapshot::Snapshot`]) → `encode` (API bytes).
//! `wire` holds the primitives below all of them (JSON strings, protobuf
//! varints and fields, canonical quantity text) and uses nothing else.
//! Nothing here knows about Python; `rust/py` is the only door to it.

pub mod encode;
pub mod intern;
pub mod inventory;
pub mod parse;
pub mod selector;
pub mod snapshot;
pub mod store;
pub mod wire;
