//! ACLs: GetBucketAcl, PutBucketAcl, GetObjectAcl, PutObjectAcl, and the reading of an ACL from a
//! request, which S3 lets name in one of three ways (never two at once): a canned ACL
//! (`x-amz-acl`), `x-amz-grant-*` headers (`id="…"`, `uri="…"`, comma-separated), or an
//! `AccessControlPolicy` body. The owner's full control is implicit: it is shown first and
//! never stored.
//!
//! Email grantees are refused as S3 refuses them outside its eight oldest regions, with
//! `InvalidArgument` ("unsupported argument"); those regions answer 405 since October 2025.

use s3s::auth::Credentials;
use s3s::dto::{self, AccessControlPolicy, Owner, Type};
use s3s::{S3Request, S3Response, S3Result, s3_error};
use serv_actors::bucket::{BucketMsg, Grant, Grantee, MAX_GRANTS, ObjectAcl, Permission};

use super::super::auth::account_id;
use super::ServS3;
use super::access::Access;

const ALL_USERS_URI: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS_URI: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// An ACL as one request names it; at most one of the three ways may be used.
#[derive(Default)]
pub(super) struct AclRequest<'a> {
    /// `x-amz-acl`.
    pub canned: Option<&'a str>,
    /// Each `x-amz-grant-*` header present, with the permission it grants.
    pub headers: Vec<(&'a str, Permission)>,
    /// An `AccessControlPolicy` body.
    pub body: Option<&'a AccessControlPolicy>,
}

/// Where an ACL applies: `bucket-owner-*` canned ACLs mean something on objects only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum AclOf<'a> {
    Bucket,
    /// An object in a bucket whose owner's account is this.
    Object {
        bucket_owner: &'a str,
    },
}

/// The ACL an input names: its `x-amz-acl`, its `x-amz-grant-*` headers (all five, or the ones
/// listed with their permissions) and `body` (its `AccessControlPolicy`, where it has one).
macro_rules! acl_request {
    ($input:expr, $body:expr) => {
        acl_request!($input, $body, grant_full_control => FullControl, grant_read => Read,
            grant_read_acp => ReadAcp, grant_write => Write, grant_write_acp => WriteAcp)
    };
    ($input:expr, $body:expr, $($field:ident => $permission:ident),*) => {
        super::acl::AclRequest {
            canned: $input.acl.as_ref().map(|a| a.as_str()),
            headers: [$(($input.$field.as_deref(), serv_actors::bucket::Permission::$permission)),*]
                .into_iter()
                .filter_map(|(value, permission)| value.map(|value| (value, permission)))
                .collect(),
            body: $body,
        }
    };
}

/// The owner and ACL of the version an object write (PutObject, CopyObject,
/// CreateMultipartUpload) makes, from its `x-amz-acl` and `x-amz-grant-*` headers (objects have
/// no WRITE): see [`new_object_acl`].
macro_rules! new_object_acl {
    ($input:expr, $bucket_owner:expr, $credentials:expr) => {
        super::acl::new_object_acl(
            acl_request!($input, None, grant_full_control => FullControl, grant_read => Read,
                grant_read_acp => ReadAcp, grant_write_acp => WriteAcp),
            $bucket_owner,
            $credentials,
        )
    };
}

impl AclRequest<'_> {
    /// The grants asked for, besides the owner's (`owner`: its account id); none named: private.
    pub(super) fn grants(&self, of: AclOf<'_>, owner: &str) -> S3Result<Vec<Grant>> {
        let ways = [self.canned.is_some(), !self.headers.is_empty(), self.body.is_some()];
        if ways.iter().filter(|used| **used).count() > 1 {
            return Err(s3_error!(
                InvalidRequest,
                "Specifying both Canned ACLs and Header Grants (or a body) is not allowed"
            ));
        }
        let mut grants = if let Some(canned) = self.canned {
            canned_grants(canned, of)?
        } else if let Some(body) = self.body {
            body.grants.iter().flatten().map(grant_of_body).collect::<S3Result<Vec<_>>>()?
        } else {
            let mut grants = Vec::new();
            for (value, permission) in &self.headers {
                for grantee in header_grantees(value)? {
                    grants.push(Grant { grantee, permission: *permission });
                }
            }
            grants
        };
        grants.retain(|grant| {
            !(grant.permission == Permission::FullControl && grant.grantee == Grantee::Account(owner.into()))
        });
        if grants.len() > MAX_GRANTS {
            return Err(s3_error!(MalformedACLError, "An ACL holds at most {} grants", MAX_GRANTS));
        }
        Ok(grants)
    }
}

fn canned_grants(canned: &str, of: AclOf<'_>) -> S3Result<Vec<Grant>> {
    let grant = |grantee, permission| Grant { grantee, permission };
    Ok(match (canned, of) {
        ("private", _) => Vec::new(),
        ("public-read", _) => vec![grant(Grantee::AllUsers, Permission::Read)],
        ("public-read-write", _) => {
            vec![grant(Grantee::AllUsers, Permission::Read), grant(Grantee::AllUsers, Permission::Write)]
        }
        ("authenticated-read", _) => vec![grant(Grantee::AuthenticatedUsers, Permission::Read)],
        // On a bucket these say nothing more than private.
        ("bucket-owner-read" | "bucket-owner-full-control", AclOf::Bucket) => Vec::new(),
        ("bucket-owner-read", AclOf::Object { bucket_owner }) => {
            vec![grant(Grantee::Account(bucket_owner.into()), Permission::Read)]
        }
        ("bucket-owner-full-control", AclOf::Object { bucket_owner }) => {
            vec![grant(Grantee::Account(bucket_owner.into()), Permission::FullControl)]
        }
        (other, _) => return Err(s3_error!(InvalidArgument, "Unsupported canned ACL {}", other)),
    })
}

fn unsupported_email() -> s3s::S3Error {
    s3_error!(InvalidArgument, "The request contained an unsupported argument (email grantees)")
}

/// A canonical user id: 64 lower-case hex digits.
fn account(id: &str) -> S3Result<Grantee> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(Grantee::Account(id.to_string()))
    } else {
        Err(s3_error!(InvalidArgument, "Invalid id"))
    }
}

fn group(uri: &str) -> S3Result<Grantee> {
    match uri {
        ALL_USERS_URI => Ok(Grantee::AllUsers),
        AUTHENTICATED_USERS_URI => Ok(Grantee::AuthenticatedUsers),
        _ => Err(s3_error!(InvalidArgument, "Invalid group uri")),
    }
}

/// The grantees of one `x-amz-grant-*` header: `id="…"`, `uri="…"`, comma-separated.
fn header_grantees(value: &str) -> S3Result<Vec<Grantee>> {
    value
        .split(',')
        .map(|item| {
            let Some((kind, quoted)) = item.trim().split_once('=') else {
                return Err(s3_error!(InvalidArgument, "Grant headers are type=\"value\" pairs"));
            };
            let value = quoted.trim().trim_matches('"');
            match kind.trim() {
                "id" => account(value),
                "uri" => group(value),
                "emailAddress" => Err(unsupported_email()),
                _ => Err(s3_error!(InvalidArgument, "Unknown grantee type {}", kind)),
            }
        })
        .collect()
}

fn grant_of_body(grant: &dto::Grant) -> S3Result<Grant> {
    let malformed = || s3_error!(MalformedACLError, "The XML you provided was not well-formed");
    let grantee = grant.grantee.as_ref().ok_or_else(malformed)?;
    let grantee = match grantee.type_.as_str() {
        Type::CANONICAL_USER => account(grantee.id.as_deref().ok_or_else(malformed)?)?,
        Type::GROUP => group(grantee.uri.as_deref().ok_or_else(malformed)?)?,
        Type::AMAZON_CUSTOMER_BY_EMAIL => return Err(unsupported_email()),
        _ => return Err(malformed()),
    };
    let permission = match grant.permission.as_ref().map(|p| p.as_str()) {
        Some(dto::Permission::READ) => Permission::Read,
        Some(dto::Permission::WRITE) => Permission::Write,
        Some(dto::Permission::READ_ACP) => Permission::ReadAcp,
        Some(dto::Permission::WRITE_ACP) => Permission::WriteAcp,
        Some(dto::Permission::FULL_CONTROL) => Permission::FullControl,
        _ => return Err(malformed()),
    };
    Ok(Grant { grantee, permission })
}

/// The grants S3 shows: the owner's full control first, then the stored ones.
fn shown(owner: &Owner, grants: &[Grant]) -> Vec<dto::Grant> {
    let user = |id: &str, display_name| dto::Grantee {
        type_: Type::from_static(Type::CANONICAL_USER),
        id: Some(id.to_string()),
        display_name,
        uri: None,
        email_address: None,
    };
    let group = |uri: &str| dto::Grantee {
        type_: Type::from_static(Type::GROUP),
        id: None,
        display_name: None,
        uri: Some(uri.to_string()),
        email_address: None,
    };
    let permission = |p| {
        dto::Permission::from_static(match p {
            Permission::Read => dto::Permission::READ,
            Permission::Write => dto::Permission::WRITE,
            Permission::ReadAcp => dto::Permission::READ_ACP,
            Permission::WriteAcp => dto::Permission::WRITE_ACP,
            Permission::FullControl => dto::Permission::FULL_CONTROL,
        })
    };
    let owner_id = owner.id.as_deref().unwrap_or_default();
    let first = dto::Grant {
        grantee: Some(user(owner_id, owner.display_name.clone())),
        permission: Some(permission(Permission::FullControl)),
    };
    let rest = grants.iter().map(|grant| dto::Grant {
        grantee: Some(match &grant.grantee {
            Grantee::Account(id) => user(id, None),
            Grantee::AllUsers => group(ALL_USERS_URI),
            Grantee::AuthenticatedUsers => group(AUTHENTICATED_USERS_URI),
        }),
        permission: Some(permission(grant.permission)),
    });
    std::iter::once(first).chain(rest).collect()
}

pub(super) async fn put_bucket_acl(
    s3: &ServS3,
    req: S3Request<dto::PutBucketAclInput>,
) -> S3Result<S3Response<dto::PutBucketAclOutput>> {
    let input = req.input;
    let access = Access::bucket("s3:PutBucketAcl").expecting(input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let request = acl_request!(input, input.access_control_policy.as_ref());
    let grants = request.grants(AclOf::Bucket, &account_id(&info.owner))?;
    s3.ask(&input.bucket, BucketMsg::SetAcl(grants)).await?;
    Ok(S3Response::new(dto::PutBucketAclOutput::default()))
}

pub(super) async fn get_bucket_acl(
    s3: &ServS3,
    req: S3Request<dto::GetBucketAclInput>,
) -> S3Result<S3Response<dto::GetBucketAclOutput>> {
    let input = req.input;
    let access = Access::bucket("s3:GetBucketAcl").expecting(input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let owner = s3.keys.owner(&info.owner);
    let grants = shown(&owner, &info.grants);
    Ok(S3Response::new(dto::GetBucketAclOutput { grants: Some(grants), owner: Some(owner) }))
}

pub(super) async fn put_object_acl(
    s3: &ServS3,
    req: S3Request<dto::PutObjectAclInput>,
) -> S3Result<S3Response<dto::PutObjectAclOutput>> {
    let input = req.input;
    let version_id = input.version_id.clone();
    let access = Access::object("s3:PutObjectAcl", &input.key)
        .version(version_id.as_deref())
        .expecting(input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let object = s3.object_acl(&input.bucket, &input.key, version_id.as_deref(), &info.owner).await?;
    let request = acl_request!(input, input.access_control_policy.as_ref());
    let bucket_owner = account_id(&info.owner);
    let grants = request.grants(AclOf::Object { bucket_owner: &bucket_owner }, &account_id(&object.owner))?;
    let msg = BucketMsg::SetObjectAcl { key: input.key, version_id, grants };
    s3.ask(&input.bucket, msg).await?;
    Ok(S3Response::new(dto::PutObjectAclOutput::default()))
}

pub(super) async fn get_object_acl(
    s3: &ServS3,
    req: S3Request<dto::GetObjectAclInput>,
) -> S3Result<S3Response<dto::GetObjectAclOutput>> {
    let input = req.input;
    let access = Access::object("s3:GetObjectAcl", &input.key)
        .version(input.version_id.as_deref())
        .expecting(input.expected_bucket_owner.as_deref());
    let info = s3.authorize(&input.bucket, req.credentials.as_ref(), access).await?;
    let acl = s3.object_acl(&input.bucket, &input.key, input.version_id.as_deref(), &info.owner).await?;
    let owner = s3.keys.owner(&acl.owner);
    let grants = shown(&owner, &acl.grants);
    Ok(S3Response::new(dto::GetObjectAclOutput {
        grants: Some(grants),
        owner: Some(owner),
        ..Default::default()
    }))
}

/// The owner and ACL of a version a write makes (PutObject, CopyObject): the writer's (the
/// bucket owner's when anonymous), with the grants its canned ACL or headers ask for.
pub(super) fn new_object_acl(
    request: AclRequest<'_>,
    bucket_owner: &str,
    writer: Option<&Credentials>,
) -> S3Result<ObjectAcl> {
    let owner = writer.map_or(bucket_owner, |c| c.access_key.as_str()).to_string();
    let bucket_owner = account_id(bucket_owner);
    let grants = request.grants(AclOf::Object { bucket_owner: &bucket_owner }, &account_id(&owner))?;
    Ok(ObjectAcl { owner, grants })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn grant_headers_name_accounts_and_groups() {
        let value = format!("id=\"{A}\", uri=\"{ALL_USERS_URI}\"");
        let request = AclRequest { headers: vec![(&value, Permission::Read)], ..Default::default() };
        let grants = request.grants(AclOf::Bucket, B).unwrap();
        assert_eq!(
            grants,
            vec![
                Grant { grantee: Grantee::Account(A.into()), permission: Permission::Read },
                Grant { grantee: Grantee::AllUsers, permission: Permission::Read },
            ]
        );
    }

    #[test]
    fn email_grantees_and_bad_ids_are_refused() {
        let email = "emailAddress=\"x@example.com\"";
        let request = AclRequest { headers: vec![(email, Permission::Read)], ..Default::default() };
        assert_eq!(*request.grants(AclOf::Bucket, B).unwrap_err().code(), s3s::S3ErrorCode::InvalidArgument);
        let request = AclRequest { headers: vec![("id=\"short\"", Permission::Read)], ..Default::default() };
        assert!(request.grants(AclOf::Bucket, B).is_err());
    }

    #[test]
    fn a_canned_acl_with_grant_headers_is_an_invalid_request() {
        let value = format!("id=\"{A}\"");
        let request = AclRequest {
            canned: Some("private"),
            headers: vec![(&value, Permission::Read)],
            ..Default::default()
        };
        assert_eq!(*request.grants(AclOf::Bucket, B).unwrap_err().code(), s3s::S3ErrorCode::InvalidRequest);
    }

    #[test]
    fn bucket_owner_canned_acls_grant_the_bucket_owner_on_objects_only() {
        let request = AclRequest { canned: Some("bucket-owner-read"), ..Default::default() };
        assert_eq!(request.grants(AclOf::Bucket, B).unwrap(), Vec::new());
        let grants = request.grants(AclOf::Object { bucket_owner: A }, B).unwrap();
        assert_eq!(grants, vec![Grant { grantee: Grantee::Account(A.into()), permission: Permission::Read }]);
        // The owner's own full control is implicit, not stored.
        let request = AclRequest { canned: Some("bucket-owner-full-control"), ..Default::default() };
        assert_eq!(request.grants(AclOf::Object { bucket_owner: A }, A).unwrap(), Vec::new());
    }

    #[test]
    fn more_than_max_grants_are_refused() {
        let value = vec![format!("id=\"{A}\""); MAX_GRANTS + 1].join(",");
        let request = AclRequest { headers: vec![(&value, Permission::Read)], ..Default::default() };
        assert_eq!(
            *request.grants(AclOf::Bucket, B).unwrap_err().code(),
            s3s::S3ErrorCode::MalformedACLError
        );
    }

    #[test]
    fn a_body_grant_reads_its_grantee_and_permission() {
        let body = AccessControlPolicy {
            grants: Some(vec![dto::Grant {
                grantee: Some(dto::Grantee {
                    type_: Type::from_static(Type::CANONICAL_USER),
                    id: Some(A.into()),
                    display_name: None,
                    uri: None,
                    email_address: None,
                }),
                permission: Some(dto::Permission::from_static(dto::Permission::WRITE_ACP)),
            }]),
            owner: None,
        };
        let request = AclRequest { body: Some(&body), ..Default::default() };
        let grants = request.grants(AclOf::Bucket, B).unwrap();
        assert_eq!(
            grants,
            vec![Grant { grantee: Grantee::Account(A.into()), permission: Permission::WriteAcp }]
        );
    }
}
