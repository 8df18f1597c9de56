//! The servers under test, both on 127.0.0.1.
//!
//! `InProcessServer` runs the library's `stockd::server::run` inside the test's runtime on
//! a port the OS picks, as the binary would. `ServerProcess` runs the real `stockd` binary
//! (`env!("CARGO_BIN_EXE_stockd")`) on free ports and a data folder the test owns, so the
//! test can SIGKILL it and start it again on the same folder; its stdout and stderr go to
//! a log file next to the data, shown when a check fails.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use stockd::config::ServerConfig;
use tonic::transport::Channel;

use super::client::{self, Adm, Inv};

/// How long a start (recovery included) may take before the test gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a start is retried when a free port was taken before stockd bound it.
const PORT_ATTEMPTS: usize = 3;

/// A free port on 127.0.0.1 (bound, read and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A temporary folder for one test's data and logs, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stockd-test-")
        .tempdir()
        .expect("temp dir")
}

/// Panics with the message and the tail of the server's log.
#[track_caller]
pub fn fail(server_log: &str, msg: impl std::fmt::Display) -> ! {
    panic!("{msg}\n--- server log (tail) ---\n{}", tail(server_log, 60));
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reads the log of a process that exited, for failure messages.
pub fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The `channel`, `inventory` and `admin` clients of a server type with a `grpc` address.
macro_rules! grpc_clients {
    () => {
        pub fn channel(&self) -> Channel {
            client::channel(self.grpc)
        }

        pub fn inventory(&self) -> Inv {
            client::inventory(self.grpc)
        }

        pub fn admin(&self) -> Adm {
            client::admin(self.grpc)
        }
    };
}

// ----- in process -----

/// `stockd::server::run` on 127.0.0.1:0 in the test's runtime, with its own data folder.
pub struct InProcessServer {
    pub grpc: SocketAddr,
    /// AdminService's port: `grpc` unless the server was launched with a port of its own.
    pub admin_addr: SocketAddr,
    /// The plaintext health-only port, if launched with one.
    pub health_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<ServerTask>,
    _dir: tempfile::TempDir,
}

/// The task running `stockd::server::run`: recovery's report, or the start-up error.
pub type ServerTask =
    tokio::task::JoinHandle<Result<stockd::storage::recovery::RecoveryReport, String>>;

/// `stockd::server::run` started in this runtime on 127.0.0.1:0 (not yet known to serve).
pub struct Spawned {
    pub grpc: SocketAddr,
    /// Sending (or dropping) it asks the server to stop gracefully.
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: ServerTask,
}

/// Binds 127.0.0.1:0 and spawns `stockd::server::run(config, ..)` on it; the caller waits
/// for it to serve (`client::wait_serving`) with the failure handling it needs.
pub async fn spawn_in_process(config: ServerConfig) -> Spawned {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let grpc = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(stockd::server::run(config, listener, async {
        let _ = stopped.await;
    }));
    Spawned { grpc, stop, task }
}

impl InProcessServer {
    /// Starts a server with `shards` shards and waits until it serves; panics if it
    /// does not within `READY_TIMEOUT`.
    pub async fn start(shards: u32) -> InProcessServer {
        Self::start_in(tempdir(), shards).await
    }

    /// Stops the server (gracefully) and starts it again on the same data folder.
    #[allow(dead_code)]
    pub async fn restart(mut self, shards: u32) -> InProcessServer {
        let dir = std::mem::replace(&mut self._dir, tempdir());
        self.stop().await;
        Self::start_in(dir, shards).await
    }

    async fn start_in(dir: tempfile::TempDir, shards: u32) -> InProcessServer {
        Self::start_configured(dir, |config| config.shards = shards).await
    }

    /// Starts a server with the configuration `configure` makes of the defaults, in
    /// `dir`, and waits until it serves.
    pub async fn start_configured(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> InProcessServer {
        let server = Self::launch(dir, configure, false, false).await;
        let ready = client::wait_serving(server.grpc, READY_TIMEOUT, || {
            server
                .finished()
                .then(|| "stockd::server::run returned".to_string())
        })
        .await;
        if let Err(e) = ready {
            server.fail_to_start(e).await;
        }
        server
    }

    /// Spawns a server with the configuration `configure` makes of the defaults, in `dir`,
    /// AdminService on a port of its own if `admin_port`, a plaintext health-only port if
    /// `health_port`; it may not serve yet (a TLS server's readiness is the caller's to
    /// check).
    pub async fn launch(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut ServerConfig),
        admin_port: bool,
        health_port: bool,
    ) -> InProcessServer {
        let mut config = ServerConfig::new(dir.path().join("data"));
        configure(&mut config);
        let bind = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0")
        };
        let grpc_listener = bind().await;
        let grpc = grpc_listener.local_addr().expect("local addr");
        let admin_listener = if admin_port { Some(bind().await) } else { None };
        let admin = admin_listener
            .as_ref()
            .map_or(grpc, |l| l.local_addr().expect("local addr"));
        let health_listener = if health_port {
            Some(bind().await)
        } else {
            None
        };
        let health_addr = health_listener
            .as_ref()
            .map(|l| l.local_addr().expect("local addr"));
        let listeners = stockd::server::Listeners {
            grpc: grpc_listener,
            admin: admin_listener,
            health: health_listener,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(stockd::server::run(config, listeners, async {
            let _ = stopped.await;
        }));
        InProcessServer {
            grpc,
            admin_addr: admin,
            health_addr,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Whether `run` returned (the server stopped or never started).
    pub fn finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Panics with why the server did not start (`error`, and `run`'s answer if it
    /// returned).
    pub async fn fail_to_start(mut self, error: String) -> ! {
        let task = self.task.take().expect("started");
        let outcome = if task.is_finished() {
            format!("{:?}", task.await)
        } else {
            task.abort();
            "still running".to_string()
        };
        panic!("the in-process server did not start: {error} (run: {outcome})");
    }

    grpc_clients!();

    /// Asks the server to stop and waits until `run` returned Ok.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(STOP_TIMEOUT, task)
            .await
            .expect("the in-process server did not stop in time")
            .expect("the server task panicked")
            .expect("stockd::server::run failed");
    }
}

// ----- the real binary -----

/// One run of the stockd binary; SIGKILLed when dropped.
pub struct ServerProcess {
    child: Option<Child>,
    pub pid: u32,
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub args: Vec<String>,
}

/// Numbers the log files of one test binary's starts.
static STARTS: AtomicU64 = AtomicU64::new(0);

impl ServerProcess {
    /// Spawns stockd on free ports over `data_dir`, its log in `log_dir`, with `extra`
    /// flags; does not wait for it.
    pub fn spawn(data_dir: &Path, log_dir: &Path, extra: &[&str]) -> ServerProcess {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let n = STARTS.fetch_add(1, Ordering::SeqCst);
        let log_path = log_dir.join(format!("stockd-{n:04}.log"));
        let log = File::create(&log_path).expect("create the server log file");
        let mut args: Vec<String> = vec![
            "--grpc-addr".into(),
            grpc.to_string(),
            "--metrics-addr".into(),
            metrics.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_stockd"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("spawn stockd");
        ServerProcess {
            pid: child.id(),
            child: Some(child),
            grpc,
            data_dir: data_dir.to_path_buf(),
            log_path,
            args,
        }
    }

    /// Starts stockd and waits until it serves. Retries on a port clash; panics (with the
    /// server's log) if it does not come up.
    pub async fn start(data_dir: &Path, log_dir: &Path, extra: &[&str]) -> ServerProcess {
        let mut last = String::new();
        for _attempt in 0..PORT_ATTEMPTS {
            let mut server = ServerProcess::spawn(data_dir, log_dir, extra);
            match server.wait_ready(READY_TIMEOUT).await {
                Ok(()) => return server,
                Err(e) => {
                    let log = server.log();
                    server.kill();
                    if log.contains("cannot listen")
                        || log.contains("cannot serve metrics")
                        || log.contains("Address already in use")
                    {
                        last = format!("{e}\n{log}");
                        continue;
                    }
                    panic!(
                        "stockd did not start ({:?}): {e}\n--- server log ---\n{log}",
                        server.args
                    );
                }
            }
        }
        panic!("stockd did not start after {PORT_ATTEMPTS} port attempts: {last}");
    }

    /// Polls the gRPC health check until SERVING, the process exits, or the time is up.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let grpc = self.grpc;
        client::wait_serving(grpc, timeout, || {
            self.try_exit_status()
                .map(|status| format!("stockd exited with {status}"))
        })
        .await
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits (bounded) for the process to exit by itself; None if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit_status() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on unix), then reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status. Panics if it does not exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed", self.pid);
        match self.wait_exit(STOP_TIMEOUT).await {
            Some(status) => status,
            None => {
                let log = self.log();
                self.kill();
                panic!(
                    "stockd did not exit within {STOP_TIMEOUT:?} of SIGTERM\n--- server log ---\n{log}"
                );
            }
        }
    }

    pub fn log(&self) -> String {
        log_of(&self.log_path)
    }

    grpc_clients!();
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
