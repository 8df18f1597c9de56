//! Overload protection in front of the two services: a concurrency limit shared by every
//! connection, and load shedding, both tower layers.
//!
//! At most `--max-concurrent-requests` InventoryService and AdminService calls run at
//! once. A call beyond that is refused at once with RESOURCE_EXHAUSTED (load shedding)
//! before its request is decoded, so it reaches no shard and changes nothing; with
//! `--load-shed false` it waits for a slot instead (HTTP/2's stream limit bounds how many
//! wait). The health and reflection services are outside the limit: a probe must still
//! answer on a saturated server. The status comes from `status::to_status`, like every
//! other.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::Map;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::LoadShed;
use tower::util::{Either, MapErr};

use super::status::{ApiError, to_status};

/// The limit every guarded service shares.
#[derive(Clone, Debug)]
pub struct Overload {
    permits: Arc<Semaphore>,
    shed: bool,
}

impl Overload {
    /// At most `limit` calls at once; beyond it, refuse (`shed`) or wait.
    pub fn new(limit: usize, shed: bool) -> Overload {
        Overload {
            permits: Arc::new(Semaphore::new(limit)),
            shed,
        }
    }

    /// `service` behind the shared limit.
    pub fn guard<S>(&self, service: S) -> Guarded<S> {
        let limited = ConcurrencyLimit::with_semaphore(service, self.permits.clone());
        Guarded {
            inner: if self.shed {
                Either::Left(LoadShed::new(limited))
            } else {
                Either::Right(MapErr::new(
                    limited,
                    never as fn(Infallible) -> tower::BoxError,
                ))
            },
        }
    }
}

fn never(e: Infallible) -> tower::BoxError {
    match e {}
}

type Waiting<S> = MapErr<ConcurrencyLimit<S>, fn(Infallible) -> tower::BoxError>;
type Inner<S> = Either<LoadShed<ConcurrencyLimit<S>>, Waiting<S>>;

/// A service behind the limit; it keeps its gRPC name, so tonic routes to it as before.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: Inner<S>,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

type Recover = fn(Result<Response<Body>, tower::BoxError>) -> Result<Response<Body>, Infallible>;

/// The answer to a refused call. The inner service never fails, so the only error is
/// LoadShed's `Overloaded`.
fn recover(result: Result<Response<Body>, tower::BoxError>) -> Result<Response<Body>, Infallible> {
    Ok(result.unwrap_or_else(|_| to_status(ApiError::Overloaded).into_http()))
}

impl<S> Service<Request<Body>> for Guarded<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Map<<Inner<S> as Service<Request<Body>>>::Future, Recover>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // LoadShed is always ready (it refuses in `call` instead); ConcurrencyLimit waits
        // for a permit. Neither fails: the inner service is infallible.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.inner.call(request).map(recover as Recover)
    }
}
