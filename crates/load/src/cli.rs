//! The command line: ghz's options where they apply, and one subcommand per scenario.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration;

const ABOUT: &str = "Load generator for stockd: ghz's options and reports, plus scenarios that seed \
their own data (flash sale, browse, checkout, mixed, health, reserve).";

const LONG_ABOUT: &str = "\
Load generator for stockd, built on the tonic client and HdrHistogram.

It takes ghz's options where they apply (--call, -c, --connections, -n, -z, --rps, -d with
ghz's template variables, --skipFirst, --count-errors, --insecure, -O summary|json) and
prints ghz's reports, so ghz's habits and report tooling keep working. The scenarios seed
what they need through AdminService (UpsertChannel, SetStock) under a run-unique prefix,
so they can be rerun against the same server.

Every run is bounded by -n and/or -z (10s when neither is given) and, for safety, only
loopback targets (127.0.0.1, ::1, localhost) are accepted unless --allow-remote is given.
With --embedded, a stockd is started in this process on 127.0.0.1 with a temporary data
folder (removed afterwards): no server to start by hand.

--rps makes the load open loop: request i is due at i/rps seconds after the start, and
its latency is measured from then, so a stalling server cannot hide its queue
(coordinated-omission correction). Without --rps, each of the -c workers sends its next
request as soon as its previous one answered (closed loop).

A progress bar is drawn on stderr when stderr is a terminal; when output is piped, only
the report is written.";

const EXAMPLES: &str = "\
Examples:
  # One-command demonstration: a flash sale against an in-process stockd
  cargo run --release --bin stockd-load -- flash-sale --embedded

  # ghz-style call against a running server (the default target is 127.0.0.1:50051)
  stockd-load --call inventory.v1.InventoryService.Reserve -c 50 -n 10000 \\
    -d '{\"holdRef\":\"h-{{.RequestNumber}}-{{.UUID}}\",\"channelRef\":\"web\",
         \"lines\":[{\"productRef\":\"sku-1\",\"locationRef\":\"wh-1\",\"quantity\":1}]}' \\
    127.0.0.1:50051

  # The same as a subcommand, JSON report (ghz's field names, nanoseconds)
  stockd-load call --call inventory.v1.InventoryService/GetAvailability -z 10s -O json \\
    -d '{\"channelRef\":\"web\",\"keys\":[{\"productRef\":\"sku-1\",\"locationRef\":\"wh-1\"}]}'

  # Scenarios
  stockd-load flash-sale --units 100 --buyers 2000 -c 50 127.0.0.1:50051
  stockd-load browse --products 1000 -c 50 -z 10s
  stockd-load checkout -c 20 -z 30s
  stockd-load mixed -c 50 -z 10s --embedded --durability async
  stockd-load health -c 50 -z 10s
  stockd-load reserve --products 10000 -c 50 -z 10s
  stockd-load reserve --hot -c 50 -z 10s
  stockd-load reserve --products 10000 --rps 4000 -z 10s   # open loop: honest p99
  stockd-load reserve --products 10000 -z 10s --watch       # and a WatchEvents consumer beside it
  stockd-load fulfil --read fulfil --locations 50 --lines 5 -c 20 -z 10s   # also --read network|keys

Template variables in -d (as in ghz): {{.RequestNumber}}, {{.WorkerID}}, {{.UUID}},
{{.FullyQualifiedName}}, {{.MethodName}}, {{.ServiceName}}, {{.InputName}},
{{.OutputName}}, {{.Timestamp}}, {{.TimestampUnix}}, {{.TimestampUnixMilli}},
{{.TimestampUnixNano}}, {{randomInt min max}}, {{randomString n}}, {{newUUID}}.

Callable methods: inventory.v1.InventoryService.{GetAvailability, Reserve, ConfirmHold,
ReleaseHold, GetHold, FulfilOrder, CancelOrder, GetNetworkAvailability,
GetFulfilmentOptions} and grpc.health.v1.Health.Check; -d is the
request in the protobuf JSON mapping (lowerCamelCase or proto field names).

Exit status: 0 on success, 1 when a scenario's check fails (FAIL), 2 on a usage or
connection error.";

#[derive(Parser, Debug)]
#[command(
    name = "stockd-load",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = EXAMPLES,
    after_help = "Examples and template variables: stockd-load --help"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub call: CallArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Target server, host:port (only loopback unless --allow-remote).
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Call one method with -d data, like ghz (the default when --call is given).
    Call(CallCommand),
    /// N units of one product, M buyers each reserving 1 with their own hold; checks that
    /// exactly N holds succeeded and that nothing is left to sell.
    FlashSale(FlashSaleArgs),
    /// GetAvailability of a few random keys over K seeded products.
    Browse(BrowseArgs),
    /// Reserve, then 70% confirm, 20% release, 10% left to expire.
    Checkout(CheckoutArgs),
    /// 90% GetAvailability, 10% checkout.
    Mixed(MixedArgs),
    /// grpc.health.v1.Health/Check: the floor of what any RPC costs on this stack.
    Health(HealthArgs),
    /// Reserve 1 unit under a unique hold, over K products (or one hot product), for
    /// write throughput; with --release, Reserve+Release pairs.
    Reserve(ReserveArgs),
    /// GetAvailability over a state filled beforehand (give its --prefix), while a paced
    /// SetStock churn makes the server take a large checkpoint; best with --rps.
    CheckpointRead(CheckpointReadArgs),
    /// GetFulfilmentOptions, GetNetworkAvailability or GetAvailability (--read) over a
    /// seeded network of locations (issue #15's figures).
    Fulfil(FulfilArgs),
}

impl Cli {
    /// The subcommand to run, the target and the shared options. A ghz-style command
    /// line (`--call` with no subcommand) is the `call` subcommand.
    pub fn into_parts(self) -> Result<(Command, Option<String>, LoadArgs), String> {
        let Cli {
            command,
            call,
            load,
            host,
        } = self;
        let command = match command {
            Some(command) => command,
            None if call.call.is_some() || call.dump_request.is_some() => {
                Command::Call(CallCommand { call, host: None })
            }
            None => {
                return Err(
                    "nothing to run: give --call (ghz style) or a scenario: flash-sale, browse, \
                     checkout, mixed, health, reserve, call (see stockd-load --help)"
                        .into(),
                );
            }
        };
        let host = command.host().or(host);
        Ok((command, host, load))
    }
}

impl Command {
    /// The HOST:PORT given after the subcommand.
    fn host(&self) -> Option<String> {
        match self {
            Command::Call(a) => a.host.clone(),
            Command::FlashSale(a) => a.host.clone(),
            Command::Browse(a) => a.host.clone(),
            Command::Checkout(a) => a.host.clone(),
            Command::Mixed(a) => a.host.clone(),
            Command::Health(a) => a.host.clone(),
            Command::Reserve(a) => a.host.clone(),
            Command::CheckpointRead(a) => a.host.clone(),
            Command::Fulfil(a) => a.host.clone(),
        }
    }
}

/// The options every subcommand shares (accepted before or after the subcommand).
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Number of concurrent workers (callers).
    #[arg(short = 'c', long, global = true, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// Number of HTTP/2 connections the workers share, at least one per load thread
    /// [default: min(concurrency, 4)].
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connections: Option<u64>,
    /// Total operations to run (with -z, whichever comes first).
    #[arg(short = 'n', long, global = true)]
    pub total: Option<u64>,
    /// How long to run, e.g. 10s, 1m30s (10s when neither -n nor -z is given).
    #[arg(short = 'z', long, global = true, value_parser = duration::parse)]
    pub duration: Option<Duration>,
    /// Open loop at this many operations per second, latency from each intended start.
    #[arg(long, global = true)]
    pub rps: Option<f64>,
    /// Leave the first N calls out of the statistics (warm-up).
    #[arg(
        long = "skipFirst",
        alias = "skip-first",
        global = true,
        default_value_t = 0
    )]
    pub skip_first: u64,
    /// Count failed calls in the latency statistics too.
    #[arg(long, global = true)]
    pub count_errors: bool,
    /// Plaintext HTTP/2 (accepted for ghz compatibility: the only mode).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Report format.
    #[arg(short = 'O', long = "format", global = true, value_enum, default_value_t = Format::Summary)]
    pub format: Format,
    /// Write the report to this file instead of stdout.
    #[arg(short = 'o', long = "output", global = true)]
    pub output: Option<PathBuf>,
    /// Per-call timeout (a slower call fails with DeadlineExceeded).
    #[arg(short = 't', long, global = true, value_parser = duration::parse, default_value = "20s")]
    pub timeout: Duration,
    /// Connection timeout.
    #[arg(long, global = true, value_parser = duration::parse, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Load threads, each a single-threaded runtime with its own connections and share of
    /// the workers (like h2load -t) [default: the cores stockd-load may run on].
    #[arg(long, global = true)]
    pub cpus: Option<usize>,
    /// Name of the run, shown in the report.
    #[arg(long, global = true)]
    pub name: Option<String>,
    /// Allow a target that is not a loopback address.
    #[arg(long, global = true)]
    pub allow_remote: bool,
    /// Start a stockd in this process on 127.0.0.1 with a temporary data folder.
    #[arg(long, global = true)]
    pub embedded: bool,
    /// Durability of the --embedded server.
    #[arg(long, global = true, value_enum, default_value_t = DurabilityArg::Sync)]
    pub durability: DurabilityArg,
    /// Flush interval of --durability async, in milliseconds (--embedded).
    #[arg(long, global = true, default_value_t = 5)]
    pub flush_interval_ms: u64,
    /// Shard count of the --embedded server [default: the number of cores].
    #[arg(long, global = true)]
    pub shards: Option<u32>,
    /// Sales channel the scenarios configure and use.
    #[arg(long, global = true, default_value = "load-web")]
    pub channel: String,
    /// Prefix of the refs a scenario creates [default: a random one per run].
    #[arg(long, global = true)]
    pub prefix: Option<String>,
    /// Also keep one EventService.WatchEvents stream open (from now, no filter, on a
    /// connection of its own) and report the events it received per second, and any gap.
    #[arg(long, global = true)]
    pub watch: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ghz's text summary.
    Summary,
    /// ghz's JSON report, on one line.
    Json,
    /// ghz's JSON report, indented.
    Pretty,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityArg {
    /// Flush before each reply (group commit).
    Sync,
    /// Reply once applied in memory; flush every --flush-interval-ms.
    Async,
}

/// The raw call: what to call and with what.
#[derive(Args, Debug, Clone, Default)]
pub struct CallArgs {
    /// Fully qualified method: inventory.v1.InventoryService.Reserve or
    /// inventory.v1.InventoryService/Reserve.
    #[arg(long)]
    pub call: Option<String>,
    /// Request data as JSON (protobuf JSON mapping), with ghz's template variables.
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
    /// Read the request data from this file.
    #[arg(short = 'D', long = "data-file", conflicts_with = "data")]
    pub data_file: Option<PathBuf>,
    /// Write the gRPC-framed request body (5-byte prefix + protobuf) to this file ("-"
    /// for stdout) and exit, e.g. for h2load -d.
    #[arg(long, hide = true)]
    pub dump_request: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CallCommand {
    #[command(flatten)]
    pub call: CallArgs,
    /// Target server, host:port.
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct FlashSaleArgs {
    /// Units on sale (the stock of the one product).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000_000))]
    pub units: i64,
    /// Buyers, each placing one Reserve of 1 unit (this is -n).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub buyers: u64,
    /// Target server, host:port.
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct BrowseArgs {
    /// Products seeded and browsed.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub products: u64,
    /// Keys (products) asked for in each GetAvailability.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub keys: u64,
    /// Stock of each product.
    #[arg(long, default_value_t = 1000)]
    pub stock: i64,
    /// Target server, host:port.
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CheckoutOpts {
    /// Products seeded; each checkout reserves 1 unit of a random one.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub products: u64,
    /// Stock of each product.
    #[arg(long, default_value_t = 1_000_000)]
    pub stock: i64,
    /// Hold timer of the checkouts' holds, in seconds (the abandoned ones expire after it).
    #[arg(long, default_value_t = 5)]
    pub hold_ttl: i64,
    /// Percentage of reserved holds confirmed into orders.
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub confirm: u8,
    /// Percentage of reserved holds released (the rest are left to expire).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub release: u8,
}

#[derive(Args, Debug)]
pub struct CheckoutArgs {
    #[command(flatten)]
    pub opts: CheckoutOpts,
    /// Target server, host:port.
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct MixedArgs {
    #[command(flatten)]
    pub opts: CheckoutOpts,
    /// Percentage of operations that are GetAvailability (the rest are checkouts).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub reads: u8,
    /// Keys asked for in each GetAvailability.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub keys: u64,
    /// Target server, host:port.
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// HealthCheckRequest.service ("" is the server as a whole).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Target server, host:port.
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReserveArgs {
    /// Products the holds are spread over, evenly (request i takes product i mod K).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub products: u64,
    /// One hot product: every hold on the same product (same as --products 1).
    #[arg(long)]
    pub hot: bool,
    /// Stock of each product.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub stock: i64,
    /// Release each hold right after it is placed (Reserve+Release pairs).
    #[arg(long)]
    pub release: bool,
    /// Lines per hold: hold i takes products i, i+1, … mod K, one unit each (lines on
    /// several shards, unless the server has one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10))]
    pub lines: u64,
    /// Target server, host:port.
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CheckpointReadArgs {
    /// Products filled beforehand under --prefix ({prefix}-p0.. at {prefix}-wh), e.g. by
    /// `reserve --products N -n N --prefix P`.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub products: u64,
    /// Keys (products) asked for in each GetAvailability.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub keys: u64,
    /// Positions the churn changes (the first ones, in order), so that the shard's
    /// pending checkpoint entries cross their threshold during the reads.
    #[arg(long, default_value_t = 1_000_000)]
    pub churn_positions: u64,
    /// Positions in one churn SetStock (at most the server's STOCK_BATCH_MAX).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub churn_batch: u64,
    /// Churn SetStock calls per second.
    #[arg(long, default_value_t = 1000.0)]
    pub churn_rps: f64,
    /// When the churn starts, after the reads.
    #[arg(long, value_parser = duration::parse, default_value = "1s")]
    pub churn_after: Duration,
    /// The quantity the churn sets (give one other than the fill's, so each is a change).
    #[arg(long, default_value_t = 1000)]
    pub stock: i64,
    /// Target server, host:port.
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ghz_style_and_subcommands() {
        let cli = Cli::try_parse_from([
            "stockd-load",
            "--call",
            "inventory.v1.InventoryService.Reserve",
            "-c",
            "10",
            "-n",
            "100",
            "-d",
            "{}",
            "127.0.0.1:1",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.load.concurrency, 10);
        assert_eq!(cli.host.as_deref(), Some("127.0.0.1:1"));
        let cli = Cli::try_parse_from([
            "stockd-load",
            "flash-sale",
            "--embedded",
            "-c",
            "7",
            "--units",
            "5",
        ])
        .unwrap();
        assert!(cli.load.embedded);
        assert_eq!(cli.load.concurrency, 7);
        match cli.command {
            Some(Command::FlashSale(a)) => assert_eq!(a.units, 5),
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["stockd-load", "-z", "2s", "health", "127.0.0.1:9"]).unwrap();
        assert_eq!(cli.load.duration, Some(Duration::from_secs(2)));
        match cli.command {
            Some(Command::Health(a)) => assert_eq!(a.host.as_deref(), Some("127.0.0.1:9")),
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["stockd-load", "reserve", "--skipFirst", "10", "--hot"]).unwrap();
        assert_eq!(cli.load.skip_first, 10);
    }
}

/// What the `fulfil` scenario reads.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FulfilRead {
    /// GetFulfilmentOptions of a --lines cart (home delivery, splits allowed).
    Fulfil,
    /// GetNetworkAvailability of one product over every location.
    Network,
    /// GetAvailability of --lines keys (random products at random locations).
    Keys,
}

#[derive(Args, Debug)]
pub struct FulfilArgs {
    /// What each request is.
    #[arg(long, value_enum, default_value_t = FulfilRead::Fulfil)]
    pub read: FulfilRead,
    /// Locations of the network (all ship home deliveries).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub locations: u64,
    /// Products seeded at every location (a third of the positions get none).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub products: u64,
    /// Lines of a cart (or keys of a GetAvailability).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub lines: u64,
    /// Stock of each stocked position.
    #[arg(long, default_value_t = 1_000_000)]
    pub stock: i64,
    /// Target server, host:port.
    #[arg(value_name = "HOST:PORT")]
    pub host: Option<String>,
}
