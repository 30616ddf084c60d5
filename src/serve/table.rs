//! The route table: every route the server has, with what the OpenAPI
//! document says of it. The router (`routes.rs`) and the document
//! (`openapi.rs`) are both made from it, so they cannot disagree.

/// One route: method, path (axum syntax: `{param}`, `{*rest}`), and what
/// the OpenAPI document says of it.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// `GET`, `PUT`, `POST` or `DELETE`.
    pub method: &'static str,
    /// The path.
    pub path: &'static str,
    /// One line for the document.
    pub summary: &'static str,
    /// The request body's media type, if it takes one.
    pub body: Option<&'static str>,
    /// The success response's media type.
    pub returns: &'static str,
}

const JSON: &str = "application/json";
const BYTES: &str = "application/octet-stream";

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
    returns: &'static str,
) -> Route {
    Route {
        method,
        path,
        summary,
        body,
        returns,
    }
}

/// Every route the server has.
pub const ROUTES: &[Route] = &[
    r(
        "GET",
        "/healthz",
        "Liveness: 200 while the server runs (no token needed).",
        None,
        "text/plain",
    ),
    r(
        "GET",
        "/metrics",
        "Prometheus metrics: requests, latencies, active sandboxes, snapshot memory.",
        None,
        "text/plain",
    ),
    r("GET", "/v1/openapi.json", "This document.", None, JSON),
    r(
        "POST",
        "/v1/run",
        "Fork a base snapshot, run a module in the fork, answer with its exit code, output and what was asked.",
        Some(JSON),
        JSON,
    ),
    r("GET", "/v1/modules", "List modules.", None, JSON),
    r(
        "PUT",
        "/v1/modules/{name}",
        "Upload a module (component or preview1 core module, binary or WAT) under a name; compiled once per content hash.",
        Some(BYTES),
        JSON,
    ),
    r(
        "GET",
        "/v1/modules/{name}",
        "Describe a module.",
        None,
        JSON,
    ),
    r(
        "DELETE",
        "/v1/modules/{name}",
        "Forget a module name.",
        None,
        JSON,
    ),
    r(
        "GET",
        "/v1/snapshots",
        "List snapshots: held ones, and names of ones only in the store.",
        None,
        JSON,
    ),
    r(
        "PUT",
        "/v1/snapshots/{name}",
        "Register a base snapshot under a name: a checkpoint file as the body, or JSON {\"root\": HEX} (from --store) or {\"url\": STORE/ROOT}.",
        Some(BYTES),
        JSON,
    ),
    r(
        "GET",
        "/v1/snapshots/{name}",
        "Describe a snapshot (by name or root hash): root, names, usage, memory charge.",
        None,
        JSON,
    ),
    r(
        "DELETE",
        "/v1/snapshots/{name}",
        "Delete a name (its snapshot may then be evicted) or, by root hash, a snapshot and all its names.",
        None,
        JSON,
    ),
    r(
        "GET",
        "/v1/snapshots/{name}/checkpoint",
        "Download a snapshot as a checkpoint file.",
        None,
        BYTES,
    ),
    r(
        "GET",
        "/v1/snapshots/{name}/files/{*path}",
        "A file's bytes.",
        None,
        BYTES,
    ),
    r(
        "GET",
        "/v1/snapshots/{name}/dirs",
        "List the root directory.",
        None,
        JSON,
    ),
    r(
        "GET",
        "/v1/snapshots/{name}/dirs/{*path}",
        "List a directory.",
        None,
        JSON,
    ),
    r(
        "GET",
        "/v1/snapshots/{name}/diff/{other}",
        "What changed from one snapshot to another.",
        None,
        JSON,
    ),
];
