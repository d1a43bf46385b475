//! The history of a run: every operation the workload invoked, with its outcome, node and times,
//! and every message a consumer received. The checkers read only this (and the final reads).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// What an operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    S3Put,
    S3Get,
    S3Delete,
    S3List,
    /// A persistent SEND with a receipt.
    Send,
    /// A SEND inside a transaction; its outcome is the COMMIT's receipt.
    TxSend,
    /// A MESSAGE a consumer received (and then acknowledged).
    Deliver,
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged: a 2xx, a RECEIPT.
    Ok,
    /// Refused before anything could be applied (connection refused, a 4xx).
    Fail,
    /// Maybe applied, maybe not (a timeout, a dropped connection, a 5xx, a STOMP ERROR).
    Unknown,
}

/// One operation of the history.
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    pub id: u64,
    pub kind: OpKind,
    /// The worker that ran it (`s3-1`, `producer-0`, `consumer-q0-1`).
    pub worker: String,
    /// The node it was sent to (index).
    pub node: usize,
    /// `bucket/key` for S3; the destination for a SEND; the subscription for a delivery.
    pub target: String,
    /// The value written or read: the id of the op that wrote it (S3), the message id (STOMP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// A written value's size and content hash (the first 8 bytes of its SHA-256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
    /// An error text, or what a read or delivery saw (`redelivered`, `absent`, listed keys).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// A delivery that carried `redelivered:true`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub redelivered: bool,
}

/// The shared, append-only history of a run.
pub struct History {
    start: Instant,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl History {
    pub fn new() -> Self {
        History { start: Instant::now(), next_id: AtomicU64::new(1), ops: Mutex::new(Vec::new()) }
    }

    /// Ms since the run started: the clock of every op and fault.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A fresh op id (also the identity of the value a write carries).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Every op so far, in id order.
    pub fn snapshot(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ops.sort_by_key(|op| op.id);
        ops
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// An op under way: `finish` stamps its completion and records it.
pub struct Pending<'a> {
    history: &'a History,
    op: Op,
}

impl History {
    /// Starts an op now.
    pub fn invoke(&self, kind: OpKind, worker: &str, node: usize, target: String) -> Pending<'_> {
        let op = Op {
            id: self.next_id(),
            kind,
            worker: worker.to_string(),
            node,
            target,
            value: None,
            hash: None,
            invoke_ms: self.now_ms(),
            complete_ms: 0,
            outcome: Outcome::Unknown,
            detail: String::new(),
            redelivered: false,
        };
        Pending { history: self, op }
    }
}

impl Pending<'_> {
    pub fn id(&self) -> u64 {
        self.op.id
    }

    pub fn set_value(&mut self, value: u64) {
        self.op.value = Some(value);
    }

    pub fn set_hash(&mut self, hash: String) {
        self.op.hash = Some(hash);
    }

    /// Records the op with its outcome and detail; returns it.
    pub fn finish(mut self, outcome: Outcome, detail: impl Into<String>) -> Op {
        self.op.complete_ms = self.history.now_ms();
        self.op.outcome = outcome;
        self.op.detail = detail.into();
        self.history.record(self.op.clone());
        self.op
    }
}
