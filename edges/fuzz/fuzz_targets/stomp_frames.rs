//! Arbitrary bytes, read in arbitrary pieces, through the STOMP decoder with small limits: it
//! must never panic, never hold more than a frame's limit while waiting, and every frame it
//! accepts must survive being written back out and read again.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serv_edges::stomp::codec::{FrameLimits, Item, StompCodec};
use serv_edges::stomp::frame::{Frame, Version};
use tokio_util::codec::{Decoder, Encoder};

const LIMITS: FrameLimits = FrameLimits {
    max_command_line_bytes: 16,
    max_header_lines: 8,
    max_header_line_bytes: 64,
    max_header_bytes: 256,
    max_body_bytes: 256,
    max_frame_bytes: 512,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the negotiated version and the size of the reads.
    let Some((&control, stream)) = data.split_first() else { return };
    let version =
        [None, Some(Version::V1_0), Some(Version::V1_1), Some(Version::V1_2)][usize::from(control % 4)];
    let piece_bytes = usize::from(control / 4) + 1;
    let mut codec = StompCodec::new(LIMITS);
    if let Some(version) = version {
        codec.set_version(version);
    }
    let mut src = BytesMut::new();
    for piece in stream.chunks(piece_bytes) {
        src.extend_from_slice(piece);
        loop {
            match codec.decode(&mut src) {
                Ok(Some(Item::Frame(frame))) => check_frame(version, frame),
                Ok(Some(Item::HeartBeat)) => {}
                Ok(None) => {
                    assert!(src.len() <= LIMITS.max_frame_bytes, "{} bytes buffered", src.len());
                    break;
                }
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut src);
});

/// A decoded frame is within the limits and, if it can be written in `version`, reads back as
/// itself (the codec writes its own `content-length`, so that header is left out of the comparison).
fn check_frame(version: Option<Version>, frame: Frame) {
    assert!(frame.headers.len() <= LIMITS.max_header_lines);
    assert!(frame.body.len() <= LIMITS.max_body_bytes);
    let mut codec = StompCodec::new(FrameLimits::default());
    if let Some(version) = version {
        codec.set_version(version);
    }
    let mut bytes = BytesMut::new();
    if codec.encode(Item::Frame(frame.clone()), &mut bytes).is_err() {
        return;
    }
    let decoded = codec.decode(&mut bytes).expect("an encoded frame decodes");
    assert!(bytes.is_empty(), "{bytes:?} left over");
    let Some(Item::Frame(decoded)) = decoded else { panic!("decoded {decoded:?}") };
    assert_eq!(without_content_length(decoded), without_content_length(frame));
}

fn without_content_length(mut frame: Frame) -> Frame {
    frame.headers.retain(|(name, _)| name != "content-length");
    frame
}
