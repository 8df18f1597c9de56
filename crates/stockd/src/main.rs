//! The `stockd` binary: parse flags, start logging and metrics, bind, run the server.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use stockd::config::{Cli, Command, LogFormat, RuntimeArg, ServeArgs};
use stockd::server::{Listeners, StartError};

/// mimalloc instead of glibc's malloc: allocation was 16% of a Reserve's server CPU
/// (`_int_malloc`, `malloc_consolidate` for buffers freed on another thread), see the
/// README's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    stockd::storage::log::direct::set_enabled(args.log_direct_io);
    let config = match args.server_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stockd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = build_runtime(&args);
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal();
        tracing::info!(
            grpc_addr = %args.grpc_addr,
            admin_addr = ?args.admin_addr,
            metrics_addr = %args.metrics_addr,
            data_dir = %config.data_dir.display(),
            shards = config.shards,
            durability = ?config.durability,
            config = ?args.config,
            "starting stockd {}",
            env!("CARGO_PKG_VERSION")
        );
        stockd::metrics::install(args.metrics_addr)?;
        let grpc = bind(args.grpc_addr).await?;
        let admin = match args.admin_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let health = match args.health_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let listeners = Listeners {
            grpc,
            admin,
            health,
        };
        stockd::server::try_run(config, listeners, shutdown).await
    });
    match result {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("stockd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// The runtime `--runtime`, `--worker-threads` and `--event-interval` ask for.
fn build_runtime(args: &ServeArgs) -> tokio::runtime::Runtime {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.worker_threads.unwrap_or(cores);
    let current = match args.runtime {
        RuntimeArg::Auto => workers == 1,
        RuntimeArg::MultiThread => false,
        RuntimeArg::CurrentThread => true,
    };
    let mut builder = if current {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder
        .enable_all()
        .thread_name("stockd")
        .event_interval(args.event_interval)
        .build()
        .expect("build the tokio runtime")
}

/// Completes on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
///
/// Both handlers are registered here, when this is called (before the server starts), not
/// when the returned future is first polled: a SIGTERM that arrives while recovery runs or
/// before the serving task first polls its shutdown future must still mean "drain and exit
/// 0", never the default action (die by the signal).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                },
                _ => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received");
    }
}
