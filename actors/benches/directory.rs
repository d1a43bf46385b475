//! Directory throughput and latency: `cargo bench -p serv-actors --features test-kinds`.
//!
//! Uses an in-memory entity (no storage writes), so the figures measure the directory, the
//! supervision tree and ractor's mailboxes, not the disk.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serv_actors::{ActorKey, ActorKind, Directory, Entity, EntityContext, EntityError, KindMessage};
use serv_storage::{Storage, StorageOptions};

#[derive(Serialize, Deserialize)]
enum CountMsg {
    Add(u64),
    Get,
}

impl KindMessage for CountMsg {
    const KIND: ActorKind = ActorKind::Probe;
    type Reply = u64;
}

struct Count(u64);

/// The bench's counter keeps nothing in storage: there is nothing to hand over.
impl Entity for Count {
    type Msg = CountMsg;

    async fn load(_ctx: &EntityContext) -> Result<Self, EntityError> {
        Ok(Count(0))
    }

    async fn handle(&mut self, msg: CountMsg, _ctx: &EntityContext) -> Result<u64, EntityError> {
        if let CountMsg::Add(n) = msg {
            self.0 += n;
        }
        Ok(self.0)
    }

    fn summary(&self) -> String {
        format!("value={}", self.0)
    }
}

fn key(i: usize) -> ActorKey {
    ActorKey::new(ActorKind::Probe, format!("e{i}"))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

async fn calls(directory: &Directory, tasks: usize, per_task: usize) -> (f64, f64, f64) {
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let directory = directory.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let begin = Instant::now();
                directory.call(&key(t), CountMsg::Add(1)).await.expect("call");
                latencies.push(begin.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("task"));
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(dir.path(), StorageOptions::default()).expect("storage");
        let directory = Directory::start(storage, Default::default()).await.expect("directory");
        directory.register::<Count>();
        println!(
            "directory benchmark ({} cpus, in-memory entity)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );

        let started = Instant::now();
        let activations = 10_000;
        for i in 0..activations {
            directory.call(&key(1000 + i), CountMsg::Get).await.expect("activate");
        }
        let rate = activations as f64 / started.elapsed().as_secs_f64();
        println!("{:<36} {:>12.0} /s", "activations (first call, sequential)", rate);

        println!("{:<36} {:>12} {:>10} {:>10}", "call (request/reply)", "calls/s", "p50 us", "p99 us");
        for (tasks, per_task) in [(1, 50_000), (16, 5_000), (64, 2_000)] {
            let (rate, p50, p99) = calls(&directory, tasks, per_task).await;
            println!(
                "{:<36} {:>12.0} {:>10.1} {:>10.1}",
                format!("  {tasks} callers, one entity each"),
                rate,
                p50,
                p99
            );
        }

        let sends = 200_000;
        let target = key(999_999);
        let started = Instant::now();
        for _ in 0..sends {
            directory.send(&target, CountMsg::Add(1)).await.expect("send");
        }
        let total = directory.call(&target, CountMsg::Get).await.expect("get");
        assert_eq!(total, sends as u64, "every send was handled");
        let rate = sends as f64 / started.elapsed().as_secs_f64();
        println!("{:<36} {:>12.0} /s", "send to one entity, until all handled", rate);
        directory.shutdown(Duration::from_secs(10)).await;
    });
}
