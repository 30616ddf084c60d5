//! `POST /v1/run`: the request and its checks against the server's
//! limits, the turn from the gate, and the JSON response.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::catalog::find;
use super::error::{ApiError, ApiResult, Code};
use super::sandbox::{self, Done, Inline, Job, execute, kind_name};
use super::snapshots::check_name;
use super::{App, body};

/// `save`: `true` (no name), `false`, or a name.
#[derive(Deserialize)]
#[serde(untagged)]
enum Save {
    Flag(bool),
    Name(String),
}

/// The request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    base: String,
    module: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    stdin: Option<String>,
    stdin_base64: Option<String>,
    timeout_ms: Option<u64>,
    max_memory_bytes: Option<u64>,
    max_output_bytes: Option<u64>,
    max_fs_bytes: Option<u64>,
    max_fs_inodes: Option<u64>,
    #[serde(default)]
    diff: bool,
    #[serde(default)]
    read: Vec<String>,
    save: Option<Save>,
}

/// `value` if within `1..=max` (`min..=max`), else `bad_request` naming
/// the field and the range; `default` when absent.
fn within(field: &str, value: Option<u64>, min: u64, max: u64, default: u64) -> ApiResult<u64> {
    match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(v) => Err(ApiError::bad(format!(
            "{field} {v} is out of range: this server takes {min} to {max}"
        ))),
    }
}

/// Checks what does not need the registries: values, names, paths.
fn check(req: &RunRequest, app: &App) -> ApiResult<()> {
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(ApiError::bad(format!(
                "bad env variable {k:?}: names are non-empty without = or NUL, values without NUL"
            )));
        }
    }
    if req.args.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::bad("an argument contains NUL"));
    }
    for p in &req.read {
        if !p.starts_with('/') {
            return Err(ApiError::bad(format!("read path {p:?} must be absolute")));
        }
    }
    if req.stdin.is_some() && req.stdin_base64.is_some() {
        return Err(ApiError::bad("give stdin or stdin_base64, not both"));
    }
    if let Some(Save::Name(n)) = &req.save {
        check_name(n)?;
    }
    let _ = app;
    Ok(())
}

/// `POST /v1/run`.
pub async fn run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    req: Body,
) -> ApiResult<Json<Value>> {
    let received = Instant::now();
    let bytes = body::read(&headers, req, app.config.max_body, "request", &app.bodies).await?;
    let req: RunRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad(format!("bad run request: {e}")))?;
    drop(bytes);
    check(&req, &app)?;
    let c = &app.config;
    let timeout = within(
        "timeout_ms",
        req.timeout_ms,
        1,
        c.max_timeout.as_millis() as u64,
        c.default_timeout.as_millis() as u64,
    )?;
    let max_memory = within(
        "max_memory_bytes",
        req.max_memory_bytes,
        64 << 10,
        c.max_memory as u64,
        c.max_memory as u64,
    )?;
    let max_output = within(
        "max_output_bytes",
        req.max_output_bytes,
        0,
        c.max_output as u64,
        c.max_output as u64,
    )?;
    let fs_bytes = within(
        "max_fs_bytes",
        req.max_fs_bytes,
        0,
        c.max_fs_bytes,
        c.max_fs_bytes,
    )?;
    let fs_inodes = within(
        "max_fs_inodes",
        req.max_fs_inodes,
        0,
        c.max_fs_inodes,
        c.max_fs_inodes,
    )?;
    let stdin = match (&req.stdin, &req.stdin_base64) {
        (Some(s), _) => s.as_bytes().to_vec(),
        (_, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| ApiError::bad(format!("bad stdin_base64: {e}")))?,
        _ => Vec::new(),
    };
    let module = app.modules.get(&req.module)?;
    let base = find(&app, &req.base).await?;
    let save = match req.save {
        None | Some(Save::Flag(false)) => None,
        Some(Save::Flag(true)) => Some(None),
        Some(Save::Name(n)) => Some(Some(n)),
    };
    let mut job = Job {
        base,
        module,
        args: req.args,
        env: req.env.into_iter().collect(),
        stdin,
        timeout: Duration::from_millis(timeout),
        max_memory: max_memory as usize,
        max_output: max_output as usize,
        fs_bytes,
        fs_inodes,
        diff: req.diff.then_some(c.diff_cap()),
        read: req.read,
        read_budget: c.max_read,
        save,
    };
    let turn = app.gate.enter().await?;
    let queued = received.elapsed();
    // With every snapshot in memory, a guest first runs right here for a
    // short slice (`sandbox::run_inline`); one that needs longer, and
    // every run on a server with a store (lazy reads, pushes), goes to a
    // blocking thread with the turn.
    let inline = if app.inline_runs {
        sandbox::run_inline(&mut job, &app.snapshots)?
    } else {
        Inline::Skipped
    };
    let done = match inline {
        Inline::Done(done) => {
            drop(turn);
            *done
        }
        Inline::Restart | Inline::Skipped => {
            if matches!(inline, Inline::Restart) {
                app.metrics.restarted();
            }
            let worker = app.clone();
            tokio::task::spawn_blocking(move || {
                let _turn = turn;
                execute(job, &worker.snapshots)
            })
            .await
            .map_err(|e| ApiError::internal(format!("a sandbox worker failed: {e}")))??
        }
    };
    app.metrics.run(outcome_label(&done));
    Ok(Json(response(done, queued, received.elapsed())))
}

fn outcome_label(done: &Done) -> &'static str {
    match (&done.error, done.exit_code) {
        (Some(e), _) => match e.code {
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::LimitExceeded => "limit_exceeded",
            _ => "trapped",
        },
        (None, 0) => "ok",
        (None, _) => "exit_nonzero",
    }
}

fn response(done: Done, queued: Duration, total: Duration) -> Value {
    let mut out = Map::new();
    out.insert("exit_code".into(), json!(done.exit_code));
    out.insert(
        "stdout".into(),
        json!(String::from_utf8_lossy(&done.stdout)),
    );
    out.insert(
        "stderr".into(),
        json!(String::from_utf8_lossy(&done.stderr)),
    );
    out.insert("truncated".into(), json!(done.truncated));
    out.insert("duration_us".into(), json!(total.as_micros() as u64));
    out.insert(
        "timings".into(),
        json!({"queue_us": queued.as_micros() as u64, "run_us": done.run.as_micros() as u64}),
    );
    out.insert(
        "usage".into(),
        json!({"inodes": done.usage.inodes, "private_bytes": done.usage.private_bytes,
               "held_bytes": done.usage.held_bytes}),
    );
    if let Some(e) = &done.error {
        out.insert("error".into(), e.to_json());
    }
    if let Some((list, more)) = &done.diff {
        let list: Vec<Value> = list
            .iter()
            .map(|(p, k)| json!({"path": p, "kind": kind_name(*k)}))
            .collect();
        out.insert("diff".into(), json!(list));
        out.insert("diff_truncated".into(), json!(more));
    }
    if let Some(files) = &done.files {
        let map: Map<String, Value> = files
            .iter()
            .map(|(p, d)| (p.clone(), d.as_ref().map_or(Value::Null, |s| json!(s))))
            .collect();
        out.insert("files".into(), Value::Object(map));
    }
    if let Some((root, name)) = &done.snapshot {
        out.insert("snapshot".into(), json!(root.to_hex().to_string()));
        if let Some(n) = name {
            out.insert("name".into(), json!(n));
        }
    }
    if let Some(e) = &done.save_error {
        out.insert("save_error".into(), e.to_json());
    }
    Value::Object(out)
}
