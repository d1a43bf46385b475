use super::*;

fn op(id: u64, kind: OpKind, target: &str, span: (u64, u64), outcome: Outcome) -> Op {
    Op {
        id,
        kind,
        worker: "w".into(),
        node: 0,
        target: target.into(),
        value: matches!(kind, OpKind::S3Put | OpKind::Send | OpKind::TxSend).then_some(id),
        hash: None,
        invoke_ms: span.0,
        complete_ms: span.1,
        outcome,
        detail: String::new(),
        redelivered: false,
    }
}

fn reads(target: &str, read: Read) -> FinalReads {
    BTreeMap::from([(target.to_string(), vec![(0, Ok(read.clone())), (1, Ok(read))])])
}

#[test]
fn the_last_acknowledged_put_must_be_read_back_from_every_node() {
    let ops = [
        op(1, OpKind::S3Put, "b/k", (0, 10), Outcome::Ok),
        op(2, OpKind::S3Put, "b/k", (20, 30), Outcome::Ok),
    ];
    assert!(s3_final_state(&ops, &reads("b/k", Read::Value(2))).is_empty());
    let lost = s3_final_state(&ops, &reads("b/k", Read::Value(1)));
    assert_eq!(lost.len(), 2, "one violation per node: {lost:?}");
    assert_eq!(lost[0].invariant, "s3-acknowledged-write-lost");
    assert_eq!(lost[0].ops, vec![2]);
    assert!(lost[0].message.contains("PUT op 2"), "{}", lost[0].message);
    assert_eq!(s3_final_state(&ops, &reads("b/k", Read::Absent))[0].ops, vec![2]);
}

#[test]
fn concurrent_and_unknown_writes_may_each_be_the_final_state() {
    let ops = vec![
        op(1, OpKind::S3Put, "b/k", (0, 50), Outcome::Ok),
        op(2, OpKind::S3Put, "b/k", (10, 40), Outcome::Ok),
        op(3, OpKind::S3Delete, "b/k", (60, 70), Outcome::Unknown),
        op(4, OpKind::S3Put, "b/k", (80, 90), Outcome::Fail),
    ];
    for read in [Read::Value(1), Read::Value(2), Read::Absent] {
        assert!(s3_final_state(&ops, &reads("b/k", read.clone())).is_empty(), "{read:?} is possible");
    }
    assert!(!s3_final_state(&ops, &reads("b/k", Read::Value(4))).is_empty(), "a refused PUT never lands");
    let corrupt = s3_final_state(&ops, &reads("b/k", Read::Corrupt("x".into())));
    assert_eq!(corrupt[0].invariant, "s3-corrupt-read");
    let untouched = s3_final_state(&[], &reads("b/z", Read::Absent));
    assert!(untouched.is_empty(), "a key never written reads absent");
}

#[test]
fn a_read_of_a_value_never_written_there_is_invented() {
    let mut get = op(5, OpKind::S3Get, "b/k", (20, 25), Outcome::Ok);
    get.value = Some(1);
    let put = op(1, OpKind::S3Put, "b/other", (0, 10), Outcome::Ok);
    let violations = s3_reads(&[put.clone(), get.clone()]);
    assert_eq!(violations[0].invariant, "s3-invented-value");
    let put_here = op(1, OpKind::S3Put, "b/k", (0, 10), Outcome::Unknown);
    assert!(s3_reads(&[put_here, get]).is_empty(), "a write whose ack was lost can still be read");
}

fn deliver(id: u64, message: u64, subscription: &str, at: u64, redelivered: bool) -> Op {
    let mut op = op(id, OpKind::Deliver, subscription, (at, at), Outcome::Ok);
    op.value = Some(message);
    op.redelivered = redelivered;
    op
}

#[test]
fn a_receipted_message_must_reach_every_group_and_repeats_carry_the_marker() {
    let subscriptions = vec![
        Subscription { destination: "/topic/t".into(), group: Some("a".into()) },
        Subscription { destination: "/topic/t".into(), group: Some("b".into()) },
    ];
    let send = op(1, OpKind::Send, "/topic/t", (0, 5), Outcome::Ok);
    let unknown = op(2, OpKind::Send, "/topic/t", (0, 5), Outcome::Unknown);
    let mut ops = vec![send, unknown, deliver(10, 1, "/topic/t group a", 6, false)];
    let lost = stomp(&ops, &subscriptions);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].invariant, "stomp-acknowledged-message-lost");
    assert!(lost[0].message.contains("group b"));
    assert_eq!(undelivered(&ops, &subscriptions), 1);

    ops.push(deliver(11, 1, "/topic/t group b", 7, false));
    ops.push(deliver(12, 1, "/topic/t group b", 8, true));
    ops.push(deliver(13, 2, "/topic/t group b", 9, false));
    assert!(stomp(&ops, &subscriptions).is_empty(), "{:?}", stomp(&ops, &subscriptions));
    assert_eq!(undelivered(&ops, &subscriptions), 0);

    ops.push(deliver(14, 1, "/topic/t group a", 10, false));
    ops.push(deliver(15, 99, "/topic/t group a", 11, false));
    let found: Vec<_> = stomp(&ops, &subscriptions).iter().map(|v| v.invariant).collect();
    assert_eq!(found, vec!["stomp-repeat-without-redelivered", "stomp-invented-message"]);
}

#[test]
fn an_entity_on_two_nodes_or_off_its_ring_owner_is_reported() {
    let placed = |key: &str, node: &str| Placed { key: key.into(), node: node.into() };
    let owners =
        HashMap::from([("bucket/a".to_string(), "x".to_string()), ("bucket/b".to_string(), "y".to_string())]);
    let fine = [placed("bucket/a", "x"), placed("supervisor/node", "x"), placed("supervisor/node", "y")];
    assert!(single_owner(&fine, &owners, 0).is_empty());
    let twice = [placed("bucket/a", "x"), placed("bucket/a", "y"), placed("bucket/b", "x")];
    let found = single_owner(&twice, &owners, 0);
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn with_availability_expected_the_majority_reads_and_the_minority_acknowledges_nothing() {
    let mut get = op(1, OpKind::S3Get, "b/k", (150, 160), Outcome::Unknown);
    get.node = 1;
    let faults = [(0, 100, 200)];
    assert_eq!(available_during_faults(&[get.clone()], &faults)[0].invariant, "available-during-fault");
    // A read through another node, in flight when its own node was faulted next, failed for that.
    let in_flight = [(0, 100, 200), (1, 155, 300)];
    assert!(available_during_faults(&[get.clone()], &in_flight).is_empty(), "its own node's fault");
    get.node = 0;
    assert!(available_during_faults(&[get], &faults).is_empty(), "the faulted node itself may fail");

    let mut put = op(2, OpKind::S3Put, "b/k", (120, 130), Outcome::Ok);
    assert_eq!(minority_acknowledged_nothing(&[put.clone()], &faults)[0].ops, vec![2]);
    put.node = 2;
    assert!(minority_acknowledged_nothing(&[put.clone()], &faults).is_empty(), "the majority acknowledges");
    put.node = 0;
    put.complete_ms = 230;
    assert!(
        minority_acknowledged_nothing(&[put.clone()], &faults).is_empty(),
        "asked during the partition, acknowledged once it healed: committed with the majority back"
    );
    put.invoke_ms = 250;
    put.complete_ms = 260;
    assert!(minority_acknowledged_nothing(&[put], &faults).is_empty(), "after the partition healed");
}

fn get(id: u64, target: &str, span: (u64, u64), saw: Option<u64>) -> Op {
    let mut op = op(id, OpKind::S3Get, target, span, Outcome::Ok);
    op.value = saw;
    op
}

#[test]
fn a_read_must_not_miss_a_write_acknowledged_before_it_began() {
    let ops = [
        op(1, OpKind::S3Put, "b/k", (0, 10), Outcome::Ok),
        op(2, OpKind::S3Put, "b/k", (20, 30), Outcome::Ok),
        op(3, OpKind::S3Put, "b/k", (25, 60), Outcome::Unknown),
        op(4, OpKind::S3Delete, "b/j", (0, 10), Outcome::Ok),
    ];
    let with = |read: Op| ops.iter().cloned().chain([read]).collect::<Vec<_>>();
    let stale = s3_stale_reads(&with(get(9, "b/k", (40, 45), Some(1))));
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(stale[0].invariant, "s3-stale-read");
    assert_eq!(stale[0].ops, vec![9, 2]);
    assert!(s3_stale_reads(&with(get(9, "b/k", (40, 45), Some(2)))).is_empty());
    assert!(
        s3_stale_reads(&with(get(9, "b/k", (40, 45), Some(3)))).is_empty(),
        "a concurrent write may be seen"
    );
    assert!(
        s3_stale_reads(&with(get(9, "b/k", (25, 45), Some(1)))).is_empty(),
        "op 2 was not done when it began"
    );
    assert_eq!(
        s3_stale_reads(&with(get(9, "b/k", (40, 45), None))).len(),
        1,
        "absent after acknowledged PUTs"
    );
    assert!(s3_stale_reads(&with(get(9, "b/j", (40, 45), None))).is_empty(), "absent after a DELETE");
    assert!(s3_stale_reads(&with(get(9, "b/z", (40, 45), None))).is_empty(), "a key never written");
}

#[test]
fn a_delivery_whose_body_is_not_what_its_destination_makes_is_a_violation() {
    let good = deliver(1, 7, "/queue/q", 10, false);
    let mut raw = deliver(2, 8, "/queue/q", 20, false);
    raw.detail = format!("{}\"chaos message 8\"", crate::messages::UNEXPECTED_BODY);
    let violations = untransformed(&[good, raw]);
    assert_eq!(violations.len(), 1);
    assert_eq!(
        (violations[0].invariant, violations[0].ops.clone()),
        ("stomp-delivery-not-as-published", vec![2])
    );
    assert!(violations[0].message.contains("message 8") && violations[0].message.contains("chaos message 8"));
}
