//! Byte strings as byte strings in the codec, not sequences of numbers (`#[serde(with = ...)]`):
//! the storage codec's helper, named here so that the kinds' models can say `crate::serde_bytes`.

pub use serv_storage::codec::serde_bytes::{deserialize, serialize};
