//! Who may call what: the policy's check before a call reaches its service, and the
//! channel check its handler makes once the request is decoded.
//!
//! `Access` wraps InventoryService and AdminService (health and reflection stay open).
//! It finds the caller's identity (a bearer token if the call carries one, else its client
//! certificate's names, `grpc::identity`), answers UNAUTHENTICATED when there is none or
//! the policy does not know it, PERMISSION_DENIED when the method is not allowed, and
//! otherwise puts the caller (`Caller`) in the request's extensions. A handler whose
//! request names a channel calls [`check_channel`]. Without a policy there is no `Access`
//! and no `Caller`: every call is allowed, as before policies existed.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;

use super::identity::Tokens;
use super::listen::Peer;
use super::policy::Policy;
use super::reload::Watched;
use super::status::{ApiError, to_status};
use crate::metrics;

/// The caller of an allowed call.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: Arc<str>,
    /// The channels it may use; `None`: every channel.
    pub channels: Option<Arc<HashSet<String>>>,
}

/// The policy and the tokens, as currently loaded.
#[derive(Clone)]
pub struct Rules {
    pub policy: Watched<Policy>,
    pub tokens: Option<Watched<Tokens>>,
}

/// PERMISSION_DENIED unless the caller may use `channel_ref` (always allowed without a
/// policy). For handlers whose request names a channel.
pub fn check_channel<T>(
    request: &tonic::Request<T>,
    channel_ref: &str,
) -> Result<(), tonic::Status> {
    let Some(caller) = request.extensions().get::<Caller>() else {
        return Ok(());
    };
    match &caller.channels {
        Some(channels) if !channels.contains(channel_ref) => {
            metrics::auth_denied("channel");
            let why = if channel_ref.is_empty() {
                let mut names: Vec<&str> = channels.iter().map(String::as_str).collect();
                names.sort_unstable();
                format!(
                    "{} may use only the channels {names:?}, and this call names none: it would \
                     show every channel's",
                    caller.identity
                )
            } else {
                format!("{} may not use channel {channel_ref:?}", caller.identity)
            };
            Err(to_status(ApiError::PermissionDenied(why)))
        }
        _ => Ok(()),
    }
}

/// Whether the caller of `request` may use only some channels (a call by hold ref must
/// then look the hold's channel up before it acts).
pub fn is_channel_scoped<T>(request: &tonic::Request<T>) -> bool {
    request
        .extensions()
        .get::<Caller>()
        .is_some_and(|c| c.channels.is_some())
}

impl Rules {
    /// The caller of `request`, or why it is refused (and the metric's reason).
    fn admit<B>(&self, request: &Request<B>) -> Result<Caller, (&'static str, ApiError)> {
        let path = request.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let names: Vec<Arc<str>> = match bearer(request) {
            Some(token) => {
                let tokens = self.tokens.as_ref().map(|t| t.current());
                let identity = tokens.as_ref().and_then(|t| t.identity(token).cloned());
                let Some(identity) = identity else {
                    let e = ApiError::Unauthenticated("the bearer token is not known".into());
                    return Err(("unknown_token", e));
                };
                vec![identity]
            }
            None => request
                .extensions()
                .get::<Peer>()
                .map(|p| p.cert_names.iter().map(|n| Arc::from(n.as_str())).collect())
                .unwrap_or_default(),
        };
        if names.is_empty() {
            let e = ApiError::Unauthenticated(
                "no identity: present a client certificate or a bearer token".into(),
            );
            return Err(("no_identity", e));
        }
        let policy = self.policy.current();
        let Some((identity, grant)) = policy.grant(&names) else {
            let e = ApiError::Unauthenticated(format!("{} is not in the policy", names.join(", ")));
            return Err(("unknown_identity", e));
        };
        if !grant.allows(service, method) {
            let e =
                ApiError::PermissionDenied(format!("{identity} may not call {service}/{method}"));
            return Err(("method", e));
        }
        Ok(Caller {
            identity: Arc::from(identity),
            channels: grant.channels.clone(),
        })
    }
}

/// The token of an `authorization: Bearer …` header.
fn bearer<B>(request: &Request<B>) -> Option<&str> {
    let value = request.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `S` behind the policy; without one (`None`), every call passes.
#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    rules: Option<Rules>,
}

impl<S> Access<S> {
    pub fn new(inner: S, rules: Option<Rules>) -> Access<S> {
        Access { inner, rules }
    }
}

impl<S: NamedService> NamedService for Access<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Access<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let Some(rules) = &self.rules else {
            return Either::Right(self.inner.call(request));
        };
        match rules.admit(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Right(self.inner.call(request))
            }
            Err((reason, refused)) => {
                metrics::auth_denied(reason);
                Either::Left(ready(Ok(to_status(refused).into_http())))
            }
        }
    }
}
