//! The router made from the route table (`table.rs`), with its
//! middleware: bearer-token auth, request metrics and logs, and JSON
//! answers for unknown routes and methods.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, on};

use super::error::{ApiError, Code};
use super::table::{ROUTES, Route};
use super::{App, browse, catalog, openapi, run};

/// The handler of a route of the table.
fn handler(route: &Route) -> Option<MethodRouter<Arc<App>>> {
    use axum::routing::MethodFilter as M;
    let h = match (route.method, route.path) {
        ("GET", "/healthz") => on(M::GET, || async { "ok\n" }),
        ("GET", "/metrics") => on(M::GET, catalog::metrics),
        ("GET", "/v1/openapi.json") => on(M::GET, openapi::document),
        ("POST", "/v1/run") => on(M::POST, run::run),
        ("GET", "/v1/modules") => on(M::GET, catalog::list_modules),
        ("PUT", "/v1/modules/{name}") => on(M::PUT, catalog::put_module),
        ("GET", "/v1/modules/{name}") => on(M::GET, catalog::get_module),
        ("DELETE", "/v1/modules/{name}") => on(M::DELETE, catalog::delete_module),
        ("GET", "/v1/snapshots") => on(M::GET, catalog::list_snapshots),
        ("PUT", "/v1/snapshots/{name}") => on(M::PUT, catalog::put_snapshot),
        ("GET", "/v1/snapshots/{name}") => on(M::GET, catalog::get_snapshot),
        ("DELETE", "/v1/snapshots/{name}") => on(M::DELETE, catalog::delete_snapshot),
        ("GET", "/v1/snapshots/{name}/checkpoint") => on(M::GET, browse::checkpoint),
        ("GET", "/v1/snapshots/{name}/files/{*path}") => on(M::GET, browse::file),
        ("GET", "/v1/snapshots/{name}/dirs") => on(M::GET, browse::root_dir),
        ("GET", "/v1/snapshots/{name}/dirs/{*path}") => on(M::GET, browse::dir),
        ("GET", "/v1/snapshots/{name}/diff/{other}") => on(M::GET, browse::diff),
        _ => return None,
    };
    Some(h)
}

/// The router of every route in [`ROUTES`], with auth, metrics and logs.
pub fn router(app: Arc<App>) -> Router {
    let mut router: Router<Arc<App>> = Router::new();
    let mut by_path: Vec<(&str, MethodRouter<Arc<App>>)> = Vec::new();
    for route in ROUTES {
        let Some(h) = handler(route) else {
            tracing::error!(
                path = route.path,
                method = route.method,
                "a route without a handler"
            );
            continue;
        };
        match by_path.iter_mut().find(|(p, _)| *p == route.path) {
            Some((_, m)) => *m = std::mem::take(m).merge(h),
            None => by_path.push((route.path, h)),
        }
    }
    for (path, methods) in by_path {
        router = router.route(path, methods);
    }
    router
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// Refuses a request without the server's bearer token (`/healthz`
/// needs none). Tokens are compared by their hashes, in constant time.
async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(token) = &app.config.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if blake3::hash(g.trim().as_bytes()) == blake3::hash(token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => ApiError::new(Code::Unauthorized, "wrong bearer token").into_response(),
        None => ApiError::new(
            Code::Unauthorized,
            "this server needs a bearer token (Authorization: Bearer TOKEN)",
        )
        .into_response(),
    }
}

/// Counts and times every request by its route, and logs it.
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method: Method = req.method().clone();
    let resp = next.run(req).await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    app.metrics.request(&route, method.as_str(), status, took);
    tracing::debug!(%method, %route, status, took_us = took.as_micros() as u64, "request");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler_and_each_method_path_is_listed_once() {
        for (i, route) in ROUTES.iter().enumerate() {
            assert!(handler(route).is_some(), "{} {}", route.method, route.path);
            assert!(
                !ROUTES[..i]
                    .iter()
                    .any(|o| o.method == route.method && o.path == route.path),
                "{} {} twice",
                route.method,
                route.path
            );
        }
    }
}
