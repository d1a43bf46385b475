//! Unit tests for each wire rule of the codec, and property tests over arbitrary frames, split
//! streams and byte soup.

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::{FrameError, FrameLimits, Item, StompCodec};
use crate::stomp::frame::{Command, Frame, Version};

/// A codec that has negotiated `version` (`None`: not yet).
fn codec(version: Option<Version>, limits: FrameLimits) -> StompCodec {
    let mut codec = StompCodec::new(limits);
    if let Some(version) = version {
        codec.set_version(version);
    }
    codec
}

/// Small limits, so that tests can cross each of them with a few bytes.
fn small_limits() -> FrameLimits {
    FrameLimits {
        max_command_line_bytes: 12,
        max_header_lines: 3,
        max_header_line_bytes: 20,
        max_header_bytes: 40,
        max_body_bytes: 32,
        max_frame_bytes: 100,
    }
}

/// Feeds `pieces` to `codec` one after the other, as reads from a socket would, and decodes
/// everything; checks after every read that no more than a frame's limit stays buffered.
fn decode_pieces<'a>(
    codec: &mut StompCodec,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Item>, FrameError> {
    let mut src = BytesMut::new();
    let mut items = Vec::new();
    for piece in pieces {
        src.extend_from_slice(piece);
        while let Some(item) = codec.decode(&mut src)? {
            items.push(item);
        }
        assert!(src.len() <= codec.limits().max_frame_bytes, "{} bytes buffered", src.len());
    }
    while let Some(item) = codec.decode_eof(&mut src)? {
        items.push(item);
    }
    Ok(items)
}

fn decode_with(version: Option<Version>, limits: FrameLimits, bytes: &[u8]) -> Result<Vec<Item>, FrameError> {
    decode_pieces(&mut codec(version, limits), [bytes])
}

/// The frames in `bytes`, heart-beats left out, read by a codec that negotiated `version`.
fn frames(version: Option<Version>, bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
    let items = decode_with(version, FrameLimits::default(), bytes)?;
    Ok(items
        .into_iter()
        .filter_map(|item| if let Item::Frame(frame) = item { Some(frame) } else { None })
        .collect())
}

fn one_frame(version: Option<Version>, bytes: &[u8]) -> Frame {
    let mut frames = frames(version, bytes).expect("decodes");
    assert_eq!(frames.len(), 1, "{frames:?}");
    frames.remove(0)
}

fn encode(version: Option<Version>, item: impl Into<Item>) -> Result<Vec<u8>, FrameError> {
    let mut dst = BytesMut::new();
    codec(version, FrameLimits::default()).encode(item.into(), &mut dst)?;
    Ok(dst.to_vec())
}

fn send_with_header(name: &str, value: &str) -> Frame {
    Frame::new(Command::Send).with_header(name, value)
}

#[test]
fn a_frame_with_a_nul_terminated_body_decodes() {
    let frame = one_frame(None, b"SEND\ndestination:/queue/a\n\nhello\0");
    assert_eq!(frame, send_with_header("destination", "/queue/a").with_body("hello"));
}

#[test]
fn headers_keep_wire_order_and_the_first_repeat_wins() {
    let frame = one_frame(None, b"MESSAGE\nfoo:1\nbar:2\nfoo:3\n\n\0");
    assert_eq!(frame.headers, [("foo", "1"), ("bar", "2"), ("foo", "3")].map(|(n, v)| (n.into(), v.into())));
    assert_eq!(frame.header("foo"), Some("1"));
}

#[test]
fn each_version_unescapes_exactly_its_own_sequences() {
    let cases: [(Version, &[u8], &str, &str); 3] = [
        (Version::V1_0, b"SEND\na\\nb:c\\cd:e\\r\\t\n\n\0", "a\\nb", "c\\cd:e\\r\\t"),
        (Version::V1_1, b"SEND\na\\nb:c\\cd\\\\e\n\n\0", "a\nb", "c:d\\e"),
        (Version::V1_2, b"SEND\na\\r:b\\rc\\n\\c\\\\\n\n\0", "a\r", "b\rc\n:\\"),
    ];
    for (version, bytes, name, value) in cases {
        assert_eq!(one_frame(Some(version), bytes).header(name), Some(value), "{version}");
    }
}

#[test]
fn an_undefined_escape_is_a_protocol_error() {
    let cases: [(Version, &[u8], Option<u8>); 3] = [
        (Version::V1_1, b"SEND\na:b\\rc\n\n\0", Some(b'r')),
        (Version::V1_2, b"SEND\na:b\\tc\n\n\0", Some(b't')),
        (Version::V1_2, b"SEND\na:b\\\n\n\0", None),
    ];
    for (version, bytes, escape) in cases {
        let error = frames(Some(version), bytes).unwrap_err();
        assert!(matches!(error, FrameError::UndefinedEscape(byte) if byte == escape), "{version}: {error}");
    }
    let error = frames(Some(Version::V1_2), b"SEND\na:b\\tc\n\n\0").unwrap_err();
    assert_eq!(error.to_string(), "undefined escape sequence \\t in a header");
}

#[test]
fn connect_stomp_and_connected_headers_are_never_unescaped() {
    for version in [None, Some(Version::V1_1), Some(Version::V1_2)] {
        for command in ["CONNECT", "STOMP", "CONNECTED"] {
            let bytes = format!("{command}\nlogin:a\\cb\npasscode:c\\td\n\n\0");
            let frame = one_frame(version, bytes.as_bytes());
            assert_eq!(frame.header("login"), Some("a\\cb"));
            assert_eq!(frame.header("passcode"), Some("c\\td"));
        }
    }
}

#[test]
fn before_negotiation_other_frames_are_read_as_1_2() {
    let frame = one_frame(None, b"SEND\r\na:b\\rc\r\n\r\n\0");
    assert_eq!(frame.header("a"), Some("b\rc"));
}

#[test]
fn a_content_length_body_may_contain_nul() {
    let frame = one_frame(None, b"SEND\ncontent-length:5\n\na\0b\0c\0");
    assert_eq!(&frame.body[..], b"a\0b\0c");
    assert_eq!(frame.header("content-length"), Some("5"));
}

#[test]
fn the_first_content_length_decides_the_body() {
    let frame = one_frame(None, b"SEND\ncontent-length:2\ncontent-length:4\n\nab\0");
    assert_eq!(&frame.body[..], b"ab");
}

#[test]
fn a_content_length_body_not_followed_by_nul_is_an_error() {
    let error = frames(None, b"SEND\ncontent-length:2\n\nabc\0").unwrap_err();
    assert!(matches!(error, FrameError::MissingNul), "{error}");
}

#[test]
fn a_content_length_that_is_not_a_byte_count_is_an_error() {
    for bad in ["", "-1", "+2", "0x10", "two"] {
        let bytes = format!("SEND\ncontent-length:{bad}\n\n\0");
        let error = frames(None, bytes.as_bytes()).unwrap_err();
        assert!(matches!(error, FrameError::InvalidContentLength(ref value) if value == bad), "{error}");
    }
}

#[test]
fn end_of_lines_between_frames_are_heart_beats() {
    let items = decode_with(None, FrameLimits::default(), b"\n\r\nSEND\n\nx\0\n\r\n\n").unwrap();
    let send = Item::Frame(Frame::new(Command::Send).with_body("x"));
    let beat = Item::HeartBeat;
    assert_eq!(items, [beat.clone(), beat.clone(), send, beat.clone(), beat.clone(), beat]);
}

#[test]
fn crlf_line_ends_are_accepted_in_1_2() {
    let frame = one_frame(Some(Version::V1_2), b"SEND\r\ndestination:/queue/a\r\n\r\nhi\0");
    assert_eq!(frame, send_with_header("destination", "/queue/a").with_body("hi"));
}

#[test]
fn before_1_2_a_carriage_return_before_newline_belongs_to_the_value() {
    for version in [Version::V1_0, Version::V1_1] {
        let frame = one_frame(Some(version), b"SEND\r\ndestination:/queue/a\r\n\r\n\0");
        assert_eq!(frame.header("destination"), Some("/queue/a\r"), "{version}");
    }
}

#[test]
fn an_unknown_command_is_its_own_error() {
    for (bytes, command) in
        [(&b"FOO\n\n\0"[..], "FOO"), (b"send\n\n\0", "send"), (b"GET / HTTP/1.1\r\n", "GET / HTTP/1.1")]
    {
        let error = frames(None, bytes).unwrap_err();
        assert!(matches!(error, FrameError::UnknownCommand(ref name) if name == command), "{error}");
    }
}

#[test]
fn malformed_header_lines_are_errors() {
    let error = frames(None, b"SEND\nno colon\n\n\0").unwrap_err();
    assert!(matches!(error, FrameError::MissingColon), "{error}");
    let error = frames(None, b"SEND\n:value\n\n\0").unwrap_err();
    assert!(matches!(error, FrameError::EmptyHeaderName), "{error}");
    let error = frames(None, b"SEND\na:\xff\n\n\0").unwrap_err();
    assert!(matches!(error, FrameError::NotUtf8), "{error}");
}

#[test]
fn a_stream_fed_one_byte_at_a_time_decodes_like_one_read() {
    let stream: &[u8] =
        b"\nCONNECT\r\naccept-version:1.2\r\n\r\n\0\nSEND\ncontent-length:3\na\\cb:c\n\n\0\0\0\0\
        \r\nMESSAGE\nx:y\n\nbody\0";
    let whole = decode_with(None, FrameLimits::default(), stream).unwrap();
    let bytewise = decode_pieces(&mut codec(None, FrameLimits::default()), stream.chunks(1)).unwrap();
    assert_eq!(whole.len(), 6, "{whole:?}");
    assert_eq!(bytewise, whole);
}

#[test]
fn a_connection_closed_mid_frame_is_truncated() {
    for partial in [&b"SEND"[..], b"SEND\n", b"SEND\na:b\n", b"SEND\n\nbody", b"\r"] {
        let error = frames(None, partial).unwrap_err();
        assert!(matches!(error, FrameError::Truncated), "{partial:?}: {error}");
    }
    assert_eq!(frames(None, b"").unwrap(), []);
}

#[test]
fn a_long_command_line_fails_before_its_end_arrives() {
    let error = decode_with(None, small_limits(), b"SUBSCRIBESUBS").unwrap_err();
    assert_eq!(error.to_string(), "command line exceeds 12 bytes");
    // Twelve bytes and a `\r` may still end well: wait for the `\n`.
    let mut codec = codec(None, small_limits());
    assert!(codec.decode(&mut BytesMut::from(&b"UNSUBSCRIBE \r"[..])).unwrap().is_none());
}

#[test]
fn too_many_header_lines_fail() {
    assert!(decode_with(None, small_limits(), b"SEND\na:1\nb:2\nc:3\n\n\0").is_ok());
    let error = decode_with(None, small_limits(), b"SEND\na:1\nb:2\nc:3\nd:4\n").unwrap_err();
    assert_eq!(error.to_string(), "frame has more than 3 headers");
}

#[test]
fn a_long_header_line_fails_before_its_end_arrives() {
    assert!(decode_with(None, small_limits(), b"SEND\ndestination:/queue/a\n\n\0").is_ok());
    let error = decode_with(None, small_limits(), b"SEND\ndestination:/queue/ab").unwrap_err();
    assert_eq!(error.to_string(), "header line exceeds 20 bytes");
}

#[test]
fn header_lines_adding_up_past_the_limit_fail() {
    let error =
        decode_with(None, small_limits(), b"SEND\naaaaaa:bbbbbbbbbbbbb\ncccccc:ddddddddddddd\n").unwrap_err();
    assert_eq!(error.to_string(), "frame headers exceed 40 bytes");
}

#[test]
fn a_body_without_nul_fails_once_past_the_limit() {
    let body = [b'x'; 32];
    let complete = [&b"SEND\n\n"[..], &body, b"\0"].concat();
    assert_eq!(decode_with(None, small_limits(), &complete).unwrap().len(), 1);
    let error = decode_with(None, small_limits(), &complete[..complete.len() - 1]).unwrap_err();
    assert!(matches!(error, FrameError::Truncated), "{error}");
    let error =
        decode_with(None, small_limits(), &[&complete[..complete.len() - 1], b"x"].concat()).unwrap_err();
    assert_eq!(error.to_string(), "frame body exceeds 32 bytes");
    let error =
        decode_with(None, small_limits(), &[&complete[..complete.len() - 1], b"x\0"].concat()).unwrap_err();
    assert_eq!(error.to_string(), "frame body exceeds 32 bytes", "arriving whole");
}

#[test]
fn a_content_length_past_the_limit_fails_before_the_body_arrives() {
    let error = decode_with(None, small_limits(), b"SEND\ncontent-length:33\n\n").unwrap_err();
    assert!(matches!(error, FrameError::BodyTooLarge { max_bytes: 32 }), "{error}");
    let error = frames(None, b"SEND\ncontent-length:99999999999999999999999\n\n").unwrap_err();
    let max_bytes = FrameLimits::default().max_body_bytes;
    assert_eq!(error.to_string(), format!("frame body exceeds {max_bytes} bytes"));
}

#[test]
fn a_frame_past_the_limit_fails_even_when_each_part_fits() {
    let limits = FrameLimits { max_frame_bytes: 50, ..small_limits() };
    let head = b"SEND\naaaa:bbbbbbbbbbb\ncccc:ddddddddddd\n\n";
    assert_eq!(head.len(), 40);
    let error = decode_with(None, limits, &[&head[..], &[b'x'; 12]].concat()).unwrap_err();
    assert_eq!(error.to_string(), "frame exceeds 50 bytes");
    let error = decode_with(None, limits, b"SEND\ncontent-length:30\naaaa:bbbbbbbbbbb\n\n").unwrap_err();
    assert!(matches!(error, FrameError::FrameTooLarge { max_bytes: 50 }), "{error}");
    let error = decode_with(None, limits, &[&head[..], &[b'x'; 12], b"\0"].concat()).unwrap_err();
    assert!(matches!(error, FrameError::FrameTooLarge { max_bytes: 50 }), "arriving whole: {error}");
}

#[test]
fn the_decoder_does_not_search_the_same_bytes_twice() {
    let mut codec = codec(None, FrameLimits::default());
    let mut src = BytesMut::from(&b"SEND\ndestination:/qu"[..]);
    assert!(codec.decode(&mut src).unwrap().is_none());
    assert_eq!((&src[..], codec.cursor.scanned), (&b"destination:/qu"[..], 15));
    src.extend_from_slice(b"eue/a\n\nbody so far");
    assert!(codec.decode(&mut src).unwrap().is_none());
    assert_eq!((&src[..], codec.cursor.scanned), (&b"body so far"[..], 11));
}

#[test]
fn a_frame_with_a_body_always_gets_its_content_length() {
    let frame = Frame::new(Command::Message).with_header("content-length", "99").with_body(&b"a\0b"[..]);
    assert_eq!(encode(None, frame).unwrap(), b"MESSAGE\ncontent-length:3\n\na\0b\0");
    let receipt = Frame::new(Command::Receipt).with_header("receipt-id", "7");
    assert_eq!(encode(None, receipt).unwrap(), b"RECEIPT\nreceipt-id:7\n\n\0");
}

#[test]
fn a_heart_beat_is_a_lone_newline() {
    assert_eq!(encode(None, Item::HeartBeat).unwrap(), b"\n");
}

#[test]
fn encoding_escapes_per_version() {
    let frame = send_with_header("a:b", "c\nd\\e\rf");
    assert_eq!(encode(Some(Version::V1_1), frame.clone()).unwrap(), b"SEND\na\\cb:c\\nd\\\\e\rf\n\n\0");
    assert_eq!(encode(Some(Version::V1_2), frame.clone()).unwrap(), b"SEND\na\\cb:c\\nd\\\\e\\rf\n\n\0");
    let raw = send_with_header("a\\b", "c:d\r");
    assert_eq!(encode(Some(Version::V1_0), raw).unwrap(), b"SEND\na\\b:c:d\r\n\n\0");
}

#[test]
fn connected_headers_are_written_unescaped() {
    let connected = Frame::new(Command::Connected).with_header("server", "serv:0.1\\x");
    assert_eq!(encode(Some(Version::V1_2), connected).unwrap(), b"CONNECTED\nserver:serv:0.1\\x\n\n\0");
}

#[test]
fn a_header_that_cannot_be_written_unescaped_is_an_error_and_writes_nothing() {
    let cases = [
        (Some(Version::V1_0), send_with_header("a:b", "c")),
        (Some(Version::V1_0), send_with_header("a", "b\nc")),
        (Some(Version::V1_2), Frame::new(Command::Connected).with_header("a", "b\r")),
        (None, Frame::new(Command::Connected).with_header("a\nb", "c")),
    ];
    for (version, frame) in cases {
        let mut dst = BytesMut::from(&b"before"[..]);
        let error = codec(version, FrameLimits::default()).encode(frame.into(), &mut dst).unwrap_err();
        assert!(matches!(error, FrameError::Unencodable { .. }), "{error}");
        assert_eq!(&dst[..], b"before");
    }
    let error = encode(None, send_with_header("", "x")).unwrap_err();
    assert!(matches!(error, FrameError::EmptyHeaderName), "{error}");
}

/// Characters for header text that every escaping version can carry.
const ESCAPABLE: &[char] = &['a', 'z', '0', '-', ' ', 'é', '✓', ':', '\n', '\r', '\\'];
/// Characters for header text in frames that are not escaped.
const RAW: &[char] = &['a', 'z', '0', '-', ' ', 'é', '✓', '\\'];

fn text(chars: &'static [char], min_chars: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(chars), min_chars..8).prop_map(String::from_iter)
}

fn version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

/// Any frame a codec that negotiated `version` can write, with up to 6 headers and a body of up
/// to 64 bytes, NULs included.
fn frame(version: Version) -> impl Strategy<Value = Frame> {
    prop::sample::select(Command::ALL.to_vec()).prop_flat_map(move |command| {
        let escaped = command.escapes_headers() && version != Version::V1_0;
        let chars = if escaped { ESCAPABLE } else { RAW };
        let header =
            (text(chars, 1), text(chars, 0)).prop_filter("codec's own", |(n, _)| n != "content-length");
        let headers = prop::collection::vec(header, 0..6);
        let body = prop::collection::vec(any::<u8>(), 0..64);
        (headers, body).prop_map(move |(headers, body)| Frame { command, headers, body: body.into() })
    })
}

/// What the peer decodes for `item`: the frame plus the `content-length` the codec adds.
fn as_decoded(item: &Item) -> Item {
    match item {
        Item::Frame(frame) if !frame.body.is_empty() => {
            Item::Frame(frame.clone().with_header("content-length", frame.body.len().to_string()))
        }
        item => item.clone(),
    }
}

/// A version and a stream of frames and heart-beats for it.
fn stream() -> impl Strategy<Value = (Version, Vec<Item>)> {
    version().prop_flat_map(|version| {
        let item = prop_oneof![1 => Just(Item::HeartBeat), 4 => frame(version).prop_map(Item::Frame)];
        (Just(version), prop::collection::vec(item, 0..8))
    })
}

/// Byte soup: random bytes mixed with pieces of STOMP syntax, so that it gets past the command line.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b"SEND\n",
        b"CONNECT\n",
        b"MESSAGE\r\n",
        b"content-length:",
        b"7",
        b"40",
        b"\n",
        b"\r\n",
        b"\0",
        b":",
        b"\\",
        b"\\c",
        b"\\r",
        b"\\t",
        b"abc",
    ];
    let piece = prop_oneof![
        any::<u8>().prop_map(|byte| vec![byte]),
        prop::sample::select(PIECES).prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(piece, 0..120).prop_map(|pieces| pieces.concat())
}

fn encode_all(version: Version, items: &[Item]) -> BytesMut {
    let mut encoder = codec(Some(version), FrameLimits::default());
    let mut bytes = BytesMut::new();
    for item in items {
        encoder.encode(item.clone(), &mut bytes).expect("the strategy makes writable frames");
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn encoded_frames_decode_to_themselves((version, frame) in version().prop_flat_map(|v| (Just(v), frame(v)))) {
        let item = Item::Frame(frame);
        let bytes = encode_all(version, std::slice::from_ref(&item));
        let decoded = decode_with(Some(version), FrameLimits::default(), &bytes).unwrap();
        prop_assert_eq!(decoded, vec![as_decoded(&item)]);
    }

    #[test]
    fn a_stream_split_anywhere_decodes_the_same(
        (version, items) in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let bytes = encode_all(version, &items);
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
        cuts.extend([0, bytes.len()]);
        cuts.sort_unstable();
        let pieces = cuts.windows(2).map(|pair| &bytes[pair[0]..pair[1]]);
        let decoded = decode_pieces(&mut codec(Some(version), FrameLimits::default()), pieces).unwrap();
        prop_assert_eq!(decoded, items.iter().map(as_decoded).collect::<Vec<_>>());
    }

    #[test]
    fn byte_soup_never_panics_nor_overfills_the_buffer(
        bytes in soup(),
        version in prop::option::of(version()),
        piece_bytes in 1usize..40,
    ) {
        let limits = small_limits();
        let mut codec = codec(version, limits);
        let mut src = BytesMut::new();
        for piece in bytes.chunks(piece_bytes) {
            src.extend_from_slice(piece);
            loop {
                match codec.decode(&mut src) {
                    Ok(Some(Item::Frame(frame))) => {
                        prop_assert!(frame.headers.len() <= limits.max_header_lines);
                        prop_assert!(frame.body.len() <= limits.max_body_bytes);
                    }
                    Ok(Some(Item::HeartBeat)) => {}
                    Ok(None) => {
                        prop_assert!(src.len() <= limits.max_frame_bytes);
                        break;
                    }
                    // The connection would close here; carrying on shows a later call is safe too.
                    Err(_) => break,
                }
            }
        }
    }
}
