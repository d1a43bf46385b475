//! The `servd` command line and configuration: flags over `SERV_*` environment variables over a
//! TOML file (`--config`) over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serv_cluster::membership::MembershipConfig;
use serv_edges::http1::HttpLimits;
use serv_edges::listener::ConnectionLimits;
use serv_edges::s3::S3Limits;
use serv_edges::stomp::frame::HeartBeat;
use serv_edges::stomp::session::StompSettings;

/// Most replicas a partition may have.
const MAX_REPLICATION_FACTOR: usize = 7;
/// The smallest memory budget a node accepts: below it, the node would refuse work at once.
const MIN_MEMORY_BYTES: u64 = 16 * 1024 * 1024;

mod cli;
mod tls;

pub use cli::{Cli, LogFormat};
pub use tls::TlsConfig;

/// The TOML file: the same options as the command line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    s3_addr: Option<SocketAddr>,
    stomp_addr: Option<SocketAddr>,
    stomp_ws_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    mesh_addr: Option<SocketAddr>,
    seeds: Option<Vec<String>>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    max_memory_bytes: Option<u64>,
    max_connections_per_ip: Option<usize>,
    first_byte_timeout_ms: Option<u64>,
    admin_max_connections: Option<usize>,
    admin_idle_timeout_ms: Option<u64>,
    admin_session_ttl_ms: Option<u64>,
    drain_timeout_ms: Option<u64>,
    passivate_after_ms: Option<u64>,
    partitions: Option<u64>,
    replication_factor: Option<usize>,
    max_restarts: Option<u32>,
    restart_window_ms: Option<u64>,
    s3_domain: Option<String>,
    s3_region: Option<String>,
    s3_max_object_bytes: Option<u64>,
    s3_max_inflight_bodies: Option<usize>,
    s3_max_connections: Option<usize>,
    s3_idle_timeout_ms: Option<u64>,
    http_max_connections: Option<usize>,
    http_idle_timeout_ms: Option<u64>,
    gateway_refresh_ms: Option<u64>,
    http_max_inflight_bodies: Option<usize>,
    wasm_fuel: Option<u64>,
    wasm_memory_bytes: Option<usize>,
    wasm_deadline_ms: Option<u64>,
    wasm_max_module_bytes: Option<usize>,
    wasm_recheck_ms: Option<u64>,
    block_gc_interval_ms: Option<u64>,
    s3_header_timeout_ms: Option<u64>,
    s3_max_header_bytes: Option<usize>,
    s3_min_part_bytes: Option<u64>,
    s3_max_parts: Option<u32>,
    s3_max_key_bytes: Option<usize>,
    s3_max_list_keys: Option<usize>,
    stomp_max_connections: Option<usize>,
    stomp_idle_timeout_ms: Option<u64>,
    stomp_max_body_bytes: Option<usize>,
    stomp_heart_beat_ms: Option<u64>,
    stomp_ack_timeout_ms: Option<u64>,
    stomp_max_subscriptions: Option<usize>,
    stomp_max_new_destinations: Option<usize>,
    mesh_advertise: Option<SocketAddr>,
    probe_period_ms: Option<u64>,
    suspect_timeout_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    s3_tls_addr: Option<SocketAddr>,
    http_tls_addr: Option<SocketAddr>,
    admin_tls_addr: Option<SocketAddr>,
    stomp_tls_addr: Option<SocketAddr>,
    stomp_wss_addr: Option<SocketAddr>,
    tls_handshake_timeout_ms: Option<u64>,
}

/// The resolved configuration of a node.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub s3_addr: SocketAddr,
    pub stomp_addr: SocketAddr,
    pub stomp_ws_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub mesh_addr: SocketAddr,
    pub mesh_advertise: Option<SocketAddr>,
    pub membership: MembershipConfig,
    pub seeds: Vec<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub admin_limits: ConnectionLimits,
    pub admin_session_ttl: Duration,
    pub drain_timeout: Duration,
    pub passivate_after: Duration,
    /// `--partitions` as given (None: the stored count, or the default for a new data dir).
    pub partitions: Option<u64>,
    /// Replicas of each partition.
    pub replication_factor: usize,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub s3_domain: Option<String>,
    pub s3_region: String,
    pub s3_limits: S3Limits,
    pub s3_connections: ConnectionLimits,
    pub s3_http: HttpLimits,
    pub http_connections: ConnectionLimits,
    pub gateway_refresh: Duration,
    pub http_max_inflight_bodies: usize,
    pub wasm: serv_wasm_host::Limits,
    pub wasm_recheck: Duration,
    pub block_gc_interval: Duration,
    pub stomp_connections: ConnectionLimits,
    pub stomp: StompSettings,
    pub tls: TlsConfig,
    /// The memory budget (see `serv_edges::memory`).
    pub max_memory_bytes: u64,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Config {
    /// Merges the command line (flags and environment) with the file it names, if any.
    pub fn resolve(cli: Cli) -> Result<Self, String> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let tls = TlsConfig::resolve(&cli, &file)?;
        let per_ip = cli.max_connections_per_ip.or(file.max_connections_per_ip);
        let first_byte =
            Duration::from_millis(cli.first_byte_timeout_ms.or(file.first_byte_timeout_ms).unwrap_or(10_000));
        // Every edge's listener: its cap and idle timeout, the node's per-address cap and
        // first-byte timeout, and (HTTP edges) admission by closing the longest-idle connection.
        let limits = |max_connections: usize, idle_ms: u64, evict_idle: bool| {
            let defaults = ConnectionLimits::new(max_connections, Duration::from_millis(idle_ms));
            ConnectionLimits {
                max_per_ip: per_ip.unwrap_or(defaults.max_per_ip),
                first_byte_timeout: first_byte,
                evict_idle,
                ..defaults
            }
        };
        let config = Self {
            data_dir: cli.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("serv-data")),
            s3_addr: cli.s3_addr.or(file.s3_addr).unwrap_or(loopback(9000)),
            stomp_addr: cli.stomp_addr.or(file.stomp_addr).unwrap_or(loopback(61613)),
            stomp_ws_addr: cli.stomp_ws_addr.or(file.stomp_ws_addr).unwrap_or(loopback(61614)),
            http_addr: cli.http_addr.or(file.http_addr).unwrap_or(loopback(8080)),
            admin_addr: cli.admin_addr.or(file.admin_addr).unwrap_or(loopback(9090)),
            mesh_addr: cli.mesh_addr.or(file.mesh_addr).unwrap_or(loopback(7946)),
            seeds: cli.seeds.or(file.seeds).unwrap_or_default(),
            mesh_advertise: cli.mesh_advertise.or(file.mesh_advertise),
            membership: {
                let defaults = MembershipConfig::default();
                let probe = cli.probe_period_ms.or(file.probe_period_ms).map(Duration::from_millis);
                let suspect = cli.suspect_timeout_ms.or(file.suspect_timeout_ms).map(Duration::from_millis);
                let probe_period = probe.unwrap_or(defaults.probe_period);
                MembershipConfig {
                    probe_period,
                    probe_rtt: (probe_period / 2).max(Duration::from_millis(10)),
                    suspect_to_down_after: suspect.unwrap_or(defaults.suspect_to_down_after),
                    ..defaults
                }
            },
            log_format: cli.log_format.or(file.log_format).unwrap_or(LogFormat::Human),
            log_level: cli.log_level.or(file.log_level).unwrap_or_else(|| "info".into()),
            admin_limits: limits(
                cli.admin_max_connections.or(file.admin_max_connections).unwrap_or(256),
                cli.admin_idle_timeout_ms.or(file.admin_idle_timeout_ms).unwrap_or(60_000),
                true,
            ),
            admin_session_ttl: Duration::from_millis(
                cli.admin_session_ttl_ms.or(file.admin_session_ttl_ms).unwrap_or(12 * 3_600_000),
            ),
            drain_timeout: Duration::from_millis(
                cli.drain_timeout_ms.or(file.drain_timeout_ms).unwrap_or(10_000),
            ),
            passivate_after: Duration::from_millis(
                cli.passivate_after_ms.or(file.passivate_after_ms).unwrap_or(300_000),
            ),
            partitions: cli.partitions.or(file.partitions),
            replication_factor: match cli.replication_factor.or(file.replication_factor).unwrap_or(3) {
                factor @ 1..=MAX_REPLICATION_FACTOR => factor,
                other => {
                    return Err(format!(
                        "--replication-factor must be between 1 and {MAX_REPLICATION_FACTOR}, not {other}"
                    ));
                }
            },
            max_restarts: cli.max_restarts.or(file.max_restarts).unwrap_or(5),
            restart_window: Duration::from_millis(
                cli.restart_window_ms.or(file.restart_window_ms).unwrap_or(60_000),
            ),
            s3_domain: cli.s3_domain.or(file.s3_domain),
            s3_region: cli.s3_region.or(file.s3_region).unwrap_or_else(|| "us-east-1".into()),
            s3_limits: S3Limits {
                max_object_size: cli
                    .s3_max_object_bytes
                    .or(file.s3_max_object_bytes)
                    .unwrap_or(S3Limits::default().max_object_size),
                min_part_size: cli
                    .s3_min_part_bytes
                    .or(file.s3_min_part_bytes)
                    .unwrap_or(S3Limits::default().min_part_size),
                max_parts: cli.s3_max_parts.or(file.s3_max_parts).unwrap_or(S3Limits::default().max_parts),
                max_key_bytes: cli
                    .s3_max_key_bytes
                    .or(file.s3_max_key_bytes)
                    .unwrap_or(S3Limits::default().max_key_bytes),
                max_list_page: cli
                    .s3_max_list_keys
                    .or(file.s3_max_list_keys)
                    .unwrap_or(S3Limits::default().max_list_page),
                max_inflight_bodies: cli
                    .s3_max_inflight_bodies
                    .or(file.s3_max_inflight_bodies)
                    .unwrap_or(S3Limits::default().max_inflight_bodies),
                ..S3Limits::default()
            },
            s3_connections: limits(
                cli.s3_max_connections.or(file.s3_max_connections).unwrap_or(1024),
                cli.s3_idle_timeout_ms.or(file.s3_idle_timeout_ms).unwrap_or(60_000),
                true,
            ),
            http_connections: limits(
                cli.http_max_connections.or(file.http_max_connections).unwrap_or(1024),
                cli.http_idle_timeout_ms.or(file.http_idle_timeout_ms).unwrap_or(60_000),
                true,
            ),
            gateway_refresh: Duration::from_millis(
                cli.gateway_refresh_ms.or(file.gateway_refresh_ms).unwrap_or(1_000),
            ),
            http_max_inflight_bodies: cli
                .http_max_inflight_bodies
                .or(file.http_max_inflight_bodies)
                .unwrap_or(256),
            wasm: {
                let default = serv_wasm_host::Limits::default();
                serv_wasm_host::Limits {
                    fuel: cli.wasm_fuel.or(file.wasm_fuel).unwrap_or(default.fuel),
                    memory_bytes: cli
                        .wasm_memory_bytes
                        .or(file.wasm_memory_bytes)
                        .unwrap_or(default.memory_bytes),
                    deadline: cli
                        .wasm_deadline_ms
                        .or(file.wasm_deadline_ms)
                        .map_or(default.deadline, Duration::from_millis),
                    max_module_bytes: cli
                        .wasm_max_module_bytes
                        .or(file.wasm_max_module_bytes)
                        .unwrap_or(default.max_module_bytes),
                    ..default
                }
            },
            wasm_recheck: Duration::from_millis(
                cli.wasm_recheck_ms.or(file.wasm_recheck_ms).unwrap_or(1_000),
            ),
            s3_http: HttpLimits {
                header_timeout: Duration::from_millis(
                    cli.s3_header_timeout_ms.or(file.s3_header_timeout_ms).unwrap_or(30_000),
                ),
                max_header_bytes: cli
                    .s3_max_header_bytes
                    .or(file.s3_max_header_bytes)
                    .unwrap_or(HttpLimits::default().max_header_bytes),
            },
            // A quiet STOMP subscriber is not an idle client: never closed to admit another.
            stomp_connections: limits(
                cli.stomp_max_connections.or(file.stomp_max_connections).unwrap_or(1024),
                cli.stomp_idle_timeout_ms.or(file.stomp_idle_timeout_ms).unwrap_or(3_600_000),
                false,
            ),
            stomp: {
                let mut settings = StompSettings::default();
                if let Some(most) = cli.stomp_max_subscriptions.or(file.stomp_max_subscriptions) {
                    settings.max_subscriptions = most;
                }
                if let Some(most) = cli.stomp_max_new_destinations.or(file.stomp_max_new_destinations) {
                    settings.max_new_destinations = most;
                }
                if let Some(ms) = cli.stomp_ack_timeout_ms.or(file.stomp_ack_timeout_ms) {
                    settings.ack_timeout = Duration::from_millis(ms);
                }
                if let Some(ms) = cli.stomp_heart_beat_ms.or(file.stomp_heart_beat_ms) {
                    settings.heart_beat = HeartBeat { send_ms: ms, receive_ms: ms };
                }
                if let Some(max) = cli.stomp_max_body_bytes.or(file.stomp_max_body_bytes) {
                    settings.limits = settings.limits.with_max_body_bytes(max);
                }
                settings
            },
            block_gc_interval: Duration::from_millis(
                cli.block_gc_interval_ms.or(file.block_gc_interval_ms).unwrap_or(1_000),
            ),
            tls,
            max_memory_bytes: cli
                .max_memory_bytes
                .or(file.max_memory_bytes)
                .unwrap_or_else(serv_edges::memory::default_limit),
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that cannot work together.
    fn validate(&self) -> Result<(), String> {
        let mut listeners = vec![
            ("s3_addr", self.s3_addr),
            ("stomp_addr", self.stomp_addr),
            ("stomp_ws_addr", self.stomp_ws_addr),
            ("http_addr", self.http_addr),
            ("admin_addr", self.admin_addr),
        ];
        listeners.extend(self.tls.listeners());
        for (i, (name, addr)) in listeners.iter().enumerate() {
            let clash = listeners[i + 1..].iter().find(|(_, other)| other == addr && addr.port() != 0);
            if let Some((other, _)) = clash {
                return Err(format!("{name} and {other} are both {addr}; each edge needs its own address"));
            }
        }
        for seed in &self.seeds {
            let valid = seed
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(format!("seed {seed:?} is not host:port"));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| format!("log_level {:?} is not a valid filter: {e}", self.log_level))?;
        let edges =
            [&self.admin_limits, &self.s3_connections, &self.http_connections, &self.stomp_connections];
        if edges.iter().any(|limits| limits.max_per_ip == 0 || limits.first_byte_timeout.is_zero()) {
            return Err("max_connections_per_ip and first_byte_timeout_ms must be greater than 0".into());
        }
        if self.admin_limits.max_connections == 0 || self.admin_limits.idle_timeout.is_zero() {
            return Err("admin_max_connections and admin_idle_timeout_ms must be greater than 0".into());
        }
        if self.admin_session_ttl < Duration::from_secs(1) {
            return Err("admin_session_ttl_ms must be at least 1000".into());
        }
        if self.drain_timeout.is_zero() {
            return Err("drain_timeout_ms must be greater than 0".into());
        }
        if self.s3_connections.max_connections == 0 || self.s3_connections.idle_timeout.is_zero() {
            return Err("s3_max_connections and s3_idle_timeout_ms must be greater than 0".into());
        }
        let s3 = &self.s3_limits;
        if s3.max_object_size == 0 || s3.max_inflight_bodies == 0 || s3.max_parts == 0 {
            return Err(
                "s3_max_object_bytes, s3_max_inflight_bodies and s3_max_parts must be greater than 0".into(),
            );
        }
        if !(1..=1000).contains(&s3.max_list_page) || !(1..=1024).contains(&s3.max_key_bytes) {
            return Err(
                "s3_max_list_keys must be 1 to 1000 and s3_max_key_bytes 1 to 1024 (S3's own bounds)".into(),
            );
        }
        if self.s3_http.header_timeout.is_zero() || self.s3_http.max_header_bytes < 8192 {
            return Err(
                "s3_header_timeout_ms must be greater than 0 and s3_max_header_bytes at least 8192".into()
            );
        }
        if self.http_connections.max_connections == 0 || self.http_connections.idle_timeout.is_zero() {
            return Err("http_max_connections and http_idle_timeout_ms must be greater than 0".into());
        }
        if self.gateway_refresh < Duration::from_millis(50) {
            return Err("gateway_refresh_ms must be at least 50".into());
        }
        if self.http_max_inflight_bodies == 0 {
            return Err("http_max_inflight_bodies must be greater than 0".into());
        }
        let wasm = &self.wasm;
        if wasm.fuel == 0
            || wasm.memory_bytes < 65536
            || wasm.deadline.is_zero()
            || wasm.max_module_bytes == 0
        {
            return Err("wasm_fuel, wasm_deadline_ms and wasm_max_module_bytes must be greater than 0, and wasm_memory_bytes at least 65536 (one page)".into());
        }
        if self.stomp_connections.max_connections == 0 || self.stomp_connections.idle_timeout.is_zero() {
            return Err("stomp_max_connections and stomp_idle_timeout_ms must be greater than 0".into());
        }
        if self.max_memory_bytes < MIN_MEMORY_BYTES {
            return Err(format!("max_memory_bytes must be at least {MIN_MEMORY_BYTES} (16 MiB)"));
        }
        if self.stomp.max_subscriptions == 0 || self.stomp.max_new_destinations == 0 {
            return Err(
                "stomp_max_subscriptions and stomp_max_new_destinations must be greater than 0".into()
            );
        }
        if self.stomp.limits.max_body_bytes == 0 || self.stomp.ack_timeout.is_zero() {
            return Err("stomp_max_body_bytes and stomp_ack_timeout_ms must be greater than 0".into());
        }
        if self.membership.probe_period < Duration::from_millis(20)
            || self.membership.suspect_to_down_after < self.membership.probe_period
        {
            return Err(
                "probe_period_ms must be at least 20 and suspect_timeout_ms at least the probe period".into(),
            );
        }
        if self.block_gc_interval.is_zero() {
            return Err("block_gc_interval_ms must be greater than 0".into());
        }
        if self.s3_domain.as_deref().is_some_and(|d| d.is_empty() || d.contains('/')) {
            return Err("s3_domain must be a domain name such as s3.example.test".into());
        }
        self.tls.validate()
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {} is not valid: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("servd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flag_beats_file_and_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("servd.toml");
        std::fs::write(&file, "admin_addr = \"127.0.0.1:9191\"\ns3_addr = \"127.0.0.1:9292\"\n").unwrap();
        let config =
            Config::resolve(cli(&["--config", file.to_str().unwrap(), "--s3-addr", "127.0.0.1:9393"]))
                .unwrap();
        assert_eq!(config.s3_addr, loopback(9393), "flag over file");
        assert_eq!(config.admin_addr, loopback(9191), "file over default");
        assert_eq!(config.http_addr, loopback(8080), "default");
    }

    #[test]
    fn bad_file_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("servd.toml");
        std::fs::write(&file, "admin_adr = \"127.0.0.1:1\"\n").unwrap();
        let error = Config::resolve(cli(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(error.contains("admin_adr"), "{error}");
        std::fs::write(&file, "admin_addr = [unclosed\n").unwrap();
        let error = Config::resolve(cli(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(error.contains("servd.toml"), "{error}");
    }

    #[test]
    fn a_tls_address_needs_the_certificate_and_key() {
        let error = Config::resolve(cli(&["--admin-tls-addr", "127.0.0.1:9443"])).unwrap_err();
        assert!(error.contains("--admin-tls-addr needs --tls-cert and --tls-key"), "{error}");
        let error =
            Config::resolve(cli(&["--tls-cert", "c.pem", "--http-tls-addr", "127.0.0.1:9443"])).unwrap_err();
        assert!(error.contains("--tls-cert needs --tls-key"), "{error}");
        let error = Config::resolve(cli(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--stomp-tls-addr",
            "127.0.0.1:9000",
        ]))
        .unwrap_err();
        assert!(error.contains("s3_addr and stomp_tls_addr are both 127.0.0.1:9000"), "{error}");
    }

    #[test]
    fn tls_settings_come_from_the_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("servd.toml");
        let toml = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nstomp_wss_addr = \"127.0.0.1:9444\"\ntls_handshake_timeout_ms = 500\n";
        std::fs::write(&file, toml).unwrap();
        let config = Config::resolve(cli(&["--config", file.to_str().unwrap()])).unwrap();
        let tls = &config.tls;
        assert_eq!(
            tls.files.as_ref().map(|f| (f.cert.as_path(), f.key.as_path())),
            Some((Path::new("c.pem"), Path::new("k.pem")))
        );
        assert_eq!(tls.listeners().collect::<Vec<_>>(), vec![("stomp_wss_addr", loopback(9444))]);
        assert_eq!(tls.handshake_timeout, Duration::from_millis(500));
    }
}
