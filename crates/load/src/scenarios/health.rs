//! `health`: grpc.health.v1.Health/Check, the floor of what any RPC costs on this stack.

use std::sync::Arc;

use crate::call::{CallLoad, Payload};
use crate::cli::HealthArgs;
use crate::report::{Ran, ScenarioReport};
use crate::runner;
use crate::scenarios::encode;
use crate::schema::Method;
use crate::session::Session;

pub async fn run(args: &HealthArgs, session: &Session) -> Result<Ran, String> {
    let service = &args.service;
    let body = encode(&tonic_health::pb::HealthCheckRequest {
        service: service.clone(),
    });
    let health = Arc::new(CallLoad {
        method: Method::health_check(),
        payload: Payload::Static(body),
        connections: session.connections(),
    });
    let outcome = runner::run(health, &session.plan(), &session.target).await?;
    let mut report = ScenarioReport::named("health");
    report.line("Service", format!("{service:?}"));
    Ok(Ran {
        outcome,
        scenario: Some(report),
        call: Method::health_check().names().fully_qualified.clone(),
        data: Some(serde_json::json!({ "service": service })),
    })
}
