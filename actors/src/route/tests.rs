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
        RouteReply::Route(record) => record,
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
    let created = record(ask(directory, RouteMsg::Put(config())).await);
    assert!(created.enabled);
    assert!(!record(ask(directory, RouteMsg::SetEnabled(false)).await).enabled);
    tokio::time::sleep(Duration::from_millis(100)).await; // passivated: the next message reloads it
    let reloaded = record(ask(directory, RouteMsg::Get).await);
    assert!(!reloaded.enabled, "disabled is durable");
    let changed = record(ask(directory, RouteMsg::Put(RouteConfig { retries: 0, ..config() })).await);
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
