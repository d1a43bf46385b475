//! Who is asking: access keys for SigV4, and which anonymous requests may reach an operation.
//!
//! Each access key belongs to an account, S3's canonical user: buckets and objects are owned by
//! accounts, and ACLs grant to accounts. An account is one key's (the root key's is the root
//! account); its id is derived from the access key, so every node agrees on it without storing it.
//!
//! Authentication is `s3s`'s (signatures, presigned URLs, clock skew); this module supplies the
//! secrets. Authorization per bucket (owner, policy, ACLs) happens in the operations, which know
//! the bucket; here anonymous requests are let through, for a bucket or object ACL (or policy) to decide.

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::Owner;
use s3s::{S3Result, s3_error};
use serv_storage::keys::AccessKeys;
use sha2::{Digest, Sha256};

use crate::credentials::ClusterCredentials;

/// The access keys the S3 edge accepts.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<KeysInner>,
}

struct KeysInner {
    root: ClusterCredentials,
    managed: AccessKeys,
}

impl Keys {
    /// The cluster's root pair (once this node has adopted it) plus the keys managed through
    /// the admin API.
    pub fn new(root: ClusterCredentials, managed: AccessKeys) -> Self {
        Self { inner: Arc::new(KeysInner { root, managed }) }
    }

    /// True for the root access key, which may do anything.
    pub fn is_root(&self, access_key: &str) -> bool {
        self.inner.root.root().is_some_and(|root| root.access_key == access_key)
    }

    /// The account owning `access_key`, as S3 shows an owner: its canonical id and a display
    /// name (the key's name; `root` for the root key).
    pub fn owner(&self, access_key: &str) -> Owner {
        let display_name = if self.is_root(access_key) {
            Some("root".to_string())
        } else {
            self.inner.managed.name(access_key)
        };
        Owner { id: Some(account_id(access_key)), display_name }
    }

    /// The secret of `access_key` (root or managed), if it is a live key: STOMP logs in with it.
    pub fn secret(&self, access_key: &str) -> Option<String> {
        match self.inner.root.root() {
            Some(root) if root.access_key == access_key => Some(root.secret_key),
            _ => self.inner.managed.secret(access_key),
        }
    }
}

/// The canonical user id (64 hex digits) of the account `access_key` belongs to.
pub fn account_id(access_key: &str) -> String {
    let digest = Sha256::new().chain_update(b"serv-account\0").chain_update(access_key.as_bytes()).finalize();
    super::body::hex(&digest)
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if let Some(secret) = self.secret(access_key) {
            return Ok(SecretKey::from(secret));
        }
        Err(s3_error!(
            InvalidAccessKeyId,
            "The AWS access key Id you provided does not exist in our records."
        ))
    }
}

/// Notes each request's operation for the S3 metrics (s3s resolves it just before this check),
/// and lets requests through to the operations, which decide per bucket: a bucket's policy or
/// ACLs may open it to anonymous requests. (Without this, s3s refuses every anonymous
/// request once authentication is configured.) Operations that need an identity whatever any
/// bucket says are refused here, before their input is even parsed.
pub(super) struct Access;

const NEED_IDENTITY: &[&str] = &["CreateBucket", "ListBuckets"];

/// Operations served even near the memory budget (by name prefix): they read or free.
const FREE_WHEN_SHORT: &[&str] = &["Get", "Head", "List", "Delete", "Abort"];

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        super::metrics::note_operation(cx.s3_op().name());
        if cx.credentials().is_none() && NEED_IDENTITY.contains(&cx.s3_op().name()) {
            return Err(s3_error!(AccessDenied, "Access Denied"));
        }
        // Near the memory budget, what would store data waits; reads, listings and deletes go on.
        let op = cx.s3_op().name();
        if !FREE_WHEN_SHORT.iter().any(|prefix| op.starts_with(prefix))
            && crate::memory::refuses(crate::memory::Edge::S3)
        {
            let message = crate::memory::refusal("--max-memory-bytes");
            return Err(s3s::S3Error::with_message(s3s::S3ErrorCode::SlowDown, message));
        }
        Ok(())
    }
}
