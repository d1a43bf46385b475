//! Who may do what: the S3 action a request makes, checked as S3 checks it against the bucket's
//! policy, its ACL (and, for an object, the object's ACL) and its owner: an explicit `Deny` in
//! the policy wins; otherwise an `Allow` of the policy or a grant of an ACL lets the request
//! through. The bucket's owner (and root) may do anything no policy denies; bucket configuration
//! other than the ACL stays the owner's.

use s3s::S3Result;
use s3s::auth::Credentials;
use s3s::s3_error;
use serv_actors::bucket::{BucketInfo, BucketMsg, BucketReply, Grant, ObjectAcl, Permission, allows};

use super::super::auth::account_id;
use super::super::error;
use super::super::policy::{Decision, Policy};
use super::{ServS3, unexpected};

/// What an access needs from an ACL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    /// An ACL permission.
    Grant(Permission),
    /// Bucket configuration: the owner's alone.
    Owner,
}

/// One access a request makes: an S3 action on the bucket or on one of its keys (one version of
/// it, or the current one), made expecting the bucket to be some account's, or any.
#[derive(Clone, Copy)]
pub(super) struct Access<'a> {
    action: &'static str,
    key: Option<&'a str>,
    version: Option<&'a str>,
    /// `x-amz-expected-bucket-owner`: the account id the caller expects owns the bucket.
    expected_owner: Option<&'a str>,
}

impl<'a> Access<'a> {
    pub(super) fn bucket(action: &'static str) -> Self {
        Self { action, key: None, version: None, expected_owner: None }
    }

    pub(super) fn object(action: &'static str, key: &'a str) -> Self {
        Self { action, key: Some(key), version: None, expected_owner: None }
    }

    /// The access is to this version of the object.
    pub(super) fn version(self, version: Option<&'a str>) -> Self {
        Self { version, ..self }
    }

    /// The caller expects the bucket to be this account's (S3 `ExpectedBucketOwner`).
    pub(super) fn expecting(self, expected_owner: Option<&'a str>) -> Self {
        Self { expected_owner, ..self }
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
        let permission = match self.action {
            action if OWNER.contains(&action) => return Need::Owner,
            "s3:GetBucketAcl" | "s3:GetObjectAcl" => Permission::ReadAcp,
            "s3:PutBucketAcl" | "s3:PutObjectAcl" => Permission::WriteAcp,
            action if action.starts_with("s3:Get") || action.starts_with("s3:List") => Permission::Read,
            _ => Permission::Write,
        };
        Need::Grant(permission)
    }
}

/// Whether ACLs give `need` to `caller` (an account id; `None` when anonymous): the bucket's
/// grants for bucket accesses and for writes to its objects (S3's bucket WRITE); for reads of an
/// object and its ACL, the object's owner and grants (and, for reads, the bucket's READ, as
/// canned public buckets always allowed here).
pub(super) fn acl_allows(
    bucket_grants: &[Grant],
    object: Option<(&str, &[Grant])>,
    caller: Option<&str>,
    need: Need,
) -> bool {
    let Need::Grant(permission) = need else { return false };
    let for_object = object.is_some();
    let by_bucket = match permission {
        Permission::ReadAcp | Permission::WriteAcp if for_object => false,
        _ => allows(bucket_grants, caller, permission),
    };
    by_bucket
        || object.is_some_and(|(owner, grants)| {
            permission != Permission::Write && (caller == Some(owner) || allows(grants, caller, permission))
        })
}

impl ServS3 {
    /// The bucket, if the caller may do `access` on it (see the module's paragraph).
    pub(super) async fn authorize(
        &self,
        bucket: &str,
        credentials: Option<&Credentials>,
        access: Access<'_>,
    ) -> S3Result<BucketInfo> {
        let BucketReply::Info(info) = self.ask(bucket, BucketMsg::Head).await? else {
            return Err(unexpected());
        };
        let denied = || s3_error!(AccessDenied, "Access Denied");
        if access.expected_owner.is_some_and(|expected| expected != account_id(&info.owner)) {
            return Err(denied());
        }
        let caller = credentials.map(|c| c.access_key.as_str());
        if caller.is_some_and(|key| self.keys.is_root(key)) {
            return Ok(info);
        }
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
        let account = caller.map(account_id);
        let account = account.as_deref();
        if acl_allows(&info.grants, None, account, need) {
            return Ok(info);
        }
        // Only now the object's own ACL: most requests are decided without reading it.
        let Some(key) = access.key.filter(|_| need != Need::Grant(Permission::Write)) else {
            return Err(denied());
        };
        let acl = self.object_acl(bucket, key, access.version, &info.owner).await.map_err(|_| denied())?;
        let owner = account_id(&acl.owner);
        if acl_allows(&info.grants, Some((&owner, &acl.grants)), account, need) {
            Ok(info)
        } else {
            Err(denied())
        }
    }

    /// The owner and grants of `key` (or one version of it); a version from before ACLs were
    /// kept is `bucket_owner`'s.
    pub(super) async fn object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bucket_owner: &str,
    ) -> S3Result<ObjectAcl> {
        let msg = BucketMsg::GetObject { key: key.to_string(), version_id: version_id.map(str::to_string) };
        let BucketReply::Object(object) = self.ask(bucket, msg).await? else { return Err(unexpected()) };
        Ok(object.acl.unwrap_or_else(|| ObjectAcl { owner: bucket_owner.to_string(), grants: Vec::new() }))
    }
}

#[cfg(test)]
mod tests {
    use serv_actors::bucket::Grantee;

    use super::*;

    fn grant(grantee: Grantee, permission: Permission) -> Grant {
        Grant { grantee, permission }
    }

    #[test]
    fn bucket_read_lets_an_account_list_but_not_write() {
        let grants = vec![grant(Grantee::Account("a".into()), Permission::Read)];
        assert!(acl_allows(&grants, None, Some("a"), Need::Grant(Permission::Read)));
        assert!(!acl_allows(&grants, None, Some("a"), Need::Grant(Permission::Write)));
        assert!(!acl_allows(&grants, None, Some("b"), Need::Grant(Permission::Read)));
        assert!(!acl_allows(&grants, None, Some("a"), Need::Owner));
    }

    #[test]
    fn object_grants_give_reads_and_acp_but_never_writes() {
        let object = vec![grant(Grantee::Account("a".into()), Permission::FullControl)];
        let on = Some(("owner", object.as_slice()));
        assert!(acl_allows(&[], on, Some("a"), Need::Grant(Permission::Read)));
        assert!(acl_allows(&[], on, Some("a"), Need::Grant(Permission::WriteAcp)));
        assert!(!acl_allows(&[], on, Some("a"), Need::Grant(Permission::Write)));
        assert!(acl_allows(&[], on, Some("owner"), Need::Grant(Permission::ReadAcp)));
        assert!(!acl_allows(&[], on, None, Need::Grant(Permission::Read)));
    }

    #[test]
    fn bucket_acp_grants_do_not_reach_object_acls() {
        let bucket = vec![grant(Grantee::Account("a".into()), Permission::FullControl)];
        let on = Some(("owner", &[][..]));
        assert!(!acl_allows(&bucket, on, Some("a"), Need::Grant(Permission::WriteAcp)));
        assert!(acl_allows(&bucket, None, Some("a"), Need::Grant(Permission::WriteAcp)));
        assert!(acl_allows(&bucket, on, Some("a"), Need::Grant(Permission::Read)));
    }

    #[test]
    fn all_users_read_reaches_anonymous_requests() {
        let bucket = vec![grant(Grantee::AllUsers, Permission::Read)];
        assert!(acl_allows(&bucket, None, None, Need::Grant(Permission::Read)));
        let object = vec![grant(Grantee::AllUsers, Permission::Read)];
        assert!(acl_allows(&[], Some(("owner", &object)), None, Need::Grant(Permission::Read)));
    }
}
