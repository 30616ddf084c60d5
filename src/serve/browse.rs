//! Reading snapshots over HTTP: a file's bytes (streamed), a directory
//! listing, the diff of two snapshots, and a whole snapshot as a
//! checkpoint file (streamed as it is written).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::catalog::find;
use super::error::{ApiError, ApiResult};
use super::sandbox::{changes, kind_name};
use super::{App, body};
use crate::{FileType, OpenOptions};

/// Bytes read from a file per call while streaming it.
const READ_PIECE: usize = 256 << 10;

/// `GET /v1/snapshots/{name}/checkpoint`.
pub async fn checkpoint(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (root, snap) = find(&app, &id).await?;
    let turn = app.transfers.enter().await?;
    let body = body::stream(turn, move |out| {
        snap.save_to(out).map(|_| ()).map_err(std::io::Error::other)
    });
    let disposition = format!("attachment; filename=\"{}.ckpt\"", root.to_hex());
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            ),
        ],
        body,
    )
        .into_response())
}

/// A path from the URL as the tree names it.
fn tree_path(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

/// `GET /v1/snapshots/{name}/files/{*path}`.
pub async fn file(
    State(app): State<Arc<App>>,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, snap) = find(&app, &id).await?;
    let path = tree_path(&path);
    let meta = snap.metadata(&path)?;
    if meta.is_dir() {
        return Err(ApiError::bad(format!(
            "{path} is a directory: list it with /v1/snapshots/{id}/dirs{path}"
        )));
    }
    let len = meta.len;
    let turn = app.transfers.enter().await?;
    let body = body::stream(turn, move |out| {
        use std::io::Write as _;
        // A fork is O(1) and gives descriptors to read with.
        let mut v = snap.fork();
        let fd = v
            .open(&path, OpenOptions::new().read(true))
            .map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; READ_PIECE];
        let mut at = 0u64;
        while at < len {
            let n = v.read_at(fd, &mut buf, at).map_err(std::io::Error::other)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            at += n as u64;
        }
        if at != len {
            return Err(std::io::Error::other(format!(
                "{path}: ended at {at} of {len} bytes"
            )));
        }
        Ok(())
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(len)),
        ],
        body,
    )
        .into_response())
}

/// `GET /v1/snapshots/{name}/dirs`.
pub async fn root_dir(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    list(&app, &id, "/").await
}

/// `GET /v1/snapshots/{name}/dirs/{*path}`.
pub async fn dir(
    State(app): State<Arc<App>>,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    list(&app, &id, &tree_path(&path)).await
}

/// Most entries one listing returns.
const MAX_LISTED: usize = 100_000;

async fn list(app: &Arc<App>, id: &str, path: &str) -> ApiResult<Json<Value>> {
    let (_, snap) = find(app, id).await?;
    // A turn of the transfer gate, off the async threads: a page costs a
    // lookup per entry, and only a page's worth is copied.
    let path = path.to_string();
    let json = super::catalog::blocking(app, true, move |_| {
        let entries = snap.read_dir_page(&path, None, MAX_LISTED + 1)?;
        Ok(listing(&snap, &path, &entries))
    })
    .await?;
    Ok(Json(json))
}

/// The JSON of a listing of `path`, from up to one more entry than shown.
fn listing(snap: &crate::Snapshot, path: &str, entries: &[crate::DirEntry]) -> Value {
    let truncated = entries.len() > MAX_LISTED;
    let base = path.trim_end_matches('/');
    let list: Vec<Value> = entries
        .iter()
        .take(MAX_LISTED)
        .map(|e| {
            let full = format!("{base}/{}", e.name);
            let meta = snap.symlink_metadata(&full).ok();
            let kind = match e.kind {
                FileType::File => "file",
                FileType::Dir => "dir",
                FileType::Symlink => "symlink",
            };
            json!({"name": e.name, "kind": kind,
                   "size": meta.as_ref().map_or(0, |m| m.len),
                   "mode": meta.as_ref().map_or(0, |m| m.mode)})
        })
        .collect();
    json!({"path": path, "entries": list, "truncated": truncated})
}

/// `GET /v1/snapshots/{name}/diff/{other}`.
pub async fn diff(
    State(app): State<Arc<App>>,
    Path((a, b)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (ra, sa) = find(&app, &a).await?;
    let (rb, sb) = find(&app, &b).await?;
    let cap = app.config.diff_cap();
    let (list, more) =
        super::catalog::blocking(&app, false, move |_| Ok(changes(&sa, &sb, cap))).await?;
    let list: Vec<Value> = list
        .iter()
        .map(|(p, k)| json!({"path": p, "kind": kind_name(*k)}))
        .collect();
    Ok(Json(json!({
        "from": ra.to_hex().to_string(),
        "to": rb.to_hex().to_string(),
        "changes": list,
        "truncated": more,
    })))
}
