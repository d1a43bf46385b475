//! The consistent-hash ring: each live member owns `vnodes` points (tokens) on a 64-bit circle,
//! and a key belongs to the first token clockwise from its hash. [`Ring::preference_list`]
//! walks on from there to list the owner first, then the next distinct members as replicas.
//!
//! Tokens derive from the member's id and the token's index alone (BLAKE3), so every node that
//! sees the same members builds the same ring, in whatever order it learned of them; and when a
//! member joins or leaves, only the keys next to its tokens change owner.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Tokens per member by default: enough for an even spread over a handful of nodes.
pub const DEFAULT_VNODES: u32 = 64;

/// One member as the ring sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node's stable id.
    pub id: String,
    /// Its number of tokens (a bigger machine may take more).
    pub vnodes: u32,
}

/// The ring over one view of the membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ring {
    /// (token, index into `members`), sorted by token (ties broken by member id).
    tokens: Vec<(u64, usize)>,
    /// Members sorted by id.
    members: Vec<Member>,
}

/// The 64-bit point of `bytes` on the circle.
fn point(bytes: &[u8]) -> u64 {
    let hash = blake3::hash(bytes);
    u64::from_be_bytes(hash.as_bytes()[..8].try_into().expect("32 bytes"))
}

/// The token number `index` of member `id`.
fn token(id: &str, index: u32) -> u64 {
    let mut bytes = Vec::with_capacity(id.len() + 5);
    bytes.extend_from_slice(id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&index.to_be_bytes());
    point(&bytes)
}

impl Ring {
    /// The ring over `members` (duplicates by id count once: the first seen after sorting).
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        let mut sorted: Vec<Member> = members.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        sorted.dedup_by(|a, b| a.id == b.id);
        let mut tokens: Vec<(u64, usize)> = sorted
            .iter()
            .enumerate()
            .flat_map(|(index, member)| (0..member.vnodes).map(move |n| (token(&member.id, n), index)))
            .collect();
        tokens.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| sorted[a.1].id.cmp(&sorted[b.1].id)));
        Self { tokens, members: sorted }
    }

    /// The ring over `ids`, each with [`DEFAULT_VNODES`] tokens.
    pub fn with_default_vnodes<S: Into<String>>(ids: impl IntoIterator<Item = S>) -> Self {
        Self::new(ids.into_iter().map(|id| Member { id: id.into(), vnodes: DEFAULT_VNODES }))
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The point `key` hashes to.
    pub fn key_point(key: &[u8]) -> u64 {
        point(key)
    }

    /// The member that owns `key`, if the ring has any.
    pub fn owner(&self, key: &[u8]) -> Option<&str> {
        self.preference_list(key, 1).into_iter().next()
    }

    /// The owner of `key` first, then the next `n - 1` distinct members clockwise: where the
    /// key's entity runs, and where its replicas go. Fewer when the ring has fewer members.
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<&str> {
        if self.tokens.is_empty() || n == 0 {
            return Vec::new();
        }
        let at = point(key);
        let start = self.tokens.partition_point(|(token, _)| *token < at);
        let mut chosen: Vec<usize> = Vec::with_capacity(n.min(self.members.len()));
        for step in 0..self.tokens.len() {
            let (_, member) = self.tokens[(start + step) % self.tokens.len()];
            if !chosen.contains(&member) {
                chosen.push(member);
                if chosen.len() == n.min(self.members.len()) {
                    break;
                }
            }
        }
        chosen.into_iter().map(|index| self.members[index].id.as_str()).collect()
    }

    /// The tokens of member `id`, in ring order (for `/v1/cluster/ring`).
    pub fn tokens_of(&self, id: &str) -> Vec<u64> {
        self.tokens
            .iter()
            .filter(|(_, member)| self.members[*member].id == id)
            .map(|(token, _)| *token)
            .collect()
    }
}

#[cfg(test)]
mod tests;
