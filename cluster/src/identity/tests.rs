//! Two nodes with the same secret talk (streams and datagrams); a node with another secret is
//! refused in both directions.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;

const SECRET: &str = "a-cluster-secret-of-some-length";

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn echo_once(endpoint: quinn::Endpoint) {
    let Some(incoming) = endpoint.accept().await else { return };
    let Ok(connection) = incoming.await else { return };
    if let Ok(datagram) = connection.read_datagram().await {
        let _ = connection.send_datagram(datagram);
    }
    if let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let request = recv.read_to_end(1024).await.unwrap_or_default();
        let _ = send.write_all(&request).await;
        let _ = send.finish();
    }
    connection.closed().await;
}

#[tokio::test]
async fn nodes_with_the_cluster_secret_exchange_datagrams_and_streams() {
    let a = ClusterIdentity::new(SECRET, "node-a").unwrap().endpoint(local()).unwrap();
    let b = ClusterIdentity::new(SECRET, "node-b").unwrap().endpoint(local()).unwrap();
    let b_addr = b.local_addr().unwrap();
    tokio::spawn(echo_once(b));

    let connection = a.connect(b_addr, SERVER_NAME).unwrap().await.expect("same secret: accepted");
    connection.send_datagram(bytes::Bytes::from_static(b"ping")).unwrap();
    let echoed =
        tokio::time::timeout(Duration::from_secs(5), connection.read_datagram()).await.unwrap().unwrap();
    assert_eq!(&echoed[..], b"ping");
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(b"hello over a stream").await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(1024).await.unwrap(), b"hello over a stream");
}

#[tokio::test]
async fn a_node_with_another_secret_is_refused_both_ways() {
    let member = ClusterIdentity::new(SECRET, "member").unwrap().endpoint(local()).unwrap();
    let stranger =
        ClusterIdentity::new("some-other-secret-entirely", "stranger").unwrap().endpoint(local()).unwrap();
    let (member_addr, stranger_addr) = (member.local_addr().unwrap(), stranger.local_addr().unwrap());
    tokio::spawn(echo_once(member.clone()));
    tokio::spawn(echo_once(stranger.clone()));

    let inbound = stranger.connect(member_addr, SERVER_NAME).unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), inbound).await.expect("answered");
    let in_use = match refused {
        Err(_) => true,
        // TLS 1.3 may complete the client side before the server rejects the client certificate.
        Ok(connection) => tokio::time::timeout(Duration::from_secs(5), connection.read_datagram())
            .await
            .is_ok_and(|r| r.is_err()),
    };
    assert!(in_use, "the stranger's connection must fail");
    let outbound = member.connect(stranger_addr, SERVER_NAME).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), outbound).await.expect("answered").is_err(),
        "a member does not trust a stranger"
    );
}

#[test]
fn a_short_secret_is_refused() {
    assert!(matches!(ClusterIdentity::new("short", "n"), Err(IdentityError::WeakSecret)));
}
