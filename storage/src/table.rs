//! Typed tables: a fjall keyspace seen as a map from a typed key to a versioned, typed record.
//!
//! Keys are encoded so that byte order is key order (big-endian integers, raw UTF-8 strings);
//! values are a format-version byte followed by the record in the [`crate::codec`] encoding, so
//! a record written by an older layout is recognised and never misread.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, StorageError, codec};

/// A key type of a table, with an order-preserving byte encoding.
pub trait TableKey: Sized + Send + Sync + 'static {
    /// Appends the key's bytes to `out`.
    fn encode_key(&self, out: &mut Vec<u8>);
    /// Reads a key back from its bytes.
    fn decode_key(bytes: &[u8]) -> Option<Self>;
}

impl TableKey for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl TableKey for u64 {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// A record kept in a table; `FORMAT` is bumped whenever its layout changes.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Format version written in front of every stored record of this type.
    const FORMAT: u8;
}

/// The name and types of a table, declared once as a constant by the layer that owns it.
pub struct TableDef<K, V> {
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> TableDef<K, V> {
    /// Declares the table called `name` (its fjall keyspace).
    pub const fn new(name: &'static str) -> Self {
        Self { name, _types: PhantomData }
    }
}

/// An open table: typed reads here, typed writes through a [`crate::WriteSet`].
pub struct Table<K, V> {
    name: &'static str,
    keyspace: fjall::Keyspace,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Self { name: self.name, keyspace: self.keyspace.clone(), _types: PhantomData }
    }
}

impl<K: TableKey, V: Record> Table<K, V> {
    pub(crate) fn open(db: &fjall::Database, def: TableDef<K, V>) -> Result<Self> {
        let keyspace = db
            .keyspace(def.name, fjall::KeyspaceCreateOptions::default)
            .map_err(|source| StorageError::Io { table: def.name, source })?;
        Ok(Self { name: def.name, keyspace, _types: PhantomData })
    }

    /// Reads the record stored under `key`, if any.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let bytes = self
            .keyspace
            .get(key_bytes(key))
            .map_err(|source| StorageError::Io { table: self.name, source })?;
        bytes.map(|bytes| self.decode_value(&bytes)).transpose()
    }

    /// Every record of the table in key order, read lazily (memory stays bounded).
    pub fn entries(&self) -> impl Iterator<Item = Result<(K, V)>> + '_ {
        self.keyspace.iter().map(move |guard| {
            let (key, value) =
                guard.into_inner().map_err(|source| StorageError::Io { table: self.name, source })?;
            let key = K::decode_key(&key).ok_or_else(|| StorageError::Corrupt {
                table: self.name,
                detail: "undecodable key".into(),
            })?;
            Ok((key, self.decode_value(&value)?))
        })
    }

    pub(crate) fn keyspace(&self) -> &fjall::Keyspace {
        &self.keyspace
    }

    pub(crate) fn encode_value(&self, value: &V) -> Result<Vec<u8>> {
        let body = codec::encode(value)
            .map_err(|e| StorageError::Encode { table: self.name, detail: e.to_string() })?;
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.push(V::FORMAT);
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    fn decode_value(&self, bytes: &[u8]) -> Result<V> {
        let (&format, body) = bytes
            .split_first()
            .ok_or_else(|| StorageError::Corrupt { table: self.name, detail: "empty record".into() })?;
        if format != V::FORMAT {
            return Err(StorageError::UnknownFormat { table: self.name, found: format, expected: V::FORMAT });
        }
        codec::decode(body).map_err(|e| StorageError::Corrupt { table: self.name, detail: e.to_string() })
    }
}

pub(crate) fn key_bytes<K: TableKey>(key: &K) -> Vec<u8> {
    let mut out = Vec::new();
    key.encode_key(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_sort_numerically() {
        let (a, b) = (key_bytes(&2u64), key_bytes(&10u64));
        assert!(a < b, "2 must sort before 10");
        assert_eq!(u64::decode_key(&b), Some(10));
    }
}
