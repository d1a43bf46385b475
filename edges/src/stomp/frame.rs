//! STOMP frames as values: the command, the headers in wire order and the body, with nothing of
//! the wire format left in them (escaping, line endings and the terminating NUL belong to
//! [`super::codec`]). Also the two things a CONNECT negotiates, the protocol [`Version`] and the
//! [`HeartBeat`] intervals, since both are read from a frame's headers.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

/// A STOMP command: the first line of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: opens a session (1.0 onwards).
    Connect,
    /// Client: opens a session; the 1.2 name for CONNECT.
    Stomp,
    /// Client: publishes a message to a destination.
    Send,
    /// Client: starts receiving messages from a destination.
    Subscribe,
    /// Client: stops a subscription.
    Unsubscribe,
    /// Client: acknowledges a message.
    Ack,
    /// Client: rejects a message (1.1 onwards).
    Nack,
    /// Client: starts a transaction.
    Begin,
    /// Client: commits a transaction.
    Commit,
    /// Client: rolls back a transaction.
    Abort,
    /// Client: ends the session.
    Disconnect,
    /// Server: the session is open.
    Connected,
    /// Server: a message for a subscription.
    Message,
    /// Server: confirms a client frame that asked for a receipt.
    Receipt,
    /// Server: something went wrong; the server closes the connection after it.
    Error,
}

impl Command {
    /// Every command, client commands first.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// The command named exactly `name` (commands are case-sensitive), if there is one.
    pub fn parse(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|command| command.as_str() == name)
    }

    /// Whether a client sends this command (as opposed to a server).
    pub fn is_client(self) -> bool {
        !matches!(self, Command::Connected | Command::Message | Command::Receipt | Command::Error)
    }

    /// Whether the specification lets a frame of this command carry a body.
    pub fn allows_body(self) -> bool {
        matches!(self, Command::Send | Command::Message | Command::Error)
    }

    /// Whether header names and values of this command are escaped on the wire. The frames that
    /// negotiate the version cannot depend on it: CONNECT, STOMP and CONNECTED are never escaped.
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One STOMP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the frame asks for or reports.
    pub command: Command,
    /// Headers in wire order, unescaped; a name may repeat, and then the first one counts.
    pub headers: Vec<(String, String)>,
    /// The body, possibly binary and possibly containing NUL bytes.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Self {
        Self { command, headers: Vec::new(), body: Bytes::new() }
    }

    /// The frame with one more header, after those it has.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The frame with `body` as its body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of header `name`: its first occurrence, as STOMP says repeated headers are read.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// A STOMP protocol version; the order is the order of release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping.
    V1_0,
    /// STOMP 1.1: headers escape `\n`, `:` and `\`; heart-beats; NACK.
    V1_1,
    /// STOMP 1.2: also escapes `\r`; lines may end in `\r\n`.
    V1_2,
}

impl Version {
    /// Every version this codec speaks, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as written in `version` and `accept-version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// The version written `text`, if this codec speaks it.
    pub fn parse(text: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|version| version.as_str() == text.trim())
    }

    /// The highest version both sides speak, given a CONNECT's `accept-version` header; a client
    /// that sends none speaks 1.0. `None` means no common version: the server answers ERROR.
    pub fn negotiate(accept_version: Option<&str>) -> Option<Version> {
        match accept_version {
            None => Some(Version::V1_0),
            Some(list) => list.split(',').filter_map(Version::parse).max(),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `heart-beat` header: what one side offers and asks for, in milliseconds; 0 means never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartBeat {
    /// The shortest interval at which the sender of the header can send heart-beats.
    pub send_ms: u64,
    /// The interval at which the sender of the header would like to receive heart-beats.
    pub receive_ms: u64,
}

impl HeartBeat {
    /// Parses a `heart-beat` header value, `cx,cy`; `None` if it is not two whole numbers.
    pub fn parse(value: &str) -> Option<HeartBeat> {
        let (send, receive) = value.split_once(',')?;
        let millis = |text: &str| {
            let text = text.trim();
            if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            text.parse::<u64>().ok()
        };
        Some(HeartBeat { send_ms: millis(send)?, receive_ms: millis(receive)? })
    }

    /// The intervals agreed between a client's CONNECT header and the server's CONNECTED header:
    /// each direction beats at the slower of what the sender can do and the receiver wants, or
    /// not at all if either side said 0.
    pub fn negotiate(client: HeartBeat, server: HeartBeat) -> HeartBeatIntervals {
        let agree = |send_ms: u64, receive_ms: u64| {
            (send_ms != 0 && receive_ms != 0).then(|| Duration::from_millis(send_ms.max(receive_ms)))
        };
        HeartBeatIntervals {
            client_to_server: agree(client.send_ms, server.receive_ms),
            server_to_client: agree(server.send_ms, client.receive_ms),
        }
    }
}

impl fmt::Display for HeartBeat {
    /// The header value, `cx,cy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.send_ms, self.receive_ms)
    }
}

impl From<HeartBeatIntervals> for HeartBeat {
    /// The server's `heart-beat` header for what was agreed: how often it sends, how often it
    /// expects the client to; `0,0` when neither side beats.
    fn from(agreed: HeartBeatIntervals) -> Self {
        let millis = |every: Option<Duration>| every.map_or(0, |every| every.as_millis() as u64);
        HeartBeat { send_ms: millis(agreed.server_to_client), receive_ms: millis(agreed.client_to_server) }
    }
}

/// How often each side of a connection sends heart-beats, once negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartBeatIntervals {
    /// How often the client sends; the server may close a connection silent for a while longer.
    pub client_to_server: Option<Duration>,
    /// How often the server sends when it has nothing else to send.
    pub server_to_client: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses_from_its_wire_name_and_nothing_else_does() {
        for command in Command::ALL {
            assert_eq!(Command::parse(command.as_str()), Some(command));
        }
        assert_eq!(Command::parse("send"), None);
        assert_eq!(Command::parse("SEND "), None);
        assert_eq!(Command::parse(""), None);
    }

    #[test]
    fn only_the_negotiating_frames_skip_escaping() {
        let unescaped: Vec<_> = Command::ALL.into_iter().filter(|c| !c.escapes_headers()).collect();
        assert_eq!(unescaped, [Command::Connect, Command::Stomp, Command::Connected]);
    }

    #[test]
    fn the_first_of_repeated_headers_wins() {
        let frame = Frame::new(Command::Message).with_header("foo", "first").with_header("foo", "second");
        assert_eq!(frame.header("foo"), Some("first"));
        assert_eq!(frame.header("bar"), None);
    }

    #[test]
    fn a_client_without_accept_version_speaks_1_0() {
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(Version::negotiate(Some("1.0,1.1,1.2")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.1,1.0")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("1.2,2.0")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.0, 1.1")), Some(Version::V1_1));
    }

    #[test]
    fn negotiation_without_a_common_version_fails() {
        assert_eq!(Version::negotiate(Some("2.0,3.1")), None);
        assert_eq!(Version::negotiate(Some("")), None);
    }

    #[test]
    fn heart_beat_header_parses_two_millisecond_counts() {
        assert_eq!(HeartBeat::parse("0,0"), Some(HeartBeat::default()));
        assert_eq!(HeartBeat::parse("1000, 5000"), Some(HeartBeat { send_ms: 1000, receive_ms: 5000 }));
        for bad in ["", "10", "10,", ",10", "-1,0", "1,2,3", "a,b", "+1,2", "99999999999999999999,0"] {
            assert_eq!(HeartBeat::parse(bad), None, "{bad:?}");
        }
        assert_eq!(HeartBeat { send_ms: 10, receive_ms: 20 }.to_string(), "10,20");
    }

    #[test]
    fn heart_beats_agree_on_the_slower_side_or_none() {
        let client = HeartBeat { send_ms: 1000, receive_ms: 0 };
        let server = HeartBeat { send_ms: 5000, receive_ms: 3000 };
        let agreed = HeartBeat::negotiate(client, server);
        assert_eq!(agreed.client_to_server, Some(Duration::from_millis(3000)));
        assert_eq!(agreed.server_to_client, None);
    }

    #[test]
    fn the_agreed_intervals_read_back_as_the_servers_header() {
        let agreed = HeartBeat::negotiate(
            HeartBeat { send_ms: 1000, receive_ms: 0 },
            HeartBeat { send_ms: 5000, receive_ms: 3000 },
        );
        assert_eq!(HeartBeat::from(agreed), HeartBeat { send_ms: 0, receive_ms: 3000 });
        let none = HeartBeat::negotiate(HeartBeat::default(), HeartBeat { send_ms: 5000, receive_ms: 3000 });
        assert_eq!(HeartBeat::from(none).to_string(), "0,0");
    }
}
