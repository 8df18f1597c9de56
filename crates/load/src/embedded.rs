//! `--embedded`: a stockd in the same process, on its own runtime and threads, listening
//! on 127.0.0.1:0 with a temporary data folder that is removed when it stops.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stockd::config::ServerConfig;
use stockd::storage::Durability;
use tokio::sync::oneshot;

/// How long a stop may take (drain, flush) before stockd-load gives up waiting.
const STOP_WAIT: Duration = Duration::from_secs(8);

/// How long in-flight calls may finish after the stop: shorter than `STOP_WAIT`, so a
/// drain that runs its full course is still waited for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const _: () = assert!(DRAIN_TIMEOUT.as_secs() < STOP_WAIT.as_secs());

/// A running embedded server.
pub struct Embedded {
    pub addr: String,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    /// Receives the server's result when `server::run` returns.
    done: std_mpsc::Receiver<Result<(), String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the server and waits until it listens.
pub fn start(durability: Durability, shards: Option<u32>) -> Result<Embedded, String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let data_dir = std::env::temp_dir().join(format!("stockd-load-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let mut config = ServerConfig::new(data_dir.clone());
    config.durability = durability;
    if let Some(s) = shards {
        config.shards = s.max(1);
    }
    config.drain_timeout = DRAIN_TIMEOUT;
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<String, String>>();
    let (stop, stopped) = oneshot::channel::<()>();
    let (done_tx, done) = std_mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name("stockd-embedded".into())
        .spawn(move || {
            let _ = done_tx.send(serve(config, ready_tx, stopped));
        })
        .map_err(|e| format!("cannot start the server thread: {e}"))?;
    let mut server = Embedded {
        addr: String::new(),
        data_dir,
        stop: Some(stop),
        done,
        thread: Some(thread),
    };
    match ready_rx.recv() {
        Ok(Ok(addr)) => {
            server.addr = addr;
            Ok(server)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let why = server
                .join()
                .err()
                .unwrap_or_else(|| "stopped at start".into());
            Err(format!("the embedded server failed to start: {why}"))
        }
    }
}

/// The server thread: its own multi-thread runtime, a listener on 127.0.0.1:0 whose
/// address goes to `ready`, and `server::run` until `stopped` fires.
fn serve(
    config: ServerConfig,
    ready: std_mpsc::Sender<Result<String, String>>,
    stopped: oneshot::Receiver<()>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stockd")
        .build()
        .map_err(|e| format!("cannot start the server runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on 127.0.0.1:0: {e}")));
                return Err(e.to_string());
            }
        };
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let _ = ready.send(Ok(addr.to_string()));
        stockd::server::run(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .map(|_| ())
    })
}

impl Embedded {
    /// Stops the server (drain, flush) and removes its data folder.
    pub fn stop(mut self) -> Result<(), String> {
        self.join()
    }

    /// Waits at most `STOP_WAIT`: a server that does not finish stopping is left to the
    /// end of the process rather than hanging it.
    fn join(&mut self) -> Result<(), String> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.done.recv_timeout(STOP_WAIT) {
            Ok(result) => {
                let _ = thread.join();
                result
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "the embedded stockd did not finish stopping within {} s; leaving it to process exit",
                STOP_WAIT.as_secs()
            )),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                Err("the embedded server panicked".to_string())
            }
        };
        let _ = std::fs::remove_dir_all(&self.data_dir);
        result
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.join();
    }
}
