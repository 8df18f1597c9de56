//! `browse`: GetAvailability of a few random keys over K seeded products, the read path
//! a storefront takes.

use std::sync::Arc;

use super::{Worker, browse_pool, read_from_pool, seed_for, worker};
use crate::cli::BrowseArgs;
use crate::report::{Ran, ScenarioReport};
use crate::rpc::{Client, Framed};
use crate::runner::{self, Load, Recorder};
use crate::schema::Method;
use crate::session::Session;

pub async fn run(args: &BrowseArgs, session: &Session) -> Result<Ran, String> {
    let BrowseArgs {
        products,
        keys,
        stock,
        ..
    } = *args;
    let seeded = seed_for(session, products, stock).await?;
    let pool = browse_pool(&seeded, keys as usize);
    let browse = Arc::new(BrowseLoad { pool });
    let outcome = runner::run(browse, &session.plan(), &session.target).await?;
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
        call: Method::get_availability().names().fully_qualified.clone(),
        data: None,
    })
}

pub struct BrowseLoad {
    pub pool: Vec<Framed>,
}

impl Load for BrowseLoad {
    type Worker = Worker;

    fn worker(&self, index: usize, client: Client) -> Worker {
        worker(index, client)
    }

    async fn run(&self, w: &mut Worker, _n: u64, rec: &mut Recorder) {
        read_from_pool(&self.pool, w, rec).await;
    }
}
