//! The group state: hand-out rules, acks and nacks, deadlines, delays, prefetch, restarts; and
//! a seeded random run checking that every message ends acknowledged or dead, never lost.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn offsets(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.offset).collect()
}

fn now_log(offsets: std::ops::Range<u64>) -> Vec<(u64, Option<u64>)> {
    offsets.map(|o| (o, None)).collect()
}

#[test]
fn members_share_messages_within_their_prefetch() {
    let mut group = GroupState::starting_at(0);
    group.join("a", 2);
    group.join("b", 0);
    assert_eq!(offsets(&group.advance("a", &now_log(0..10), 0, 100)), [0, 1], "prefetch 2");
    assert_eq!(group.credits("a"), 0);
    assert_eq!(offsets(&group.advance("b", &now_log(0..10), 0, 100)), (2..10).collect::<Vec<_>>());
    assert_eq!(group.ack("b", 0), Err(AckError::NotYours(0)));
    assert_eq!(group.ack("a", 7), Err(AckError::NotYours(7)));
    assert_eq!(group.ack("a", 42), Err(AckError::Unknown(42)));
    group.ack("a", 0).unwrap();
    assert_eq!(group.credits("a"), 1);
    assert_eq!(group.ack("a", 0), Err(AckError::Unknown(0)), "acked once");
}

#[test]
fn nacks_redeliver_with_a_count_until_dead() {
    let mut group = GroupState::starting_at(5);
    group.join("a", 0);
    assert_eq!(
        group.advance("a", &now_log(3..7), 0, 100),
        [Delivery { offset: 5, previous: 0 }, Delivery { offset: 6, previous: 0 }]
    );
    assert_eq!(group.nack("a", 5, 3), Ok(Refused::Redeliver));
    assert_eq!(group.redeliveries("a", 10, 100), [Delivery { offset: 5, previous: 1 }]);
    assert_eq!(group.nack("a", 5, 3), Ok(Refused::Redeliver));
    assert_eq!(group.redeliveries("a", 10, 100), [Delivery { offset: 5, previous: 2 }]);
    assert_eq!(group.nack("a", 5, 3), Ok(Refused::Dead { deliveries: 3 }));
    assert!(group.redeliveries("a", 10, 100).is_empty());
    assert_eq!(group.outstanding().keys().copied().collect::<Vec<_>>(), [6]);
}

#[test]
fn client_mode_acks_everything_up_to_the_id() {
    let mut group = GroupState::starting_at(0);
    group.join("a", 0);
    group.join("b", 0);
    group.advance("a", &now_log(0..3), 0, 100);
    group.advance("b", &now_log(3..4), 0, 100);
    group.advance("a", &now_log(4..6), 0, 100);
    assert_eq!(group.ack_through("a", 4), Ok(vec![0, 1, 2, 4]));
    assert_eq!(group.outstanding().keys().copied().collect::<Vec<_>>(), [3, 5]);
    assert_eq!(group.ack_through("a", 3), Err(AckError::NotYours(3)));
}

#[test]
fn deadlines_leaving_and_restarts_make_messages_ready_again() {
    let mut group = GroupState::starting_at(0);
    group.join("a", 0);
    group.join("b", 0);
    group.advance("a", &now_log(0..2), 0, 100);
    group.advance("b", &now_log(2..3), 0, 500);
    assert_eq!(group.next_due(), Some(100));
    group.tick(100);
    assert_eq!(offsets(&group.redeliveries("b", 10, 900)), [0, 1], "a's deadline passed");
    assert_eq!(group.ack("a", 0), Err(AckError::NotYours(0)));
    group.leave("b");
    group.join("c", 0);
    assert_eq!(
        group.redeliveries("c", 10, 900),
        [
            Delivery { offset: 0, previous: 2 },
            Delivery { offset: 1, previous: 2 },
            Delivery { offset: 2, previous: 1 }
        ]
    );
    let mut restored = GroupState::restored(group.cursor(), group.outstanding().clone());
    restored.join("d", 0);
    assert_eq!(offsets(&restored.redeliveries("d", 10, 900)), [0, 1, 2], "in flight before the restart");
    assert_eq!(restored.advance("d", &now_log(3..4), 0, 900), [Delivery { offset: 3, previous: 0 }]);
}

#[test]
fn delayed_messages_wait_until_due_without_holding_back_the_rest() {
    let mut group = GroupState::starting_at(0);
    group.join("a", 0);
    let read = [(0, Some(1_000)), (1, None), (2, Some(50))];
    assert_eq!(offsets(&group.advance("a", &read, 10, 5_000)), [1]);
    assert_eq!(group.next_due(), Some(50));
    group.tick(60);
    assert_eq!(offsets(&group.redeliveries("a", 10, 5_000)), [2]);
    group.tick(999);
    assert!(group.redeliveries("a", 10, 5_000).is_empty());
    group.tick(1_000);
    assert_eq!(group.redeliveries("a", 10, 5_000), [Delivery { offset: 0, previous: 0 }], "a first delivery");
}

#[test]
fn exhausted_messages_whose_last_delivery_expired_are_dead() {
    let mut group = GroupState::starting_at(0);
    group.join("a", 0);
    group.advance("a", &now_log(0..1), 0, 10);
    group.tick(10);
    assert_eq!(group.take_exhausted(2), []);
    group.redeliveries("a", 1, 20);
    group.tick(20);
    assert_eq!(group.take_exhausted(2), [(0, 2)]);
    assert!(group.outstanding().is_empty());
}

#[test]
fn random_runs_end_with_every_message_acknowledged_or_dead() {
    for seed in 0..40 {
        let mut rng = StdRng::seed_from_u64(seed);
        let max_deliveries = rng.random_range(1..4);
        let mut group = GroupState::starting_at(0);
        let (mut head, mut now) = (0u64, 0u64);
        let mut done: BTreeSet<u64> = BTreeSet::new();
        let members = ["m0", "m1", "m2"];
        let mut first_deliveries = BTreeSet::new();
        for _ in 0..400 {
            let member = members[rng.random_range(0..members.len())];
            match rng.random_range(0..10) {
                0 if !group.members.contains_key(member) => group.join(member, rng.random_range(0..4)),
                0 => {}
                1 => group.leave(member),
                2 => head += rng.random_range(1..5),
                3 => {
                    now += rng.random_range(0..50);
                    group.tick(now);
                    for (offset, _) in group.take_exhausted(max_deliveries) {
                        assert!(done.insert(offset), "seed {seed}: {offset} ended twice");
                    }
                }
                4 => group = GroupState::restored(group.cursor(), group.outstanding().clone()),
                5 | 6 => {
                    let mut got = group.redeliveries(member, 3, now + 40);
                    let read: Vec<_> =
                        (group.cursor()..head).map(|o| (o, (o % 5 == 0).then_some(o * 3))).collect();
                    got.extend(group.advance(member, &read, now, now + 40));
                    for delivery in got {
                        assert!(
                            !done.contains(&delivery.offset),
                            "seed {seed}: {} delivered after it ended",
                            delivery.offset
                        );
                        if delivery.previous == 0 {
                            assert!(
                                first_deliveries.insert(delivery.offset),
                                "seed {seed}: two first deliveries"
                            );
                        }
                    }
                }
                _ => {
                    let held: Vec<u64> = group
                        .outstanding()
                        .iter()
                        .filter(|(_, e)| matches!(&e.slot, Slot::InFlight { member: m, .. } if m == member))
                        .map(|(o, _)| *o)
                        .collect();
                    if let Some(&offset) = held.first() {
                        if rng.random_bool(0.7) {
                            group.ack(member, offset).unwrap();
                            assert!(done.insert(offset), "seed {seed}: {offset} acked twice");
                        } else if let Refused::Dead { .. } =
                            group.nack(member, offset, max_deliveries).unwrap()
                        {
                            assert!(done.insert(offset), "seed {seed}: {offset} dead twice");
                        }
                    }
                }
            }
            for member in members {
                if let Some(m) = group.members.get(member) {
                    assert!(
                        m.prefetch == 0 || m.in_flight.len() <= m.prefetch as usize,
                        "seed {seed}: prefetch"
                    );
                }
            }
        }
        // Drain: one member acknowledges whatever comes until nothing is left.
        group.join("drain", 0);
        now += 1_000_000;
        for _ in 0..1000 {
            group.tick(now);
            for (offset, _) in group.take_exhausted(max_deliveries) {
                assert!(done.insert(offset));
            }
            let mut got = group.redeliveries("drain", usize::MAX, now + 1);
            let read: Vec<_> = (group.cursor()..head).map(|o| (o, None)).collect();
            got.extend(group.advance("drain", &read, now, now + 1));
            if got.is_empty() && group.outstanding().is_empty() && group.cursor() == head {
                break;
            }
            for delivery in got {
                group.ack("drain", delivery.offset).unwrap();
                assert!(done.insert(delivery.offset), "seed {seed}: {} ended twice", delivery.offset);
            }
            now += 2;
        }
        assert_eq!(done, (0..head).collect(), "seed {seed}: every message ends acknowledged or dead, once");
    }
}
