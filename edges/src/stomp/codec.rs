//! The STOMP wire format as a `tokio_util` codec: bytes from a client become [`Item`]s (frames
//! and heart-beats) and items become bytes, for STOMP 1.0, 1.1 and 1.2.
//!
//! The codec holds the connection's protocol version, because header escaping and line endings
//! depend on it: 1.0 escapes nothing, 1.1 escapes `\n`, `:` and `\`, 1.2 also `\r` and lets
//! lines end in `\r\n`. Until the connection handler calls [`StompCodec::set_version`] after
//! CONNECT, the codec follows 1.2, the most tolerant reading; the frames that negotiate the
//! version (CONNECT, STOMP, CONNECTED) are never escaped in any version.
//!
//! Decoding is incremental: a frame's command line and headers are parsed and taken off the
//! buffer line by line as they arrive, and the codec remembers how far it has searched for the
//! end of the current line or body, so a frame dribbled in one byte at a time costs no more than
//! one that arrives whole. Every part of a frame is bounded by [`FrameLimits`], checked while
//! the part is still arriving, so a client cannot make the buffer grow without bound by never
//! finishing a line or a body. After a [`FrameError`] the stream is out of step: the connection
//! answers with an ERROR frame carrying the error's message and closes.

use std::{fmt, io, mem};

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{Command, Frame, Version};

/// What travels on a STOMP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A whole frame.
    Frame(Frame),
    /// An end-of-line between frames: a heart-beat, or padding after a frame's NUL. Decoded so
    /// the connection can tell a live client from a silent one; encoded as a lone `\n`.
    HeartBeat,
}

impl From<Frame> for Item {
    fn from(frame: Frame) -> Self {
        Item::Frame(frame)
    }
}

/// Size limits on incoming frames, in bytes unless named otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Longest command line, without its end-of-line.
    pub max_command_line_bytes: usize,
    /// Most header lines in one frame.
    pub max_header_lines: usize,
    /// Longest header line, without its end-of-line.
    pub max_header_line_bytes: usize,
    /// Most bytes of header lines in one frame, end-of-lines included.
    pub max_header_bytes: usize,
    /// Largest body.
    pub max_body_bytes: usize,
    /// Largest whole frame, command line to NUL: the most the decoder buffers for one frame.
    /// Raise it along with `max_body_bytes`.
    pub max_frame_bytes: usize,
}

impl FrameLimits {
    /// The limits with `max_body_bytes` as the body limit and a frame limit that leaves room for
    /// the most header bytes besides.
    pub fn with_max_body_bytes(self, max_body_bytes: usize) -> Self {
        let max_frame_bytes = max_body_bytes.saturating_add(self.max_header_bytes).saturating_add(1024);
        Self { max_body_bytes, max_frame_bytes, ..self }
    }
}

impl Default for FrameLimits {
    /// The body limit is RabbitMQ's STOMP default (`stomp.max_frame_size`, 4 MiB): what clients of
    /// the most used broker expect to get through, and well under the 16 MiB a message may take
    /// between cluster nodes.
    fn default() -> Self {
        Self {
            max_command_line_bytes: 64,
            max_header_lines: 128,
            max_header_line_bytes: 8 * 1024,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 0,
            max_frame_bytes: 0,
        }
        .with_max_body_bytes(4 * 1024 * 1024)
    }
}

/// Why bytes could not be decoded into a frame, or a frame could not be encoded. The message
/// (`Display`) is fit for the `message` header of an ERROR frame.
#[derive(Debug)]
pub enum FrameError {
    /// The command line is not a STOMP command.
    UnknownCommand(String),
    /// A command line longer than [`FrameLimits::max_command_line_bytes`].
    CommandLineTooLong { max_bytes: usize },
    /// A header line longer than [`FrameLimits::max_header_line_bytes`].
    HeaderLineTooLong { max_bytes: usize },
    /// More header lines than [`FrameLimits::max_header_lines`].
    TooManyHeaders { max_lines: usize },
    /// Header lines adding up to more than [`FrameLimits::max_header_bytes`].
    HeadersTooLarge { max_bytes: usize },
    /// A body longer than [`FrameLimits::max_body_bytes`].
    BodyTooLarge { max_bytes: usize },
    /// A frame longer than [`FrameLimits::max_frame_bytes`].
    FrameTooLarge { max_bytes: usize },
    /// A header line with no `:` between name and value.
    MissingColon,
    /// A header line that starts with its `:`.
    EmptyHeaderName,
    /// A backslash followed by a byte the version defines no escape for (`None`: by nothing).
    UndefinedEscape(Option<u8>),
    /// A header name or value that is not UTF-8.
    NotUtf8,
    /// A `content-length` that is not a decimal byte count.
    InvalidContentLength(String),
    /// The `content-length` bytes of a body are not followed by NUL.
    MissingNul,
    /// The connection ended in the middle of a frame.
    Truncated,
    /// A header of an outgoing frame cannot be written in the connection's version, because
    /// that frame's headers are not escaped and the header contains `:`, a newline or a final `\r`.
    Unencodable { command: Command, version: Version, name: String },
    /// Reading or writing the connection failed.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownCommand(command) => write!(f, "unknown command {command:?}"),
            FrameError::CommandLineTooLong { max_bytes } => {
                write!(f, "command line exceeds {max_bytes} bytes")
            }
            FrameError::HeaderLineTooLong { max_bytes } => write!(f, "header line exceeds {max_bytes} bytes"),
            FrameError::TooManyHeaders { max_lines } => write!(f, "frame has more than {max_lines} headers"),
            FrameError::HeadersTooLarge { max_bytes } => write!(f, "frame headers exceed {max_bytes} bytes"),
            FrameError::BodyTooLarge { max_bytes } => write!(f, "frame body exceeds {max_bytes} bytes"),
            FrameError::FrameTooLarge { max_bytes } => write!(f, "frame exceeds {max_bytes} bytes"),
            FrameError::MissingColon => f.write_str("header line without ':'"),
            FrameError::EmptyHeaderName => f.write_str("header with an empty name"),
            FrameError::UndefinedEscape(Some(byte)) => {
                write!(f, "undefined escape sequence \\{} in a header", byte.escape_ascii())
            }
            FrameError::UndefinedEscape(None) => f.write_str("header ends in an unfinished escape sequence"),
            FrameError::NotUtf8 => f.write_str("header is not UTF-8"),
            FrameError::InvalidContentLength(value) => {
                write!(f, "content-length {value:?} is not a byte count")
            }
            FrameError::MissingNul => {
                f.write_str("frame body is not followed by NUL after content-length bytes")
            }
            FrameError::Truncated => f.write_str("connection closed in the middle of a frame"),
            FrameError::Unencodable { command, version, name } => {
                write!(f, "header {name:?} cannot be written unescaped in a STOMP {version} {command} frame")
            }
            FrameError::Io(error) => write!(f, "connection error: {error}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(error) => Some(error),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(error: io::Error) -> Self {
        FrameError::Io(error)
    }
}

/// Decodes and encodes STOMP [`Item`]s for one connection.
#[derive(Debug, Default)]
pub struct StompCodec {
    /// The negotiated version; `None` before CONNECT, read as 1.2.
    version: Option<Version>,
    limits: FrameLimits,
    /// The frame being decoded.
    stage: Stage,
    cursor: Cursor,
}

/// What the decoder has parsed of the frame at the front of the buffer.
#[derive(Debug, Default)]
enum Stage {
    /// Waiting for a command line (or skipping heart-beats).
    #[default]
    Command,
    /// Reading header lines until the empty line.
    Headers { command: Command, headers: Vec<(String, String)>, header_bytes: usize },
    /// Reading the body: `length` bytes and a NUL, or up to the first NUL if `None`.
    Body { command: Command, headers: Vec<(String, String)>, length: Option<usize> },
}

/// How far the decoder has got in the buffer with the current frame.
#[derive(Debug, Default)]
struct Cursor {
    /// Bytes at the front of the buffer already searched for the end of the current line or body.
    scanned: usize,
    /// Bytes of the current frame already parsed and taken off the buffer.
    taken: usize,
}

impl StompCodec {
    /// A codec for a new connection, before any version is negotiated.
    pub fn new(limits: FrameLimits) -> Self {
        Self { limits, ..Self::default() }
    }

    /// The version negotiated on this connection, if any yet.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Sets the version for every frame after this point; called once CONNECT is answered.
    pub fn set_version(&mut self, version: Version) {
        self.version = Some(version);
    }

    /// The limits incoming frames are held to.
    pub fn limits(&self) -> &FrameLimits {
        &self.limits
    }

    fn decode_item(&mut self, src: &mut BytesMut) -> Result<Option<Item>, FrameError> {
        let limits = self.limits;
        loop {
            match &mut self.stage {
                Stage::Command => {
                    let too_long =
                        FrameError::CommandLineTooLong { max_bytes: limits.max_command_line_bytes };
                    let Some(line) = self.cursor.take_line(src, limits.max_command_line_bytes, too_long)?
                    else {
                        return Ok(None);
                    };
                    let line = without_cr(&line);
                    if line.is_empty() {
                        self.cursor = Cursor::default();
                        return Ok(Some(Item::HeartBeat));
                    }
                    let command = std::str::from_utf8(line).ok().and_then(Command::parse);
                    let command = command.ok_or_else(|| {
                        FrameError::UnknownCommand(String::from_utf8_lossy(line).into_owned())
                    })?;
                    self.stage = Stage::Headers { command, headers: Vec::new(), header_bytes: 0 };
                }
                Stage::Headers { command, headers, header_bytes } => {
                    let too_long = FrameError::HeaderLineTooLong { max_bytes: limits.max_header_line_bytes };
                    let Some(line) = self.cursor.take_line(src, limits.max_header_line_bytes, too_long)?
                    else {
                        return Ok(None);
                    };
                    if without_cr(&line).is_empty() {
                        let length = body_length(headers, &limits, self.cursor.taken)?;
                        let (command, headers) = (*command, mem::take(headers));
                        self.stage = Stage::Body { command, headers, length };
                        continue;
                    }
                    if headers.len() == limits.max_header_lines {
                        return Err(FrameError::TooManyHeaders { max_lines: limits.max_header_lines });
                    }
                    *header_bytes += line.len() + 1;
                    if *header_bytes > limits.max_header_bytes {
                        return Err(FrameError::HeadersTooLarge { max_bytes: limits.max_header_bytes });
                    }
                    headers.push(Dialect::new(self.version, *command).parse_header(&line)?);
                }
                Stage::Body { command, headers, length } => {
                    let Some(body_bytes) = self.cursor.find_body_end(src, *length, limits.max_body_bytes)?
                    else {
                        return Ok(None);
                    };
                    // A frame that arrived whole was never measured while it was incomplete.
                    if self.cursor.taken + body_bytes + 1 > limits.max_frame_bytes {
                        return Err(FrameError::FrameTooLarge { max_bytes: limits.max_frame_bytes });
                    }
                    let body = src.split_to(body_bytes).freeze();
                    src.advance(1);
                    let frame = Frame { command: *command, headers: mem::take(headers), body };
                    self.stage = Stage::Command;
                    self.cursor = Cursor::default();
                    return Ok(Some(Item::Frame(frame)));
                }
            }
        }
    }
}

impl Cursor {
    /// Takes the next line off `src`, without its `\n`, once the whole line has arrived; fails
    /// as soon as the line, less a `\r` that may end it, is longer than `max_bytes`.
    fn take_line(
        &mut self,
        src: &mut BytesMut,
        max_bytes: usize,
        too_long: FrameError,
    ) -> Result<Option<BytesMut>, FrameError> {
        debug_assert!(self.scanned <= src.len(), "the buffer shrank under the decoder");
        let Some(offset) = src[self.scanned..].iter().position(|&byte| byte == b'\n') else {
            self.scanned = src.len();
            return if without_cr(src).len() > max_bytes { Err(too_long) } else { Ok(None) };
        };
        let end = self.scanned + offset;
        let mut line = src.split_to(end + 1);
        line.truncate(end);
        self.scanned = 0;
        self.taken += end + 1;
        if without_cr(&line).len() > max_bytes {
            return Err(too_long);
        }
        Ok(Some(line))
    }

    /// The length of the body at the front of `src` once it and its NUL have arrived: `length`
    /// bytes, which must be followed by NUL, or the bytes up to the first NUL.
    fn find_body_end(
        &mut self,
        src: &BytesMut,
        length: Option<usize>,
        max_body_bytes: usize,
    ) -> Result<Option<usize>, FrameError> {
        debug_assert!(self.scanned <= src.len(), "the buffer shrank under the decoder");
        if let Some(length) = length {
            return match src.get(length) {
                None => Ok(None),
                Some(0) => Ok(Some(length)),
                Some(_) => Err(FrameError::MissingNul),
            };
        }
        match src[self.scanned..].iter().position(|&byte| byte == 0).map(|offset| self.scanned + offset) {
            Some(length) if length <= max_body_bytes => Ok(Some(length)),
            _ if src.len() > max_body_bytes => Err(FrameError::BodyTooLarge { max_bytes: max_body_bytes }),
            _ => {
                self.scanned = src.len();
                Ok(None)
            }
        }
    }
}

/// The body length a frame's headers announce, checked against the limits before any of the
/// body is buffered; `taken` is how much of the frame has arrived already.
fn body_length(
    headers: &[(String, String)],
    limits: &FrameLimits,
    taken: usize,
) -> Result<Option<usize>, FrameError> {
    let Some((_, value)) = headers.iter().find(|(name, _)| name == "content-length") else {
        return Ok(None);
    };
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(FrameError::InvalidContentLength(value.clone()));
    }
    // All digits: the only way parsing fails is overflow, which is too large either way.
    let length = digits.parse::<usize>().unwrap_or(usize::MAX);
    if length > limits.max_body_bytes {
        return Err(FrameError::BodyTooLarge { max_bytes: limits.max_body_bytes });
    }
    if taken.saturating_add(length).saturating_add(1) > limits.max_frame_bytes {
        return Err(FrameError::FrameTooLarge { max_bytes: limits.max_frame_bytes });
    }
    Ok(Some(length))
}

/// `line` without one trailing `\r`.
fn without_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// How one frame's header lines are written: escaped or raw, and whether a line may end in `\r\n`.
#[derive(Clone, Copy, Debug)]
struct Dialect {
    version: Version,
    escaped: bool,
}

impl Dialect {
    /// The dialect of a `command` frame on a connection that negotiated `version` (1.2 if none).
    fn new(version: Option<Version>, command: Command) -> Self {
        let version = version.unwrap_or(Version::V1_2);
        Dialect { version, escaped: command.escapes_headers() && version != Version::V1_0 }
    }

    /// Whether a `\r` before a line's `\n` is part of the line end rather than of the header.
    fn crlf(self) -> bool {
        self.version == Version::V1_2
    }

    fn parse_header(self, line: &[u8]) -> Result<(String, String), FrameError> {
        let line = if self.crlf() { without_cr(line) } else { line };
        let colon = line.iter().position(|&byte| byte == b':').ok_or(FrameError::MissingColon)?;
        if colon == 0 {
            return Err(FrameError::EmptyHeaderName);
        }
        Ok((self.unescape(&line[..colon])?, self.unescape(&line[colon + 1..])?))
    }

    fn unescape(self, raw: &[u8]) -> Result<String, FrameError> {
        if !self.escaped || !raw.contains(&b'\\') {
            return String::from_utf8(raw.to_vec()).map_err(|_| FrameError::NotUtf8);
        }
        let mut text = Vec::with_capacity(raw.len());
        let mut bytes = raw.iter().copied();
        while let Some(byte) = bytes.next() {
            if byte != b'\\' {
                text.push(byte);
                continue;
            }
            text.push(match bytes.next() {
                Some(b'n') => b'\n',
                Some(b'c') => b':',
                Some(b'\\') => b'\\',
                Some(b'r') if self.version == Version::V1_2 => b'\r',
                other => return Err(FrameError::UndefinedEscape(other)),
            });
        }
        String::from_utf8(text).map_err(|_| FrameError::NotUtf8)
    }

    /// Writes a header name (`is_name`) or value, escaped if this dialect escapes; `false` if it
    /// cannot be written unescaped.
    fn put_text(self, dst: &mut BytesMut, text: &str, is_name: bool) -> bool {
        if !self.escaped {
            // Unescaped, a newline ends the line, a colon ends the name, and in 1.2 a final `\r`
            // joins the line end.
            let ambiguous = text.contains('\n')
                || (is_name && text.contains(':'))
                || (!is_name && self.crlf() && text.ends_with('\r'));
            dst.put_slice(text.as_bytes());
            return !ambiguous;
        }
        for byte in text.bytes() {
            match byte {
                b'\n' => dst.put_slice(b"\\n"),
                b':' => dst.put_slice(b"\\c"),
                b'\\' => dst.put_slice(b"\\\\"),
                b'\r' if self.version == Version::V1_2 => dst.put_slice(b"\\r"),
                byte => dst.put_u8(byte),
            }
        }
        true
    }
}

impl Decoder for StompCodec {
    type Item = Item;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, FrameError> {
        let decoded = self.decode_item(src).and_then(|item| {
            let buffered = self.cursor.taken + src.len();
            match item {
                None if buffered > self.limits.max_frame_bytes => {
                    Err(FrameError::FrameTooLarge { max_bytes: self.limits.max_frame_bytes })
                }
                item => Ok(item),
            }
        });
        // Every frame of every connection passes here: the one place to count them.
        match &decoded {
            Ok(Some(Item::Frame(frame))) => super::metrics::frame_received(Some(frame.command)),
            Err(FrameError::UnknownCommand(_)) => super::metrics::frame_received(None),
            _ => {}
        }
        if decoded.is_err() {
            // The stream is out of step; start afresh rather than from a half-parsed frame.
            self.stage = Stage::Command;
            self.cursor = Cursor::default();
        }
        decoded
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Item>, FrameError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() && matches!(self.stage, Stage::Command) => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

impl Encoder<Item> for StompCodec {
    type Error = FrameError;

    /// Writes a frame, escaped for the connection's version, with a `content-length` header
    /// whenever it has a body (one it carries already is replaced), or a heart-beat. On error
    /// nothing is written.
    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), FrameError> {
        let Item::Frame(frame) = item else {
            dst.put_u8(b'\n');
            return Ok(());
        };
        let start = dst.len();
        let header_bytes: usize =
            frame.headers.iter().map(|(name, value)| name.len() + value.len() + 2).sum();
        dst.reserve(frame.command.as_str().len() + header_bytes + 32 + frame.body.len());
        dst.put_slice(frame.command.as_str().as_bytes());
        dst.put_u8(b'\n');
        let dialect = Dialect::new(self.version, frame.command);
        for (name, value) in frame.headers.iter().filter(|(name, _)| name != "content-length") {
            if name.is_empty() {
                dst.truncate(start);
                return Err(FrameError::EmptyHeaderName);
            }
            let name_written = dialect.put_text(dst, name, true);
            dst.put_u8(b':');
            if !(dialect.put_text(dst, value, false) && name_written) {
                dst.truncate(start);
                let (command, version, name) = (frame.command, dialect.version, name.clone());
                return Err(FrameError::Unencodable { command, version, name });
            }
            dst.put_u8(b'\n');
        }
        if !frame.body.is_empty() {
            dst.put_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
        }
        dst.put_u8(b'\n');
        dst.put_slice(&frame.body);
        dst.put_u8(0);
        super::metrics::frame_sent(frame.command);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
