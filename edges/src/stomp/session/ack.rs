//! ACK and NACK: what each subscription that acknowledges was sent and has had acknowledged, and
//! how an acknowledgement reaches its group.
//!
//! In `client` mode an ACK or a NACK settles every message the subscription was sent up to the
//! one it names (the group acknowledges through it; a NACK goes to the group once per message, to
//! be delivered again or dead-lettered like any NACK); in `client-individual` mode it settles the
//! one message. Clients retry acknowledgements, so one of a message this session already settled
//! is a no-op (its receipt still comes); only an id never delivered to the subscription is an
//! error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use serv_actors::group::{AckMode, GroupMsg, GroupRefusal, GroupReply};

use super::super::frame::{Command, Frame, Version};
use super::super::metrics;
use super::fault::{Fault, INVALID_HEADER, MISSING_HEADER, SUBSCRIPTION_NOT_FOUND, fault};
use super::{Session, Subscription, receipt_of};

/// Settled offsets a subscription remembers, to answer repeated acknowledgements; an older one
/// acknowledged again counts as never delivered.
const MAX_SETTLED_REMEMBERED: usize = 16_384;

/// What a subscription sent and awaits acknowledgements for, shared with its delivery task.
#[derive(Clone, Default)]
pub(super) struct Delivered(Arc<Mutex<Tracked>>);

#[derive(Default)]
struct Tracked {
    /// Offsets sent and not yet acknowledged, with how many times each was sent (a message the
    /// group lost is sent again, and the client acknowledges each copy).
    pending: BTreeMap<u64, u32>,
    /// Offsets sent and since acknowledged, the most recent [`MAX_SETTLED_REMEMBERED`].
    settled: BTreeSet<u64>,
}

/// What an acknowledgement of one offset amounts to.
pub(super) enum Settlement {
    /// These offsets, in order, are settled now; the group is told.
    Settle(Vec<u64>),
    /// The session settled this offset already: nothing to do.
    Repeat,
    /// The subscription never sent this offset.
    Unknown,
}

impl Delivered {
    /// Notes that `offset` was sent to the client.
    pub fn sent(&self, offset: u64) {
        let mut tracked = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *tracked.pending.entry(offset).or_default() += 1;
    }

    /// Settles `offset`, and with it (`through`, client mode) every offset sent before it.
    fn settle(&self, offset: u64, through: bool) -> Settlement {
        let mut tracked = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Tracked { pending, settled } = &mut *tracked;
        let offsets = match pending.get_mut(&offset) {
            None if settled.contains(&offset) => return Settlement::Repeat,
            None => return Settlement::Unknown,
            Some(copies) if *copies > 1 && !through => {
                *copies -= 1;
                return Settlement::Settle(vec![offset]);
            }
            Some(_) if through => pending.range(..=offset).map(|(sent, _)| *sent).collect(),
            Some(_) => vec![offset],
        };
        for sent in &offsets {
            pending.remove(sent);
            settled.insert(*sent);
        }
        while settled.len() > MAX_SETTLED_REMEMBERED {
            settled.pop_first();
        }
        Settlement::Settle(offsets)
    }
}

impl Session {
    /// The subscription and offset an ACK or NACK names (`id` in 1.2, `message-id` before).
    pub(super) fn ack_target(&self, frame: &Frame) -> Result<(String, u64), Fault> {
        let header = if self.version == Version::V1_2 { "id" } else { "message-id" };
        let id = frame.header(header).ok_or_else(|| {
            fault(MISSING_HEADER, format!("{} must include the '{header}' header", frame.command))
        })?;
        id.rsplit_once(':')
            .and_then(|(subscription, offset)| Some((subscription.to_string(), offset.parse::<u64>().ok()?)))
            .ok_or_else(|| fault(INVALID_HEADER, format!("'{id}' is not a message id this broker gave out")))
    }

    /// The subscription `id`, if it acknowledges.
    fn acknowledging(&self, id: &str) -> Result<&Subscription, Fault> {
        let subscription = self
            .subscriptions
            .get(id)
            .ok_or_else(|| fault(SUBSCRIPTION_NOT_FOUND, format!("there is no subscription '{id}'")))?;
        if subscription.ack == AckMode::Auto {
            return Err(fault(UNKNOWN_MESSAGE, format!("subscription '{id}' acknowledges automatically")));
        }
        Ok(subscription)
    }

    /// One ACK or NACK: settles what it names and tells the group.
    pub(super) async fn acknowledge(&self, subscription: &str, offset: u64, nack: bool) -> Result<(), Fault> {
        let sub = self.acknowledging(subscription)?;
        let offsets = match sub.delivered.settle(offset, sub.ack == AckMode::Client) {
            Settlement::Settle(offsets) => offsets,
            Settlement::Repeat => return Ok(()),
            Settlement::Unknown => return Err(never_delivered(subscription, offset)),
        };
        let member = || sub.member.clone();
        let settled = offsets.len();
        // The group acknowledges through an offset itself; it takes NACKs one message at a time.
        let messages = match nack {
            false => vec![GroupMsg::Ack { member: member(), offset }],
            true => offsets.into_iter().map(|offset| GroupMsg::Nack { member: member(), offset }).collect(),
        };
        for message in messages {
            let reply = self.group(&sub.group, message).await?;
            settled_by_group(&sub.group, reply)?;
        }
        match nack {
            false => metrics::acked(settled),
            true => metrics::nacked(settled),
        }
        Ok(())
    }

    /// ACKs outside transactions, in order: consecutive ones for one subscription share a commit;
    /// receipts follow in order. The first one refused gets the ERROR.
    pub(super) async fn acknowledge_burst(&self, burst: Vec<Frame>) -> Result<(), (Fault, Option<String>)> {
        let mut run: Vec<(u64, Option<String>)> = Vec::new();
        let mut run_subscription: Option<String> = None;
        for frame in burst {
            let receipt = receipt_of(&frame);
            let (subscription, offset) = self.ack_target(&frame).map_err(|f| (f, receipt.clone()))?;
            if let Some(current) = run_subscription.take_if(|current| *current != subscription) {
                self.acknowledge_run(current, std::mem::take(&mut run)).await?;
            }
            run_subscription = Some(subscription);
            run.push((offset, receipt));
        }
        if let Some(subscription) = run_subscription {
            self.acknowledge_run(subscription, run).await?;
        }
        Ok(())
    }

    async fn acknowledge_run(
        &self,
        subscription: String,
        run: Vec<(u64, Option<String>)>,
    ) -> Result<(), (Fault, Option<String>)> {
        let first_receipt = run.first().and_then(|(_, receipt)| receipt.clone());
        let sub = self.acknowledging(&subscription).map_err(|f| (f, first_receipt))?;
        let mut offsets = Vec::new();
        let mut settled = 0;
        let mut receipts = Vec::new();
        let mut refused = None;
        for (offset, receipt) in run {
            match sub.delivered.settle(offset, sub.ack == AckMode::Client) {
                Settlement::Settle(through) => {
                    settled += through.len();
                    offsets.push(offset)
                }
                Settlement::Repeat => {}
                Settlement::Unknown => {
                    refused = Some((never_delivered(&subscription, offset), receipt));
                    break;
                }
            }
            receipts.push(receipt);
        }
        if !offsets.is_empty() {
            let reply =
                self.group(&sub.group, GroupMsg::AckMany { member: sub.member.clone(), offsets }).await;
            reply.and_then(|reply| settled_by_group(&sub.group, reply)).map_err(|f| (f, None))?;
            metrics::acked(settled);
        }
        for id in receipts.into_iter().flatten() {
            self.send(Frame::new(Command::Receipt).with_header("receipt-id", id)).await;
        }
        refused.map_or(Ok(()), Err)
    }
}

const UNKNOWN_MESSAGE: &str = "Unknown message";

fn never_delivered(subscription: &str, offset: u64) -> Fault {
    fault(UNKNOWN_MESSAGE, format!("message {subscription}:{offset} was never delivered to this session"))
}

/// The group's answer to an acknowledgement of offsets this session was sent. A refusal is not
/// the client's mistake: the group lost the delivery (it moved to another node or restarted) and
/// will deliver the message again, marked as a redelivery; the acknowledgement is let go.
fn settled_by_group(group: &str, reply: GroupReply) -> Result<(), Fault> {
    match reply {
        GroupReply::Done => Ok(()),
        GroupReply::Refused(GroupRefusal::Ack(_) | GroupRefusal::NotAMember) => {
            tracing::debug!(%group, "acknowledgement of a delivery the group lost; it comes again");
            Ok(())
        }
        other => Err(fault("Acknowledgement refused", format!("{other:?}"))),
    }
}
