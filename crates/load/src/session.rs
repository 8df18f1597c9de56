//! One run's surroundings: the server (given, or started `--embedded`), the load's
//! target and plan, the connection scenarios seed through, and, at the end, stopping the
//! embedded server and writing the report.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use stockd::storage::Durability;
use tonic::transport::Channel;

use crate::cli::{DurabilityArg, LoadArgs};
use crate::embedded::{self, Embedded};
use crate::report::{self, Ran, Report};
use crate::rpc;
use crate::runner::{Plan, Target};
use crate::scenarios;
use crate::watch::Watch;

/// The default target, like ghz's examples.
const DEFAULT_TARGET: &str = "127.0.0.1:50051";

/// Connections when --connections is not given: at most this many, fewer for fewer workers.
const DEFAULT_CONNECTIONS_MAX: usize = 4;

pub struct Session {
    pub load: LoadArgs,
    pub target: Target,
    /// A connection of its own for seeding and for checks after the load.
    pub seed: Channel,
    /// The prefix of every ref the run creates (`--prefix`, or a random one).
    pub prefix: String,
    /// Progress messages and bars only go to a terminal: piped output is the report alone.
    tty: bool,
    embedded: Option<Embedded>,
    /// `--watch`: the stream beside the load.
    watch: Option<Watch>,
}

impl Session {
    /// Starts the embedded server if asked, checks the target and connects.
    pub async fn open(load: LoadArgs, host: Option<String>) -> Result<Session, String> {
        let tty = std::io::stderr().is_terminal();
        let embedded = if load.embedded {
            if host.is_some() {
                return Err("--embedded starts its own server: give no HOST:PORT".into());
            }
            Some(start_embedded(&load, tty).await?)
        } else {
            None
        };
        let addr = match &embedded {
            Some(s) => s.addr.clone(),
            None => {
                rpc::check_target(host.as_deref().unwrap_or(DEFAULT_TARGET), load.allow_remote)?
            }
        };
        let target = target(&load, addr);
        let seed = match rpc::connect(&target.addr, 1, load.connect_timeout).await {
            Ok(mut channels) => channels.remove(0),
            Err(e) => {
                stop_embedded(embedded, tty).await?;
                return Err(e);
            }
        };
        let watch = if load.watch {
            match Watch::start(&target.addr, load.connect_timeout).await {
                Ok(w) => Some(w),
                Err(e) => {
                    stop_embedded(embedded, tty).await?;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let prefix = scenarios::run_prefix(load.prefix.as_deref());
        Ok(Session {
            load,
            target,
            seed,
            prefix,
            tty,
            embedded,
            watch,
        })
    }

    /// Tells the person at the terminal what is happening.
    pub fn say(&self, message: &str) {
        say(self.tty, message);
    }

    /// How much load, from the command line.
    pub fn plan(&self) -> Plan {
        let load = &self.load;
        Plan {
            concurrency: load.concurrency as usize,
            total: load.total,
            duration: load.duration,
            rps: load.rps,
            skip_first: load.skip_first,
            count_errors: load.count_errors,
            timeout: load.timeout,
            progress: self.tty,
        }
    }

    /// HTTP/2 connections the load opens.
    pub fn connections(&self) -> usize {
        self.target.connections_for(self.load.concurrency as usize)
    }

    /// Stops the embedded server, then reports `ran`; exit status 1 when a scenario's
    /// check failed.
    pub async fn finish(mut self, ran: Result<Ran, String>) -> Result<ExitCode, String> {
        let watch = match self.watch.take() {
            Some(w) => Some(w.finish().await),
            None => None,
        };
        stop_embedded(self.embedded.take(), self.tty).await?;
        let ran = ran?;
        let plan = self.plan();
        let report = Report {
            name: self.load.name.as_deref(),
            call: ran.call,
            host: self.target.addr.clone(),
            plan: &plan,
            connections: self.connections(),
            data: ran.data,
            outcome: &ran.outcome,
            scenario: ran.scenario,
            watch,
            date: SystemTime::now(),
        };
        report::write(&report, self.load.format, self.load.output.as_deref())?;
        if let Some(Err(why)) = report.scenario.as_ref().and_then(|s| s.check.as_ref()) {
            eprintln!("FAIL: {why}");
            return Ok(ExitCode::from(1));
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn say(tty: bool, message: &str) {
    if tty {
        eprintln!("{message}");
    }
}

fn target(load: &LoadArgs, addr: String) -> Target {
    let concurrency = load.concurrency as usize;
    Target {
        addr,
        connections: load
            .connections
            .map_or_else(|| concurrency.min(DEFAULT_CONNECTIONS_MAX), |c| c as usize)
            .max(1),
        threads: load
            .cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        connect_timeout: load.connect_timeout,
    }
}

async fn start_embedded(load: &LoadArgs, tty: bool) -> Result<Embedded, String> {
    let durability = match load.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Async => Durability::Async {
            flush_interval: Duration::from_millis(load.flush_interval_ms.max(1)),
        },
    };
    let shards = load.shards;
    let server = tokio::task::spawn_blocking(move || embedded::start(durability, shards))
        .await
        .map_err(|e| format!("embedded server: {e}"))??;
    say(
        tty,
        &format!(
            "embedded stockd on {} (durability {:?}, data in {})",
            server.addr,
            load.durability,
            server.data_dir.display()
        ),
    );
    Ok(server)
}

/// Stops the embedded server if there is one; a stop that fails is only a warning.
async fn stop_embedded(server: Option<Embedded>, tty: bool) -> Result<(), String> {
    let Some(server) = server else {
        return Ok(());
    };
    say(tty, "stopping the embedded stockd");
    let stopped = tokio::task::spawn_blocking(move || server.stop())
        .await
        .map_err(|e| format!("embedded server: {e}"))?;
    if let Err(e) = stopped {
        eprintln!("stockd-load: warning: {e}");
    }
    Ok(())
}
