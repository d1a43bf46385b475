//! `serv-chaos run ...`: one seeded chaos run against real servd nodes (see the crate doc).
//! Exit status: 0 when every invariant held, 1 on any violation, 2 when the run itself failed
//! (a fault that could not be injected or healed fails the run too).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serv_chaos::report;
use serv_chaos::run::{HostMode, RunConfig, Workload, run};
use serv_chaos::schedule::FaultKind;

#[derive(Parser)]
#[command(
    name = "serv-chaos",
    version,
    about = "Chaos harness for Serv: real nodes, seeded faults, checked histories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start nodes, run the workload under a seeded fault schedule, check, report
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Nodes to start
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,
    /// How long the workload runs while faults are injected (e.g. 90s, 2m, 500ms)
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and of the workload's choices
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to draw from: kill, pause, restart, wipe, partition, netem (or none)
    #[arg(long, default_value = "kill,pause,restart", value_parser = parse_faults)]
    faults: Faults,
    /// Where the report (report.json, report.html) and node data and logs go
    #[arg(long, default_value = "chaos-report")]
    report: PathBuf,
    /// The servd binary [default: $SERVD_BIN, else servd next to this binary]
    #[arg(long, env = "SERVD_BIN")]
    servd: Option<PathBuf>,
    /// Which protocols to drive
    #[arg(long, value_enum, default_value_t = Workload::Mixed)]
    workload: Workload,
    /// S3 workers, and as many STOMP producers
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Pause after each op of a worker (0ms: as fast as the nodes answer)
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pace: Duration,
    /// Mean quiet time between faults
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    fault_interval: Duration,
    /// Longest a node stays down or frozen
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    max_hold: Duration,
    /// How long to wait, after the last fault, for the cluster to heal and consumers to drain
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    heal_timeout: Duration,
    /// Keys per bucket (4 buckets)
    #[arg(long, default_value_t = 24)]
    keys: usize,
    /// Also check availability during faults (for when replication lands)
    #[arg(long)]
    expect_availability: bool,
    /// Start of the walk for free loopback ports [default: from the pid]
    #[arg(long)]
    base_port: Option<u16>,
    /// Where nodes run: each in its own network namespace (netns), all on 127.0.0.1 (loopback),
    /// or namespaces where the machine allows (auto)
    #[arg(long, value_enum, default_value_t = HostMode::Auto)]
    hosts: HostMode,
    /// Attach a WASM transform (tests/wasm/upper.wat) to every STOMP destination: every delivery
    /// must then come out transformed
    #[arg(long)]
    transform: bool,
    /// KEY=VALUE set in every servd's environment (repeatable)
    #[arg(long, value_parser = parse_env)]
    servd_env: Vec<(String, String)>,
}

#[derive(Clone)]
struct Faults(Vec<FaultKind>);

fn parse_faults(text: &str) -> Result<Faults, String> {
    if text == "none" || text.is_empty() {
        return Ok(Faults(Vec::new()));
    }
    text.split(',').map(|name| name.trim().parse()).collect::<Result<_, _>>().map(Faults)
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// `90s`, `2m`, `1500ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?}: expected a number and a unit (ms, s, m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m)")),
    }
}

fn show(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

fn config(args: RunArgs) -> Result<RunConfig, String> {
    let servd = match args.servd {
        Some(path) => path,
        None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("servd"),
    };
    if !servd.exists() {
        return Err(format!("no servd at {} (build it, or give --servd)", servd.display()));
    }
    let faults: Vec<&str> = args.faults.0.iter().map(|f| f.name()).collect();
    let mut replay = format!(
        "serv-chaos run --nodes {} --duration {} --seed {} --faults {} --workload {} --concurrency {} --pace {} \
         --fault-interval {} --max-hold {} --keys {}",
        args.nodes,
        show(args.duration),
        args.seed,
        if faults.is_empty() { "none".to_string() } else { faults.join(",") },
        format!("{:?}", args.workload).to_lowercase(),
        args.concurrency,
        show(args.pace),
        show(args.fault_interval),
        show(args.max_hold),
        args.keys
    );
    for (key, value) in &args.servd_env {
        replay.push_str(&format!(" --servd-env {key}={value}"));
    }
    if args.expect_availability {
        replay.push_str(" --expect-availability");
    }
    if args.transform {
        replay.push_str(" --transform");
    }
    if args.hosts != HostMode::Auto {
        replay.push_str(&format!(" --hosts {:?}", args.hosts).to_lowercase());
    }
    replay.push_str(&format!(" --report {}", args.report.display()));
    Ok(RunConfig {
        servd,
        nodes: usize::from(args.nodes),
        duration: args.duration,
        seed: args.seed,
        faults: args.faults.0,
        report: args.report,
        workload: args.workload,
        concurrency: args.concurrency.max(1),
        pace: args.pace,
        fault_interval: args.fault_interval,
        max_hold: args.max_hold,
        heal_timeout: args.heal_timeout,
        keys: args.keys.max(1),
        expect_availability: args.expect_availability,
        transform: args.transform,
        base_port: args.base_port,
        hosts: args.hosts,
        servd_env: args.servd_env,
        replay,
    })
}

/// Violations printed per invariant (the report has them all).
const EXAMPLES: usize = 5;

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    let config = match config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("serv-chaos: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("serv-chaos: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let report_dir = config.report.clone();
    println!(
        "serv-chaos: seed {}, {} node(s), {:?}; replay with:\n  {}",
        config.seed, config.nodes, config.duration, config.replay
    );
    // Ctrl-C or SIGTERM ends the run early: dropping it stops every node and removes the
    // namespaces it made (their Drop impls), so nothing is left behind.
    let interrupted = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(term) => { term.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = run(config) => Some(result),
            () = interrupted => None,
        }
    });
    let Some(outcome) = outcome else {
        eprintln!("serv-chaos: interrupted; every node it started was stopped");
        return ExitCode::from(130);
    };
    let result = match outcome {
        Ok(result) => result,
        Err(error) => {
            eprintln!("serv-chaos: the run failed: {error:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = report::write(&report_dir, &result) {
        eprintln!("serv-chaos: {error:#}");
        return ExitCode::from(2);
    }
    let failed: Vec<_> = result.faults.iter().filter(|fault| fault.failed).collect();
    if !failed.is_empty() {
        // A fault that was never in effect proves nothing: the run fails, whatever it found.
        eprintln!(
            "serv-chaos: {} of {} faults could not be injected or healed:",
            failed.len(),
            result.faults.len()
        );
        for fault in failed {
            eprintln!("  {} of n{} at {} ms: {}", fault.kind, fault.node + 1, fault.start_ms, fault.detail);
        }
        eprintln!("report: {}", report_dir.join("report.html").display());
        return ExitCode::from(2);
    }
    let s = &result.stats;
    println!(
        "faults injected: {}; operations: {} ({} acknowledged S3 writes, {} acknowledged messages, {} deliveries); \
         final reads: {}",
        result.faults.len(),
        s.ops,
        s.acknowledged_writes,
        s.acknowledged_messages,
        s.deliveries,
        s.final_reads
    );
    for note in &result.notes {
        println!("note: {note}");
    }
    println!("report: {}", report_dir.join("report.html").display());
    if result.violations.is_empty() {
        println!("no violation");
        return ExitCode::SUCCESS;
    }
    println!("{} violation(s):", result.violations.len());
    let mut invariants: Vec<&str> = result.violations.iter().map(|v| v.invariant).collect();
    invariants.dedup();
    invariants.sort_unstable();
    invariants.dedup();
    for invariant in invariants {
        let all: Vec<_> = result.violations.iter().filter(|v| v.invariant == invariant).collect();
        println!("  {invariant}: {} (first {}):", all.len(), all.len().min(EXAMPLES));
        for violation in all.iter().take(EXAMPLES) {
            println!("    {}", violation.message);
        }
    }
    ExitCode::from(1)
}
