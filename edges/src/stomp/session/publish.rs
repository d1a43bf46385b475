//! SEND: checking a frame, turning it into a log record, appending it to its destination's topic
//! and receipting it once durable. SENDs outside transactions that arrive together for one
//! destination are stored in one commit; those inside a transaction wait for its COMMIT.
//!
//! A SEND that a full destination refuses (max length, overflow `reject-publish`) is stored never
//! and receipted never: it gets the ERROR `Message rejected`, and then the connection closes, as
//! after every ERROR (RabbitMQ's STOMP adapter withholds the RECEIPT without a word and keeps
//! the connection; STOMP has no other way to say no to one SEND). The SENDs before it in the
//! burst are stored and receipted first.

use serv_actors::now_ms;
use serv_actors::topic::{DEDUP_HEADER, DeadLettered, LogRecord};

use super::super::frame::{Command, Frame};
use super::delivery::SERVER_SET_HEADERS;
use super::fault::{
    DESTINATION_UNAVAILABLE, Fault, INVALID_DESTINATION, INVALID_HEADER, MESSAGE_REJECTED, MISSING_HEADER,
    TOO_MANY_DESTINATIONS, fault,
};
use super::{Session, receipt_of};
use crate::admin::topics::destination;

/// RECEIPT headers saying that the destination's transform sent the message to this dead-letter
/// topic instead, and why.
pub const DEAD_LETTER_HEADER: &str = "dead-letter";
pub const DEAD_LETTER_REASON_HEADER: &str = "dead-letter-reason";

/// The topic name of a `/queue/NAME` or `/topic/NAME` destination.
pub(super) fn topic_of(frame: &Frame) -> Result<String, Fault> {
    let value = frame.header("destination").ok_or_else(|| {
        fault(MISSING_HEADER, format!("{} must include a 'destination' header", frame.command))
    })?;
    let name = value.strip_prefix('/').unwrap_or(value);
    destination(name)
        .map(str::to_string)
        .map_err(|e| fault(INVALID_DESTINATION, format!("'{value}' is not a valid destination: {e}")))
}

/// Refuses a SEND that sets a header only the server sets on a MESSAGE: the first check a SEND
/// gets, so that is the reason the client hears.
pub(super) fn check_client_headers(frame: &Frame) -> Result<(), Fault> {
    match frame.headers.iter().find(|(name, _)| SERVER_SET_HEADERS.contains(&name.as_str())) {
        Some((name, _)) => Err(fault(INVALID_HEADER, format!("'{name}' is not allowed on 'SEND'"))),
        None => Ok(()),
    }
}

/// The RECEIPT a stored SEND gets, if it asked for one.
fn receipt_for(frame: &Frame, fate: Option<DeadLettered>) -> Option<Frame> {
    let mut receipt = Frame::new(Command::Receipt).with_header("receipt-id", receipt_of(frame)?);
    // The destination's transform refused the message: it is durable in the dead-letter topic,
    // and the producer is told where and why.
    if let Some(dead) = fate {
        receipt = receipt
            .with_header(DEAD_LETTER_HEADER, format!("/{}", dead.topic))
            .with_header(DEAD_LETTER_REASON_HEADER, dead.reason);
    }
    Some(receipt)
}

impl Session {
    /// The log record (and dedup id) a SEND stores.
    fn record_of(frame: &Frame) -> Result<(LogRecord, Option<String>), Fault> {
        check_client_headers(frame)?;
        let now = now_ms();
        let invalid = |name: &str, what: &str| fault(INVALID_HEADER, format!("'{name}' must be {what}"));
        let deliver_at_ms = match (frame.header("deliver-at"), frame.header("delay")) {
            (Some(at), _) => Some(at.parse::<u64>().map_err(|_| invalid("deliver-at", "Unix milliseconds"))?),
            (None, Some(delay)) => {
                Some(now + delay.parse::<u64>().map_err(|_| invalid("delay", "milliseconds"))?)
            }
            (None, None) => None,
        };
        const TRANSPORT: &[&str] = &["content-length", "receipt", "transaction"];
        let headers: Vec<(String, String)> =
            frame.headers.iter().filter(|(name, _)| !TRANSPORT.contains(&name.as_str())).cloned().collect();
        let dedup_id = frame.header(DEDUP_HEADER).map(str::to_string);
        Ok((LogRecord { headers, body: frame.body.to_vec(), published_ms: now, deliver_at_ms }, dedup_id))
    }

    /// Stores a SEND of a committed transaction, then sends its receipt.
    pub(super) async fn publish(&self, frame: Frame) -> Result<(), Fault> {
        let topic = topic_of(&frame)?;
        let stored = self.publish_many(&topic, vec![Self::record_of(&frame)?]).await?;
        if let Some(refusal) = stored.refused {
            return Err(refusal);
        }
        if let Some(receipt) = receipt_for(&frame, stored.fates.into_iter().next().flatten()) {
            self.send(receipt).await;
        }
        Ok(())
    }

    /// Appends messages to one destination in order, in one commit; resolves once durable with,
    /// for each message stored, where the destination's transform sent it instead, if it did.
    async fn publish_many(
        &self,
        topic: &str,
        batch: Vec<(LogRecord, Option<String>)>,
    ) -> Result<Stored, Fault> {
        let kept: Vec<bool> = batch
            .iter()
            .map(|_| !crate::fault_injection::lose(crate::fault_injection::Loss::Message))
            .collect();
        let batch: Vec<_> = batch.into_iter().zip(&kept).filter(|(_, kept)| **kept).map(|(m, _)| m).collect();
        if batch.is_empty() {
            return Ok(Stored { fates: vec![None; kept.len()], refused: None });
        }
        let created = || self.may_create(topic);
        let (answers, refused) =
            match crate::publish::append(&self.shared.directory, topic, batch, created).await {
                Ok(answers) => (answers, None),
                Err(crate::publish::PublishError::Full { stored, limit }) => {
                    super::super::metrics::rejected();
                    (stored, Some(fault(MESSAGE_REJECTED, crate::publish::full_detail(topic, &limit))))
                }
                Err(error @ crate::publish::PublishError::Unreachable(_)) => {
                    return Err(fault(DESTINATION_UNAVAILABLE, error.to_string()));
                }
                // Nothing stored: the first message is the one refused (and its receipt named).
                Err(crate::publish::PublishError::NotCreated(why)) => {
                    (Vec::new(), Some(fault(TOO_MANY_DESTINATIONS, why)))
                }
                Err(error) => return Err(fault("Message not stored", error.to_string())),
            };
        super::super::metrics::published(answers.len());
        // A message the fault injection lost counts as stored; the first kept one without an
        // answer is the one refused, and the burst ends there.
        let mut answers = answers.into_iter();
        let mut fates = Vec::with_capacity(kept.len());
        for kept in kept {
            match kept {
                false => fates.push(None),
                true => match answers.next() {
                    Some(answer) => fates.push(answer.dead_letter),
                    None => break,
                },
            }
        }
        Ok(Stored { fates, refused })
    }

    /// A burst of SENDs (consecutive, to one destination, outside transactions): stored in one
    /// commit, then each receipt in order. A frame that fails its checks ends the burst there:
    /// the ones before it are stored and receipted, it gets the ERROR.
    pub(super) async fn publish_burst(&self, burst: Vec<Frame>) -> Result<(), (Fault, Option<String>)> {
        let topic = check_client_headers(&burst[0])
            .and_then(|()| topic_of(&burst[0]))
            .map_err(|f| (f, receipt_of(&burst[0])))?;
        let mut records = Vec::with_capacity(burst.len());
        let mut failed = None;
        for frame in &burst {
            match Self::record_of(frame) {
                Ok(record) => records.push(record),
                Err(fault) => {
                    failed = Some((fault, receipt_of(frame)));
                    break;
                }
            }
        }
        let stored = match records.len() {
            0 => Stored { fates: Vec::new(), refused: None },
            _ => self.publish_many(&topic, records).await.map_err(|f| (f, None))?,
        };
        let count = stored.fates.len();
        for (frame, fate) in burst.iter().zip(stored.fates) {
            if let Some(receipt) = receipt_for(frame, fate) {
                self.send(receipt).await;
            }
        }
        if let Some(refusal) = stored.refused {
            return Err((refusal, receipt_of(&burst[count])));
        }
        failed.map_or(Ok(()), Err)
    }
}

/// What became of a burst of SENDs: the fate of each message stored, from the first, and the
/// refusal of the one after them, if the destination was full.
struct Stored {
    fates: Vec<Option<DeadLettered>>,
    refused: Option<Fault>,
}
