//! Order-preserving key encodings: byte order of encoded keys equals the order of the keys.
//!
//! A whole key is a [`TableKey`]. Composite keys are tuples of [`KeyPart`]s, each encoded so that
//! it delimits itself: integers as fixed-width big-endian bytes, strings with every `0x00` escaped
//! as `0x00 0xFF` and a `0x00 0x01` terminator (so `"a"` sorts before `"a\0"` and `"ab"`, and no
//! string's encoding is a prefix of another's). A [`KeyPrefix`] selects every key that starts with
//! some leading parts, optionally followed by the start of one more string part, which is how a
//! listing by prefix ("every key of bucket B starting with `photos/`") becomes one range scan.

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

/// One component of a composite key, encoded so that it delimits itself.
pub trait KeyPart: Sized + Send + Sync + 'static {
    /// Appends the component's self-delimiting bytes to `out`.
    fn encode_part(&self, out: &mut Vec<u8>);
    /// Reads one component from the front of `bytes`, advancing past it.
    fn decode_part(bytes: &mut &[u8]) -> Option<Self>;
}

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
}

impl KeyPart for String {
    fn encode_part(&self, out: &mut Vec<u8>) {
        escape_into(self.as_bytes(), out);
        out.extend_from_slice(&[ESCAPE, TERMINATOR]);
    }

    fn decode_part(bytes: &mut &[u8]) -> Option<Self> {
        let mut raw = Vec::new();
        let mut i = 0;
        loop {
            let b = *bytes.get(i)?;
            if b != ESCAPE {
                raw.push(b);
                i += 1;
                continue;
            }
            match *bytes.get(i + 1)? {
                ESCAPED_ZERO => raw.push(0),
                TERMINATOR => {
                    *bytes = &bytes[i + 2..];
                    return String::from_utf8(raw).ok();
                }
                _ => return None,
            }
            i += 2;
        }
    }
}

impl KeyPart for u64 {
    fn encode_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }

    fn decode_part(bytes: &mut &[u8]) -> Option<Self> {
        let (head, rest) = bytes.split_first_chunk::<8>()?;
        *bytes = rest;
        Some(u64::from_be_bytes(*head))
    }
}

macro_rules! tuple_key {
    ($($name:ident),+) => {
        impl<$($name: KeyPart),+> TableKey for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_key(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_part(out);)+
            }

            fn decode_key(mut bytes: &[u8]) -> Option<Self> {
                let key = ($($name::decode_part(&mut bytes)?,)+);
                bytes.is_empty().then_some(key)
            }
        }
    };
}

tuple_key!(A, B);
tuple_key!(A, B, C);

/// The leading bytes shared by a set of composite keys, for [`crate::Table::scan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPrefix(Vec<u8>);

impl KeyPrefix {
    /// The empty prefix: every key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys whose next component equals `part`.
    pub fn part<P: KeyPart>(mut self, part: &P) -> Self {
        part.encode_part(&mut self.0);
        self
    }

    /// Keys whose next (string) component starts with `start`; nothing may follow this.
    pub fn partial_str(mut self, start: &str) -> Self {
        escape_into(start.as_bytes(), &mut self.0);
        self
    }

    /// The prefix's bytes, as keys that start with it begin.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
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

    #[test]
    fn composite_keys_sort_like_tuples_and_round_trip() {
        let words = ["", "a", "a\0", "a\0b", "ab", "a/b", "b", "\0", "é", "a\u{1}"];
        let mut keys: Vec<(String, String, u64)> = Vec::new();
        for x in words {
            for y in words {
                for n in [0, 1, 255, 256, u64::MAX] {
                    keys.push((x.to_string(), y.to_string(), n));
                }
            }
        }
        let mut by_bytes = keys.clone();
        by_bytes.sort_by_key(key_bytes);
        keys.sort_by(|a, b| {
            (a.0.as_bytes(), a.1.as_bytes(), a.2).cmp(&(b.0.as_bytes(), b.1.as_bytes(), b.2))
        });
        assert_eq!(by_bytes, keys, "byte order must equal tuple order");
        for key in &keys {
            assert_eq!(<(String, String, u64)>::decode_key(&key_bytes(key)).as_ref(), Some(key));
        }
    }

    #[test]
    fn a_prefix_selects_exactly_the_keys_that_start_with_it() {
        let keys = ["photos/", "photos/a", "photos", "photo", "photos\0x", "zebra"];
        let prefix = KeyPrefix::new().part(&"bucket".to_string()).partial_str("photos");
        let selected: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| key_bytes(&("bucket".to_string(), k.to_string())).starts_with(prefix.bytes()))
            .collect();
        assert_eq!(selected, ["photos/", "photos/a", "photos", "photos\0x"]);
        let other = key_bytes(&("bucket2".to_string(), "photos".to_string()));
        assert!(!other.starts_with(prefix.bytes()), "another bucket is not under the prefix");
    }
}
