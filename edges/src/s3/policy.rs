//! Bucket policies: the JSON documents of S3 (`Version`, `Statement` with `Effect`, `Principal`,
//! `Action`, `Resource`), evaluated the way S3 does for a bucket's statements: an explicit
//! `Deny` wins, then an `Allow`, else the bucket's ACL decides.
//!
//! Principals are `"*"` (anyone, signed or not), or `{"AWS": ...}` naming access keys directly or
//! as ARNs ending in `/ACCESS_KEY`. Actions and resources may use `*` and `?` wildcards.
//! `Condition` blocks are refused when the policy is put, rather than ignored.

use serde_json::Value;

/// Largest policy document accepted (S3's own limit is 20 KB).
pub(super) const MAX_POLICY_BYTES: usize = 20 * 1024;

/// A parsed policy.
#[derive(Debug)]
pub(super) struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug)]
struct Statement {
    allow: bool,
    /// `None` means any principal.
    principals: Option<Vec<String>>,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// What a policy says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Allow,
    Deny,
    /// No statement applies: the ACL decides.
    Silent,
}

/// Strings or a list of strings, as policies write them.
fn strings(value: &Value, field: &str) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or_else(|| format!("{field} must hold strings")))
            .collect(),
        _ => Err(format!("{field} must be a string or a list of strings")),
    }
}

impl Policy {
    /// Parses and checks a policy for `bucket`: every resource must be in that bucket.
    pub(super) fn parse(document: &str, bucket: &str) -> Result<Self, String> {
        if document.len() > MAX_POLICY_BYTES {
            return Err(format!("Policies must be at most {MAX_POLICY_BYTES} bytes"));
        }
        let root: Value =
            serde_json::from_str(document).map_err(|e| format!("Policies must be valid JSON: {e}"))?;
        let statements = match root.get("Statement") {
            Some(Value::Array(items)) => items.clone(),
            Some(item @ Value::Object(_)) => vec![item.clone()],
            _ => return Err("Policies must have a Statement".into()),
        };
        if statements.is_empty() {
            return Err("Policies must have at least one Statement".into());
        }
        let bucket_arn = format!("arn:aws:s3:::{bucket}");
        let parsed = statements
            .iter()
            .map(|statement| {
                if statement.get("Condition").is_some() {
                    return Err("Condition blocks are not supported".to_string());
                }
                if statement.get("NotPrincipal").is_some()
                    || statement.get("NotAction").is_some()
                    || statement.get("NotResource").is_some()
                {
                    return Err("NotPrincipal, NotAction and NotResource are not supported".to_string());
                }
                let allow = match statement.get("Effect").and_then(Value::as_str) {
                    Some("Allow") => true,
                    Some("Deny") => false,
                    _ => return Err("Effect must be Allow or Deny".to_string()),
                };
                let principals = match statement.get("Principal") {
                    Some(Value::String(s)) if s == "*" => None,
                    Some(Value::Object(map)) => match map.get("AWS") {
                        Some(Value::String(s)) if s == "*" => None,
                        Some(aws) => Some(strings(aws, "Principal.AWS")?),
                        None => return Err("Principal must name AWS principals or be \"*\"".to_string()),
                    },
                    _ => return Err("Principal must be \"*\" or {\"AWS\": ...}".to_string()),
                };
                let actions = strings(statement.get("Action").unwrap_or(&Value::Null), "Action")?;
                if let Some(bad) = actions.iter().find(|a| !a.starts_with("s3:") && *a != "*") {
                    return Err(format!("Action {bad} is not an s3: action"));
                }
                let resources = strings(statement.get("Resource").unwrap_or(&Value::Null), "Resource")?;
                if let Some(bad) = resources
                    .iter()
                    .find(|r| !(*r == &bucket_arn || r.starts_with(&format!("{bucket_arn}/"))))
                {
                    return Err(format!("Policy has an invalid resource: {bad}"));
                }
                Ok(Statement { allow, principals, actions, resources })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { statements: parsed })
    }

    /// The policy's decision for `caller` (an access key, or `None` when anonymous) doing
    /// `action` (`s3:GetObject`) on `resource` (`arn:aws:s3:::bucket/key`).
    pub(super) fn decide(&self, caller: Option<&str>, action: &str, resource: &str) -> Decision {
        let mut decision = Decision::Silent;
        for statement in &self.statements {
            let principal = match &statement.principals {
                None => true,
                Some(names) => caller.is_some_and(|key| {
                    names
                        .iter()
                        .any(|name| name == key || name.rsplit_once('/').is_some_and(|(_, last)| last == key))
                }),
            };
            let applies = principal
                && statement.actions.iter().any(|pattern| wildcard(pattern, action))
                && statement.resources.iter().any(|pattern| wildcard(pattern, resource));
            match (applies, statement.allow) {
                (true, false) => return Decision::Deny,
                (true, true) => decision = Decision::Allow,
                _ => {}
            }
        }
        decision
    }
}

/// `*` matches any run of characters, `?` any one character.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t, mut star, mut mark) = (0, 0, None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_s3() {
        assert!(wildcard("s3:*", "s3:GetObject"));
        assert!(wildcard("arn:aws:s3:::b/*", "arn:aws:s3:::b/a/b/c"));
        assert!(wildcard("arn:aws:s3:::b/photos/*.jpg", "arn:aws:s3:::b/photos/x/cat.jpg"));
        assert!(!wildcard("arn:aws:s3:::b/photos/*", "arn:aws:s3:::b/docs/a"));
        assert!(wildcard("s3:Get?bject", "s3:GetObject"));
        assert!(!wildcard("s3:GetObject", "s3:GetObjectTagging"));
    }

    #[test]
    fn deny_wins_then_allow_then_silence() {
        let policy = Policy::parse(
            r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/public/*"},
                {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::000000000000:user/ALT"]},
                 "Action": ["s3:PutObject", "s3:GetObject"], "Resource": "arn:aws:s3:::b/*"},
                {"Effect": "Deny", "Principal": {"AWS": "ALT"}, "Action": "s3:*", "Resource": "arn:aws:s3:::b/secret/*"}
            ]}"#,
            "b",
        )
        .unwrap();
        assert_eq!(policy.decide(None, "s3:GetObject", "arn:aws:s3:::b/public/a"), Decision::Allow);
        assert_eq!(policy.decide(None, "s3:PutObject", "arn:aws:s3:::b/public/a"), Decision::Silent);
        assert_eq!(policy.decide(Some("ALT"), "s3:PutObject", "arn:aws:s3:::b/x"), Decision::Allow);
        assert_eq!(policy.decide(Some("ALT"), "s3:GetObject", "arn:aws:s3:::b/secret/x"), Decision::Deny);
        assert_eq!(policy.decide(Some("OTHER"), "s3:PutObject", "arn:aws:s3:::b/x"), Decision::Silent);
    }

    #[test]
    fn malformed_or_unsupported_policies_are_refused() {
        for (document, why) in [
            ("not json", "valid JSON"),
            (r#"{"Statement": []}"#, "at least one"),
            (
                r#"{"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::b"}]}"#,
                "Effect",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::other/*"}]}"#,
                "invalid resource",
            ),
            (
                r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::b", "Condition": {}}]}"#,
                "Condition",
            ),
        ] {
            let error = Policy::parse(document, "b").unwrap_err();
            assert!(error.contains(why), "{document}: {error}");
        }
    }
}
