//! The OpenAPI 3.1 document, made from the route table: every route with
//! its parameters, body and responses, the run request and response
//! schemas, and the error object with every code.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::App;
use super::error::Code;
use super::table::ROUTES;

/// `GET /v1/openapi.json`.
pub async fn document(State(app): State<Arc<App>>) -> Json<Value> {
    Json(build(app.config.token.is_some()))
}

/// The path as OpenAPI writes it (`{*path}` becomes `{path}`), and its
/// parameters.
fn openapi_path(path: &str) -> (String, Vec<String>) {
    let mut params = Vec::new();
    let parts: Vec<String> = path
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(p) => {
                    let p = p.trim_start_matches('*').to_string();
                    params.push(p.clone());
                    format!("{{{p}}}")
                }
                None => seg.to_string(),
            },
        )
        .collect();
    (parts.join("/"), params)
}

/// The document; `secured` adds the bearer scheme to every route but
/// `/healthz`.
pub fn build(secured: bool) -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let (path, params) = openapi_path(route.path);
        let mut op = Map::new();
        op.insert("summary".into(), json!(route.summary));
        op.insert(
            "operationId".into(),
            json!(format!("{} {}", route.method, route.path)),
        );
        if !params.is_empty() {
            let list: Vec<Value> = params
                .iter()
                .map(|p| {
                    json!({"name": p, "in": "path", "required": true,
                           "schema": {"type": "string"},
                           "description": param_doc(p)})
                })
                .collect();
            op.insert("parameters".into(), json!(list));
        }
        if let Some(media) = route.body {
            let schema = if route.path == "/v1/run" {
                json!({"$ref": "#/components/schemas/RunRequest"})
            } else {
                json!({"type": "string", "format": "binary"})
            };
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {media: {"schema": schema}}}),
            );
        }
        let ok_schema = if route.path == "/v1/run" {
            json!({"$ref": "#/components/schemas/RunResponse"})
        } else if route.returns == "application/json" {
            json!({"type": "object"})
        } else {
            json!({"type": "string"})
        };
        op.insert(
            "responses".into(),
            json!({
                "200": {"description": "success", "content": {route.returns: {"schema": ok_schema}}},
                "default": {"description": "an error",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }),
        );
        if secured && route.path != "/healthz" {
            op.insert("security".into(), json!([{"bearer": []}]));
        }
        let entry = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(route.method.to_ascii_lowercase(), Value::Object(op));
        }
    }
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cowvfs serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A WebAssembly sandbox per request, each with its own copy-on-write file system forked from a snapshot. Guests see the snapshot's tree preopened at /."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"],
                        "properties": {"code": {"type": "string", "enum": codes},
                                       "message": {"type": "string"}}}}
                },
                "RunRequest": {
                    "type": "object",
                    "required": ["base", "module"],
                    "properties": {
                        "base": {"type": "string", "description": "snapshot name or root hash to fork (with --store, a name this server does not hold is the store's ref of that name)"},
                        "module": {"type": "string", "description": "module name or hash"},
                        "args": {"type": "array", "items": {"type": "string"}, "description": "after argv[0], which is \"guest\""},
                        "env": {"type": "object", "additionalProperties": {"type": "string"}},
                        "stdin": {"type": "string"},
                        "stdin_base64": {"type": "string"},
                        "timeout_ms": {"type": "integer", "minimum": 1},
                        "max_memory_bytes": {"type": "integer", "minimum": 65536},
                        "max_output_bytes": {"type": "integer", "minimum": 0},
                        "max_fs_bytes": {"type": "integer", "minimum": 0},
                        "max_fs_inodes": {"type": "integer", "minimum": 0},
                        "diff": {"type": "boolean"},
                        "read": {"type": "array", "items": {"type": "string"}},
                        "save": {"oneOf": [{"type": "boolean"}, {"type": "string"}], "description": "true to save the fork as a snapshot, or a name to give it (with --store, also the store's ref of that name)"}
                    }
                },
                "RunResponse": {
                    "type": "object",
                    "required": ["exit_code", "stdout", "stderr", "truncated", "duration_us"],
                    "properties": {
                        "exit_code": {"type": "integer", "description": "124 past the deadline, 134 for a trap"},
                        "stdout": {"type": "string"},
                        "stderr": {"type": "string"},
                        "truncated": {"type": "boolean"},
                        "duration_us": {"type": "integer"},
                        "timings": {"type": "object"},
                        "usage": {"type": "object"},
                        "error": {"type": "object", "description": "why the run ended early (deadline_exceeded, trapped, limit_exceeded)"},
                        "diff": {"type": "array", "items": {"type": "object", "properties": {
                            "path": {"type": "string"}, "kind": {"type": "string", "enum": ["added", "removed", "modified"]}}}},
                        "diff_truncated": {"type": "boolean", "description": "more changes than listed (the server lists at most max_diff changes and max_diff_bytes of paths: by default 10,000 and 4 MiB)"},
                        "files": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                        "snapshot": {"type": "string", "description": "root hash of the saved fork"},
                        "name": {"type": "string"},
                        "save_error": {"type": "object"}
                    }
                }
            }
        }
    })
}

fn param_doc(p: &str) -> &'static str {
    match p {
        "name" => "a name, or for snapshots also a 64-digit hex root hash",
        "other" => "the newer snapshot: a name or root hash",
        "path" => "a path in the snapshot's tree",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_once() {
        let doc = build(true);
        let paths = doc["paths"].as_object().unwrap();
        let ops: usize = paths.values().map(|m| m.as_object().unwrap().len()).sum();
        assert_eq!(ops, ROUTES.len());
        let files = &paths["/v1/snapshots/{name}/files/{path}"]["get"];
        assert_eq!(files["parameters"][1]["name"], "path");
        assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());
        assert!(doc["paths"]["/v1/run"]["post"].get("security").is_some());
    }
}
