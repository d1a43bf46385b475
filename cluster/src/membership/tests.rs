//! Three nodes join through one seed and all see each other alive; a node that stops is seen
//! down; one without the cluster secret is never listed.

use std::time::Duration;

use super::*;
use crate::identity::ClusterIdentity;

const SECRET: &str = "membership-test-cluster-secret";

fn quick() -> MembershipConfig {
    MembershipConfig {
        probe_period: Duration::from_millis(150),
        probe_rtt: Duration::from_millis(80),
        suspect_to_down_after: Duration::from_millis(600),
        expected_size: 4,
    }
}

fn node(id: &str, secret: &str, seeds: Vec<SocketAddr>) -> (Membership, SocketAddr) {
    let endpoint =
        ClusterIdentity::new(secret, id).unwrap().endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let me = NodeIdentity { id: id.to_string(), addr, boot: 1 };
    let mut meta = NodeMeta { version: "test".into(), ..NodeMeta::default() };
    meta.addresses.insert("s3".into(), format!("s3-of-{id}"));
    let (mesh, datagrams) = Mesh::start(endpoint);
    (Membership::start(me, meta, mesh, datagrams, quick(), seeds), addr)
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

fn alive(membership: &Membership) -> Vec<String> {
    membership.members().into_iter().filter(|m| m.state == MemberState::Alive).map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_through_a_seed_and_see_a_stopped_member_go_down() {
    let (seed, seed_addr) = node("node-1", SECRET, vec![]);
    let (second, _) = node("node-2", SECRET, vec![seed_addr]);
    let (third, _) = node("node-3", SECRET, vec![seed_addr]);
    let (stranger, _) = node("stranger", "not-the-cluster-secret-at-all", vec![seed_addr]);
    for membership in [&seed, &second, &third] {
        until("every member sees the three alive", || {
            let mut ids = alive(membership);
            ids.sort();
            ids == ["node-1", "node-2", "node-3"]
        })
        .await;
    }
    assert_eq!(alive(&stranger), ["stranger"], "a node without the secret joins no one");
    for membership in [&seed, &second, &third] {
        until("everyone's metadata arrived", || {
            membership.members().iter().all(|m| {
                m.meta.as_ref().and_then(|meta| meta.addresses.get("s3").cloned())
                    == Some(format!("s3-of-{}", m.id))
            })
        })
        .await;
    }
    for membership in [&seed, &second, &third] {
        assert!(!membership.members().iter().any(|m| m.id == "stranger"), "and no one lists it");
    }

    drop(third); // stops answering, like a killed process
    for membership in [&seed, &second] {
        until("node-3 is seen down", || {
            membership.members().iter().any(|m| m.id == "node-3" && m.state == MemberState::Down)
        })
        .await;
    }
    // A member goes down through suspicion: some node here (they share the process's count)
    // suspected it first.
    assert!(suspicions_total() >= 1, "the suspicion of node-3 is counted");
}
