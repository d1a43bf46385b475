//! One subscription's deliveries: a task that fetches what its group has ready (waiting in the
//! group while nothing is), turns each message into a MESSAGE frame, notes it as sent (for
//! subscriptions that acknowledge), and queues it to the connection's writer.

use std::sync::Arc;
use std::time::Duration;

use serv_actors::ActorKey;
use serv_actors::ActorKind;
use serv_actors::group::{GroupMsg, GroupRefusal, GroupReply};
use tokio::sync::mpsc;

use super::super::codec::Item;
use super::super::frame::{Command, Frame, Version};
use super::Shared;
use super::ack::Delivered;

/// How long one fetch waits for messages in the group (below the directory's call timeout).
const LONG_POLL_MS: u64 = 20_000;

/// Headers of a MESSAGE that only the server sets: a SEND carrying one is refused.
pub(super) const SERVER_SET_HEADERS: &[&str] =
    &["message-id", "subscription", "ack", "redelivered", "redelivery-count"];

/// One subscription's deliveries.
pub(super) struct Delivery {
    /// Where sent offsets are noted, for subscriptions that acknowledge.
    pub delivered: Option<Delivered>,
    pub shared: Arc<Shared>,
    pub out: mpsc::Sender<Item>,
    pub group: String,
    pub join: GroupMsg,
    pub member: String,
    pub subscription: String,
    pub destination: String,
    pub version: Version,
    pub prefetch: u32,
}

impl Delivery {
    pub async fn run(self) {
        let key = ActorKey::new(ActorKind::Group, self.group.as_str());
        loop {
            let max = if self.prefetch == 0 { 100 } else { self.prefetch.min(100) as usize };
            let fetch = GroupMsg::Fetch { member: self.member.clone(), max, wait_ms: LONG_POLL_MS };
            let messages = match self.shared.directory.call(&key, fetch).await {
                Ok(GroupReply::Messages(messages)) => messages,
                Ok(GroupReply::Refused(GroupRefusal::NotAMember)) => {
                    // The group restarted or passivated: join again.
                    let _ = self.shared.directory.call(&key, self.join.clone()).await;
                    continue;
                }
                Ok(other) => {
                    tracing::warn!(group = %self.group, ?other, "subscription stopped");
                    return;
                }
                Err(error) => {
                    tracing::debug!(group = %self.group, %error, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            for message in messages {
                if let Some(delivered) = &self.delivered {
                    delivered.sent(message.offset);
                }
                if self.out.send(Item::Frame(self.frame(message))).await.is_err() {
                    return;
                }
                super::super::metrics::delivered();
            }
        }
    }

    fn frame(&self, message: serv_actors::group::Delivered) -> Frame {
        let id = format!("{}:{}", self.subscription, message.offset);
        let mut frame = Frame::new(Command::Message);
        for (name, value) in message.record.headers {
            // The destination is the one the subscription names.
            if name != "destination" && !SERVER_SET_HEADERS.contains(&name.as_str()) {
                frame = frame.with_header(name, value);
            }
        }
        frame = frame
            .with_header("destination", self.destination.clone())
            .with_header("message-id", id.clone())
            .with_header("subscription", self.subscription.clone());
        if self.version == Version::V1_2 {
            frame = frame.with_header("ack", id);
        }
        frame = frame.with_header("redelivered", if message.previous > 0 { "true" } else { "false" });
        if message.previous > 0 {
            frame = frame.with_header("redelivery-count", message.previous.to_string());
        }
        frame.with_body(message.record.body)
    }
}
