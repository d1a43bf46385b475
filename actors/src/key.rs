//! The address of an entity actor: its kind and its name within that kind.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of entity a node hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// An S3 bucket.
    Bucket,
    /// A STOMP topic or queue and its log.
    Topic,
    /// A consumer group of a topic (name `topic/group`).
    Group,
    /// An HTTP gateway route.
    Route,
    /// A WASM module.
    Module,
    /// A kind that exists only in this crate's tests and benches (feature `test-kinds`), to
    /// prove and measure the directory without a product entity.
    #[cfg(any(test, feature = "test-kinds"))]
    Probe,
}

impl ActorKind {
    /// The kinds a node runs supervisors for.
    pub const ALL: &'static [ActorKind] = &[
        ActorKind::Bucket,
        ActorKind::Topic,
        ActorKind::Group,
        ActorKind::Route,
        ActorKind::Module,
        #[cfg(any(test, feature = "test-kinds"))]
        ActorKind::Probe,
    ];

    /// Lower-case name, as used in keys, URLs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Bucket => "bucket",
            ActorKind::Topic => "topic",
            ActorKind::Group => "group",
            ActorKind::Route => "route",
            ActorKind::Module => "module",
            #[cfg(any(test, feature = "test-kinds"))]
            ActorKind::Probe => "probe",
        }
    }

    /// Parses a lower-case kind name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address of one entity: `bucket/photos`, `topic/orders`, `group/orders/billing`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorKey {
    /// What kind of entity this is.
    pub kind: ActorKind,
    /// The entity's name within its kind.
    pub name: String,
}

impl ActorKey {
    /// The key of the entity `name` of `kind`.
    pub fn new(kind: ActorKind, name: impl Into<String>) -> Self {
        Self { kind, name: name.into() }
    }
}

impl fmt::Display for ActorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// `name` if it is 1 to `max` characters of `a-z 0-9 . _ -` (routes and modules are named so),
/// else why not, naming it as `what`.
pub fn plain_name<'a>(what: &str, name: &'a str, max: usize) -> Result<&'a str, String> {
    let valid = (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(name)
    } else {
        Err(format!("{what} {name:?} must be 1 to {max} characters of a-z 0-9 . _ -"))
    }
}
