//! `stockd::server::run` on 127.0.0.1 over a simulated disk and checkpoint store, and
//! the segment files of that disk read and damaged as a bad disk would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stockd::config::ServerConfig;
use stockd::storage::StorageBackend;
use stockd::storage::checkpoint::SimStore;
use stockd::storage::log::frame::{self, Decoded};
use stockd::storage::log::segment::SEGMENT_HEADER_LEN;
use stockd::storage::log::sim::SimDisk;
use stockd::storage::log::{LogConfig, LogDir, LogFile};
use stockd::storage::recovery::RecoveryReport;

use super::client;

/// Longest wait for a sim server to start or stop.
pub const SIM_WAIT_MAX: Duration = Duration::from_secs(20);

/// A simulated disk and store, shared by every server started on them.
#[derive(Clone)]
pub struct SimWorld {
    pub disk: SimDisk,
    pub store: Arc<SimStore>,
}

impl SimWorld {
    pub fn new(seed: u64) -> SimWorld {
        SimWorld {
            disk: SimDisk::new(seed),
            store: Arc::new(SimStore::new(seed)),
        }
    }

    /// A two-shard configuration on this world, with small segments, a log per shard (so
    /// log 0 holds shard 0's records only, on any machine).
    pub fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::new("sim-data".into());
        config.shards = 2;
        config.logs = Some(2);
        config.storage = StorageBackend::Sim {
            disk: self.disk.clone(),
            store: self.store.clone(),
        };
        config.log = LogConfig {
            segment_bytes: 64 << 10,
            segments_preallocated: 1,
            segments_free_max: 2,
            group_bytes_max: 16 << 10,
        };
        config
    }
}

/// A sim server in the test's runtime, stopped gracefully by `stop`.
pub struct SimRun {
    pub grpc: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: super::server::ServerTask,
}

/// Starts `server::run` with `config`: `Ok` once it serves, `Err` with its start-up error.
pub async fn run(config: ServerConfig) -> Result<SimRun, String> {
    let super::server::Spawned { grpc, stop, task } = super::server::spawn_in_process(config).await;
    let ready = client::wait_serving(grpc, SIM_WAIT_MAX, || {
        task.is_finished().then(|| "stopped".to_string())
    })
    .await;
    match ready {
        Ok(()) => Ok(SimRun { grpc, stop, task }),
        Err(e) if task.is_finished() => match task.await.expect("server task") {
            Err(msg) => Err(msg),
            Ok(_) => Err(format!("server::run returned Ok before serving: {e}")),
        },
        Err(e) => {
            task.abort();
            panic!("the sim server did not start: {e}");
        }
    }
}

impl SimRun {
    /// Stops gracefully; returns what recovery reported at its start.
    pub async fn stop(self) -> RecoveryReport {
        let _ = self.stop.send(());
        tokio::time::timeout(SIM_WAIT_MAX, self.task)
            .await
            .expect("the sim server stops in time")
            .expect("the server task")
            .expect("server::run")
    }
}

/// One frame of a simulated segment: its file, offset and size on disk.
#[derive(Clone, Debug)]
pub struct SimFrame {
    pub file: String,
    pub offset: u64,
    pub len: usize,
}

/// The frames of a log's live segments (generation 0), in LSN order.
pub fn frames(disk: &SimDisk, log: u32) -> Vec<SimFrame> {
    let dir_name = format!("g0-l{log}");
    let dir = disk.dir(&dir_name);
    let mut out: Vec<SimFrame> = Vec::new();
    for name in disk.names(&dir_name) {
        if !name.starts_with("seg-") {
            continue;
        }
        let file = dir.open(&name).expect("open a segment");
        let mut bytes = vec![0u8; file.len().expect("segment length") as usize];
        file.read_at(0, &mut bytes).expect("read a segment");
        let mut at = SEGMENT_HEADER_LEN;
        let mut last = None;
        while let Decoded::Valid { frame, len } = frame::decode(&bytes[at..]) {
            if last.is_some_and(|l: u64| frame.lsn != l + 1) {
                break;
            }
            last = Some(frame.lsn);
            out.push(SimFrame {
                file: name.clone(),
                offset: at as u64,
                len,
            });
            at += len;
        }
    }
    out
}

/// Overwrites bytes of a simulated file, durably (as a disk would have written them).
pub fn overwrite(disk: &SimDisk, log: u32, file: &str, offset: u64, bytes: &[u8]) {
    let dir = disk.dir(&format!("g0-l{log}"));
    let mut f = dir.open(file).expect("open a segment");
    f.write_at(offset, bytes).expect("write a segment");
    f.sync_data().expect("sync a segment");
}
