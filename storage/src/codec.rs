//! The one codec of Serv: bincode 2 (standard config) over serde, for stored records and for
//! messages that cross the mesh. Nothing else in the workspace calls bincode directly.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the expected type.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes hold more than one value.
    #[error("decode: {0} trailing bytes")]
    Trailing(usize),
}

/// Encodes `value` to bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, bincode::config::standard())?)
}

/// Decodes one value of type `T` that must fill `bytes` exactly.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

/// Decodes one value of type `T` from the front of `bytes`, and how many bytes it took (for
/// framings that pack several values, like the membership protocol's packets).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    Ok(bincode::serde::decode_from_slice(bytes, bincode::config::standard())?)
}

/// Byte strings as byte strings in the codec, not sequences of numbers
/// (`#[serde(with = "serv_storage::codec::serde_bytes")]`).
pub mod serde_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Sample {
        Put { key: String, bytes: Vec<u8> },
        Drop(u64),
    }

    #[test]
    fn values_round_trip() {
        let value = Sample::Put { key: "a/b".into(), bytes: vec![0, 1, 2] };
        assert_eq!(decode::<Sample>(&encode(&value).unwrap()).unwrap(), value);
        assert_eq!(decode::<Sample>(&encode(&Sample::Drop(7)).unwrap()).unwrap(), Sample::Drop(7));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        assert!(decode::<Sample>(&[0xff, 0xff, 0xff]).is_err());
        let mut bytes = encode(&Sample::Drop(1)).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<Sample>(&bytes), Err(CodecError::Trailing(1))));
    }
}
