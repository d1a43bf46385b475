//! Access control lists (S3 ACLs): who besides the owner may do what on a bucket or an object
//! version. The owner's own full control is implicit and never stored; what is stored is every
//! other grant, to an account (canonical user id) or to one of S3's two global groups.
//!
//! The edge parses canned ACLs, `x-amz-grant-*` headers and `AccessControlPolicy` bodies into
//! [`Grant`]s and decides access with [`allows`]; this layer only keeps them.

use serde::{Deserialize, Serialize};

/// Most grants one ACL holds (S3's limit).
pub const MAX_GRANTS: usize = 100;

/// Who a grant is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grantee {
    /// One account, by its canonical user id (64 hex digits).
    Account(String),
    /// Anyone, signed or not (`http://acs.amazonaws.com/groups/global/AllUsers`).
    AllUsers,
    /// Any signed request (`http://acs.amazonaws.com/groups/global/AuthenticatedUsers`).
    AuthenticatedUsers,
}

/// What a grant allows (S3 ACL permissions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permission {
    /// Bucket: list it; object: read its body and headers.
    Read,
    /// Bucket: write and delete its objects; objects have no WRITE.
    Write,
    /// Read the ACL.
    ReadAcp,
    /// Replace the ACL.
    WriteAcp,
    /// All four.
    FullControl,
}

impl Permission {
    /// True if holding `self` gives `wanted`.
    pub fn covers(self, wanted: Permission) -> bool {
        self == wanted || self == Permission::FullControl
    }
}

/// One grant of an ACL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub grantee: Grantee,
    pub permission: Permission,
}

/// An object version's owner and grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAcl {
    /// Access key that wrote the version (its account owns it).
    pub owner: String,
    /// Grants besides the owner's full control, at most [`MAX_GRANTS`].
    pub grants: Vec<Grant>,
}

/// True if `grants` give `wanted` to the caller: `caller` is its account id, `None` when the
/// request is anonymous.
pub fn allows(grants: &[Grant], caller: Option<&str>, wanted: Permission) -> bool {
    grants.iter().any(|grant| {
        let applies = match &grant.grantee {
            Grantee::AllUsers => true,
            Grantee::AuthenticatedUsers => caller.is_some(),
            Grantee::Account(id) => caller == Some(id.as_str()),
        };
        applies && grant.permission.covers(wanted)
    })
}

/// The grants a canned ACL stands for besides the owner's (from before grants were stored).
pub(super) fn grants_of(canned: super::CannedAcl) -> Vec<Grant> {
    use super::CannedAcl::*;
    let grant = |grantee, permission| Grant { grantee, permission };
    match canned {
        Private => Vec::new(),
        PublicRead => vec![grant(Grantee::AllUsers, Permission::Read)],
        PublicReadWrite => {
            vec![grant(Grantee::AllUsers, Permission::Read), grant(Grantee::AllUsers, Permission::Write)]
        }
        AuthenticatedRead => vec![grant(Grantee::AuthenticatedUsers, Permission::Read)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_control_covers_every_permission_and_read_only_read() {
        let grants =
            vec![Grant { grantee: Grantee::Account("a".into()), permission: Permission::FullControl }];
        assert!(allows(&grants, Some("a"), Permission::WriteAcp));
        assert!(!allows(&grants, Some("b"), Permission::Read));
        let grants = vec![Grant { grantee: Grantee::Account("a".into()), permission: Permission::Read }];
        assert!(allows(&grants, Some("a"), Permission::Read));
        assert!(!allows(&grants, Some("a"), Permission::Write));
    }

    #[test]
    fn groups_reach_anonymous_and_signed_callers() {
        let all = vec![Grant { grantee: Grantee::AllUsers, permission: Permission::Read }];
        assert!(allows(&all, None, Permission::Read));
        let signed = vec![Grant { grantee: Grantee::AuthenticatedUsers, permission: Permission::Read }];
        assert!(!allows(&signed, None, Permission::Read));
        assert!(allows(&signed, Some("x"), Permission::Read));
    }
}
