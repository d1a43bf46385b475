//! The `servd` command line and configuration: flags over `SERV_*` environment variables over a
//! TOML file (`--config`) over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use serv_cluster::membership::MembershipConfig;
use serv_edges::http1::HttpLimits;
use serv_edges::listener::ConnectionLimits;
use serv_edges::s3::S3Limits;
use serv_edges::stomp::frame::HeartBeat;
use serv_edges::stomp::session::StompSettings;

/// Most replicas a partition may have.
const MAX_REPLICATION_FACTOR: usize = 7;

const ABOUT: &str = "Run a Serv node: an actor-model distributed runtime with S3, STOMP and HTTP edges.";

const LONG_ABOUT: &str = "\
servd runs one node of a Serv cluster. With no arguments it starts a single node that keeps its \
data in ./serv-data and listens on 127.0.0.1 only.

Every named thing a user creates (a bucket, a topic, a consumer group, a gateway route) is a \
supervised actor; the admin API on --admin-addr shows every actor with its mailbox, state and \
restarts, and exposes health, readiness and Prometheus metrics. S3 clients use --s3-addr; \
STOMP clients use --stomp-addr (TCP) or --stomp-ws-addr (WebSocket, path /ws); both log in \
with the root credentials or keys made with POST /v1/keys.

Each option can also be given as a SERV_* environment variable (shown with each option) or in \
the TOML file named by --config, using the option's long name with underscores as the key \
(data_dir, admin_addr, ...). A flag beats the environment, which beats the file, which beats the \
default.";

const AFTER_HELP: &str = "\
ENVIRONMENT:
  SERV_ADMIN_TOKEN     Bearer token for the /v1 admin API. When unset, a token is generated on
                       first start, stored with mode 0600 in DATA_DIR/admin-token and printed once.
  SERV_ACCESS_KEY,
  SERV_SECRET_KEY      Root credentials of the S3 and STOMP edges. When unset, a pair is generated
                       on first start, stored with mode 0600 in DATA_DIR/root-credentials and
                       printed once.
  SERV_CLUSTER_SECRET  Nodes that share it form one cluster (mutual TLS on the mesh). When unset,
                       one is generated on first start, stored with mode 0600 in
                       DATA_DIR/cluster-secret and printed once.
  SERV_OTLP_ENDPOINT   OTLP/HTTP collector (e.g. http://127.0.0.1:4318); traces are exported only
                       when it is set.
  RUST_LOG             Log filter (tracing EnvFilter syntax); overrides --log-level.

OUTPUT:
  Log lines go to stderr. Stdout carries only the one-time notices of generated secrets.

FILES:
  DATA_DIR/db          The node's fjall database.
  DATA_DIR/serv.lock   Held while a servd runs on DATA_DIR; a second servd is refused.
  DATA_DIR/secrets.key Seals the secrets of access keys in the database (mode 0600).

SIGNALS:
  SIGTERM, SIGINT      Hand the partitions this node leads to other replicas, stop
                       accepting, finish in-flight work, flush, exit 0 (within
                       --drain-timeout-ms; exit 1 if draining took longer).

EXIT STATUS:
  0 clean shutdown; 1 runtime failure (data dir unusable or locked, port in use);
  2 bad command line or configuration file.

EXAMPLES:
  servd                                   one node, data in ./serv-data
  servd --data-dir /var/lib/serv --admin-addr 127.0.0.1:9191
  SERV_ADMIN_TOKEN=secret servd --config /etc/serv/servd.toml";

/// Output format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The command line. Every value is optional here so that file values can fill the gaps.
#[derive(Debug, Parser)]
#[command(name = "servd", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// Directory of the node's database, lock and generated secrets [default: ./serv-data]
    #[arg(long, env = "SERV_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// S3 edge listen address [default: 127.0.0.1:9000]
    #[arg(long, env = "SERV_S3_ADDR", value_name = "ADDR")]
    pub s3_addr: Option<SocketAddr>,
    /// STOMP edge listen address [default: 127.0.0.1:61613]
    #[arg(long, env = "SERV_STOMP_ADDR", value_name = "ADDR")]
    pub stomp_addr: Option<SocketAddr>,
    /// STOMP-over-WebSocket listen address, path /ws [default: 127.0.0.1:61614]
    #[arg(long, env = "SERV_STOMP_WS_ADDR", value_name = "ADDR")]
    pub stomp_ws_addr: Option<SocketAddr>,
    /// HTTP gateway listen address [default: 127.0.0.1:8080]
    #[arg(long, env = "SERV_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Admin API listen address [default: 127.0.0.1:9090]
    #[arg(long, env = "SERV_ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Cluster mesh UDP address (QUIC) [default: 127.0.0.1:7946]
    #[arg(long, env = "SERV_MESH_ADDR", value_name = "ADDR")]
    pub mesh_addr: Option<SocketAddr>,
    /// Seed nodes to join, as host:port,... (mesh addresses; only for the first contact)
    #[arg(long, env = "SERV_SEEDS", value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// TOML file with any of these options (keys are the long names with underscores)
    #[arg(long, env = "SERV_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format [default: human]
    #[arg(long, env = "SERV_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter, e.g. info or serv_actors=debug,info [default: info]
    #[arg(long, env = "SERV_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Most admin API connections open at once; more clients wait until one closes [default: 256]
    #[arg(long, env = "SERV_ADMIN_MAX_CONNECTIONS", value_name = "N")]
    pub admin_max_connections: Option<usize>,
    /// An admin API connection that moves no byte for this long is closed [default: 60000]
    #[arg(long, env = "SERV_ADMIN_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub admin_idle_timeout_ms: Option<u64>,
    /// Longest a console session lasts, from signing in with the admin token [default: 43200000]
    #[arg(long, env = "SERV_ADMIN_SESSION_TTL_MS", value_name = "MS")]
    pub admin_session_ttl_ms: Option<u64>,
    /// Longest time SIGTERM/SIGINT waits for in-flight work before exiting [default: 10000]
    #[arg(long, env = "SERV_DRAIN_TIMEOUT_MS", value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,
    /// An entity that handled nothing for this long passivates [default: 300000]
    #[arg(long, env = "SERV_PASSIVATE_AFTER_MS", value_name = "MS")]
    pub passivate_after_ms: Option<u64>,
    /// Partitions of a new cluster (each entity's writes go through its partition's Raft log);
    /// stored in the data dir when it is created, and a different value is refused afterwards
    /// [default: 64]
    #[arg(long, env = "SERV_PARTITIONS", value_name = "COUNT")]
    pub partitions: Option<u64>,
    /// Replicas of each partition (the first of the ring's members for it; fewer while the
    /// cluster has fewer members); give every node the same value [default: 3]
    #[arg(long, env = "SERV_REPLICATION_FACTOR", value_name = "COUNT")]
    pub replication_factor: Option<usize>,
    /// Base domain for virtual-host-style S3 requests (BUCKET.DOMAIN); path style always works
    #[arg(long, env = "SERV_S3_DOMAIN", value_name = "DOMAIN")]
    pub s3_domain: Option<String>,
    /// Region the S3 edge reports and signs for [default: us-east-1]
    #[arg(long, env = "SERV_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Largest S3 object or part accepted, in bytes [default: 5368709120]
    #[arg(long, env = "SERV_S3_MAX_OBJECT_BYTES", value_name = "BYTES")]
    pub s3_max_object_bytes: Option<u64>,
    /// Smallest part of a multipart upload, except the last [default: 5242880]
    #[arg(long, env = "SERV_S3_MIN_PART_BYTES", value_name = "BYTES")]
    pub s3_min_part_bytes: Option<u64>,
    /// Most parts in one multipart upload [default: 10000]
    #[arg(long, env = "SERV_S3_MAX_PARTS", value_name = "N")]
    pub s3_max_parts: Option<u32>,
    /// Longest S3 object key, in bytes [default: 1024]
    #[arg(long, env = "SERV_S3_MAX_KEY_BYTES", value_name = "BYTES")]
    pub s3_max_key_bytes: Option<usize>,
    /// Most entries in one S3 listing page [default: 1000]
    #[arg(long, env = "SERV_S3_MAX_LIST_KEYS", value_name = "N")]
    pub s3_max_list_keys: Option<usize>,
    /// Most S3 bodies uploading or downloading at once; past it, 503 SlowDown [default: 256]
    #[arg(long, env = "SERV_S3_MAX_INFLIGHT_BODIES", value_name = "N")]
    pub s3_max_inflight_bodies: Option<usize>,
    /// Most S3 connections open at once; more clients wait until one closes [default: 1024]
    #[arg(long, env = "SERV_S3_MAX_CONNECTIONS", value_name = "N")]
    pub s3_max_connections: Option<usize>,
    /// An S3 connection that moves no byte for this long is closed [default: 60000]
    #[arg(long, env = "SERV_S3_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub s3_idle_timeout_ms: Option<u64>,
    /// An S3 client must send a request's headers within this time [default: 30000]
    #[arg(long, env = "SERV_S3_HEADER_TIMEOUT_MS", value_name = "MS")]
    pub s3_header_timeout_ms: Option<u64>,
    /// Largest S3 request head (request line and headers); larger gets 431 [default: 65536]
    #[arg(long, env = "SERV_S3_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub s3_max_header_bytes: Option<usize>,
    /// Most HTTP gateway connections open at once; more clients wait until one closes [default: 1024]
    #[arg(long, env = "SERV_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// An HTTP gateway connection that moves no byte for this long is closed [default: 60000]
    #[arg(long, env = "SERV_HTTP_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub http_idle_timeout_ms: Option<u64>,
    /// How often each node's gateway fetches every route again [default: 1000]
    #[arg(long, env = "SERV_GATEWAY_REFRESH_MS", value_name = "MS")]
    pub gateway_refresh_ms: Option<u64>,
    /// Most gateway requests whose bodies are held at once; past it, 503 Overloaded [default: 256]
    #[arg(long, env = "SERV_HTTP_MAX_INFLIGHT_BODIES", value_name = "N")]
    pub http_max_inflight_bodies: Option<usize>,
    /// Fuel one WASM module call may burn (about one unit per instruction) [default: 50000000]
    #[arg(long, env = "SERV_WASM_FUEL", value_name = "UNITS")]
    pub wasm_fuel: Option<u64>,
    /// Largest linear memory of one WASM module call [default: 67108864]
    #[arg(long, env = "SERV_WASM_MEMORY_BYTES", value_name = "BYTES")]
    pub wasm_memory_bytes: Option<usize>,
    /// Longest one WASM module call may run [default: 100]
    #[arg(long, env = "SERV_WASM_DEADLINE_MS", value_name = "MS")]
    pub wasm_deadline_ms: Option<u64>,
    /// Largest WASM module accepted for upload [default: 4194304]
    #[arg(long, env = "SERV_WASM_MAX_MODULE_BYTES", value_name = "BYTES")]
    pub wasm_max_module_bytes: Option<usize>,
    /// How often a node asks whether a module it runs has a new version [default: 1000]
    #[arg(long, env = "SERV_WASM_RECHECK_MS", value_name = "MS")]
    pub wasm_recheck_ms: Option<u64>,
    /// Most STOMP connections open at once; more clients wait until one closes [default: 1024]
    #[arg(long, env = "SERV_STOMP_MAX_CONNECTIONS", value_name = "N")]
    pub stomp_max_connections: Option<usize>,
    /// A STOMP connection that moves no byte (not even a heart-beat) for this long is closed [default: 3600000]
    #[arg(long, env = "SERV_STOMP_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub stomp_idle_timeout_ms: Option<u64>,
    /// Largest STOMP message body accepted [default: 4194304, as on RabbitMQ]
    #[arg(long, env = "SERV_STOMP_MAX_BODY_BYTES", value_name = "BYTES")]
    pub stomp_max_body_bytes: Option<usize>,
    /// Heart-beat interval the STOMP server offers and asks for, both ways (0: none) [default: 10000]
    #[arg(long, env = "SERV_STOMP_HEART_BEAT_MS", value_name = "MS")]
    pub stomp_heart_beat_ms: Option<u64>,
    /// An unacknowledged STOMP message is delivered again after this long [default: 30000]
    #[arg(long, env = "SERV_STOMP_ACK_TIMEOUT_MS", value_name = "MS")]
    pub stomp_ack_timeout_ms: Option<u64>,
    /// Mesh address other nodes reach this one at, when it differs from --mesh-addr (NAT, 0.0.0.0)
    #[arg(long, env = "SERV_MESH_ADVERTISE", value_name = "ADDR")]
    pub mesh_advertise: Option<SocketAddr>,
    /// How often a member probes another (SWIM) [default: 1000]
    #[arg(long, env = "SERV_PROBE_PERIOD_MS", value_name = "MS")]
    pub probe_period_ms: Option<u64>,
    /// How long a suspect member has to refute the suspicion before it is declared down [default: 3000]
    #[arg(long, env = "SERV_SUSPECT_TIMEOUT_MS", value_name = "MS")]
    pub suspect_timeout_ms: Option<u64>,
    /// How often unreferenced content blocks are collected [default: 1000]
    #[arg(long, env = "SERV_BLOCK_GC_INTERVAL_MS", value_name = "MS")]
    pub block_gc_interval_ms: Option<u64>,
    /// Crashes of one entity tolerated within the restart window before escalating [default: 5]
    #[arg(long, env = "SERV_MAX_RESTARTS", value_name = "N")]
    pub max_restarts: Option<u32>,
    /// The window over which an entity's crashes are counted [default: 60000]
    #[arg(long, env = "SERV_RESTART_WINDOW_MS", value_name = "MS")]
    pub restart_window_ms: Option<u64>,
}

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
    mesh_advertise: Option<SocketAddr>,
    probe_period_ms: Option<u64>,
    suspect_timeout_ms: Option<u64>,
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
            admin_limits: ConnectionLimits {
                max_connections: cli.admin_max_connections.or(file.admin_max_connections).unwrap_or(256),
                idle_timeout: Duration::from_millis(
                    cli.admin_idle_timeout_ms.or(file.admin_idle_timeout_ms).unwrap_or(60_000),
                ),
            },
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
            s3_connections: ConnectionLimits {
                max_connections: cli.s3_max_connections.or(file.s3_max_connections).unwrap_or(1024),
                idle_timeout: Duration::from_millis(
                    cli.s3_idle_timeout_ms.or(file.s3_idle_timeout_ms).unwrap_or(60_000),
                ),
            },
            http_connections: ConnectionLimits {
                max_connections: cli.http_max_connections.or(file.http_max_connections).unwrap_or(1024),
                idle_timeout: Duration::from_millis(
                    cli.http_idle_timeout_ms.or(file.http_idle_timeout_ms).unwrap_or(60_000),
                ),
            },
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
            stomp_connections: ConnectionLimits {
                max_connections: cli.stomp_max_connections.or(file.stomp_max_connections).unwrap_or(1024),
                idle_timeout: Duration::from_millis(
                    cli.stomp_idle_timeout_ms.or(file.stomp_idle_timeout_ms).unwrap_or(3_600_000),
                ),
            },
            stomp: {
                let mut settings = StompSettings::default();
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
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that cannot work together.
    fn validate(&self) -> Result<(), String> {
        let listeners = [
            ("s3_addr", self.s3_addr),
            ("stomp_addr", self.stomp_addr),
            ("stomp_ws_addr", self.stomp_ws_addr),
            ("http_addr", self.http_addr),
            ("admin_addr", self.admin_addr),
        ];
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
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {} is not valid: {e}", path.display()))
}

#[cfg(test)]
mod tests {
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
}
