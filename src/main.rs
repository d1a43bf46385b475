//! `servd`: runs one Serv node. Wiring only: configuration, storage, the supervision tree, the
//! admin API, the edges' listeners (plain and TLS), an orderly drain on SIGTERM/SIGINT, and the
//! TLS certificate re-read on SIGHUP.

mod cluster;
mod config;
mod secrets;
mod telemetry;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use serv_actors::bucket::Bucket;
use serv_actors::group::Group;
use serv_actors::module::{Module, ModuleRuntime};
use serv_actors::route::Route;
use serv_actors::topic::Topic;
use serv_actors::{Directory, SupervisionConfig};
use serv_edges::admin::{self, AdminAuth, AdminState, NodeInfo};
use serv_edges::credentials::{ClusterCredentials, Pins};
use serv_edges::gateway::{self, Gateway, GatewaySettings, Scheme};
use serv_edges::listener::LimitedListener;
use serv_edges::s3::{self, Keys, S3Settings};
use serv_edges::stomp;
use serv_edges::stomp::server::StompListeners;
use serv_edges::tls::{Alpn, ServerCertificate, TlsListener};
use serv_storage::{Storage, StorageOptions};
use serv_wasm_host::WasmHost;
use tokio::net::TcpListener;

use crate::config::{Cli, Config};

/// jemalloc rather than the C library's allocator: glibc kept every page that passivated actors
/// and closed connections freed (see `scripts/bench-actors`); jemalloc gives them back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once at its first allocation: pages freed for a second go back to
/// the system (jemalloc's default keeps them 10 s), so a burst's buffers do not linger in the
/// resident set. No background purging thread: jemalloc starts it before `main` can block the
/// stop signals, and a SIGTERM delivered to it would kill the node instead of draining it.
/// (jemalloc reads a C string through this symbol; the array's length is checked at compile time.)
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 37] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    // Before anything else: a stop signal that arrives while the node starts waits, blocked,
    // until the node watches for it (then it is a drain), rather than killing the process; and
    // whatever the node creates (data dir, database, secrets) is its user's alone.
    let held = hold_signals();
    // SAFETY: umask only sets this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let cli = Cli::parse(); // exits 2 with clap's message on a bad command line
    let config = match Config::resolve(cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("servd: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("servd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, held)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("servd: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, held: libc::sigset_t) -> Result<(), String> {
    // Watched before anything else starts, so that a SIGTERM during start-up is a drain (held
    // until the node is up, then handled), never the default death.
    let mut signals = Signals::watch()?;
    // Watched now: a signal that came while they were blocked is delivered, and handled.
    release_signals(&held);
    let _telemetry = telemetry::init(config.log_format, &config.log_level)?;
    serv_edges::memory::watch(config.max_memory_bytes);
    // Before anything slow: a certificate that does not load stops the start at once.
    let certificate = match &config.tls.files {
        Some(files) => Some(ServerCertificate::load(files.clone()).map_err(|e| format!("TLS: {e}"))?),
        None => None,
    };
    if certificate.is_some() && config.tls.listeners().next().is_none() {
        tracing::warn!(
            "--tls-cert and --tls-key are given but no TLS listener (--s3-tls-addr, ...): nothing serves them"
        );
    }
    let storage = Storage::open(&config.data_dir, StorageOptions::default()).map_err(|e| e.to_string())?;
    // A node started without seeds founds its cluster (as its partitions do): it makes the
    // credentials it lacks; any other node adopts the cluster's from the nodes it reaches.
    let founding = config.seeds.is_empty();
    let credentials = ClusterCredentials::open(&config.data_dir, Pins::from_env(), founding)?;

    let supervision = SupervisionConfig {
        passivate_after: config.passivate_after,
        max_restarts: config.max_restarts,
        restart_window: config.restart_window,
        ..SupervisionConfig::default()
    };
    let directory = Directory::start(storage.clone(), supervision).await?;
    directory.register::<Bucket>();
    directory.register::<Topic>();
    directory.register::<Group>();
    directory.register::<Route>();
    directory.register::<Module>();
    let wasm = WasmHost::new(config.wasm.clone()).map_err(|e| e.to_string())?;
    directory.set_modules(std::sync::Arc::new(ModuleRuntime::new(
        wasm,
        storage.clone(),
        config.wasm_recheck,
    )));

    let admin_listener = TcpListener::bind(config.admin_addr)
        .await
        .map_err(|e| format!("cannot listen on admin address {}: {e}", config.admin_addr))?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    let s3_listener = TcpListener::bind(config.s3_addr)
        .await
        .map_err(|e| format!("cannot listen on S3 address {}: {e}", config.s3_addr))?;
    let s3_addr = s3_listener.local_addr().map_err(|e| e.to_string())?;
    let mesh_addr = config.mesh_advertise.unwrap_or(config.mesh_addr);
    let keys = Keys::new(credentials.clone(), storage.access_keys().clone());
    let stomp_listener = TcpListener::bind(config.stomp_addr)
        .await
        .map_err(|e| format!("cannot listen on STOMP address {}: {e}", config.stomp_addr))?;
    let stomp_addr = stomp_listener.local_addr().map_err(|e| e.to_string())?;
    let stomp_ws_listener = TcpListener::bind(config.stomp_ws_addr)
        .await
        .map_err(|e| format!("cannot listen on STOMP WebSocket address {}: {e}", config.stomp_ws_addr))?;
    let stomp_ws_addr = stomp_ws_listener.local_addr().map_err(|e| e.to_string())?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| format!("cannot listen on HTTP gateway address {}: {e}", config.http_addr))?;
    let http_addr = http_listener.local_addr().map_err(|e| e.to_string())?;
    let s3_tls_listener = bind_tls(config.tls.s3_addr, "S3").await?;
    let http_tls_listener = bind_tls(config.tls.http_addr, "HTTP gateway").await?;
    let admin_tls_listener = bind_tls(config.tls.admin_addr, "admin").await?;
    let stomp_tls_listener = bind_tls(config.tls.stomp_addr, "STOMP").await?;
    let stomp_wss_listener = bind_tls(config.tls.stomp_wss_addr, "STOMP WebSocket").await?;
    let mut addresses = BTreeMap::from([
        ("admin".to_string(), admin_addr.to_string()),
        ("s3".to_string(), s3_addr.to_string()),
        ("stomp".to_string(), stomp_addr.to_string()),
        ("stomp_ws".to_string(), format!("ws://{stomp_ws_addr}/ws")),
        ("http".to_string(), http_addr.to_string()),
        ("mesh".to_string(), mesh_addr.to_string()),
    ]);
    let tls_addresses = [
        ("admin_tls", &admin_tls_listener, "https://", ""),
        ("s3_tls", &s3_tls_listener, "https://", ""),
        ("stomp_tls", &stomp_tls_listener, "", ""),
        ("stomp_wss", &stomp_wss_listener, "wss://", "/ws"),
        ("http_tls", &http_tls_listener, "https://", ""),
    ];
    let mut serving_tls = Vec::new();
    for (edge, listener, scheme, path) in tls_addresses {
        if let Some(listener) = listener {
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            addresses.insert(edge.to_string(), format!("{scheme}{addr}{path}"));
            serving_tls.push(format!("{edge}={addr}"));
        }
    }
    let node = NodeInfo {
        id: storage.node_id().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        addresses,
    };
    let cluster = cluster::join(&config, &node, &directory, &storage).await?;
    // After the partitions replayed their logs: a block is garbage only if no manifest in the
    // applied tables names it, and a crash may have left applied tables behind the log.
    let collector = s3::spawn_block_collector(storage.clone(), config.block_gc_interval);
    let s3_settings = S3Settings {
        limits: config.s3_limits.clone(),
        region: config.s3_region.clone(),
        domain: config.s3_domain.clone(),
        blocks: Some(cluster.blocks.clone()),
    };
    let s3_service = s3::service(directory.clone(), storage.clone(), keys.clone(), s3_settings)?;
    let gateway = Gateway::new(
        directory.clone(),
        &storage,
        GatewaySettings {
            refresh: config.gateway_refresh,
            max_inflight_bodies: config.http_max_inflight_bodies,
        },
    )
    .map_err(|e| format!("cannot open the route table: {e}"))?;
    let route_refresh = gateway.spawn_refresh();
    let auth = AdminAuth { credentials, session_ttl: config.admin_session_ttl };
    let state = AdminState::new(
        node,
        directory.clone(),
        storage.clone(),
        auth,
        Some(cluster.members.clone()),
        Some(gateway.clone()),
        Some(cluster.partitions.clone()),
        Some(cluster.removed.clone()),
    )
    .map_err(|e| format!("cannot open the audit log: {e}"))?;
    tracing::info!(
        node_id = storage.node_id(),
        data_dir = %config.data_dir.display(),
        admin = %admin_addr,
        s3 = %s3_addr,
        stomp = %stomp_addr,
        http = %http_addr,
        "servd is ready"
    );
    if let Some(certificate) = &certificate {
        tracing::info!(
            listeners = %serving_tls.join(" "),
            cert = %certificate.files().cert.display(),
            handshake_timeout_ms = config.tls.handshake_timeout.as_millis() as u64,
            "serving TLS"
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = || {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    };
    // An edge's TLS listener shares its plain listener's connection cap.
    let tls = |bound: Option<TcpListener>, plain: &LimitedListener, alpn: Alpn| match (bound, &certificate) {
        (Some(bound), Some(certificate)) => TlsListener::new(
            plain.sharing_limits(bound),
            certificate.server_config(alpn),
            config.tls.handshake_timeout,
        )
        .map(Some)
        .map_err(|e| format!("cannot serve TLS: {e}")),
        _ => Ok(None),
    };

    let admin_plain = LimitedListener::new(admin_listener, config.admin_limits);
    let admin_tls = tls(admin_tls_listener, &admin_plain, Alpn::Http1)?;
    let admin_router = admin::router(state.clone()).merge(serv_console_ui::router());
    let admin_server = tokio::spawn(
        axum::serve(admin_plain, admin_router.clone()).with_graceful_shutdown(stopped()).into_future(),
    );
    let admin_tls_server = admin_tls.map(|listener| {
        tokio::spawn(axum::serve(listener, admin_router).with_graceful_shutdown(stopped()).into_future())
    });

    let s3_plain = LimitedListener::new(s3_listener, config.s3_connections);
    let s3_tls = tls(s3_tls_listener, &s3_plain, Alpn::Http1)?;
    let s3_tls_server = s3_tls
        .map(|listener| tokio::spawn(s3::serve(listener, s3_service.clone(), config.s3_http, stopped())));
    let s3_server = tokio::spawn(s3::serve(s3_plain, s3_service, config.s3_http, stopped()));

    let stomp_plain = LimitedListener::new(stomp_listener, config.stomp_connections);
    let stomp_ws_plain = LimitedListener::new(stomp_ws_listener, config.stomp_connections);
    let stomp_listeners = StompListeners {
        tls: tls(stomp_tls_listener, &stomp_plain, Alpn::None)?,
        wss: tls(stomp_wss_listener, &stomp_ws_plain, Alpn::Http1)?,
        tcp: stomp_plain,
        ws: stomp_ws_plain,
    };
    let stomp_server = tokio::spawn(stomp::server::serve(
        stomp_listeners,
        directory.clone(),
        keys,
        config.stomp.clone(),
        stopped(),
    ));

    let http_plain = LimitedListener::new(http_listener, config.http_connections);
    let http_tls = tls(http_tls_listener, &http_plain, Alpn::Http1)?;
    let http_tls_server = http_tls.map(|listener| {
        tokio::spawn(gateway::serve(listener, Scheme::Https, gateway.clone(), config.s3_http, stopped()))
    });
    let http_server =
        tokio::spawn(gateway::serve(http_plain, Scheme::Http, gateway, config.s3_http, stopped()));

    let signal = loop {
        match signals.next().await {
            Signal::Stop(name) => break name,
            Signal::ReloadCertificate => reload_certificate(certificate.as_deref()),
        }
    };
    tracing::info!(%signal, drain_timeout_ms = config.drain_timeout.as_millis() as u64, "draining");
    state.set_draining();
    let step = std::sync::Mutex::new(("handing over partitions", std::time::Instant::now()));
    let reached = |name| {
        *step.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (name, std::time::Instant::now())
    };
    let drain = async {
        // While this node still leads: its partitions move in a hand-over each, not an election.
        // At most half the drain: what is not handed over by then is elected away after.
        let stepped = tokio::time::timeout(
            config.drain_timeout / 2,
            cluster::step_down(&cluster.partitions, &directory),
        );
        match stepped.await {
            Ok((handed, led)) => tracing::info!(handed, led, "handed over the partitions this node led"),
            Err(_) => tracing::warn!("hand-overs did not end within half the drain timeout; stopping anyway"),
        }
        let _ = stop_tx.send(true);
        reached("closing the admin API's connections");
        finished(admin_server, admin_tls_server).await;
        reached("closing S3 connections");
        finished(s3_server, s3_tls_server).await;
        reached("closing STOMP connections");
        let _ = stomp_server.await;
        reached("closing the gateway's connections");
        finished(http_server, http_tls_server).await;
        route_refresh.abort();
        collector.abort();
        // Only once the requests in flight are answered: the others end their sessions with a
        // member that left, and a request this node forwards would wait for one.
        reached("leaving the membership");
        cluster.membership.leave().await; // the others hear it now rather than by probing
        reached("stopping the entities");
        directory.shutdown(config.drain_timeout).await;
        reached("stopping the partitions");
        cluster.partitions.shutdown().await; // after the entities, whose writes they carry
        cluster.remote.stop();
    };
    let drained = tokio::time::timeout(config.drain_timeout, drain).await.is_ok();
    // What did not finish in time is abandoned: a request not answered was never acknowledged,
    // and everything acknowledged is durable already; the flush below is the last word.
    storage.close().map_err(|e| format!("final flush failed: {e}"))?;
    if !drained {
        let (name, since) = *step.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tracing::warn!(
            drain_timeout_ms = config.drain_timeout.as_millis() as u64,
            step = name,
            step_ms = since.elapsed().as_millis() as u64,
            "the drain ran out of time: abandoned the work still in flight (unanswered, so never acknowledged); stopped"
        );
        return Ok(());
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Binds an edge's TLS listener, if it has one.
async fn bind_tls(addr: Option<SocketAddr>, edge: &str) -> Result<Option<TcpListener>, String> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr).await;
    listener.map(Some).map_err(|e| format!("cannot listen on {edge} TLS address {addr}: {e}"))
}

/// Waits for an edge's servers, plain and TLS, to end.
async fn finished<T>(plain: tokio::task::JoinHandle<T>, tls: Option<tokio::task::JoinHandle<T>>) {
    let _ = plain.await;
    if let Some(tls) = tls {
        let _ = tls.await;
    }
}

/// SIGHUP: new TLS connections get what the certificate files hold now; a failure keeps the
/// certificate served before.
fn reload_certificate(certificate: Option<&ServerCertificate>) {
    let Some(certificate) = certificate else {
        tracing::info!(
            "SIGHUP: no TLS certificate is configured (--tls-cert, --tls-key); nothing to re-read"
        );
        return;
    };
    let files = certificate.files();
    match certificate.reload() {
        Ok(()) => tracing::info!(
            cert = %files.cert.display(),
            key = %files.key.display(),
            chain = certificate.chain_len(),
            "SIGHUP: TLS certificate reloaded; new connections get it, open ones keep theirs"
        ),
        Err(error) => {
            tracing::error!(%error, "SIGHUP: TLS certificate not reloaded; still serving the one loaded before")
        }
    }
}

/// What a signal asks of the node.
enum Signal {
    /// SIGTERM or SIGINT: drain and exit.
    Stop(&'static str),
    /// SIGHUP: re-read the TLS certificate and key.
    ReloadCertificate,
}

/// SIGTERM, SIGINT and SIGHUP, caught from the moment they are watched.
/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and so in every thread it starts, which
/// inherit its mask) until [`release_signals`]: the set blocked.
fn hold_signals() -> libc::sigset_t {
    // SAFETY: the set is initialized by sigemptyset before use, and pthread_sigmask only changes
    // this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Unblocks `held` in this thread, once the node's handlers are installed: a signal that arrived
/// meanwhile is delivered to them now. (The runtime's worker threads keep them blocked; the
/// kernel delivers a process's signal to a thread that does not block it.)
fn release_signals(held: &libc::sigset_t) {
    // SAFETY: `held` is a signal set made by hold_signals.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, held, std::ptr::null_mut()) };
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn watch() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        let int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
        let hup = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
        Ok(Self { term, int, hup })
    }

    /// The next signal (one that arrived while the node was starting counts).
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::ReloadCertificate,
        }
    }
}
