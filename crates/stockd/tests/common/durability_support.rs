//! Helpers of `tests/durability.rs`: run the real `stockd` binary on free local ports and
//! a temporary data folder, wait for it, kill it, talk to it.

#![allow(dead_code)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::admin_service_client::AdminServiceClient;
use stockd::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::transport::{Channel, Endpoint};

/// How long a start may take before the test gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long any single call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a graceful stop may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub type Inv = InventoryServiceClient<Channel>;
pub type Adm = AdminServiceClient<Channel>;

/// A free port on 127.0.0.1 (bound, read and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

pub fn ts(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ts_millis(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref()
        .map(|t| t.seconds * 1000 + (t.nanos as i64) / 1_000_000)
}

/// A strictly increasing count time (`as_of`) for the whole test binary: counts sent
/// later supersede counts sent earlier, and no two counts share a time.
pub fn next_as_of() -> i64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_millis() as u64;
    let mut last = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next as i64,
            Err(seen) => last = seen,
        }
    }
}

/// One run of the stockd binary.
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub args: Vec<String>,
}

static STARTS: AtomicU64 = AtomicU64::new(0);

impl Server {
    /// Spawns stockd on free ports; does not wait for it.
    pub fn spawn(data_dir: &Path, log_dir: &Path, extra: &[&str]) -> Server {
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
        Server {
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
    pub async fn start(data_dir: &Path, log_dir: &Path, extra: &[&str]) -> Server {
        let mut last = String::new();
        for _attempt in 0..3 {
            let mut server = Server::spawn(data_dir, log_dir, extra);
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
        panic!("stockd did not start after 3 port attempts: {last}");
    }

    /// Polls the gRPC health check until SERVING, the process exits, or the time is up.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let url = format!("http://{}", self.grpc);
        let mut last_error = String::from("never tried");
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                return Err(format!("stockd exited with {status} before serving"));
            }
            let attempt = async {
                let channel = Endpoint::from_shared(url.clone())
                    .map_err(|e| e.to_string())?
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(2))
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let answer = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: "inventory.v1.InventoryService".into(),
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<i32, String>(answer.into_inner().status)
            };
            match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(s))
                    if s == tonic_health::pb::health_check_response::ServingStatus::Serving
                        as i32 =>
                {
                    return Ok(());
                }
                Ok(Ok(s)) => last_error = format!("health status {s}"),
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = "health check timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("not serving after {timeout:?}: {last_error}"))
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
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .connect_lazy()
    }

    pub fn inventory(&self) -> Inv {
        InventoryServiceClient::new(self.channel())
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30)
    }

    pub fn admin(&self) -> Adm {
        AdminServiceClient::new(self.channel())
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the log of a process that exited, for failure messages.
pub fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ----- request builders -----

pub fn channel(channel_ref: &str) -> pb::Channel {
    pb::Channel {
        channel_ref: channel_ref.into(),
        ..Default::default()
    }
}

pub async fn upsert_channel(admin: &mut Adm, c: pb::Channel) {
    admin
        .upsert_channel(pb::UpsertChannelRequest { channel: Some(c) })
        .await
        .expect("UpsertChannel");
}

pub fn count(product: &str, location: &str, quantity: i64, as_of: i64) -> pb::StockCount {
    pb::StockCount {
        product_ref: product.into(),
        location_ref: location.into(),
        quantity,
        as_of: Some(ts(as_of)),
    }
}

pub fn reserve_request(
    hold_ref: &str,
    channel_ref: &str,
    lines: &[(String, String, i64)],
    ttl_seconds: i64,
) -> pb::ReserveRequest {
    pb::ReserveRequest {
        hold_ref: hold_ref.into(),
        channel_ref: channel_ref.into(),
        lines: lines
            .iter()
            .map(|(p, l, q)| pb::ReserveLine {
                product_ref: p.clone(),
                location_ref: l.clone(),
                quantity: *q,
                category: String::new(),
            })
            .collect(),
        ttl_seconds,
        allow_partial: false,
    }
}

/// GetHold: `Ok(None)` for NOT_FOUND.
pub async fn get_hold(inv: &mut Inv, hold_ref: &str) -> Result<Option<pb::Hold>, tonic::Status> {
    match inv
        .get_hold(pb::GetHoldRequest {
            hold_ref: hold_ref.into(),
        })
        .await
    {
        Ok(r) => Ok(r.into_inner().hold),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

/// GetPosition: `Ok(None)` for NOT_FOUND.
pub async fn get_position(
    admin: &mut Adm,
    product: &str,
    location: &str,
    include_ledger: bool,
) -> Result<Option<pb::Position>, tonic::Status> {
    match admin
        .get_position(pb::GetPositionRequest {
            product_ref: product.into(),
            location_ref: location.into(),
            include_ledger,
        })
        .await
    {
        Ok(r) => Ok(r.into_inner().position),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

pub async fn availability(inv: &mut Inv, channel_ref: &str, keys: &[(String, String)]) -> Vec<i64> {
    inv.get_availability(pb::GetAvailabilityRequest {
        channel_ref: channel_ref.into(),
        keys: keys
            .iter()
            .map(|(p, l)| pb::PositionKey {
                product_ref: p.clone(),
                location_ref: l.clone(),
            })
            .collect(),
    })
    .await
    .expect("GetAvailability")
    .into_inner()
    .positions
    .into_iter()
    .map(|p| p.quantity)
    .collect()
}

/// Sorted (product, location, quantity) lines of a hold.
pub fn hold_lines(h: &pb::Hold) -> Vec<(String, String, i64)> {
    let mut lines: Vec<_> = h
        .lines
        .iter()
        .map(|l| (l.product_ref.clone(), l.location_ref.clone(), l.quantity))
        .collect();
    lines.sort();
    lines
}

/// Products `P{i}` at `location` whose shard (of `shards`) covers every shard at least
/// `per_shard` times.
pub fn products_on_every_shard(
    prefix: &str,
    location: &str,
    shards: usize,
    per_shard: usize,
) -> Vec<String> {
    let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); shards];
    for i in 0..10_000 {
        let p = format!("{prefix}{i}");
        let s = stockd::shard::shard_of(&p, location, shards);
        if by_shard[s].len() < per_shard {
            by_shard[s].push(p);
        }
        if by_shard.iter().all(|v| v.len() == per_shard) {
            break;
        }
    }
    assert!(by_shard.iter().all(|v| v.len() == per_shard));
    let mut out = Vec::new();
    for i in 0..per_shard {
        for s in &by_shard {
            out.push(s[i].clone());
        }
    }
    out
}

// ----- the data folder of a stopped server -----
//
// These go through the crate's own `Store` (its trees and key layout), so the tests
// follow the layout when it changes. The server must be stopped: sled locks the folder.

use stockd::storage::Store;
use stockd::storage::record::{self, LogRecord};
use stockd_domain::Command as DomainCommand;

/// Opens a stopped server's store; returns it with the generation in use.
pub fn open_store(data: &Path) -> (Store, u32) {
    let store = Store::open(data).expect("open the data folder");
    let meta = store
        .meta()
        .expect("read the layout record")
        .expect("the folder has a layout");
    (store, meta.generation)
}

/// The sequence numbers of one shard's log, in order.
pub fn log_seqs(store: &Store, generation: u32, shard: u32) -> Vec<u64> {
    store
        .read_log(generation, shard)
        .map(|r| r.expect("read a log record").0)
        .collect()
}

pub fn log_bytes(store: &Store, generation: u32, shard: u32, seq: u64) -> Vec<u8> {
    store
        .log
        .get(stockd::storage::store::log_key(generation, shard, seq))
        .expect("read a log record")
        .expect("the record exists")
        .to_vec()
}

pub fn put_log_bytes(store: &Store, generation: u32, shard: u32, seq: u64, bytes: Vec<u8>) {
    store
        .log
        .insert(
            stockd::storage::store::log_key(generation, shard, seq),
            bytes,
        )
        .expect("write a log record");
    store.db.flush().expect("flush");
}

/// The decoded command of a log record.
pub fn log_command(store: &Store, generation: u32, shard: u32, seq: u64) -> DomainCommand {
    record::decode::<LogRecord>(&log_bytes(store, generation, shard, seq))
        .expect("decode a log record")
        .command
}

/// Removes the last record of a shard's log, as if the crash came before it was durable,
/// after checking it is the one the test means. Returns its command.
pub fn drop_last_log_record(
    store: &Store,
    generation: u32,
    shard: u32,
    is_it: impl Fn(&DomainCommand) -> bool,
) -> DomainCommand {
    let seqs = log_seqs(store, generation, shard);
    let last = *seqs.last().expect("the shard has log records");
    let command = log_command(store, generation, shard, last);
    assert!(
        is_it(&command),
        "shard {shard}'s last record is {command:?}"
    );
    store
        .remove_log_record(generation, shard, last)
        .expect("remove a log record");
    store.db.flush().expect("flush");
    command
}
