//! A small STOMP 1.2 client (frames over TCP, heart-beats, receipts) for the workload. It speaks
//! only what the harness needs: CONNECT, SEND, BEGIN/COMMIT, SUBSCRIBE, ACK, DISCONNECT.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The heart-beat both ways, in ms; a connection silent for three of them is dead.
pub const HEART_BEAT_MS: u64 = 1_000;
/// A connection with no byte (no frame, no heart-beat) for this long is taken as dead.
pub const SILENCE: Duration = Duration::from_millis(3 * HEART_BEAT_MS);
/// The largest frame this client reads.
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// One frame.
#[derive(Debug, Default)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The ERROR's message header and body, for a history entry.
    pub fn error_text(&self) -> String {
        format!(
            "ERROR {}: {}",
            self.header("message").unwrap_or(""),
            String::from_utf8_lossy(&self.body).trim()
        )
    }
}

/// A connected STOMP session. A reader task parses frames (and notices silence) so that waiting
/// for a frame can be raced against a heart-beat timer without losing half-read frames.
pub struct Connection {
    frames: mpsc::Receiver<Result<Frame>>,
    reader: JoinHandle<()>,
    writer: OwnedWriteHalf,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects and logs in; fails unless CONNECTED arrives in time.
    pub async fn open(addr: SocketAddr, login: &str, passcode: &str) -> Result<Connection> {
        let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        let (sender, frames) = mpsc::channel(64);
        let reader = tokio::spawn(read_frames(BufReader::new(read), sender));
        let mut connection = Connection { frames, reader, writer };
        let beat = format!("{HEART_BEAT_MS},{HEART_BEAT_MS}");
        connection
            .send(
                "CONNECT",
                &[
                    ("accept-version", "1.2"),
                    ("host", "/"),
                    ("login", login),
                    ("passcode", passcode),
                    ("heart-beat", &beat),
                ],
                b"",
            )
            .await?;
        let frame = connection.next(Duration::from_secs(5)).await?;
        if frame.command != "CONNECTED" {
            bail!("login refused: {}", frame.error_text());
        }
        Ok(connection)
    }

    /// Writes one frame.
    pub async fn send(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(64 + body.len());
        out.extend_from_slice(command.as_bytes());
        out.push(b'\n');
        for (key, value) in headers {
            out.extend_from_slice(format!("{key}:{value}\n").as_bytes());
        }
        if !body.is_empty() {
            out.extend_from_slice(format!("content-length:{}\n", body.len()).as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(body);
        out.push(0);
        self.writer.write_all(&out).await.context("write")
    }

    /// Sends a heart-beat (an empty line).
    pub async fn beat(&mut self) -> Result<()> {
        self.writer.write_all(b"\n").await.context("write")
    }

    /// The next frame within `wait`; an error if none came, or the connection ended or went
    /// silent (no byte for `SILENCE`). Cancel-safe.
    pub async fn next(&mut self, wait: Duration) -> Result<Frame> {
        match tokio::time::timeout(wait, self.frames.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => bail!("connection closed"),
            Err(_) => bail!("no frame within {wait:?}"),
        }
    }
}

/// Parses frames until the connection ends, breaks or stays silent for `SILENCE`.
async fn read_frames(mut reader: BufReader<OwnedReadHalf>, frames: mpsc::Sender<Result<Frame>>) {
    loop {
        let frame = read_frame(&mut reader).await;
        let end = frame.is_err();
        if frames.send(frame).await.is_err() || end {
            return;
        }
    }
}

async fn read_frame(reader: &mut BufReader<OwnedReadHalf>) -> Result<Frame> {
    let mut line = String::new();
    let mut frame = loop {
        line.clear();
        let read = tokio::time::timeout(SILENCE, reader.read_line(&mut line))
            .await
            .context("connection silent")??;
        if read == 0 {
            bail!("connection closed");
        }
        let command = line.trim_end_matches(['\n', '\r']).trim_start_matches('\0');
        if !command.is_empty() {
            break Frame { command: command.to_string(), ..Frame::default() };
        }
    };
    loop {
        line.clear();
        let read =
            tokio::time::timeout(SILENCE, reader.read_line(&mut line)).await.context("frame cut")??;
        let header = line.trim_end_matches(['\n', '\r']);
        if read == 0 {
            bail!("connection closed in a frame");
        }
        if header.is_empty() {
            break;
        }
        if let Some((key, value)) = header.split_once(':') {
            frame.headers.push((unescape(key), unescape(value)));
        }
    }
    let length = frame.header("content-length").and_then(|n| n.parse::<usize>().ok());
    match length {
        Some(n) if n > MAX_FRAME_BYTES => bail!("frame of {n} bytes is larger than this client reads"),
        Some(n) => {
            frame.body = vec![0; n + 1];
            tokio::time::timeout(SILENCE, reader.read_exact(&mut frame.body)).await.context("body cut")??;
        }
        None => {
            tokio::time::timeout(SILENCE, reader.read_until(0, &mut frame.body))
                .await
                .context("body cut")??;
        }
    }
    frame.body.pop();
    Ok(frame)
}

fn unescape(text: &str) -> String {
    if !text.contains('\\') {
        return text.to_string();
    }
    let (mut out, mut chars) = (String::new(), text.chars());
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}
