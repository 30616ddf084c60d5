//! Registering, describing, listing and deleting modules and snapshots,
//! and the metrics page.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult, Code};
use super::metrics::Gauges;
use super::snapshots::check_name;
use super::{App, body, modules};

/// Runs `f` on a blocking thread once the gate gives a turn.
pub(super) async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    transfer: bool,
    f: impl FnOnce(&App) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let gate = if transfer { &app.transfers } else { &app.gate };
    let turn = gate.enter().await?;
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        f(&app)
    })
    .await
    .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let (bytes, budget, held, evicted) = app.snapshots.stats();
    let text = app.metrics.render(&Gauges {
        active: app.gate.busy(),
        waiting: app.gate.waiting(),
        snapshot_bytes: bytes,
        snapshot_budget: budget,
        snapshots: held,
        evicted,
        modules: app.modules.count(),
        body_bytes: app.bodies.held(),
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

fn module_json(name: &str, m: &modules::Module) -> Value {
    json!({"name": name, "hash": m.hash.to_hex().to_string(), "kind": m.kind(), "size": m.size})
}

/// `PUT /v1/modules/{name}`.
pub async fn put_module(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Body,
) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let bytes = body::read(&headers, req, app.config.max_upload, "module", &app.bodies).await?;
    // WAT parsing too takes a turn: it is as heavy as the body is long.
    let module = blocking(&app, false, move |app| {
        let binary = modules::to_binary(&bytes)?;
        drop(bytes);
        match app.modules.compiled(&blake3::hash(&binary)) {
            Some(m) => Ok(m),
            None => modules::compile(&app.engine, &binary, super::ARGV0).map(Arc::new),
        }
    })
    .await?;
    let module = app.modules.insert(&name, module)?;
    tracing::info!(%name, hash = %module.hash.to_hex(), kind = module.kind(), "module registered");
    Ok(Json(module_json(&name, &module)))
}

/// `GET /v1/modules/{name}`.
pub async fn get_module(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let m = app.modules.get(&name)?;
    Ok(Json(module_json(&name, &m)))
}

/// `DELETE /v1/modules/{name}`.
pub async fn delete_module(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    app.modules.remove(&name)?;
    Ok(Json(json!({"deleted": name})))
}

/// `GET /v1/modules`.
pub async fn list_modules(State(app): State<Arc<App>>) -> Json<Value> {
    let list: Vec<Value> = app
        .modules
        .list()
        .iter()
        .map(|(n, m)| module_json(n, m))
        .collect();
    Json(json!({ "modules": list }))
}

/// The JSON form of `PUT /v1/snapshots/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Import {
    /// A root hash in the server's `--store`.
    root: Option<String>,
    /// `STORE/ROOT` (needs `--allow-url-import`).
    url: Option<String>,
}

/// `PUT /v1/snapshots/{name}`: a checkpoint body, or JSON naming a tree
/// in a store.
pub async fn put_snapshot(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Body,
) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let root = if json_body {
        let bytes = body::read(&headers, req, app.config.max_body, "request", &app.bodies).await?;
        let import: Import = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("bad import request: {e}")))?;
        import_tree(&app, name.clone(), import).await?
    } else {
        let bytes = body::read(
            &headers,
            req,
            app.config.max_upload,
            "checkpoint",
            &app.bodies,
        )
        .await?;
        let n = name.clone();
        blocking(&app, false, move |app| {
            let snap =
                crate::Snapshot::load_from_with_limits(&bytes[..], None, &app.config.base_limits)
                    .map_err(|e| {
                    let mut err = ApiError::from(e);
                    if err.code == Code::NotFound || err.code == Code::Internal {
                        err.code = Code::BadRequest;
                    }
                    err.message = format!("not a usable checkpoint: {}", err.message);
                    err
                })?;
            drop(bytes);
            app.add_snapshot(&n, snap)
        })
        .await?
    };
    tracing::info!(%name, root = %root.to_hex(), "snapshot registered");
    Ok(Json(
        json!({"name": name, "root": root.to_hex().to_string()}),
    ))
}

/// A tree from a store, named.
async fn import_tree(app: &Arc<App>, name: String, import: Import) -> ApiResult<blake3::Hash> {
    match (import.root, import.url) {
        (Some(root), None) => {
            if !app.snapshots.has_store() {
                return Err(ApiError::bad(
                    "this server has no --store to take a root from; upload a checkpoint",
                ));
            }
            let root = blake3::Hash::from_hex(&root)
                .map_err(|_| ApiError::bad(format!("bad root {root:?}: expected 64 hex digits")))?;
            blocking(app, true, move |app| {
                let (_, snap) = app.snapshots.get_blocking(&root.to_hex())?;
                app.add_snapshot(&name, snap)
            })
            .await
        }
        (None, Some(url)) => {
            if !app.config.allow_url_import {
                return Err(ApiError::bad(
                    "importing from a store URL is off on this server (start it with \
                     --allow-url-import); upload a checkpoint or name a root in its --store",
                ));
            }
            blocking(app, true, move |app| {
                let snap = crate::store::open_url_with_limits(&url, &app.config.base_limits)
                    .map_err(|e| match e.kind() {
                        crate::ErrorKind::NotFound => {
                            ApiError::new(Code::UnknownSnapshot, format!("cannot open {url}: {e}"))
                        }
                        _ => ApiError::bad(format!("cannot open {url}: {e}")),
                    })?;
                app.add_snapshot(&name, snap)
            })
            .await
        }
        _ => Err(ApiError::bad(
            "give exactly one of \"root\" (in the server's store) or \"url\" (STORE/ROOT)",
        )),
    }
}

/// The snapshot `id` names: from memory, or through a blocking store
/// fetch.
pub(super) async fn find(app: &Arc<App>, id: &str) -> ApiResult<(blake3::Hash, crate::Snapshot)> {
    if let Some(found) = app.snapshots.get_held(id)? {
        return Ok(found);
    }
    let id = id.to_string();
    blocking(app, true, move |app| app.snapshots.get_blocking(&id)).await
}

/// `GET /v1/snapshots/{name}`.
pub async fn get_snapshot(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (root, snap) = find(&app, &id).await?;
    let u = snap.usage();
    let listed = app.snapshots.describe(&root);
    Ok(Json(json!({
        "root": root.to_hex().to_string(),
        "names": listed.as_ref().map(|l| l.names.clone()).unwrap_or_default(),
        "memory_bytes": listed.as_ref().map_or(0, |l| l.cost),
        "in_store": listed.as_ref().is_some_and(|l| l.pushed),
        "usage": {"inodes": u.inodes, "held_bytes": u.held_bytes,
                  "logical_bytes": u.logical_bytes, "charged_bytes": u.charged_bytes},
    })))
}

/// `DELETE /v1/snapshots/{name}`.
pub async fn delete_snapshot(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    app.snapshots.delete(&id)?;
    Ok(Json(json!({ "deleted": id })))
}

/// `GET /v1/snapshots`.
pub async fn list_snapshots(State(app): State<Arc<App>>) -> Json<Value> {
    let list: Vec<Value> = app
        .snapshots
        .list()
        .into_iter()
        .map(|l| {
            json!({"root": l.root.to_hex().to_string(), "names": l.names,
                   "memory_bytes": l.cost, "held": l.held, "in_store": l.pushed})
        })
        .collect();
    let (bytes, budget, _, _) = app.snapshots.stats();
    Json(json!({"snapshots": list, "memory_bytes": bytes, "memory_budget_bytes": budget}))
}
