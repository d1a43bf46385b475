//! What the benches share: starting `servd` nodes (one, or a cluster that settles), killing and
//! restarting them on the same data dir and ports, and reading their admin API; the S3 load
//! loop ([`s3`]) and the STOMP client ([`stomp`]).
//!
//! Each bench includes this module with `mod common;` and uses a part of it, hence the
//! `dead_code` allowance. A node's process is killed when its [`Node`] is dropped, a panic
//! included, so a bench never leaves a `servd` behind.
#![allow(dead_code)]

pub mod s3;
pub mod stomp;

use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serv_chaos::http::Http;

/// Root credentials of every bench node (S3 and STOMP).
pub const ACCESS: &str = "BENCHACCESSKEY";
pub const SECRET: &str = "bench-secret-key-0123456789";
/// The admin API's bearer token on every bench node.
pub const ADMIN_TOKEN: &str = "bench";
const CLUSTER_SECRET: &str = "bench-cluster-secret-0123456789";
/// Longest a node may take to answer `/readyz` after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a condition on the nodes is checked while waiting for it.
pub const POLL_EVERY: Duration = Duration::from_millis(50);
/// Bytes of a node's log shown when it fails to come up.
const LOG_TAIL_BYTES: usize = 4000;

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A UDP port on loopback that was free a moment ago (the mesh speaks QUIC).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `$SERVD_BIN`, else the release build under `$CARGO_TARGET_DIR` (or `target`).
fn servd_bin() -> PathBuf {
    std::env::var_os("SERVD_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
        target.join("release/servd")
    })
}

/// An environment variable parsed, or `default` when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// One `servd`: its ports and data dir, which stay the same across restarts, and its process
/// while it runs (its log goes to `servd.log` beside the data).
pub struct Node {
    pub name: String,
    pub s3: u16,
    pub stomp: u16,
    pub admin: u16,
    pub mesh: u16,
    stomp_ws: u16,
    http: u16,
    dir: tempfile::TempDir,
    process: Option<Child>,
}

impl Node {
    /// A new node named `name` on fresh ports and a fresh data dir, started with `extra` flags.
    pub fn start(name: &str, extra: &[String]) -> Node {
        let mut node = Node {
            name: name.into(),
            s3: free_port(),
            stomp: free_port(),
            admin: free_port(),
            mesh: free_udp_port(),
            stomp_ws: free_port(),
            http: free_port(),
            dir: tempfile::tempdir().unwrap(),
            process: None,
        };
        node.spawn(extra);
        node
    }

    /// Starts the node's process again (after [`Node::kill`]) on its data dir and ports.
    pub fn spawn(&mut self, extra: &[String]) {
        assert!(self.process.is_none(), "{} is running already", self.name);
        let bin = servd_bin();
        let log = File::options().create(true).append(true).open(self.dir.path().join("servd.log")).unwrap();
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let process = Command::new(&bin)
            .args(["--data-dir", self.dir.path().join("data").to_str().unwrap(), "--log-level", "warn"])
            .args(["--s3-addr", &addr(self.s3), "--admin-addr", &addr(self.admin)])
            .args(["--stomp-addr", &addr(self.stomp), "--stomp-ws-addr", &addr(self.stomp_ws)])
            .args(["--http-addr", &addr(self.http), "--mesh-addr", &addr(self.mesh)])
            .args(extra)
            .env("SERV_ACCESS_KEY", ACCESS)
            .env("SERV_SECRET_KEY", SECRET)
            .env("SERV_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SERV_CLUSTER_SECRET", CLUSTER_SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e} (build it: cargo build --release)", bin.display())
            });
        self.process = Some(process);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// `--seeds` naming this node's mesh address.
    pub fn as_seed(&self) -> Vec<String> {
        vec!["--seeds".into(), format!("127.0.0.1:{}", self.mesh)]
    }

    /// Until the node answers `/readyz` with 200; panics with its log's tail otherwise.
    pub async fn wait_ready(&mut self, client: &Http) {
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if let Some(Ok(Some(status))) = self.process.as_mut().map(|p| p.try_wait()) {
                panic!("{} exited with {status}:\n{}", self.name, self.log_tail());
            }
            if let Ok(200) = client.admin("GET", loopback(self.admin), "/readyz").await.map(|r| r.status) {
                return;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        panic!("{} not ready within {READY_TIMEOUT:?}:\n{}", self.name, self.log_tail());
    }

    /// The process id of the node's running process (0 when it is not running).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, Child::id)
    }

    /// CPU seconds (user + system) the node's process has used so far; 0 when it is not running.
    pub fn cpu_seconds(&self) -> f64 {
        if self.process.is_some() { cpu_seconds_of(&self.pid().to_string()) } else { 0.0 }
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(self.dir.path().join("servd.log")).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(LOG_TAIL_BYTES)..]).into_owned()
    }
}

/// CPU seconds (user + system) process `pid` ("self" for this one) has used, from
/// `/proc/PID/stat` (clock ticks of 1/100 s, the value Linux exports on every common platform).
pub fn cpu_seconds_of(pid: &str) -> f64 {
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND // utime and stime: fields 14 and 15
}

/// CPU seconds used by `nodes` together and by this process, sampled at once.
pub fn cpu_sample(nodes: &[&Node]) -> (f64, f64) {
    (nodes.iter().map(|n| n.cpu_seconds()).sum(), cpu_seconds_of("self"))
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `nodes` nodes started with `extra` flags, the others seeded with the first, once every
/// partition has `replicas` voters on each of them and its preferred leader.
pub async fn start_cluster(client: &Http, nodes: usize, replicas: usize, extra: &[String]) -> Vec<Node> {
    let mut cluster = vec![Node::start("n1", extra)];
    cluster[0].wait_ready(client).await;
    let seeds = [extra, &cluster[0].as_seed()].concat();
    for i in 2..=nodes {
        let mut node = Node::start(&format!("n{i}"), &seeds);
        node.wait_ready(client).await;
        cluster.push(node);
    }
    wait_replicated(client, &cluster, replicas).await;
    cluster
}

/// Until every node is settled on a ring of all of them and sees every partition with
/// `replicas` voters, no change of them under way, and led by its preferred leader.
pub async fn wait_replicated(client: &Http, nodes: &[Node], replicas: usize) {
    const LIMIT: Duration = Duration::from_secs(120);
    let started = Instant::now();
    for node in nodes {
        loop {
            let ring = client.admin_json(loopback(node.admin), "/v1/cluster/ring").await.unwrap_or_default();
            let settled = ring["settled"].as_bool() == Some(true)
                && ring["nodes"].as_array().map_or(0, Vec::len) == nodes.len();
            let all = partitions(client, node.admin).await;
            let replicated = !all.is_empty()
                && all.iter().all(|p| {
                    p.replicas == replicas
                        && !p.changing
                        && p.leader.is_some()
                        && (p.preferred_leader.is_none() || p.preferred_leader == p.leader)
                });
            if settled && replicated {
                break;
            }
            assert!(
                started.elapsed() < LIMIT,
                "{} did not see every partition on {replicas} replicas with its preferred leader within {LIMIT:?}",
                node.name
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// One partition as a node's `GET /v1/cluster/partitions` shows it.
pub struct Partition {
    pub partition: u64,
    pub leader: Option<String>,
    pub preferred_leader: Option<String>,
    /// Voters.
    pub replicas: usize,
    pub changing: bool,
    pub last_log_index: u64,
    pub applied_index: u64,
}

/// The partitions a node reports (none while it does not answer).
pub async fn partitions(client: &Http, admin: u16) -> Vec<Partition> {
    let Ok(json) = client.admin_json(loopback(admin), "/v1/cluster/partitions").await else {
        return Vec::new();
    };
    json["partitions"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|p| Partition {
                    partition: p["partition"].as_u64().unwrap_or_default(),
                    leader: p["leader"].as_str().map(String::from),
                    preferred_leader: p["preferred_leader"].as_str().map(String::from),
                    replicas: p["replicas"].as_array().map_or(0, Vec::len),
                    changing: p["changing"].as_bool().unwrap_or_default(),
                    last_log_index: p["last_log_index"].as_u64().unwrap_or_default(),
                    applied_index: p["applied_index"].as_u64().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A node's id (16 hex digits).
pub async fn node_id(client: &Http, admin: u16) -> String {
    let json = client.admin_json(loopback(admin), "/v1/node").await.unwrap_or_default();
    json["id"].as_str().map(String::from).unwrap_or_default()
}

/// `key`'s partition and its leader as `admin`'s node knows them (`bucket/NAME`,
/// `topic/queue/NAME`); the leader is `None` while none is known.
pub async fn owner(client: &Http, admin: u16, key: &str) -> (u64, Option<String>) {
    let path = format!("/v1/cluster/ring/owner?key={key}");
    let json = client.admin_json(loopback(admin), &path).await.unwrap_or_default();
    (json["partition"].as_u64().unwrap_or_default(), json["leader"].as_str().map(String::from))
}

/// The first `{prefix}-{n}` whose `{kind}/` key's partition `leader` leads.
pub async fn name_led_by(client: &Http, admin: u16, kind: &str, prefix: &str, leader: &str) -> String {
    for n in 0..1000 {
        let name = format!("{prefix}-{n}");
        if owner(client, admin, &format!("{kind}/{name}")).await.1.as_deref() == Some(leader) {
            return name;
        }
    }
    panic!("no {kind} named {prefix}-N is led by {leader}");
}

/// One sample of a node's `/metrics` (a gauge or counter without labels).
pub async fn metric(client: &Http, admin: u16, name: &str) -> Option<f64> {
    let metrics = client.admin("GET", loopback(admin), "/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
