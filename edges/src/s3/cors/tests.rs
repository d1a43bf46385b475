//! CORS rules: what a configuration must satisfy to be stored, and which rule answers a request.

use super::*;

fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CORSRule {
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    CORSRule {
        allowed_origins: list(origins),
        allowed_methods: list(methods),
        allowed_headers: (!headers.is_empty()).then(|| list(headers)),
        ..Default::default()
    }
}

fn stored(rules: Vec<CORSRule>) -> CorsConfiguration {
    configuration(rules).expect("a valid configuration")
}

fn code(result: S3Result<CorsConfiguration>) -> S3ErrorCode {
    result.expect_err("an invalid configuration").code().clone()
}

#[test]
fn the_first_rule_matching_origin_method_and_headers_is_used() {
    let config = stored(vec![
        rule(&["https://app.example.com"], &["PUT"], &["content-type"]),
        rule(&["https://*.example.com"], &["GET", "PUT"], &["x-amz-*"]),
        rule(&["*"], &["GET"], &[]),
    ]);
    let id = |rule: Option<&CorsRule>| config.rules.iter().position(|r| Some(r) == rule);
    assert_eq!(id(matching_rule(&config, "https://app.example.com", "PUT", &["Content-Type"])), Some(0));
    assert_eq!(id(matching_rule(&config, "https://app.example.com", "PUT", &["x-amz-date"])), Some(1));
    assert_eq!(id(matching_rule(&config, "https://other.example.com", "GET", &[])), Some(1));
    assert_eq!(id(matching_rule(&config, "https://elsewhere.org", "GET", &[])), Some(2));
    assert_eq!(id(matching_rule(&config, "https://elsewhere.org", "GET", &["x-custom"])), None);
    assert_eq!(id(matching_rule(&config, "https://elsewhere.org", "DELETE", &[])), None);
}

#[test]
fn origins_match_case_sensitively_and_headers_case_insensitively() {
    let config = stored(vec![rule(&["https://App.example.com"], &["GET"], &["X-Amz-*"])]);
    assert!(matching_rule(&config, "https://app.example.com", "GET", &[]).is_none());
    assert!(matching_rule(&config, "https://App.example.com", "GET", &["x-amz-meta-a"]).is_some());
    assert!(matching_rule(&config, "https://App.example.com", "get", &[]).is_none(), "methods are exact");
}

#[test]
fn a_wildcard_stands_for_any_run_but_must_leave_room_for_both_ends() {
    assert!(wildcard_match("https://*.example.com", "https://a.b.example.com", false));
    assert!(wildcard_match("*", "", false));
    assert!(!wildcard_match("ab*ba", "aba", false), "head and tail may not overlap");
    assert!(wildcard_match("ab*ba", "abba", false));
    assert!(!wildcard_match("https://*.example.com", "https://example.com", false));
}

#[test]
fn preflight_grants_name_the_origin_unless_the_rule_is_open_to_all() {
    let mut open = rule(&["*"], &["GET", "HEAD"], &["*"]);
    open.expose_headers = Some(vec!["ETag".into()]);
    open.max_age_seconds = Some(600);
    let config = stored(vec![open, rule(&["https://app.example.com"], &["PUT"], &[])]);

    let headers = grant(&config.rules[0], "https://any.org", Some(&["range"]));
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, HEAD");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_HEADERS], "range");
    assert_eq!(headers[header::ACCESS_CONTROL_EXPOSE_HEADERS], "ETag");
    assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "600");

    let headers = grant(&config.rules[1], "https://app.example.com", None);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_HEADERS).is_none());
}

#[test]
fn configurations_outside_s3_limits_are_refused() {
    assert_eq!(code(configuration(vec![])), S3ErrorCode::MalformedXML);
    let too_many = (0..=MAX_CORS_RULES).map(|_| rule(&["*"], &["GET"], &[])).collect();
    assert_eq!(code(configuration(too_many)), S3ErrorCode::MalformedXML);
    assert!(configuration((0..MAX_CORS_RULES).map(|_| rule(&["*"], &["GET"], &[])).collect()).is_ok());
    assert_eq!(code(configuration(vec![rule(&["*"], &["PATCH"], &[])])), S3ErrorCode::InvalidRequest);
    assert_eq!(code(configuration(vec![rule(&[], &["GET"], &[])])), S3ErrorCode::MalformedXML);
    assert_eq!(
        code(configuration(vec![rule(&["https://*.*.com"], &["GET"], &[])])),
        S3ErrorCode::InvalidRequest
    );
    assert_eq!(code(configuration(vec![rule(&["*"], &["GET"], &["x-*-*"])])), S3ErrorCode::InvalidRequest);
    let huge = "h".repeat(MAX_CORS_CONFIGURATION_BYTES);
    assert_eq!(code(configuration(vec![rule(&["*"], &["GET"], &[&huge])])), S3ErrorCode::InvalidRequest);
}

#[test]
fn a_stored_configuration_reads_back_as_it_was_put() {
    let mut full = rule(&["https://a.example"], &["GET"], &["range"]);
    full.id = Some("reads".into());
    full.expose_headers = Some(vec!["ETag".into()]);
    full.max_age_seconds = Some(30);
    let bare = rule(&["*"], &["PUT"], &[]);
    assert_eq!(rules_of(stored(vec![full.clone(), bare.clone()])), vec![full, bare]);
}
