//! Group-commit benchmark: durable commits per second and commit latency for 1, 16 and 64
//! concurrent writers, with shared fsyncs (`Group`) and with one fsync per commit (`PerCommit`),
//! measured in the same run on the same disk.
//!
//! The data lives in a temporary directory under `SERV_BENCH_DIR` (default: the current
//! directory, i.e. the crate root under `cargo bench`), not under `/tmp`, which may be a tmpfs
//! whose fsync costs nothing. Each configuration runs for `SERV_BENCH_SECS` seconds (default 3)
//! after a short warm-up, on a fresh database.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serv_storage::{DurabilityMode, Storage, StorageOptions, Table, TableDef};

/// Concurrent writer counts measured.
const WRITER_COUNTS: [usize; 3] = [1, 16, 64];
/// Modes measured, in the order they run for each writer count.
const MODES: [DurabilityMode; 2] = [DurabilityMode::Group, DurabilityMode::PerCommit];
/// Measured seconds per configuration unless `SERV_BENCH_SECS` says otherwise.
const DEFAULT_SECS: f64 = 3.0;
/// Longest warm-up per configuration (a tenth of the measured time when that is shorter).
const MAX_WARMUP_MS: u64 = 250;
/// Payload bytes of every committed value.
const VALUE_BYTES: usize = 128;
/// Block cache of each benchmark database.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The record every writer commits.
#[derive(Serialize, Deserialize)]
struct BenchValue {
    bytes: Vec<u8>,
}

impl serv_storage::Record for BenchValue {
    const FORMAT: u8 = 1;
}

const BENCH: TableDef<String, BenchValue> = TableDef::new("bench");

/// What one configuration achieved in its measured phase.
struct Outcome {
    mode: DurabilityMode,
    writers: usize,
    commits: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    fsyncs: u64,
}

impl Outcome {
    fn commits_per_sec(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64()
    }

    fn commits_per_fsync(&self) -> f64 {
        if self.fsyncs == 0 { 0.0 } else { self.commits as f64 / self.fsyncs as f64 }
    }
}

fn main() -> anyhow::Result<()> {
    let secs = match std::env::var("SERV_BENCH_SECS") {
        Ok(text) => text.parse::<f64>().with_context(|| format!("SERV_BENCH_SECS={text}"))?,
        Err(_) => DEFAULT_SECS,
    };
    anyhow::ensure!(secs > 0.0, "SERV_BENCH_SECS must be positive, got {secs}");
    let measured = Duration::from_secs_f64(secs);
    let warmup = (measured / 10).min(Duration::from_millis(MAX_WARMUP_MS));

    let parent = match std::env::var_os("SERV_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("bench dir {}", parent.display()))?;
    let base =
        tempfile::tempdir_in(&parent).with_context(|| format!("temp dir under {}", parent.display()))?;
    let base_path = base.path().canonicalize().context("canonical bench dir")?;

    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;

    println!("group commit benchmark");
    println!("  data dir:   {}", base_path.display());
    println!("  filesystem: {}", describe_filesystem(&base_path));
    println!(
        "  {secs} s per configuration after {} ms warm-up, {VALUE_BYTES}-byte values, {} tokio workers, {} cpus",
        warmup.as_millis(),
        runtime.metrics().num_workers(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!();

    let mut outcomes = Vec::new();
    for writers in WRITER_COUNTS {
        for mode in MODES {
            let dir = base_path.join(format!("{}-{writers}", mode_name(mode)));
            let outcome = runtime.block_on(run_configuration(&dir, mode, writers, warmup, measured))?;
            outcomes.push(outcome);
        }
    }

    print_results(&outcomes);
    print_ratios(&outcomes);
    drop(runtime);
    base.close().context("remove bench dir")?;
    Ok(())
}

/// Opens a fresh database in `dir` and measures `writers` concurrent committers on it.
async fn run_configuration(
    dir: &Path,
    mode: DurabilityMode,
    writers: usize,
    warmup: Duration,
    measured: Duration,
) -> anyhow::Result<Outcome> {
    let storage = Storage::open(dir, StorageOptions { durability: mode, cache_bytes: CACHE_BYTES })
        .with_context(|| format!("open {}", dir.display()))?;
    let table = storage.table(BENCH)?;

    run_phase(&storage, &table, "warm", writers, warmup).await?;
    let before = storage.commit_stats();
    let started = Instant::now();
    let mut latencies = run_phase(&storage, &table, "run", writers, measured).await?;
    let elapsed = started.elapsed();
    let after = storage.commit_stats();
    storage.close()?;

    latencies.sort_unstable();
    let commits = after.commits - before.commits;
    anyhow::ensure!(commits == latencies.len() as u64, "every measured commit was counted");
    Ok(Outcome {
        mode,
        writers,
        commits,
        elapsed,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        fsyncs: after.fsyncs - before.fsyncs,
    })
}

/// Runs `writers` tasks that commit one value each, back to back, for `duration`; returns the
/// latency of every commit.
async fn run_phase(
    storage: &Storage,
    table: &Table<String, BenchValue>,
    phase: &str,
    writers: usize,
    duration: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::with_capacity(writers);
    for writer in 0..writers {
        let (storage, table) = (storage.clone(), table.clone());
        let prefix = format!("{phase}-w{writer}-");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("{prefix}{n}");
                let value = BenchValue { bytes: value_bytes(n) };
                let mut changes = storage.write_set();
                changes.put(&table, &key, &value)?;
                let started = Instant::now();
                storage.commit(changes).await?;
                latencies.push(started.elapsed());
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.context("writer task")??);
    }
    Ok(all)
}

/// A value of `VALUE_BYTES` bytes that differs from commit to commit.
fn value_bytes(n: u64) -> Vec<u8> {
    let seed = n.to_le_bytes();
    (0..VALUE_BYTES).map(|i| seed[i % seed.len()] ^ (i as u8)).collect()
}

/// The nearest-rank `p`-th percentile of `sorted`, or zero when it is empty.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mode_name(mode: DurabilityMode) -> &'static str {
    match mode {
        DurabilityMode::Group => "group",
        DurabilityMode::PerCommit => "per-commit",
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

fn print_results(outcomes: &[Outcome]) {
    println!(
        "{:<11} {:>7} {:>10} {:>12} {:>9} {:>9} {:>9} {:>13}",
        "mode", "writers", "commits", "commits/s", "p50 ms", "p99 ms", "fsyncs", "commits/fsync"
    );
    for o in outcomes {
        println!(
            "{:<11} {:>7} {:>10} {:>12.0} {:>9} {:>9} {:>9} {:>13.1}",
            mode_name(o.mode),
            o.writers,
            o.commits,
            o.commits_per_sec(),
            millis(o.p50),
            millis(o.p99),
            o.fsyncs,
            o.commits_per_fsync(),
        );
    }
    println!();
}

fn print_ratios(outcomes: &[Outcome]) {
    let rate = |mode, writers| {
        outcomes.iter().find(|o| o.mode == mode && o.writers == writers).map_or(0.0, Outcome::commits_per_sec)
    };
    println!(
        "{:>7} {:>16} {:>20} {:>22}",
        "writers", "group commits/s", "per-commit commits/s", "group / per-commit"
    );
    for writers in WRITER_COUNTS {
        let (group, alone) = (rate(DurabilityMode::Group, writers), rate(DurabilityMode::PerCommit, writers));
        let ratio = if alone > 0.0 { format!("{:.2}x", group / alone) } else { "-".into() };
        println!("{writers:>7} {group:>16.0} {alone:>20.0} {ratio:>22}");
    }
}

/// The filesystem type and device holding `path`, from the longest matching mount point.
fn describe_filesystem(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "unknown (no /proc/self/mounts)".into();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            let mount_point = mount_point.replace("\\040", " ");
            path.starts_with(&mount_point).then(|| (mount_point, device.to_string(), fs_type.to_string()))
        })
        .max_by_key(|(mount_point, _, _)| mount_point.len())
        .map_or_else(
            || "unknown (no mount point matches)".into(),
            |(mount_point, device, fs_type)| format!("{fs_type} on {device}, mounted at {mount_point}"),
        )
}
