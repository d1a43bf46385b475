//! Typed tables: a fjall keyspace seen as a map from a typed key to a versioned, typed record.
//!
//! Keys are encoded so that byte order is key order (see [`crate::key`]); values are a format-version byte followed by the record in the [`crate::codec`] encoding, so
//! a record written by an older layout is recognised and never misread.

use std::marker::PhantomData;
use std::ops::Bound;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::key::{KeyPrefix, TableKey, key_bytes};
use crate::writeset::Keyspaces;
use crate::{Result, StorageError, codec};

/// A record kept in a table; `FORMAT` is bumped whenever its layout changes.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Format version written in front of every stored record of this type.
    const FORMAT: u8;

    /// Reads a record stored in an earlier format (`None`: not a format this type knows), so
    /// that a data directory written by an older version still opens.
    fn upgrade(format: u8, body: &[u8]) -> Option<Result<Self, crate::codec::CodecError>> {
        let _ = (format, body);
        None
    }
}

/// The name and types of a table, declared once as a constant by the layer that owns it.
pub struct TableDef<K, V> {
    name: &'static str,
    /// Largest in-memory write buffer of the table before it is flushed to disk (fjall's default,
    /// 64 MiB, when unset).
    max_memtable_bytes: Option<u64>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> TableDef<K, V> {
    /// Declares the table called `name` (its fjall keyspace).
    pub const fn new(name: &'static str) -> Self {
        Self { name, max_memtable_bytes: None, _types: PhantomData }
    }

    /// The same table, flushed to disk once `bytes` of writes are buffered in memory: for tables
    /// written heavily but read little (a replication log), whose buffer would otherwise hold
    /// memory that the data's own table already holds.
    pub const fn max_memtable_bytes(mut self, bytes: u64) -> Self {
        self.max_memtable_bytes = Some(bytes);
        self
    }
}

/// An open table: typed reads here, typed writes through a [`crate::WriteSet`].
pub struct Table<K, V> {
    name: &'static str,
    keyspace: fjall::Keyspace,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Table<K, V> {
    /// The table's name (its keyspace).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Self { name: self.name, keyspace: self.keyspace.clone(), _types: PhantomData }
    }
}

impl<K: TableKey, V: Record> Table<K, V> {
    pub(crate) fn open(keyspaces: &Keyspaces, def: TableDef<K, V>) -> Result<Self> {
        let options = || match def.max_memtable_bytes {
            Some(bytes) => fjall::KeyspaceCreateOptions::default().max_memtable_size(bytes),
            None => fjall::KeyspaceCreateOptions::default(),
        };
        let keyspace = keyspaces
            .db
            .keyspace(def.name, options)
            .map_err(|source| StorageError::Io { table: def.name, source })?;
        keyspaces.register(def.name, &keyspace);
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
        self.keyspace.iter().map(move |guard| self.decode_entry(guard))
    }

    /// Every record of the table in reverse key order (the newest first, for time-ordered keys),
    /// read lazily.
    pub fn entries_rev(&self) -> impl Iterator<Item = Result<(K, V)>> + '_ {
        self.keyspace.iter().rev().map(move |guard| self.decode_entry(guard))
    }

    /// The records whose keys start with `prefix`, in key order, from just after `after` when
    /// given (a listing's continuation point); read lazily.
    pub fn scan<'a>(
        &'a self,
        prefix: &'a KeyPrefix,
        after: Option<&K>,
    ) -> impl Iterator<Item = Result<(K, V)>> + 'a {
        let start = match after {
            Some(key) => Bound::Excluded(key_bytes(key)),
            None => Bound::Included(prefix.bytes().to_vec()),
        };
        self.scan_bounded(prefix, start)
    }

    /// The records whose keys start with `prefix`, from the first key past every key that starts
    /// with `past` (a listing skipping a whole common prefix in one seek); read lazily.
    pub fn scan_past<'a>(
        &'a self,
        prefix: &'a KeyPrefix,
        past: &KeyPrefix,
    ) -> impl Iterator<Item = Result<(K, V)>> + 'a {
        // The smallest byte string greater than every string that starts with `past`: drop
        // trailing 0xFF bytes, then add one to the last byte. None: nothing comes after.
        let mut successor = past.bytes().to_vec();
        while successor.last() == Some(&0xFF) {
            successor.pop();
        }
        let start = match successor.last_mut() {
            Some(last) => {
                *last += 1;
                Bound::Included(successor)
            }
            None => Bound::Excluded(vec![0xFF; past.bytes().len().max(1)]),
        };
        self.scan_bounded(prefix, start)
    }

    /// The records whose keys start with `prefix`, in reverse key order (the last first); read
    /// lazily.
    pub fn scan_rev<'a>(&'a self, prefix: &'a KeyPrefix) -> impl Iterator<Item = Result<(K, V)>> + 'a {
        self.keyspace.prefix(prefix.bytes()).rev().map(move |guard| self.decode_entry(guard))
    }

    fn scan_bounded<'a>(
        &'a self,
        prefix: &'a KeyPrefix,
        start: Bound<Vec<u8>>,
    ) -> impl Iterator<Item = Result<(K, V)>> + 'a {
        self.keyspace
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .map(move |guard| {
                guard.into_inner().map_err(|source| StorageError::Io { table: self.name, source })
            })
            .take_while(move |pair| pair.as_ref().map_or(true, |(key, _)| key.starts_with(prefix.bytes())))
            .map(move |pair| pair.and_then(|(key, value)| self.decode_pair(&key, &value)))
    }

    fn decode_entry(&self, guard: fjall::Guard) -> Result<(K, V)> {
        let (key, value) =
            guard.into_inner().map_err(|source| StorageError::Io { table: self.name, source })?;
        self.decode_pair(&key, &value)
    }

    fn decode_pair(&self, key: &[u8], value: &[u8]) -> Result<(K, V)> {
        let key = K::decode_key(key)
            .ok_or_else(|| StorageError::Corrupt { table: self.name, detail: "undecodable key".into() })?;
        Ok((key, self.decode_value(value)?))
    }

    pub(crate) fn encode_value(&self, value: &V) -> Result<Vec<u8>> {
        let body = codec::encode(value)
            .map_err(|e| StorageError::Encode { table: self.name, detail: e.to_string() })?;
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.push(V::FORMAT);
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    pub(crate) fn decode_value(&self, bytes: &[u8]) -> Result<V> {
        let (&format, body) = bytes
            .split_first()
            .ok_or_else(|| StorageError::Corrupt { table: self.name, detail: "empty record".into() })?;
        let decoded = if format == V::FORMAT {
            codec::decode(body)
        } else {
            V::upgrade(format, body).ok_or(StorageError::UnknownFormat {
                table: self.name,
                found: format,
                expected: V::FORMAT,
            })?
        };
        decoded.map_err(|e| StorageError::Corrupt { table: self.name, detail: e.to_string() })
    }
}
