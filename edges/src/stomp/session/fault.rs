//! Why a session ends with an ERROR frame, and how that frame reads: a short, capitalised summary
//! in `message` (the wording RabbitMQ's STOMP adapter uses, which clients already match on), the
//! detail in the body. After an ERROR the connection closes, lingering long enough that the
//! client reads the frame before it learns of the close.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::codec::FrameError;
use super::super::frame::{Command, Frame};
use super::Connection;

pub(super) const BAD_CONNECT: &str = "Bad CONNECT";
pub(super) const INVALID_HEADER: &str = "Invalid header";
pub(super) const MISSING_HEADER: &str = "Missing header";
pub(super) const INVALID_DESTINATION: &str = "Invalid destination";
pub(super) const BAD_TRANSACTION: &str = "Bad transaction";
pub(super) const SUBSCRIPTION_NOT_FOUND: &str = "Subscription not found";
pub(super) const DESTINATION_UNAVAILABLE: &str = "Destination unavailable";
/// A full destination (max length, overflow `reject-publish`) refused a SEND.
pub(super) const MESSAGE_REJECTED: &str = "Message rejected";
/// A connection reached the most destinations it may create, or subscriptions it may hold.
pub(super) const TOO_MANY_DESTINATIONS: &str = "Too many destinations";
pub(super) const TOO_MANY_SUBSCRIPTIONS: &str = "Too many subscriptions";
/// The node is near its memory budget: a SEND, SUBSCRIBE or COMMIT waits.
pub(super) const MEMORY_LIMIT: &str = "Memory limit reached";

/// Where an operator raises the body limit (and with it the frame limit).
const BODY_LIMIT_SETTING: &str =
    "--stomp-max-body-bytes (SERV_STOMP_MAX_BODY_BYTES, or stomp_max_body_bytes in the --config file)";

/// Why a session ends with an ERROR frame.
pub(super) struct Fault {
    /// The `message` header: a fixed, short summary.
    pub summary: &'static str,
    /// The body: what exactly was wrong.
    pub detail: String,
}

pub(super) fn fault(summary: &'static str, detail: impl Into<String>) -> Fault {
    Fault { summary, detail: detail.into() }
}

impl From<FrameError> for Fault {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::BodyTooLarge { max_bytes } => fault(
                "Frame too large",
                format!(
                    "The message body is larger than this broker's limit of {max_bytes} bytes \
                     (max_body_bytes); an operator can raise it with {BODY_LIMIT_SETTING}."
                ),
            ),
            FrameError::FrameTooLarge { max_bytes } => fault(
                "Frame too large",
                format!(
                    "The frame is larger than this broker's limit of {max_bytes} bytes \
                     (max_frame_bytes: the body limit plus room for headers); an operator can raise \
                     it with {BODY_LIMIT_SETTING}."
                ),
            ),
            FrameError::CommandLineTooLong { .. }
            | FrameError::HeaderLineTooLong { .. }
            | FrameError::TooManyHeaders { .. }
            | FrameError::HeadersTooLarge { .. } => {
                fault("Frame too large", format!("{error} (a fixed limit)"))
            }
            FrameError::UnknownCommand(_) => fault("Bad command", error.to_string()),
            error => fault("Invalid frame", error.to_string()),
        }
    }
}

/// The ERROR frame for `fault`, naming the receipt of the frame that caused it, if it asked for one.
pub(super) fn error_frame(fault: &Fault, receipt: Option<&str>) -> Frame {
    let mut frame = Frame::new(Command::Error).with_header("message", fault.summary);
    if let Some(id) = receipt {
        frame = frame.with_header("receipt-id", id);
    }
    let body = if fault.detail.is_empty() { fault.summary.to_string() } else { fault.detail.clone() };
    frame.with_header("content-type", "text/plain").with_body(body.into_bytes())
}

/// Longest a connection lingers after its ERROR frame for the client to stop sending.
const LINGER: Duration = Duration::from_secs(5);
/// Most bytes read and dropped while lingering.
const LINGER_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Closes a connection after an ERROR frame was written to it: sends FIN, then reads and drops
/// what the client still sends until it closes too (within [`LINGER`] and [`LINGER_MAX_BYTES`]).
/// Closing a socket with unread bytes in it makes the kernel answer with a reset, and a reset
/// makes the client's kernel drop what it had not yet read, the ERROR frame included: a client
/// still writing a body over the limit would see the connection die without a word.
pub(super) async fn linger(mut stream: impl Connection) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut (&mut stream).take(LINGER_MAX_BYTES), &mut sink).await;
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
