//! The `servd` command line: its flags (each also a `SERV_*` environment variable) and help.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

const ABOUT: &str = "Run a Serv node: an actor-model distributed runtime with S3, STOMP and HTTP edges.";

const LONG_ABOUT: &str = "\
servd runs one node of a Serv cluster. With no arguments it starts a single node that keeps its \
data in ./serv-data and listens on 127.0.0.1 only.

Every named thing a user creates (a bucket, a topic, a consumer group, a gateway route) is a \
supervised actor; the admin API on --admin-addr shows every actor with its mailbox, state and \
restarts, and exposes health, readiness and Prometheus metrics. S3 clients use --s3-addr; \
STOMP clients use --stomp-addr (TCP) or --stomp-ws-addr (WebSocket, path /ws); both log in \
with the root credentials or keys made with POST /v1/keys.

Each edge can also listen over TLS, off unless its address is given: --s3-tls-addr, --http-tls-addr, --admin-tls-addr, --stomp-tls-addr and --stomp-wss-addr (WebSocket, path /ws) all serve the one certificate of --tls-cert and --tls-key, which SIGHUP re-reads. The plain listeners stay as they are.

Each option can also be given as a SERV_* environment variable (shown with each option) or in \
the TOML file named by --config, using the option's long name with underscores as the key \
(data_dir, admin_addr, ...). A flag beats the environment, which beats the file, which beats the \
default.";

const AFTER_HELP: &str = "\
ENVIRONMENT:
  SERV_ADMIN_TOKEN     Bearer token for the /v1 admin API, pinned on this node. When unset, the
                       cluster's token is used: a node started without --seeds generates it on
                       first start and prints it once; a joining node adopts it. Either way it
                       is kept with mode 0600 in DATA_DIR/cluster-credentials (a copy in
                       DATA_DIR/admin-token).
  SERV_ACCESS_KEY,
  SERV_SECRET_KEY      Root credentials of the S3 and STOMP edges, pinned on this node. When
                       unset, the cluster's pair is used, generated or adopted like the admin
                       token (a copy in DATA_DIR/root-credentials, ACCESS:SECRET).
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
                       --drain-timeout-ms: work still in flight then is abandoned, unanswered
                       and so never acknowledged, and the log names the step it was in).
  SIGHUP               Re-read --tls-cert and --tls-key: new TLS connections get the new
                       certificate, open ones keep theirs. Files that don't load are logged at
                       ERROR and the certificate served stays the old one.

EXIT STATUS:
  0 clean shutdown; 1 runtime failure (data dir unusable or locked, port in use, a TLS
  certificate or key that does not load); 2 bad command line or configuration file (a TLS
  address without --tls-cert and --tls-key included).

EXAMPLES:
  servd                                   one node, data in ./serv-data
  servd --data-dir /var/lib/serv --admin-addr 127.0.0.1:9191
  SERV_ADMIN_TOKEN=secret servd --config /etc/serv/servd.toml
  servd --tls-cert cert.pem --tls-key key.pem --s3-tls-addr 127.0.0.1:9443";

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
    /// PEM certificate chain (the node's own first) that every TLS listener serves; re-read on SIGHUP
    #[arg(long, env = "SERV_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); re-read on SIGHUP
    #[arg(long, env = "SERV_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// S3 edge over TLS (https) listen address; needs --tls-cert and --tls-key [default: off]
    #[arg(long, env = "SERV_S3_TLS_ADDR", value_name = "ADDR")]
    pub s3_tls_addr: Option<SocketAddr>,
    /// HTTP gateway over TLS (https) listen address; needs --tls-cert and --tls-key [default: off]
    #[arg(long, env = "SERV_HTTP_TLS_ADDR", value_name = "ADDR")]
    pub http_tls_addr: Option<SocketAddr>,
    /// Admin API and console over TLS (https) listen address; needs --tls-cert and --tls-key [default: off]
    #[arg(long, env = "SERV_ADMIN_TLS_ADDR", value_name = "ADDR")]
    pub admin_tls_addr: Option<SocketAddr>,
    /// STOMP over TLS listen address; needs --tls-cert and --tls-key [default: off]
    #[arg(long, env = "SERV_STOMP_TLS_ADDR", value_name = "ADDR")]
    pub stomp_tls_addr: Option<SocketAddr>,
    /// STOMP over WebSocket over TLS (wss) listen address, path /ws; needs --tls-cert and --tls-key [default: off]
    #[arg(long, env = "SERV_STOMP_WSS_ADDR", value_name = "ADDR")]
    pub stomp_wss_addr: Option<SocketAddr>,
    /// A TLS client that has not finished its handshake within this time is closed [default: 10000]
    #[arg(long, env = "SERV_TLS_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    pub tls_handshake_timeout_ms: Option<u64>,
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
    /// The node's memory budget: from 90 % of it, new work is refused with each protocol's
    /// back-off answer until it is back under 80 % [default: three quarters of the machine's
    /// (or the cgroup's) memory]
    #[arg(long, env = "SERV_MAX_MEMORY_BYTES", value_name = "BYTES")]
    pub max_memory_bytes: Option<u64>,
    /// Most connections one client address may hold open on one edge (S3, gateway, admin, STOMP);
    /// more are closed at once, or on the HTTP edges admitted by closing the address's
    /// longest-idle connection [default: a quarter of the edge's max connections]
    #[arg(long, env = "SERV_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// A new connection that sends no byte for this long is closed, on every edge [default: 10000]
    #[arg(long, env = "SERV_FIRST_BYTE_TIMEOUT_MS", value_name = "MS")]
    pub first_byte_timeout_ms: Option<u64>,
    /// Most admin API connections open at once; past it a new client is admitted by closing the
    /// longest-idle connection, or waits for one to close [default: 256]
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
    /// Most subscriptions one STOMP connection may hold; past it a SUBSCRIBE gets an ERROR
    /// [default: 1000]
    #[arg(long, env = "SERV_STOMP_MAX_SUBSCRIPTIONS", value_name = "N")]
    pub stomp_max_subscriptions: Option<usize>,
    /// Most destinations one STOMP connection may create by using them first; past it a SEND or
    /// SUBSCRIBE to a destination that does not exist gets an ERROR [default: 1000]
    #[arg(long, env = "SERV_STOMP_MAX_NEW_DESTINATIONS", value_name = "N")]
    pub stomp_max_new_destinations: Option<usize>,
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
