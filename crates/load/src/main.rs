//! `stockd-load`: a ghz-compatible load generator for stockd, with scenarios that seed
//! their own data (flash sale, browse, checkout, mixed, health, reserve).
//!
//! This file parses the command line and dispatches its subcommand; see
//! `stockd-load --help` for how to run it.
//!
//! # Layout
//!
//! - `cli`: the command line: ghz's options, one clap subcommand per scenario.
//! - `session`: one run's surroundings: target or embedded server, plan, the report at the end.
//! - `call`: the raw ghz-style call (`--call`, `-d`, `--dump-request`).
//! - `scenarios`: the scenarios, one file each, and the seeding they share.
//! - `schema`: the API's descriptors (prost-reflect): callable methods, `-d` JSON to protobuf.
//! - `template`: ghz's template variables in `-d`.
//! - `runner`: load threads, workers, open and closed loop, per-thread HdrHistograms.
//! - `h2client`: the load's raw HTTP/2 gRPC client (pre-framed requests, reconnects).
//! - `rpc`: tonic channels for seeding, status names, the loopback check.
//! - `report`: ghz's text summary and JSON report.
//! - `duration`: ghz's durations (`-z 10s`, `-t 500ms`) through humantime.
//! - `embedded`: `--embedded`, a stockd in this process.
//! - `watch`: `--watch`, a WatchEvents stream beside the load.

mod call;
mod cli;
mod duration;
mod embedded;
mod h2client;
mod report;
mod rpc;
mod runner;
mod scenarios;
mod schema;
mod session;
mod template;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;

use cli::{Cli, Command};
use scenarios::{browse, checkout, checkpoint_read, flash_sale, fulfil, health, reserve};
use session::Session;

/// How long the main runtime waits for stray tasks at exit.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

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
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    code
}

async fn execute(cli: Cli) -> Result<ExitCode, String> {
    let (command, host, load) = cli.into_parts()?;
    // A raw call is parsed and checked before anything connects; --dump-request ends there.
    let call = match &command {
        Command::Call(c) => {
            let setup = call::Setup::parse(&c.call)?;
            if let Some(path) = &c.call.dump_request {
                return setup.dump_request(path).map(|()| ExitCode::SUCCESS);
            }
            Some(setup)
        }
        _ => None,
    };
    let session = Session::open(load, host).await?;
    let ran = match &command {
        Command::Call(_) => call::run(call.expect("parsed above"), &session).await,
        Command::FlashSale(a) => flash_sale::run(a, &session).await,
        Command::Browse(a) => browse::run(a, &session).await,
        Command::Checkout(a) => checkout::run_checkout(a, &session).await,
        Command::Mixed(a) => checkout::run_mixed(a, &session).await,
        Command::Health(a) => health::run(a, &session).await,
        Command::Reserve(a) => reserve::run(a, &session).await,
        Command::CheckpointRead(a) => checkpoint_read::run(a, &session).await,
        Command::Fulfil(a) => fulfil::run(a, &session).await,
    };
    session.finish(ran).await
}
