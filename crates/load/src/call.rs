//! The raw call, as ghz makes it: `--call` names the method, `-d` the request in the
//! protobuf JSON mapping with ghz's template variables; `--dump-request` writes it for
//! h2load instead.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::SmallRng;
use serde_json::Value;
use tonic::Status;

use crate::cli::CallArgs;
use crate::report::Ran;
use crate::rpc::{self, Client, Framed};
use crate::runner::{self, Load, Recorder};
use crate::scenarios::rng_for;
use crate::schema::Method;
use crate::session::Session;
use crate::template::{Context, Template};

/// A raw call, parsed and checked before anything connects.
pub struct Setup {
    method: Method,
    template: Template,
    /// The data as JSON (request 0 rendered), for the report.
    data: Value,
    /// Request 0, encoded and framed.
    first: Framed,
}

impl Setup {
    pub fn parse(args: &CallArgs) -> Result<Setup, String> {
        let call = args.call.as_deref().ok_or(
            "--call is required, e.g. --call inventory.v1.InventoryService.GetAvailability",
        )?;
        let method = Method::parse(call)?;
        let text = match (&args.data, &args.data_file) {
            (Some(d), _) => d.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            (None, None) => "{}".to_string(),
        };
        let template = Template::parse(&text)?;
        let (rendered, first) = render_once(method, &template, 0, "g0c0")?;
        let data = serde_json::from_str(&rendered).unwrap_or(Value::Null);
        Ok(Setup {
            method,
            template,
            data,
            first,
        })
    }

    /// Writes request 0 framed as gRPC does on the wire: a 0 (uncompressed) byte, the
    /// big-endian length, the protobuf bytes.
    pub fn dump_request(&self, path: &Path) -> Result<(), String> {
        let framed = self.first.wire();
        if path.as_os_str() == "-" {
            let mut out = std::io::stdout().lock();
            out.write_all(framed).map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())
        } else {
            std::fs::write(path, framed)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
    }
}

/// Runs the call under the session's plan.
pub async fn run(setup: Setup, session: &Session) -> Result<Ran, String> {
    let payload = if setup.template.is_static() {
        Payload::Static(setup.first.clone())
    } else {
        Payload::Template(setup.template.clone())
    };
    let load = Arc::new(CallLoad {
        method: setup.method,
        payload,
        connections: session.connections(),
    });
    let outcome = runner::run(load, &session.plan(), &session.target).await?;
    Ok(Ran {
        outcome,
        scenario: None,
        call: setup.method.names().fully_qualified.clone(),
        data: Some(setup.data),
    })
}

/// The request of call number `n`, rendered as worker `worker_id` would.
fn render_once(
    method: Method,
    template: &Template,
    n: u64,
    worker_id: &str,
) -> Result<(String, Framed), String> {
    let mut text = String::new();
    let mut rng = rng_for(0);
    template.render(
        &Context {
            request_number: n,
            worker_id,
            method: method.names(),
        },
        &mut rng,
        &mut text,
    );
    let body = method.encode_json(&text)?;
    Ok((text, Framed::from_message(&body)))
}

/// What a call sends.
pub enum Payload {
    /// Data without template actions: encoded and framed once for the whole run.
    Static(Framed),
    /// Rendered, parsed and encoded per request.
    Template(Template),
}

/// One method called over and over (the raw call, and `health`).
pub struct CallLoad {
    pub method: Method,
    pub payload: Payload,
    /// Connections in all, for ghz's worker ids (`g{worker}c{connection}`).
    pub connections: usize,
}

pub struct CallWorker {
    client: Client,
    id: String,
    rng: SmallRng,
    text: String,
}

impl Load for CallLoad {
    type Worker = CallWorker;

    fn worker(&self, index: usize, client: Client) -> CallWorker {
        CallWorker {
            client,
            id: format!("g{index}c{}", index % self.connections.max(1)),
            rng: rng_for(index),
            text: String::new(),
        }
    }

    async fn run(&self, w: &mut CallWorker, n: u64, rec: &mut Recorder) {
        let body = match &self.payload {
            Payload::Static(b) => Ok(b.clone()),
            Payload::Template(t) => {
                let ctx = Context {
                    request_number: n,
                    worker_id: &w.id,
                    method: self.method.names(),
                };
                t.render(&ctx, &mut w.rng, &mut w.text);
                self.method
                    .encode_json(&w.text)
                    .map(|m| Framed::from_message(&m))
            }
        };
        let _ = match body {
            Ok(body) => {
                rec.call(
                    self.method,
                    rpc::unary::<()>(&mut w.client, self.method, body),
                )
                .await
            }
            Err(e) => {
                rec.call(self.method, async { Err(Status::invalid_argument(e)) })
                    .await
            }
        };
    }
}
