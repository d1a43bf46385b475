//! The servd processes of a run: each node has its own data dir, fixed ports on its own address
//! (kept across restarts, so seeds stay valid) and a log file; faults are signals sent to its process. Every
//! process started here is stopped when the `Nodes` is dropped, whatever happened.

use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal, kill_process};
use serde::Serialize;

/// The admin token, root key and cluster secret every node of a run starts with.
pub const ADMIN_TOKEN: &str = "chaos-admin-token";
pub const ACCESS_KEY: &str = "CHAOSROOTKEY";
pub const SECRET_KEY: &str = "chaos-root-secret-key-0123456789";
const CLUSTER_SECRET: &str = "chaos-cluster-secret-0123456789abcdef";
/// How long a graceful stop may take before the node is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The loopback ports of one node.
#[derive(Clone, Debug, Serialize)]
pub struct Ports {
    pub s3: u16,
    pub stomp: u16,
    pub stomp_ws: u16,
    pub http: u16,
    pub admin: u16,
    pub mesh: u16,
}

/// One node: its ports, data dir and, while it runs, its process.
pub struct Node {
    pub index: usize,
    /// The address every listener binds (127.0.0.1, or the node's own host in a namespace).
    pub ip: Ipv4Addr,
    /// The network namespace it runs in, if any.
    pub namespace: Option<String>,
    pub ports: Ports,
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// How many times it was started (1 after the first start).
    pub starts: u32,
}

impl Node {
    /// `n1`, `n2`, ...: how the report names it.
    pub fn name(&self) -> String {
        format!("n{}", self.index + 1)
    }

    /// The node's address for one of its ports.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().and_then(|pid| Pid::from_raw(pid as i32)).context("node is not running")?;
        kill_process(pid, signal).with_context(|| format!("cannot signal {}", self.name()))
    }
}

/// Picks loopback ports that are free for TCP and UDP from a private range, walking it from a
/// pid-based start, so two harnesses (or a harness and the e2e tests) rarely meet.
pub struct PortPicker {
    next: u32,
}

const PORT_RANGE: std::ops::Range<u32> = 12_000..20_000;

impl PortPicker {
    pub fn new(base: Option<u16>) -> Self {
        let span = PORT_RANGE.end - PORT_RANGE.start;
        let start =
            base.map_or_else(|| std::process::id().wrapping_mul(7_919) % span, |b| u32::from(b) % span);
        PortPicker { next: start }
    }

    pub fn pick(&mut self) -> Result<u16> {
        let span = PORT_RANGE.end - PORT_RANGE.start;
        for _ in 0..span {
            let port = (PORT_RANGE.start + self.next % span) as u16;
            self.next += 1;
            let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
                && UdpSocket::bind(("127.0.0.1", port)).is_ok();
            if free {
                return Ok(port);
            }
        }
        bail!("no free loopback port in {PORT_RANGE:?}")
    }
}

/// Every node of a run.
pub struct Nodes {
    servd: PathBuf,
    pub nodes: Vec<Node>,
    extra_env: Vec<(String, String)>,
}

impl Nodes {
    /// Lays out one node per host (its address and namespace) under `dir` (data dirs and logs);
    /// starts none.
    pub fn new(
        servd: &Path,
        dir: &Path,
        hosts: Vec<(Ipv4Addr, Option<String>)>,
        ports: &mut PortPicker,
        extra_env: Vec<(String, String)>,
    ) -> Result<Self> {
        let mut nodes = Vec::new();
        for (index, (ip, namespace)) in hosts.into_iter().enumerate() {
            let ports = Ports {
                s3: ports.pick()?,
                stomp: ports.pick()?,
                stomp_ws: ports.pick()?,
                http: ports.pick()?,
                admin: ports.pick()?,
                mesh: ports.pick()?,
            };
            let data_dir = dir.join(format!("n{}", index + 1));
            let log = dir.join(format!("n{}.log", index + 1));
            nodes.push(Node {
                index,
                ip,
                namespace,
                ports,
                data_dir,
                log,
                child: None,
                paused: false,
                starts: 0,
            });
        }
        Ok(Nodes { servd: servd.to_path_buf(), nodes, extra_env })
    }

    /// Starts node `index`. The first node founds the cluster on its first start; every other
    /// start names the other nodes as seeds.
    pub fn start(&mut self, index: usize) -> Result<()> {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|other| other.index != index && (index != 0 || self.nodes[0].starts > 0))
            .map(|other| other.addr(other.ports.mesh).to_string())
            .collect();
        let node = &mut self.nodes[index];
        if node.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new().create(true).append(true).open(&node.log).context("node log")?;
        let addr = |port: u16| node.addr(port).to_string();
        let mut command = match &node.namespace {
            Some(namespace) => {
                // `ip netns exec` execs servd in place: the pid signalled is servd's.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(&self.servd);
                command
            }
            None => Command::new(&self.servd),
        };
        command
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--s3-addr", &addr(node.ports.s3), "--stomp-addr", &addr(node.ports.stomp)])
            .args(["--stomp-ws-addr", &addr(node.ports.stomp_ws), "--http-addr", &addr(node.ports.http)])
            .args(["--admin-addr", &addr(node.ports.admin), "--mesh-addr", &addr(node.ports.mesh)])
            .args([
                "--probe-period-ms",
                "200",
                "--suspect-timeout-ms",
                "1000",
                "--stomp-heart-beat-ms",
                "1000",
            ])
            .args(["--drain-timeout-ms", "5000", "--log-level", "info"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SERV_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SERV_ACCESS_KEY", ACCESS_KEY)
            .env("SERV_SECRET_KEY", SECRET_KEY)
            .env("SERV_CLUSTER_SECRET", CLUSTER_SECRET)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !seeds.is_empty() {
            command.arg("--seeds").arg(seeds.join(","));
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.servd.display(), node.name()))?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    /// SIGKILL (a frozen node is killed too).
    pub fn kill(&mut self, index: usize) -> Result<()> {
        let node = &mut self.nodes[index];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        Ok(())
    }

    /// SIGSTOP.
    pub fn pause(&mut self, index: usize) -> Result<()> {
        self.nodes[index].signal(Signal::STOP)?;
        self.nodes[index].paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self, index: usize) -> Result<()> {
        if self.nodes[index].paused {
            self.nodes[index].signal(Signal::CONT)?;
            self.nodes[index].paused = false;
        }
        Ok(())
    }

    /// SIGTERM and wait for the drain to end (killed after a grace period); returns the exit
    /// status text.
    pub fn terminate(&mut self, index: usize) -> Result<String> {
        self.resume(index)?;
        let node = &mut self.nodes[index];
        if node.child.is_none() {
            return Ok("not running".into());
        }
        node.signal(Signal::TERM)?;
        let mut child = node.child.take().expect("checked above");
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status.to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(format!("did not exit within {} s of SIGTERM: killed", STOP_GRACE.as_secs()))
    }

    /// SIGKILL and delete the data dir.
    pub fn wipe(&mut self, index: usize) -> Result<()> {
        self.kill(index)?;
        let dir = &self.nodes[index].data_dir;
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot wipe {}", dir.display()))?;
        }
        Ok(())
    }

    /// A node whose process exited on its own (a crash): its exit status.
    pub fn exited(&mut self, index: usize) -> Option<String> {
        let node = &mut self.nodes[index];
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status.to_string())
    }

    pub fn running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some() && !self.nodes[index].paused
    }

    /// Resumes every frozen node and starts every stopped one.
    pub fn heal(&mut self) -> Result<()> {
        for index in 0..self.nodes.len() {
            self.resume(index)?;
            self.start(index)?;
        }
        Ok(())
    }

    /// The last `lines` lines of a node's log (for the report).
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        let text = fs::read_to_string(&self.nodes[index].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            let _ = self.kill(index);
        }
    }
}
