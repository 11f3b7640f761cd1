//! Wire primitives: the bottom layer every other module may use and that uses
//! nothing of the crate. One JSON string escaper ([`json::write_str`]), one
//! protobuf varint writer ([`proto::varint`]), and the canonical text forms of
//! quantities, durations and timestamps ([`quantity`]).

pub mod json;
pub mod proto;
pub mod quantity;
