//! Configuration: the command line (with `STOCKD_*` environment equivalents) and the
//! optional TOML file of channels and products loaded at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::limits;
use crate::shard::ShardLimits;
use crate::storage::Durability;
use stockd_domain::request::{TTL_SECONDS_DEFAULT, TTL_SECONDS_MAX, TTL_SECONDS_MIN};
use stockd_domain::{CategoryConfig, ChannelConfig, ProductConfig, Settings};

/// stockd: inventory reservation over gRPC. Tells each sales channel how many units it may
/// sell and holds units for carts, without ever overselling.
#[derive(Parser, Debug)]
#[command(name = "stockd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, also accepted without the subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
}

/// When a change is on disk.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurabilityArg {
    /// Sync the log to disk before every reply (group commit): nothing acknowledged is lost.
    Sync,
    /// Reply once applied in memory, before the log's sync. A crash loses what was
    /// acknowledged during the last sync.
    Async,
}

/// The shape of the tokio runtime.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeArg {
    /// `current-thread` when the process may run on one core (taskset, a CPU limit of
    /// one), `multi-thread` otherwise.
    Auto,
    /// Work-stealing over `--worker-threads` threads.
    MultiThread,
    /// Every task on one thread: no stealing, no cross-thread wake-ups between the tasks
    /// of a request; one core's worth of HTTP/2 work at most.
    CurrentThread,
}

/// Log line format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address the gRPC services listen on.
    #[arg(long, env = "STOCKD_GRPC_ADDR", default_value_t = limits::GRPC_ADDR_DEFAULT)]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus endpoint (GET /metrics).
    #[arg(long, env = "STOCKD_METRICS_ADDR", default_value_t = limits::METRICS_ADDR_DEFAULT)]
    pub metrics_addr: SocketAddr,
    /// Folder of the write-ahead logs and checkpoints (created if missing).
    #[arg(long, env = "STOCKD_DATA_DIR", default_value = limits::DATA_DIR_DEFAULT)]
    pub data_dir: PathBuf,
    /// Number of shard actors (single writers); default: the number of cores. May change
    /// between runs: state is re-split at start.
    #[arg(long, env = "STOCKD_SHARDS")]
    pub shards: Option<u32>,
    /// Number of write-ahead logs the shards share (shard s writes to log s % logs; each
    /// log is one writer thread and one fdatasync per group); default: one per core, at
    /// most one per shard. May change between runs: state is re-split at start.
    #[arg(long, env = "STOCKD_LOGS")]
    pub logs: Option<u32>,
    /// TOML file with [[channels]], [[products]] and [[categories]] applied at start.
    #[arg(long, env = "STOCKD_CONFIG")]
    pub config: Option<PathBuf>,
    /// When an acknowledged change is on disk.
    #[arg(long, env = "STOCKD_DURABILITY", value_enum, default_value = "sync")]
    pub durability: DurabilityArg,
    /// Flush interval of --durability async, in milliseconds.
    #[arg(long, env = "STOCKD_FLUSH_INTERVAL_MS", default_value_t = limits::FLUSH_INTERVAL_MS_DEFAULT)]
    pub flush_interval_ms: u64,
    /// Write log groups with one O_DIRECT|O_DSYNC write where the filesystem allows it.
    /// Off by default: a buffered write and an fdatasync per group, which measured better
    /// for reads on a quiet machine (README, "Durability").
    #[arg(long, env = "STOCKD_LOG_DIRECT_IO", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_direct_io: bool,
    /// Log format; the level comes from RUST_LOG (default "info").
    #[arg(long, env = "STOCKD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, env = "STOCKD_DRAIN_TIMEOUT_SECS", default_value_t = limits::DRAIN_TIMEOUT_SECS_DEFAULT)]
    pub drain_timeout_secs: u64,
    /// Capacity of each shard's mailbox; when full, calls answer RESOURCE_EXHAUSTED.
    #[arg(long, env = "STOCKD_MAILBOX_CAPACITY", default_value_t = limits::MAILBOX_CAPACITY_DEFAULT)]
    pub mailbox_capacity: usize,
    /// Checkpoint a shard after this many log records.
    #[arg(long, env = "STOCKD_SNAPSHOT_EVERY_RECORDS", default_value_t = limits::SNAPSHOT_EVERY_RECORDS_DEFAULT)]
    pub snapshot_every_records: u64,
    /// Keep events in the event log for at least this many seconds (whole segments are
    /// dropped once every event in them is older).
    #[arg(long, env = "STOCKD_EVENTS_RETENTION_SECS", default_value_t = limits::EVENTS_RETENTION_SECS_DEFAULT)]
    pub events_retention_secs: u64,
    /// Keep the event log below this many bytes (whole segments of 8 MiB; at least two kept).
    #[arg(long, env = "STOCKD_EVENTS_RETENTION_BYTES", default_value_t = limits::EVENTS_RETENTION_BYTES_DEFAULT)]
    pub events_retention_bytes: u64,
    /// Live events every WatchEvents stream reads from memory; a stream the ring laps reads
    /// on from the log. One more than this many events behind whose consumer takes nothing
    /// for 1 s ends with RESOURCE_EXHAUSTED (it resumes from the last sequence it got).
    #[arg(long, env = "STOCKD_EVENTS_WATCH_BUFFER", default_value_t = limits::EVENTS_WATCH_BUFFER_DEFAULT)]
    pub events_watch_buffer: usize,
    /// Checkpoint a shard after this many seconds with at least one record.
    #[arg(long, env = "STOCKD_SNAPSHOT_EVERY_SECS", default_value_t = limits::SNAPSHOT_EVERY_SECS_DEFAULT)]
    pub snapshot_every_secs: u64,
    /// Hold timer when no request, product, category or channel sets one.
    #[arg(long, env = "STOCKD_HOLD_TTL_DEFAULT_SECS", default_value_t = TTL_SECONDS_DEFAULT)]
    pub hold_ttl_default_secs: u32,
    /// Shortest hold timer; shorter requests are raised to it.
    #[arg(long, env = "STOCKD_HOLD_TTL_MIN_SECS", default_value_t = TTL_SECONDS_MIN)]
    pub hold_ttl_min_secs: u32,
    /// Longest hold timer; longer requests are lowered to it.
    #[arg(long, env = "STOCKD_HOLD_TTL_MAX_SECS", default_value_t = TTL_SECONDS_MAX)]
    pub hold_ttl_max_secs: u32,
    /// How long a finished hold stays queryable (GetHold, idempotent retries).
    #[arg(long, env = "STOCKD_HOLD_RETENTION_SECS", default_value_t = limits::HOLD_RETENTION_SECS_DEFAULT)]
    pub hold_retention_secs: u64,
    /// Most InventoryService and AdminService calls running at once; beyond it a call is
    /// refused with RESOURCE_EXHAUSTED (or waits, with --load-shed false).
    #[arg(long, env = "STOCKD_MAX_CONCURRENT_REQUESTS", default_value_t = limits::CONCURRENT_REQUESTS_MAX_DEFAULT)]
    pub max_concurrent_requests: usize,
    /// Refuse calls beyond --max-concurrent-requests at once instead of queueing them.
    #[arg(long, env = "STOCKD_LOAD_SHED", default_value_t = true, action = clap::ArgAction::Set)]
    pub load_shed: bool,
    /// Shape of the async runtime (see the README's benchmark section for the measurements).
    #[arg(long, env = "STOCKD_RUNTIME", value_enum, default_value = "auto")]
    pub runtime: RuntimeArg,
    /// Worker threads of the multi-thread runtime; default: the cores this process may use.
    #[arg(long, env = "STOCKD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Scheduler ticks between two polls of the I/O driver (tokio's `event_interval`).
    #[arg(long, env = "STOCKD_EVENT_INTERVAL", default_value_t = limits::RUNTIME_EVENT_INTERVAL_DEFAULT)]
    pub event_interval: u32,
    /// Address AdminService gets a port of its own on (so a NetworkPolicy can admit it
    /// from operators only); default: it shares --grpc-addr with InventoryService.
    #[arg(long, env = "STOCKD_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Address of a plaintext port serving only grpc.health.v1, for probes that cannot
    /// speak TLS (Kubernetes' gRPC probes); default: none (health is on every port).
    #[arg(long, env = "STOCKD_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// PEM certificate chain of the server; with --tls-key, every port serves TLS only.
    /// Reloaded when the file changes.
    #[arg(long, env = "STOCKD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. Reloaded when the file changes.
    #[arg(long, env = "STOCKD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; when set, every client must present a certificate one of them
    /// signed (mutual TLS). Reloaded when the file changes.
    #[arg(long, env = "STOCKD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// TOML access policy: which identities may call which methods, for which channels.
    /// Without it every caller may call everything. Reloaded when the file changes.
    #[arg(long, env = "STOCKD_AUTH_POLICY")]
    pub auth_policy: Option<PathBuf>,
    /// Bearer tokens: lines of `<sha256 of the token, hex> <identity>`, for callers
    /// without a client certificate. Reloaded when the file changes.
    #[arg(long, env = "STOCKD_AUTH_TOKENS", requires = "auth_policy")]
    pub auth_tokens: Option<PathBuf>,
    /// Serve gRPC server reflection (grpcurl, grpcui), open to every caller.
    #[arg(long, env = "STOCKD_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub reflection: bool,
    /// Testing only: when this file exists, every write to disk fails.
    #[arg(long, env = "STOCKD_FAULT_FAIL_WRITES_FILE", hide = true)]
    pub fault_fail_writes_file: Option<PathBuf>,
}

/// Why the flags or the `--config` file cannot be used; the binary exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag's value breaks its rule.
    #[error("{flag} {rule}")]
    Flag {
        flag: &'static str,
        rule: &'static str,
    },
    /// The `--config` file cannot be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML of the expected shape.
    #[error("config {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    /// A channel of the `--config` file breaks a rule.
    #[error("config {}: channels[{index}].{field} {reason}", path.display())]
    Channel {
        path: PathBuf,
        index: usize,
        field: String,
        reason: String,
    },
}

/// The TOML file of `--config`.
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BootConfig {
    pub channels: Vec<ChannelConfig>,
    pub products: Vec<ProductConfig>,
    pub categories: Vec<CategoryConfig>,
    /// `[[locations]]`: applied after channels and products, before `[[networks]]`.
    pub locations: Vec<stockd_domain::LocationConfig>,
    /// `[[networks]]`: a channel's network (`channel_ref`, `network_ref`, `all_locations`
    /// or `locations`).
    pub networks: Vec<stockd_domain::ChannelNetwork>,
}

impl BootConfig {
    pub fn load(path: &std::path::Path) -> Result<BootConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: BootConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        for (index, c) in config.channels.iter().enumerate() {
            c.validate()
                .map_err(|(field, reason)| ConfigError::Channel {
                    path: path.to_path_buf(),
                    index,
                    field,
                    reason,
                })?;
        }
        Ok(config)
    }
}

/// The limits of the gRPC server (`grpc::serve`, `grpc::overload`).
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Most InventoryService and AdminService calls running at once.
    pub concurrent_requests_max: usize,
    /// Refuse a call beyond the limit at once (RESOURCE_EXHAUSTED) instead of waiting.
    pub load_shed: bool,
    /// Most concurrent HTTP/2 streams per connection.
    pub streams_per_connection_max: u32,
    /// Most connections open at once, over every port.
    pub connections_max: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            concurrent_requests_max: limits::CONCURRENT_REQUESTS_MAX_DEFAULT,
            load_shed: true,
            streams_per_connection_max: limits::H2_STREAMS_PER_CONNECTION_MAX,
            connections_max: limits::CONNECTIONS_MAX,
        }
    }
}

/// The server's TLS files (`grpc::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, a client certificate signed by one of its CAs is required.
    pub client_ca: Option<PathBuf>,
}

/// Who may connect and call what (`grpc::tls`, `grpc::access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// TLS on every port; plaintext without it.
    pub tls: Option<TlsFiles>,
    /// The access policy file; without it every caller may call everything.
    pub policy: Option<PathBuf>,
    /// The bearer tokens file.
    pub tokens: Option<PathBuf>,
    /// Serve reflection.
    pub reflection: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            tls: None,
            policy: None,
            tokens: None,
            reflection: true,
        }
    }
}

/// Everything `server::run` needs, resolved from the flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub shards: u32,
    /// Write-ahead logs the shards share; `None`: one per core, at most one per shard
    /// (`logs()`).
    pub logs: Option<u32>,
    pub durability: Durability,
    pub settings: Settings,
    pub limits: ShardLimits,
    pub drain_timeout: Duration,
    pub boot: BootConfig,
    pub fault_file: Option<PathBuf>,
    /// Where the logs and checkpoints live: the data folder, or a simulation (tests).
    pub storage: crate::storage::StorageBackend,
    /// The sizes of each shard's segment log (segment size, preallocation, group bytes).
    pub log: crate::storage::log::LogConfig,
    /// The gRPC server's limits: concurrent calls, load shedding, HTTP/2 streams.
    pub serve: ServeLimits,
    /// TLS, identities and the access policy.
    pub security: SecurityConfig,
    /// The event log's retention and watch buffer.
    pub events: crate::storage::events::EventsConfig,
}

impl ServerConfig {
    /// A configuration for tests and embedding: sync durability, defaults elsewhere.
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            data_dir,
            shards: cores(),
            logs: None,
            durability: Durability::Sync,
            settings: Settings::default(),
            limits: ShardLimits::default(),
            drain_timeout: Duration::from_secs(limits::DRAIN_TIMEOUT_SECS_DEFAULT),
            boot: BootConfig::default(),
            fault_file: None,
            storage: crate::storage::StorageBackend::Real,
            log: crate::storage::log::LogConfig::default(),
            serve: ServeLimits::default(),
            security: SecurityConfig::default(),
            events: crate::storage::events::EventsConfig::default(),
        }
    }

    /// The number of logs: as set, or one per core; never more than the shards.
    pub fn logs(&self) -> u32 {
        self.logs.unwrap_or_else(cores).clamp(1, self.shards.max(1))
    }
}

/// The cores this process may run on (its CPU affinity counts).
fn cores() -> u32 {
    std::thread::available_parallelism().map_or(limits::SHARDS_FALLBACK, |n| n.get() as u32)
}

impl ServeArgs {
    /// Resolves the flags into a server configuration, reading the config file.
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        if self.shards == Some(0) {
            return Err(ConfigError::Flag {
                flag: "--shards",
                rule: "must be at least 1",
            });
        }
        if self.logs == Some(0) {
            return Err(ConfigError::Flag {
                flag: "--logs",
                rule: "must be at least 1 (more than --shards counts as --shards)",
            });
        }
        if self.hold_ttl_min_secs == 0 || self.hold_ttl_min_secs > self.hold_ttl_max_secs {
            return Err(ConfigError::Flag {
                flag: "--hold-ttl-min-secs",
                rule: "must be at least 1 and at most --hold-ttl-max-secs",
            });
        }
        if self.max_concurrent_requests == 0 {
            return Err(ConfigError::Flag {
                flag: "--max-concurrent-requests",
                rule: "must be at least 1",
            });
        }
        if self.worker_threads == Some(0) || self.event_interval == 0 {
            return Err(ConfigError::Flag {
                flag: "--worker-threads and --event-interval",
                rule: "must be at least 1",
            });
        }
        if self.mailbox_capacity == 0 {
            return Err(ConfigError::Flag {
                flag: "--mailbox-capacity",
                rule: "must be at least 1",
            });
        }
        let mut config = ServerConfig::new(self.data_dir.clone());
        if let Some(shards) = self.shards {
            config.shards = shards;
        }
        config.logs = self.logs;
        config.durability = match self.durability {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Async => Durability::Async {
                flush_interval: Duration::from_millis(self.flush_interval_ms.max(1)),
            },
        };
        config.settings = Settings {
            ttl_default_seconds: self.hold_ttl_default_secs,
            ttl_min_seconds: self.hold_ttl_min_secs,
            ttl_max_seconds: self.hold_ttl_max_secs,
            hold_retention_ms: self.hold_retention_secs as i64 * 1000,
        };
        config.limits = ShardLimits {
            mailbox_capacity: self.mailbox_capacity,
            snapshot_every_records: self.snapshot_every_records.max(1),
            snapshot_every: Duration::from_secs(self.snapshot_every_secs.max(1)),
        };
        config.drain_timeout = Duration::from_secs(self.drain_timeout_secs);
        if let Some(path) = &self.config {
            config.boot = BootConfig::load(path)?;
        }
        config.fault_file = self.fault_fail_writes_file.clone();
        config.serve.concurrent_requests_max = self.max_concurrent_requests;
        config.serve.load_shed = self.load_shed;
        config.security = SecurityConfig {
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsFiles {
                    cert,
                    key,
                    client_ca: self.tls_client_ca.clone(),
                }),
            policy: self.auth_policy.clone(),
            tokens: self.auth_tokens.clone(),
            reflection: self.reflection,
        };
        config.events.retention_secs = self.events_retention_secs;
        config.events.retention_bytes = self.events_retention_bytes;
        config.events.watch_buffer = self.events_watch_buffer.max(1);
        Ok(config)
    }
}
