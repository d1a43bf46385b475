//! The ring: the same view gives the same ring; preference lists; only neighbouring keys move
//! when a member joins or leaves; an even spread.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i:02}")).collect()
}

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("bucket/photos-{i}").into_bytes()).collect()
}

#[test]
fn an_empty_ring_owns_nothing_and_a_single_member_owns_everything() {
    let empty = Ring::default();
    assert_eq!(empty.owner(b"k"), None);
    assert!(empty.preference_list(b"k", 3).is_empty());
    let single = Ring::with_default_vnodes(["only"]);
    assert_eq!(single.preference_list(b"k", 3), ["only"]);
}

#[test]
fn preference_lists_are_distinct_members_owner_first() {
    let ring = Ring::with_default_vnodes(ids(5));
    for key in keys(500) {
        let list = ring.preference_list(&key, 3);
        assert_eq!(list.len(), 3);
        assert_eq!(Some(list[0]), ring.owner(&key));
        assert!(list[0] != list[1] && list[1] != list[2] && list[0] != list[2], "{list:?}");
        assert_eq!(ring.preference_list(&key, 9).len(), 5, "never more than the members");
    }
}

#[test]
fn five_members_share_keys_evenly() {
    let ring = Ring::with_default_vnodes(ids(5));
    let mut owned: HashMap<&str, usize> = HashMap::new();
    let sample = keys(20_000);
    for key in &sample {
        *owned.entry(ring.owner(key).unwrap()).or_default() += 1;
    }
    for (member, count) in owned {
        let share = count as f64 / sample.len() as f64;
        assert!((0.12..0.28).contains(&share), "{member} owns {:.1}% (fair: 20%)", share * 100.0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_order_of_the_same_view_builds_the_same_ring(
        members in proptest::collection::btree_set("[a-z0-9]{1,12}", 1..8),
        vnodes in 1u32..80,
        rotation in 0usize..8,
    ) {
        let mut listed: Vec<Member> = members.iter().map(|id| Member { id: id.clone(), vnodes }).collect();
        let ring = Ring::new(listed.clone());
        listed.reverse();
        let len = listed.len();
        listed.rotate_left(rotation % len);
        let again = Ring::new(listed);
        prop_assert_eq!(&ring, &again);
        for key in keys(50) {
            prop_assert_eq!(ring.preference_list(&key, 3), again.preference_list(&key, 3));
        }
    }

    #[test]
    fn a_joining_member_takes_keys_only_for_itself(
        count in 2usize..7,
        joiner in "[a-z]{3,10}",
    ) {
        let before = Ring::with_default_vnodes(ids(count));
        let newcomer = format!("new-{joiner}");
        let mut grown = ids(count);
        grown.push(newcomer.clone());
        let after = Ring::with_default_vnodes(grown);
        for key in keys(300) {
            let (old, new) = (before.owner(&key).unwrap(), after.owner(&key).unwrap());
            prop_assert!(old == new || new == newcomer, "{:?} moved from {} to {}", key, old, new);
        }
        // Read backwards, the same pairs say that a member leaving gives away only its own keys;
        // and the newcomer does take a share.
        let taken = keys(300).iter().filter(|key| after.owner(key) == Some(newcomer.as_str())).count();
        prop_assert!(taken > 0, "{} took no key", newcomer);
    }
}
