//! Crash test: a writer process is killed with SIGKILL mid-stream, and every write it was told
//! is durable must be there when the data directory is opened again.
//!
//! The test re-runs its own binary as the writer: the child runs only the ignored test
//! `crash_child_writer`, which writes only when `SERV_CRASH_CHILD_DIR` names a directory, and
//! prints `ACK <key>` on stdout once each commit has resolved. The parent collects the complete
//! ACK lines it saw before the kill and checks each key against the reopened storage.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serv_storage::{DurabilityMode, Storage, StorageOptions, TableDef};

/// Environment variable that turns `crash_child_writer` into the writer and names its data dir.
const CHILD_DIR_ENV: &str = "SERV_CRASH_CHILD_DIR";
/// Concurrent writer tasks in the child.
const CHILD_WRITERS: usize = 16;
/// Acknowledgements the parent waits for before killing the child.
const KILL_AFTER_ACKS: usize = 2000;
/// Longest the parent waits for acknowledgements before killing the child anyway.
const KILL_AFTER_MS: u64 = 30_000;
/// Fewest acknowledgements that make the test meaningful.
const MIN_ACKS: usize = 100;
/// Longest the child writes when nobody kills it (a parent that died mid-test).
const CHILD_MAX_RUN_MS: u64 = 120_000;

/// One written value; derived from its key so the parent can check it without a log.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Payload {
    key: String,
    body: Vec<u8>,
}

impl serv_storage::Record for Payload {
    const FORMAT: u8 = 1;
}

const CRASH: TableDef<String, Payload> = TableDef::new("crash");

/// The value stored under `key`: the key itself and 128 bytes that depend on it.
fn payload_for(key: &str) -> Payload {
    let mut state = key
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    let body = (0..128)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    Payload { key: key.to_string(), body }
}

/// The writer half: runs in the child process only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of acknowledged_writes_survive_sigkill"]
async fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else { return };
    let storage = Storage::open(&dir, StorageOptions::default()).expect("child opens storage");
    let table = storage.table(CRASH).expect("child opens table");
    // A line of its own, so nothing the test harness printed shares a line with an ACK.
    println!("\nREADY");
    let deadline = Instant::now() + Duration::from_millis(CHILD_MAX_RUN_MS);
    let mut tasks = Vec::with_capacity(CHILD_WRITERS);
    for task in 0..CHILD_WRITERS {
        let (storage, table) = (storage.clone(), table.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("w{task}-{n}");
                let mut changes = storage.write_set();
                changes.put(&table, &key, &payload_for(&key)).expect("child put");
                storage.commit(changes).await.expect("child commit");
                // One write of the whole line under the stdout lock: lines never interleave.
                let mut out = std::io::stdout().lock();
                out.write_all(format!("ACK {key}\n").as_bytes()).expect("child stdout");
                out.flush().expect("child stdout flush");
                n += 1;
            }
        }));
    }
    for task in tasks {
        task.await.expect("child writer task");
    }
}

/// Kills and reaps the child when dropped, so a failing parent leaves no writer behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends the key of every complete `ACK <key>` line read from `out` until it closes.
fn read_acks(out: impl std::io::Read, acks: mpsc::Sender<String>) {
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // A line cut short by the kill has no newline and was never fully acknowledged.
        let Some(complete) = line.strip_suffix(b"\n") else { return };
        let Ok(text) = std::str::from_utf8(complete) else { continue };
        if let Some(key) = text.strip_prefix("ACK ")
            && acks.send(key.to_string()).is_err()
        {
            return;
        }
    }
}

/// Starts this test binary as the writer on `dir`, its stderr going to `stderr_path`.
fn spawn_writer(dir: &Path, stderr_path: &Path) -> ChildGuard {
    let exe = std::env::current_exe().expect("path of the test binary");
    let stderr = std::fs::File::create(stderr_path).expect("child stderr file");
    let child = Command::new(exe)
        .args(["crash_child_writer", "--exact", "--nocapture", "--include-ignored"])
        .env(CHILD_DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn the writer child");
    ChildGuard(child)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let work = tempfile::tempdir().expect("temp dir");
    let data_dir = work.path().join("data");
    let stderr_path = work.path().join("child.stderr");
    let mut child = spawn_writer(&data_dir, &stderr_path);
    let (ack_tx, ack_rx) = mpsc::channel();
    let stdout = child.0.stdout.take().expect("child stdout is piped");
    let reader = std::thread::spawn(move || read_acks(stdout, ack_tx));

    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(KILL_AFTER_MS);
    while acked.len() < KILL_AFTER_ACKS {
        let left = deadline.saturating_duration_since(Instant::now());
        match ack_rx.recv_timeout(left) {
            Ok(key) => acked.push(key),
            // Time is up, or the child closed its stdout (it died on its own).
            Err(_) => break,
        }
    }
    child.0.kill().expect("SIGKILL the writer");
    let status = child.0.wait().expect("reap the writer");
    // Lines already in the pipe were acknowledged before the kill: count them too.
    reader.join().expect("stdout reader thread");
    acked.extend(ack_rx.try_iter());

    let child_stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        acked.len() >= MIN_ACKS,
        "the writer acknowledged only {} writes (exit {status}); its stderr:\n{child_stderr}",
        acked.len()
    );
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "every acknowledged key is distinct");

    let storage = Storage::open(
        &data_dir,
        StorageOptions { durability: DurabilityMode::Group, ..StorageOptions::default() },
    )
    .expect("reopen after the crash");
    let table = storage.table(CRASH).expect("open table after the crash");
    let mut missing = Vec::new();
    for key in &acked {
        match table.get(key).expect("read after the crash") {
            Some(value) => assert_eq!(value, payload_for(key), "value of {key}"),
            None => missing.push(key.as_str()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    let present = table.entries().collect::<Result<Vec<_>, _>>().expect("scan after the crash").len();
    println!(
        "verified {} acknowledged writes after SIGKILL ({present} records present, {status})",
        acked.len()
    );
}
