//! kubemetrics-core: the pure-Rust engine behind kubemetrics.
//!
//! Modules depend only on those listed before them:
//!
//! 1. `wire`: JSON string escaping, protobuf varints and fields, canonical
//!    quantity, duration and timestamp text.
//! 2. `parse` (kubelet text → [`parse::Batch`]), `intern`, `store` (last/prev
//!    points, rates) → `snapshot` (one consistent, columnar instant).
//! 3. `inventory` (discovered names and labels) and `selector` (the label and
//!    field selector grammar).
//! 4. `view`: one served view per snapshot, its label index and selection.
//! 5. `encode`: response bytes from a view, streamed in bounded chunks,
//!    gzip-compressed on request.
//!
//! Nothing here knows about Python; `rust/py` is the only door to it.

pub mod encode;
pub mod intern;
pub mod inventory;
pub mod listsplit;
pub mod parse;
pub mod selector;
pub mod snapshot;
pub mod store;
pub mod view;
pub mod wire;
