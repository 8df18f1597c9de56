//! `stockd-load`: a ghz-compatible load generator for stockd, with scenarios that seed
//! their own data (flash sale, browse, checkout, mixed, health, reserve).
//!
//! See `stockd-load --help`. The modules live in `src/bin/stockd_load/`:
//! - `cli`: the command line (ghz's options, one subcommand per scenario);
//! - `runner`: load threads (one single-threaded runtime each), workers, open and closed
//!   loop, per-worker HdrHistograms, progress bar;
//! - `rpc`: methods, the pre-encoded-bytes codec, connections, the loopback check;
//! - `pbjson` and `template`: `-d` data (protobuf JSON mapping, ghz's template variables);
//! - `scenarios`: the loads and their seeding and checks;
//! - `report`: ghz's text summary and JSON report;
//! - `embedded`: `--embedded`, a stockd in this process.

mod cli;
mod duration;
mod embedded;
mod pbjson;
mod report;
mod rpc;
mod runner;
mod scenarios;
mod template;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use serde_json::Value;
use stockd::storage::Durability;
use tonic::transport::Channel;

use cli::{CallArgs, Cli, Command, DurabilityArg, Format, LoadArgs};
use report::{Report, ScenarioReport};
use rpc::Method;
use runner::{Outcome, Plan, Target};
use scenarios::{Counts, Payload};
use template::Template;

/// The default target, like ghz's examples.
const DEFAULT_TARGET: &str = "127.0.0.1:50051";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The main thread seeds, reports and draws the progress bar; the load itself runs on
    // its own threads (see runner::run).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stockd-load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stockd-load: {e}");
            ExitCode::from(2)
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// What to run.
enum Mode {
    Call(CallArgs),
    FlashSale {
        units: i64,
        buyers: u64,
    },
    Browse {
        products: u64,
        keys: u64,
        stock: i64,
    },
    Checkout(cli::CheckoutOpts),
    Mixed {
        opts: cli::CheckoutOpts,
        reads: u8,
        keys: u64,
    },
    Health {
        service: String,
    },
    Reserve {
        products: u64,
        hot: bool,
        stock: i64,
        release: bool,
    },
}

/// A finished run, ready to report.
struct Ran {
    outcome: Outcome,
    scenario: Option<ScenarioReport>,
    call: String,
    data: Option<Value>,
}

async fn execute(cli: Cli) -> Result<ExitCode, String> {
    let Cli {
        command,
        call,
        load,
        host,
    } = cli;
    let (mode, sub_host) = match command {
        Some(Command::Call(c)) => (Mode::Call(c.call), c.host),
        Some(Command::FlashSale(a)) => (
            Mode::FlashSale {
                units: a.units,
                buyers: a.buyers,
            },
            a.host,
        ),
        Some(Command::Browse(a)) => (
            Mode::Browse {
                products: a.products,
                keys: a.keys,
                stock: a.stock,
            },
            a.host,
        ),
        Some(Command::Checkout(a)) => (Mode::Checkout(a.opts), a.host),
        Some(Command::Mixed(a)) => (
            Mode::Mixed {
                opts: a.opts,
                reads: a.reads,
                keys: a.keys,
            },
            a.host,
        ),
        Some(Command::Health(a)) => (Mode::Health { service: a.service }, a.host),
        Some(Command::Reserve(a)) => (
            Mode::Reserve {
                products: if a.hot { 1 } else { a.products },
                hot: a.hot,
                stock: a.stock,
                release: a.release,
            },
            a.host,
        ),
        None if call.call.is_some() || call.dump_request.is_some() => (Mode::Call(call), None),
        None => {
            return Err(
                "nothing to run: give --call (ghz style) or a scenario: flash-sale, browse, checkout, \
                 mixed, health, reserve, call (see stockd-load --help)"
                    .into(),
            );
        }
    };
    let host = sub_host.or(host);

    // The raw call is parsed and checked before anything connects.
    let call_setup = match &mode {
        Mode::Call(args) => Some(call_setup(args)?),
        _ => None,
    };
    if let (Mode::Call(args), Some(setup)) = (&mode, &call_setup)
        && let Some(path) = &args.dump_request
    {
        return dump_request(setup, path).map(|_| ExitCode::SUCCESS);
    }

    let tty = std::io::stderr().is_terminal();
    let say = |message: &str| {
        if tty {
            eprintln!("{message}");
        }
    };

    let server = if load.embedded {
        if host.is_some() {
            return Err("--embedded starts its own server: give no HOST:PORT".into());
        }
        let durability = match load.durability {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Async => Durability::Async {
                flush_interval: Duration::from_millis(load.flush_interval_ms.max(1)),
            },
        };
        let server = tokio::task::spawn_blocking(move || embedded::start(durability, load.shards))
            .await
            .map_err(|e| format!("embedded server: {e}"))??;
        say(&format!(
            "embedded stockd on {} (durability {:?}, data in {})",
            server.addr,
            load.durability,
            server.data_dir.display()
        ));
        Some(server)
    } else {
        None
    };
    let addr = match &server {
        Some(s) => s.addr.clone(),
        None => rpc::check_target(host.as_deref().unwrap_or(DEFAULT_TARGET), load.allow_remote)?,
    };

    let concurrency = load.concurrency as usize;
    let threads = load
        .cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let target = Target {
        addr: addr.clone(),
        connections: load
            .connections
            .map_or_else(|| concurrency.min(4), |c| c as usize)
            .max(1),
        threads,
        connect_timeout: load.connect_timeout,
    };
    let connections = target.connections_for(concurrency);
    let result = async {
        let seed = rpc::connect(&addr, 1, load.connect_timeout)
            .await?
            .remove(0);
        run_mode(mode, call_setup, &load, &target, seed, tty).await
    }
    .await;

    if let Some(server) = server {
        say("stopping the embedded stockd");
        let stopped = tokio::task::spawn_blocking(move || server.stop())
            .await
            .map_err(|e| format!("embedded server: {e}"))?;
        if let Err(e) = stopped {
            eprintln!("stockd-load: warning: {e}");
        }
    }
    let ran = result?;

    let failed = ran
        .scenario
        .as_ref()
        .and_then(|s| s.check.as_ref())
        .is_some_and(|c| c.is_err());
    let plan = plan(&load, tty);
    let report = Report {
        name: load.name.as_deref(),
        call: ran.call,
        host: addr,
        plan: &plan,
        connections,
        data: ran.data,
        outcome: &ran.outcome,
        scenario: ran.scenario,
        date: SystemTime::now(),
    };
    let text = match load.format {
        Format::Summary => report.summary(),
        Format::Json => format!("{}\n", report.json()),
        Format::Pretty => format!(
            "{}\n",
            serde_json::to_string_pretty(&report.json()).map_err(|e| e.to_string())?
        ),
    };
    match &load.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }
    if failed {
        if let Some(Err(why)) = report.scenario.as_ref().and_then(|s| s.check.as_ref()) {
            eprintln!("FAIL: {why}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn plan(load: &LoadArgs, progress: bool) -> Plan {
    Plan {
        concurrency: load.concurrency as usize,
        total: load.total,
        duration: load.duration,
        rps: load.rps,
        skip_first: load.skip_first,
        count_errors: load.count_errors,
        timeout: load.timeout,
        progress,
    }
}

/// A parsed raw call.
struct CallSetup {
    method: Method,
    template: Template,
    /// The data as JSON (request 0 rendered), for the report.
    data: Value,
    /// Request 0, encoded.
    first: prost::bytes::Bytes,
}

fn call_setup(args: &CallArgs) -> Result<CallSetup, String> {
    let call = args
        .call
        .as_deref()
        .ok_or("--call is required, e.g. --call inventory.v1.InventoryService.GetAvailability")?;
    let method = Method::parse(call)?;
    let text = match (&args.data, &args.data_file) {
        (Some(d), _) => d.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        (None, None) => "{}".to_string(),
    };
    let template = Template::parse(&text)?;
    let (rendered, first) = scenarios::render_once(method, &template, 0, "g0c0")?;
    let data = serde_json::from_str(&rendered).unwrap_or(Value::Null);
    Ok(CallSetup {
        method,
        template,
        data,
        first,
    })
}

/// Writes request 0 framed as gRPC does on the wire: a 0 (uncompressed) byte, the
/// big-endian length, the protobuf bytes.
fn dump_request(setup: &CallSetup, path: &std::path::Path) -> Result<(), String> {
    let mut framed = Vec::with_capacity(5 + setup.first.len());
    framed.push(0u8);
    framed.extend_from_slice(&(setup.first.len() as u32).to_be_bytes());
    framed.extend_from_slice(&setup.first);
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(&framed).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())
    } else {
        std::fs::write(path, framed).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

async fn run_mode(
    mode: Mode,
    call_setup: Option<CallSetup>,
    load: &LoadArgs,
    target: &Target,
    seed_channel: Channel,
    tty: bool,
) -> Result<Ran, String> {
    let say = |message: String| {
        if tty {
            eprintln!("{message}");
        }
    };
    let mut plan = plan(load, tty);
    let prefix = scenarios::run_prefix(load.prefix.as_deref());
    let connections = target.connections_for(plan.concurrency);
    match mode {
        Mode::Call(_) => {
            let setup = call_setup.expect("parsed before connecting");
            let payload = if setup.template.is_static() {
                Payload::Static(setup.first.clone())
            } else {
                Payload::Template(setup.template.clone())
            };
            let call_load = Arc::new(scenarios::CallLoad {
                method: setup.method,
                payload,
                names: setup.method.names(),
                connections,
            });
            let outcome = runner::run(call_load, &plan, target).await?;
            Ok(Ran {
                outcome,
                scenario: None,
                call: setup.method.names().fully_qualified,
                data: Some(setup.data),
            })
        }
        Mode::Health { service } => {
            let body = scenarios::encode(&tonic_health::pb::HealthCheckRequest {
                service: service.clone(),
            });
            let health = Arc::new(scenarios::CallLoad {
                method: Method::HealthCheck,
                payload: Payload::Static(body),
                names: Method::HealthCheck.names(),
                connections,
            });
            let outcome = runner::run(health, &plan, target).await?;
            let mut report = ScenarioReport::named("health");
            report.line("Service", format!("{service:?}"));
            Ok(Ran {
                outcome,
                scenario: Some(report),
                call: Method::HealthCheck.names().fully_qualified,
                data: Some(serde_json::json!({ "service": service })),
            })
        }
        Mode::Browse {
            products,
            keys,
            stock,
        } => {
            say(format!(
                "seeding {products} products ({prefix}-p*) with {stock} units each"
            ));
            let seeded = scenarios::seed(
                &seed_channel,
                &load.channel,
                &prefix,
                products as usize,
                stock,
            )
            .await?;
            let pool = scenarios::browse_pool(&seeded, keys as usize);
            let browse = Arc::new(scenarios::BrowseLoad { pool });
            let outcome = runner::run(browse, &plan, target).await?;
            let mut report = ScenarioReport::named("browse");
            report.line(
                "Products",
                format!(
                    "{products} at {}, {keys} random keys per request",
                    seeded.location
                ),
            );
            report.json.insert("products".into(), products.into());
            report.json.insert("keys".into(), keys.into());
            Ok(Ran {
                outcome,
                scenario: Some(report),
                call: Method::GetAvailability.names().fully_qualified,
                data: None,
            })
        }
        Mode::Reserve {
            products,
            hot,
            stock,
            release,
        } => {
            say(format!(
                "seeding {products} products ({prefix}-p*) with {stock} units each"
            ));
            let seeded = scenarios::seed(
                &seed_channel,
                &load.channel,
                &prefix,
                products as usize,
                stock,
            )
            .await?;
            let reserve = Arc::new(scenarios::ReserveLoad {
                seeded,
                release,
                counts: Counts::default(),
            });
            let outcome = runner::run(reserve.clone(), &plan, target).await?;
            Ok(Ran {
                scenario: Some(reserve.report(&outcome, hot)),
                outcome,
                call: Method::Reserve.names().fully_qualified,
                data: None,
            })
        }
        Mode::FlashSale { units, buyers } => {
            if load.total.is_some() {
                say("flash-sale: -n is the number of buyers (--buyers); ignoring -n".into());
            }
            plan.total = Some(buyers);
            let product = vec![format!("{prefix}-flash")];
            say(format!("seeding {units} units of {}", product[0]));
            let seeded =
                scenarios::seed_products(&seed_channel, &load.channel, &prefix, product, units)
                    .await?;
            let sale = Arc::new(scenarios::FlashSaleLoad {
                seeded,
                units,
                counts: Counts::default(),
                started: OnceLock::new(),
                sold_out_ns: AtomicU64::new(0),
            });
            let outcome = runner::run(sale.clone(), &plan, target).await?;
            let report = sale.verify(&seed_channel, &outcome, buyers).await;
            Ok(Ran {
                outcome,
                scenario: Some(report),
                call: Method::Reserve.names().fully_qualified,
                data: None,
            })
        }
        Mode::Checkout(opts) => {
            let shape = Shape {
                reads: 0,
                keys: 3,
                name: "checkout",
            };
            checkout(
                opts,
                shape,
                &prefix,
                load,
                &plan,
                target,
                &seed_channel,
                say,
            )
            .await
        }
        Mode::Mixed { opts, reads, keys } => {
            let shape = Shape {
                reads,
                keys,
                name: "mixed",
            };
            checkout(
                opts,
                shape,
                &prefix,
                load,
                &plan,
                target,
                &seed_channel,
                say,
            )
            .await
        }
    }
}

/// What distinguishes `mixed` from `checkout`.
struct Shape {
    reads: u8,
    keys: u64,
    name: &'static str,
}

#[allow(clippy::too_many_arguments)]
async fn checkout(
    opts: cli::CheckoutOpts,
    shape: Shape,
    prefix: &str,
    load: &LoadArgs,
    plan: &Plan,
    target: &Target,
    seed_channel: &Channel,
    say: impl Fn(String),
) -> Result<Ran, String> {
    let Shape { reads, keys, name } = shape;
    if u16::from(opts.confirm) + u16::from(opts.release) > 100 {
        return Err(
            "--confirm plus --release must be at most 100 (the rest are left to expire)".into(),
        );
    }
    if opts.hold_ttl != 0 && !(1..=86_400).contains(&opts.hold_ttl) {
        return Err(
            "--hold-ttl must be between 1 and 86400 seconds (0: the server's default)".into(),
        );
    }
    say(format!(
        "seeding {} products ({prefix}-p*) with {} units each",
        opts.products, opts.stock
    ));
    let seeded = scenarios::seed(
        seed_channel,
        &load.channel,
        prefix,
        opts.products as usize,
        opts.stock,
    )
    .await?;
    let pool = if reads > 0 {
        scenarios::browse_pool(&seeded, keys as usize)
    } else {
        Vec::new()
    };
    let checkout = Arc::new(scenarios::CheckoutLoad {
        seeded,
        hold_ttl: opts.hold_ttl,
        confirm: opts.confirm,
        release: opts.release,
        reads,
        pool,
        counts: Counts::default(),
    });
    let outcome = runner::run(checkout.clone(), plan, target).await?;
    Ok(Ran {
        scenario: Some(checkout.report(name, &outcome)),
        outcome,
        call: format!("{name} (GetAvailability, Reserve, ConfirmHold, ReleaseHold)"),
        data: None,
    })
}
