//! Who may do what: the S3 action a request makes, checked against the bucket's policy, its
//! canned ACL and its owner.

use s3s::S3Result;
use s3s::auth::Credentials;
use s3s::s3_error;
use serv_actors::bucket::{BucketInfo, BucketMsg, BucketReply, CannedAcl};

use super::super::error;
use super::super::policy::{Decision, Policy};
use super::{ServS3, unexpected};

/// What a canned ACL must grant for an access.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Read,
    Write,
    /// Bucket configuration: the owner's alone.
    Owner,
}

/// One access a request makes: an S3 action on the bucket or on one of its keys.
#[derive(Clone, Copy)]
pub(super) struct Access<'a> {
    action: &'static str,
    key: Option<&'a str>,
}

impl<'a> Access<'a> {
    pub(super) fn bucket(action: &'static str) -> Self {
        Self { action, key: None }
    }

    pub(super) fn object(action: &'static str, key: &'a str) -> Self {
        Self { action, key: Some(key) }
    }

    pub(super) fn resource(&self, bucket: &str) -> String {
        match self.key {
            Some(key) => format!("arn:aws:s3:::{bucket}/{key}"),
            None => format!("arn:aws:s3:::{bucket}"),
        }
    }

    pub(super) fn need(&self) -> Need {
        const OWNER: &[&str] = &[
            "s3:DeleteBucket",
            "s3:PutBucketAcl",
            "s3:GetBucketAcl",
            "s3:PutBucketVersioning",
            "s3:PutBucketPolicy",
            "s3:GetBucketPolicy",
            "s3:DeleteBucketPolicy",
            "s3:PutBucketCORS",
            "s3:GetBucketCORS",
            "s3:PutBucketObjectLockConfiguration",
            // Weakens a GOVERNANCE retention: a policy cannot grant it to others than the owner.
            "s3:BypassGovernanceRetention",
        ];
        if OWNER.contains(&self.action) {
            Need::Owner
        } else if self.action.starts_with("s3:Get") || self.action.starts_with("s3:List") {
            Need::Read
        } else {
            Need::Write
        }
    }
}

impl ServS3 {
    /// The bucket, if the caller may do `access` on it: root and the owner may do anything a
    /// policy does not deny; others what the bucket's policy allows or, failing a statement
    /// about them, what its canned ACL allows. Bucket configuration stays the owner's.
    pub(super) async fn authorize(
        &self,
        bucket: &str,
        credentials: Option<&Credentials>,
        access: Access<'_>,
    ) -> S3Result<BucketInfo> {
        let BucketReply::Info(info) = self.ask(bucket, BucketMsg::Head).await? else {
            return Err(unexpected());
        };
        let caller = credentials.map(|c| c.access_key.as_str());
        if caller.is_some_and(|key| self.keys.is_root(key)) {
            return Ok(info);
        }
        let denied = || s3_error!(AccessDenied, "Access Denied");
        let decision = match info.policy.as_deref().map(|document| Policy::parse(document, bucket)) {
            Some(Ok(policy)) => policy.decide(caller, access.action, &access.resource(bucket)),
            Some(Err(error)) => return Err(error::internal("a stored bucket policy does not parse", error)),
            None => Decision::Silent,
        };
        let need = access.need();
        match decision {
            Decision::Deny => return Err(denied()),
            Decision::Allow if need != Need::Owner => return Ok(info),
            _ => {}
        }
        if caller == Some(info.owner.as_str()) {
            return Ok(info);
        }
        let allowed = match (info.acl, need) {
            (CannedAcl::PublicReadWrite, Need::Read | Need::Write) => true,
            (CannedAcl::PublicRead, Need::Read) => true,
            (CannedAcl::AuthenticatedRead, Need::Read) => caller.is_some(),
            _ => false,
        };
        if allowed { Ok(info) } else { Err(denied()) }
    }
}

pub(super) fn canned(acl: Option<&str>) -> S3Result<CannedAcl> {
    Ok(match acl {
        None | Some("private") => CannedAcl::Private,
        Some("public-read") => CannedAcl::PublicRead,
        Some("public-read-write") => CannedAcl::PublicReadWrite,
        Some("authenticated-read") => CannedAcl::AuthenticatedRead,
        Some(other) => return Err(s3_error!(InvalidArgument, "Unsupported canned ACL {}", other)),
    })
}
