//! The start of a session: CONNECT (or STOMP) is read, its credentials, version and virtual host
//! checked, heart-beats agreed, and CONNECTED sent.

use std::net::{IpAddr, Ipv6Addr};

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

use super::super::codec::{Item, StompCodec};
use super::super::frame::{Command, Frame, HeartBeat, HeartBeatIntervals, Version};
use super::fault::{BAD_CONNECT, Fault, fault};
use super::{Connection, Shared};

/// Reads CONNECT (or STOMP), checks credentials and virtual host, agrees on version and
/// heart-beats, answers CONNECTED. Returns the version and the agreed heart-beat intervals.
pub(super) async fn connect(
    framed: &mut Framed<impl Connection, StompCodec>,
    shared: &Shared,
    session_id: &str,
) -> Result<(Version, HeartBeatIntervals), Fault> {
    let frame = loop {
        match framed.next().await {
            None => return Err(fault("Connection closed", "the connection closed before CONNECT")),
            Some(Ok(Item::HeartBeat)) => continue,
            Some(Ok(Item::Frame(frame))) => break frame,
            Some(Err(error)) => return Err(error.into()),
        }
    };
    if !matches!(frame.command, Command::Connect | Command::Stomp) {
        return Err(fault(
            "Illegal command",
            format!("You must log in using CONNECT first, not {}", frame.command),
        ));
    }
    let version = Version::negotiate(frame.header("accept-version"))
        .ok_or_else(|| fault("Version mismatch", "Supported versions are 1.0,1.1,1.2"))?;
    let login = frame.header("login").unwrap_or_default();
    let passcode = frame.header("passcode").unwrap_or_default();
    let valid = shared
        .keys
        .secret(login)
        .is_some_and(|secret| crate::admin::auth::same(secret.as_bytes(), passcode.as_bytes()));
    if !valid {
        return Err(fault(BAD_CONNECT, format!("Access refused for user '{login}'")));
    }
    if let Some(host) = frame.header("host").filter(|host| !names_this_broker(host)) {
        return Err(fault(
            BAD_CONNECT,
            format!(
                "Virtual host '{host}' does not exist: this broker has one, '/', also named by its host names and addresses"
            ),
        ));
    }
    // STOMP 1.0 has no heart-beats.
    let agreed = match version {
        Version::V1_0 => HeartBeatIntervals { client_to_server: None, server_to_client: None },
        _ => {
            let client = frame.header("heart-beat").and_then(HeartBeat::parse).unwrap_or_default();
            HeartBeat::negotiate(client, shared.settings.heart_beat)
        }
    };
    let connected = Frame::new(Command::Connected)
        .with_header("version", version.as_str())
        .with_header("heart-beat", HeartBeat::from(agreed).to_string())
        .with_header("server", format!("serv/{}", env!("CARGO_PKG_VERSION")))
        .with_header("session", session_id);
    framed.send(Item::Frame(connected)).await.map_err(|e| fault("Connection error", e.to_string()))?;
    Ok((version, agreed))
}

/// Whether a CONNECT's `host` header names this broker's one virtual host: `/` (the default
/// virtual host's name on RabbitMQ, which clients written for it send), empty, or a host name or
/// address with an optional port, which is what the specification asks clients to send (the name
/// they connected to; a node cannot know every DNS name it is reached by). Anything else, such as
/// `host://`, a URL, or a named virtual host like `/orders`, names one this broker does not have.
pub(super) fn names_this_broker(host: &str) -> bool {
    if host.is_empty() || host == "/" {
        return true;
    }
    let is_port = |port: &str| port.parse::<u16>().is_ok();
    if let Some(bracketed) = host.strip_prefix('[') {
        let Some((address, rest)) = bracketed.split_once(']') else { return false };
        return address.parse::<Ipv6Addr>().is_ok()
            && (rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port));
    }
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    port.is_none_or(is_port) && is_host_name(name)
}

/// Whether `name` is a DNS host name (RFC 1123 labels; a final dot allowed).
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::names_this_broker;

    #[test]
    fn host_names_addresses_and_the_default_virtual_host_name_this_broker() {
        for host in [
            "",
            "/",
            "localhost",
            "127.0.0.1",
            "127.0.0.1:61613",
            "::1",
            "[::1]:61613",
            "mq.example.com",
            "mq.example.com.",
            "node-1",
            "node-1:61613",
        ] {
            assert!(names_this_broker(host), "{host:?}");
        }
    }

    #[test]
    fn urls_paths_and_named_virtual_hosts_do_not() {
        for host in [
            "host://",
            "stomp://localhost",
            "/orders",
            "vhost/x",
            "a b",
            "-bad",
            "a..b",
            "[::1",
            "h:99999",
            "h:",
            "x@y",
            "ümlaut",
        ] {
            assert!(!names_this_broker(host), "{host:?}");
        }
    }
}
