//! The route entity: config checked before it is stored, enable/disable kept across reloads,
//! delete.

use std::time::Duration;

use super::*;
use crate::{ActorKey, ActorKind, Directory};

async fn ask(directory: &Directory, msg: RouteMsg) -> RouteReply {
    directory.call(&ActorKey::new(ActorKind::Route, "api"), msg).await.expect("route answers")
}

fn config() -> RouteConfig {
    RouteConfig {
        path_prefix: "/api".into(),
        upstreams: vec!["http://127.0.0.1:8000".into()],
        ..Default::default()
    }
}

fn record(reply: RouteReply) -> RouteRecord {
    match reply {
        RouteReply::Route(record) => *record,
        other => panic!("expected a route, got {other:?}"),
    }
}

#[tokio::test]
async fn a_route_is_created_enabled_and_keeps_its_switch_across_reloads_and_config_changes() {
    let node = crate::testing::node_with::<Route>().await;
    let directory = &node.directory;
    assert_eq!(ask(directory, RouteMsg::Get).await, RouteReply::Refused(RouteRefusal::NoSuchRoute));
    assert_eq!(
        ask(directory, RouteMsg::SetEnabled(false)).await,
        RouteReply::Refused(RouteRefusal::NoSuchRoute)
    );
    let created = record(ask(directory, RouteMsg::Put(Box::new(config()))).await);
    assert!(created.enabled);
    assert!(!record(ask(directory, RouteMsg::SetEnabled(false)).await).enabled);
    tokio::time::sleep(Duration::from_millis(100)).await; // passivated: the next message reloads it
    let reloaded = record(ask(directory, RouteMsg::Get).await);
    assert!(!reloaded.enabled, "disabled is durable");
    let changed =
        record(ask(directory, RouteMsg::Put(Box::new(RouteConfig { retries: 0, ..config() }))).await);
    assert!(!changed.enabled && changed.config.retries == 0 && changed.created_ms == created.created_ms);
    assert_eq!(ask(directory, RouteMsg::Delete).await, RouteReply::Deleted);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ask(directory, RouteMsg::Get).await, RouteReply::Refused(RouteRefusal::NoSuchRoute));
}

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let refused = |config: RouteConfig, field: &str| {
        let reason = validate(&config).expect_err("refused");
        assert!(reason.contains(field), "{reason:?} names {field}");
    };
    assert_eq!(validate(&config()), Ok(()));
    refused(RouteConfig { path_prefix: "api".into(), ..config() }, "path_prefix");
    refused(RouteConfig { upstreams: vec![], ..config() }, "upstreams");
    refused(RouteConfig { topic: Some("queue/hooks".into()), ..config() }, "not both");
    refused(RouteConfig { topic: Some("hooks".into()), upstreams: vec![], ..config() }, "topic");
    let webhook = RouteConfig { topic: Some("queue/hooks".into()), upstreams: vec![], ..config() };
    assert_eq!(validate(&webhook), Ok(()));
    refused(RouteConfig { upstreams: vec!["https://x:443".into()], ..config() }, "http://");
    refused(RouteConfig { upstreams: vec!["http://nohost".into()], ..config() }, "HOST:PORT");
    refused(RouteConfig { host: Some("Example.com".into()), ..config() }, "host");
    refused(RouteConfig { methods: vec!["get".into()], ..config() }, "methods");
    refused(RouteConfig { timeout_ms: 0, ..config() }, "timeout_ms");
    refused(RouteConfig { retries: 11, ..config() }, "retries");
    refused(RouteConfig { rate_limit_per_s: Some(0), ..config() }, "rate_limit_per_s");
    refused(RouteConfig { rate_limit_burst: Some(5), ..config() }, "rate_limit_burst");
    refused(RouteConfig { breaker_failures: 0, ..config() }, "breaker_failures");
    refused(RouteConfig { max_body_bytes: 0, ..config() }, "max_body_bytes");
    assert_eq!(validate(&RouteConfig { host: Some("*.example.com".into()), ..config() }), Ok(()));
}

#[test]
fn a_route_stored_before_middleware_existed_still_loads() {
    use serv_storage::Record;
    // Format 1: the same fields without `middleware` (the codec writes a struct as its fields).
    let config = (
        Some("api.example".to_string()),
        "/api".to_string(),
        vec!["GET".to_string()],
        true,
        vec!["http://127.0.0.1:8000".to_string()],
        None::<String>,
        (500u64, 1u32, Some(10u32), None::<u32>, 3u32, 2000u64, 1024u64),
    );
    let v1 = serv_storage::codec::encode(&(config, false, 5u64, 6u64)).unwrap();
    let record = RouteRecord::upgrade(1, &v1).expect("format 1 is known").expect("decodes");
    assert_eq!((record.enabled, record.created_ms, record.updated_ms), (false, 5, 6));
    let c = &record.config;
    assert_eq!(
        (c.host.as_deref(), c.path_prefix.as_str(), c.strip_prefix),
        (Some("api.example"), "/api", true)
    );
    assert_eq!((c.timeout_ms, c.retries, c.rate_limit_per_s, c.max_body_bytes), (500, 1, Some(10), 1024));
    assert_eq!(c.middleware, None);
}

#[test]
fn a_route_stored_before_auth_existed_still_loads_open() {
    use serv_storage::Record;
    // Format 2: format 1's fields and `middleware`, without `auth`.
    let config = (
        None::<String>,
        "/hooks".to_string(),
        Vec::<String>::new(),
        false,
        Vec::<String>::new(),
        Some("queue/hooks".to_string()),
        (10_000u64, 2u32, None::<u32>, None::<u32>, 5u32, 10_000u64, 2048u64),
        Some("filter".to_string()),
    );
    let v2 = serv_storage::codec::encode(&(config, true, 7u64, 8u64)).unwrap();
    let record = RouteRecord::upgrade(2, &v2).expect("format 2 is known").expect("decodes");
    assert_eq!((record.enabled, record.created_ms, record.updated_ms), (true, 7, 8));
    let c = &record.config;
    assert_eq!(
        (c.topic.as_deref(), c.max_body_bytes, c.middleware.as_deref()),
        (Some("queue/hooks"), 2048, Some("filter"))
    );
    assert_eq!(c.auth, None, "a route stored before auth stays open, as it was");
}

#[test]
fn a_route_secret_is_long_enough_and_printable() {
    let secret = |auth| validate(&RouteConfig { auth: Some(auth), ..config() });
    assert_eq!(secret(RouteAuth::Bearer("a-token-of-16-ch".into())), Ok(()));
    assert!(secret(RouteAuth::Bearer("short".into())).unwrap_err().contains("16"));
    assert!(secret(RouteAuth::HmacSha256("has a space in it!".into())).unwrap_err().contains("printable"));
    assert!(secret(RouteAuth::HmacSha256("k".repeat(1025))).is_err());
}
