//! `cowvfs serve` end to end: the real binary on a free loopback port,
//! driven over real HTTP (reqwest). Every endpoint and error code, auth
//! and body limits, 1,000 concurrent runs without cross-talk, a chain of
//! saved snapshots with a rollback, hostile guests among normal ones, the
//! OpenAPI document against the routes, and a graceful shutdown under load.

#![cfg(all(feature = "serve", feature = "cli"))]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

// Only Weed is used here; its other helpers serve the store tests.
#[allow(dead_code)]
#[path = "store_support/mod.rs"]
mod store_support;

/// The guest most tests run: appends `argv[1]` and a newline to
/// `/log.txt` (creating it), then prints the whole file. `SPIN` is
/// replaced by a busy loop (or nothing). Any error exits 100 + errno.
const NOTE_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "log.txt")
  (data (i32.const 1040) "\n")
  (func $check (param $e i32)
    (if (local.get $e) (then (call $proc_exit (i32.add (local.get $e) (i32.const 100))))))
  (func (export "_start")
    (local $fd i32) (local $i i32)
    SPIN
    (call $check (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.ne (i32.load (i32.const 0)) (i32.const 2)) (then (call $proc_exit (i32.const 2))))
    (if (i32.gt_u (i32.load (i32.const 4)) (i32.const 4096)) (then (call $proc_exit (i32.const 3))))
    (call $check (call $args_get (i32.const 64) (i32.const 2048)))
    (i32.store (i32.const 16) (i32.load (i32.const 68)))
    (i32.store (i32.const 20)
      (i32.sub (i32.sub (i32.add (i32.const 2048) (i32.load (i32.const 4))) (i32.load (i32.const 68)))
               (i32.const 1)))
    (i32.store (i32.const 24) (i32.const 1040))
    (i32.store (i32.const 28) (i32.const 1))
    ;; log.txt: O_CREAT, FDFLAGS_APPEND, rights fd_read|fd_write
    (call $check (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const 7)
                                  (i32.const 1) (i64.const 66) (i64.const 66) (i32.const 1) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (call $check (call $fd_write (local.get $fd) (i32.const 16) (i32.const 2) (i32.const 12)))
    (call $check (call $fd_close (local.get $fd)))
    (call $check (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const 7)
                                  (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (i32.store (i32.const 32) (i32.const 8192))
    (i32.store (i32.const 36) (i32.const 65536))
    (call $check (call $fd_read (local.get $fd) (i32.const 32) (i32.const 1) (i32.const 12)))
    (i32.store (i32.const 40) (i32.const 8192))
    (i32.store (i32.const 44) (i32.load (i32.const 12)))
    (call $check (call $fd_write (i32.const 1) (i32.const 40) (i32.const 1) (i32.const 12))))
)
"#;

/// A busy loop of about a hundred milliseconds, for SPIN.
const SPIN: &str = "(loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
                     (br_if $l (i32.lt_u (local.get $i) (i32.const 60000000))))";

/// Prints its environment block (NUL-separated), then copies stdin.
const CAT_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $es (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $eg (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (drop (call $es (i32.const 0) (i32.const 4)))
    (drop (call $eg (i32.const 64) (i32.const 1024)))
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.load (i32.const 4)))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8)))
    (block $done
      (loop $l
        (i32.store (i32.const 24) (i32.const 8192))
        (i32.store (i32.const 28) (i32.const 4096))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 24) (i32.const 1) (i32.const 12)))
        (br_if $done (i32.eqz (i32.load (i32.const 12))))
        (i32.store (i32.const 32) (i32.const 8192))
        (i32.store (i32.const 36) (i32.load (i32.const 12)))
        (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 8)))
        (br $l))))
)
"#;

/// Spins forever.
const LOOP_WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

/// Grows its memory a MiB at a time until refused, then exits 3.
const BOMB_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (call $proc_exit (i32.const 3))))"#;

/// Writes 64 KiB blocks to /flood.bin until a write fails; exits 100 +
/// errno.
const FLOOD_BYTES_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "flood.bin")
  (func (export "_start") (local $fd i32) (local $e i32)
    (memory.fill (i32.const 65536) (i32.const 97) (i32.const 65536))
    (local.set $e (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const 9)
                                   (i32.const 1) (i64.const 66) (i64.const 66) (i32.const 0) (i32.const 8)))
    (if (local.get $e) (then (call $proc_exit (i32.add (local.get $e) (i32.const 100)))))
    (local.set $fd (i32.load (i32.const 8)))
    (i32.store (i32.const 16) (i32.const 65536))
    (i32.store (i32.const 20) (i32.const 65536))
    (loop $l
      (local.set $e (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 12)))
      (br_if $l (i32.eqz (local.get $e))))
    (call $proc_exit (i32.add (local.get $e) (i32.const 100)))))"#;

/// Makes directories /aaaa, /baaa, ... until one fails; exits 100 + errno.
const FLOOD_INODES_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func $letter (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 97) (i32.and (local.get $v) (i32.const 15)))))
  (func (export "_start") (local $i i32) (local $e i32)
    (loop $l
      (call $letter (i32.const 1024) (local.get $i))
      (call $letter (i32.const 1025) (i32.shr_u (local.get $i) (i32.const 4)))
      (call $letter (i32.const 1026) (i32.shr_u (local.get $i) (i32.const 8)))
      (call $letter (i32.const 1027) (i32.shr_u (local.get $i) (i32.const 12)))
      (local.set $e (call $mkdir (i32.const 3) (i32.const 1024) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.eqz (local.get $e))))
    (call $proc_exit (i32.add (local.get $e) (i32.const 100)))))"#;

/// Writes 1 GiB to stdout in 64 KiB writes, then exits 0.
const SHOUT_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local $i i32)
    (memory.fill (i32.const 65536) (i32.const 120) (i32.const 65536))
    (i32.store (i32.const 16) (i32.const 65536))
    (i32.store (i32.const 20) (i32.const 65536))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 12)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 16384))))))"#;

/// Traps at once.
const TRAP_WAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") unreachable))"#;

fn note_wat(spin: bool) -> String {
    NOTE_WAT.replace("SPIN", if spin { SPIN } else { "" })
}

/// A running `cowvfs serve`, killed when dropped.
struct Server {
    child: Option<Child>,
    url: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The server's command with `args`, the token in its environment.
fn command(args: &[&str], token: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cowvfs"));
    cmd.arg("serve").args(args);
    cmd.env_remove("COWVFS_TOKEN").env_remove("RUST_LOG");
    if let Some(t) = token {
        cmd.env("COWVFS_TOKEN", t);
    }
    cmd
}

impl Server {
    /// Starts the server on a free loopback port and waits for its
    /// "listening on" line.
    fn start(args: &[&str], token: Option<&str>) -> Server {
        Server::start_env(args, token, &[])
    }

    /// [`Server::start`] with more environment variables.
    fn start_env(args: &[&str], token: Option<&str>, env: &[(&str, String)]) -> Server {
        static PROVIDER: std::sync::Once = std::sync::Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let child = command(args, token)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cowvfs serve");
        // Owned by the server at once, so a failed start still kills it.
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            token: token.map(str::to_string),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
        };
        let stdout = server.child.as_mut().unwrap().stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining, so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server printed where it listens");
        server.url = first
            .strip_prefix("cowvfs serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        server
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a request; `token` overrides the server's own (Some("") for
    /// none at all).
    async fn send_as(
        &self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
        token: Option<&str>,
    ) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        match token.or(self.token.as_deref()) {
            Some("") | None => {}
            Some(t) => req = req.header("authorization", format!("Bearer {t}")),
        }
        if let Some((bytes, ctype)) = body {
            req = req.header("content-type", ctype).body(bytes);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().await?.to_vec()))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> (u16, Vec<u8>) {
        self.send_as(method, path, body, None)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| (serde_json::to_vec(&b).unwrap(), "application/json"));
        let (status, bytes) = self.send(method, path, body).await;
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v)
    }

    async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        self.send("GET", path, None).await
    }

    async fn put_module(&self, name: &str, wat: &str) -> Value {
        let (status, bytes) = self
            .send(
                "PUT",
                &format!("/v1/modules/{name}"),
                Some((wat.as_bytes().to_vec(), "application/wasm")),
            )
            .await;
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn run(&self, req: Value) -> Value {
        let (status, v) = self.json("POST", "/v1/run", Some(req)).await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The error code of an error body.
fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("(no code)")
}

fn b64(s: &str) -> String {
    // Only for short test strings: the standard alphabet, padded.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn every_endpoint_and_error_code() {
    let token = "s3cret-token";
    let s = Server::start(
        &[
            "--demo",
            "--max-body",
            "64K",
            "--max-upload",
            "8M",
            "--max-timeout",
            "10s",
        ],
        Some(token),
    );
    runtime().block_on(async {
        // Health needs no token; everything else does.
        assert_eq!(s.send_as("GET", "/healthz", None, Some("")).await.unwrap().0, 200);
        for t in ["", "wrong"] {
            let (st, body) = s.send_as("GET", "/v1/modules", None, Some(t)).await.unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!((st, code(&v)), (401, "unauthorized"), "token {t:?}");
        }
        let (st, body) = s.send_as("POST", "/v1/run", None, Some("")).await.unwrap();
        assert_eq!(st, 401, "{}", String::from_utf8_lossy(&body));

        // Modules: upload (WAT or binary), same bytes share a hash.
        let note = s.put_module("note", &note_wat(false)).await;
        assert_eq!(note["name"], "note");
        assert_eq!(note["kind"], "core");
        let again = s.put_module("note2", &note_wat(false)).await;
        assert_eq!(again["hash"], note["hash"]);
        s.put_module("cat", CAT_WAT).await;
        s.put_module("loop", LOOP_WAT).await;
        s.put_module("trap", TRAP_WAT).await;
        s.put_module("bomb", BOMB_WAT).await;
        let (st, v) = s.json("GET", "/v1/modules", None).await;
        assert_eq!(st, 200);
        let names: Vec<&str> = v["modules"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["bomb", "cat", "demo", "loop", "note", "note2", "trap"]);
        let (st, v) = s.json("GET", "/v1/modules/note2", None).await;
        assert_eq!((st, v["hash"].clone()), (200, note["hash"].clone()));
        let (st, v) = s.json("DELETE", "/v1/modules/note2", None).await;
        assert_eq!(st, 200, "{v}");
        let (st, v) = s.json("GET", "/v1/modules/note2", None).await;
        assert_eq!((st, code(&v)), (404, "unknown_module"));
        // By hash works too; the first name still does.
        let (st, _) = s.json("GET", &format!("/v1/modules/{}", note["hash"].as_str().unwrap()), None).await;
        assert_eq!(st, 200);
        for bad in [&b"garbage"[..], b"(module (func $f (result i32)))", b"\0asm\x01\0\0\0\x99"] {
            let (st, body) = s.send("PUT", "/v1/modules/bad", Some((bad.to_vec(), "application/wasm"))).await;
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!((st, code(&v)), (400, "bad_module"), "{v}");
        }
        let (st, v) = s.json("PUT", "/v1/modules/bad%20name", Some(json!({}))).await;
        assert_eq!((st, code(&v)), (400, "bad_request"), "{v}");
        let (st, _) = s.json("GET", "/v1/modules/bad", None).await;
        assert_eq!(st, 404, "a refused module is not registered");

        // Snapshots: describe, download, re-upload, list, delete.
        let (st, demo) = s.json("GET", "/v1/snapshots/demo", None).await;
        assert_eq!(st, 200, "{demo}");
        let root = demo["root"].as_str().unwrap().to_string();
        assert_eq!(root.len(), 64);
        let (st, ck) = s.get("/v1/snapshots/demo/checkpoint").await;
        assert_eq!(st, 200);
        assert!(ck.len() > 16 << 20, "the checkpoint holds the data file: {}", ck.len());
        let (st, body) = s.send("PUT", "/v1/snapshots/copy", Some((ck.clone(), "application/octet-stream"))).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(st, 413, "over --max-upload: {v}");
        assert_eq!(code(&v), "payload_too_large");
        // A small checkpoint of its own: a run saved from demo, downloaded.
        let saved = s.run(json!({"base": "demo", "module": "note", "args": ["first"], "save": "one"})).await;
        let one = saved["snapshot"].as_str().unwrap().to_string();
        assert_eq!(saved["name"], "one");
        assert_eq!(saved["stdout"], "first\n");
        let (st, body) = s.get(&format!("/v1/snapshots/{one}/files/log.txt")).await;
        assert_eq!((st, body.as_slice()), (200, &b"first\n"[..]));
        // Corrupt bytes are refused and register nothing.
        let mut bad = b"CVFS-not-a-checkpoint".to_vec();
        bad.resize(4096, 7);
        let (st, body) = s.send("PUT", "/v1/snapshots/broken", Some((bad, "application/octet-stream"))).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((st, code(&v)), (400, "bad_request"), "{v}");
        let (st, v) = s.json("GET", "/v1/snapshots/broken", None).await;
        assert_eq!((st, code(&v)), (404, "unknown_snapshot"));
        // Import by store root without a store: a clear refusal.
        let (st, v) = s.json("PUT", "/v1/snapshots/fromstore", Some(json!({"root": root}))).await;
        assert_eq!((st, code(&v)), (400, "bad_request"), "{v}");
        let (st, v) = s.json("PUT", "/v1/snapshots/fromurl", Some(json!({"url": format!("/tmp/x/{root}")}))).await;
        assert_eq!((st, code(&v)), (400, "bad_request"), "{v}");
        let (st, v) = s.json("GET", "/v1/snapshots", None).await;
        assert_eq!(st, 200);
        let listed: Vec<Vec<String>> = v["snapshots"].as_array().unwrap().iter()
            .map(|e| serde_json::from_value(e["names"].clone()).unwrap()).collect();
        assert!(listed.contains(&vec!["demo".to_string()]) && listed.contains(&vec!["one".to_string()]), "{v}");
        assert!(v["memory_bytes"].as_u64().unwrap() > 16 << 20);

        // Directory listings and diffs.
        let (st, v) = s.json("GET", "/v1/snapshots/demo/dirs", None).await;
        assert_eq!(st, 200);
        assert_eq!(v["entries"][0]["name"], "app");
        assert_eq!(v["entries"][0]["kind"], "dir");
        let (st, v) = s.json("GET", "/v1/snapshots/demo/dirs/app/notes", None).await;
        assert_eq!((st, v["entries"][0]["name"].as_str()), (200, Some("note.txt")));
        assert_eq!(v["entries"][0]["size"], 5);
        let (st, v) = s.json("GET", "/v1/snapshots/demo/dirs/nope", None).await;
        assert_eq!((st, code(&v)), (404, "not_found"));
        let (st, v) = s.json("GET", "/v1/snapshots/demo/files/app", None).await;
        assert_eq!((st, code(&v)), (400, "bad_request"), "a directory is not a file");
        let (st, v) = s.json("GET", "/v1/snapshots/demo/files/app/missing", None).await;
        assert_eq!((st, code(&v)), (404, "not_found"));
        let (st, v) = s.json("GET", &format!("/v1/snapshots/demo/diff/{one}"), None).await;
        assert_eq!(st, 200);
        assert_eq!(v["changes"], json!([{"path": "/log.txt", "kind": "added"}]));
        let (st, v) = s.json("GET", "/v1/snapshots/demo/diff/nosuch", None).await;
        assert_eq!((st, code(&v)), (404, "unknown_snapshot"));

        // A run with everything: env, stdin, diff, read, save.
        let v = s.run(json!({"base": "demo", "module": "cat", "env": {"A": "1", "B": "two"},
                             "stdin": "from stdin", "diff": true,
                             "read": ["/app/notes/note.txt", "/nope"]})).await;
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["stdout"], "A=1\0B=two\0from stdin");
        assert_eq!(v["truncated"], false);
        assert_eq!(v["diff"], json!([]));
        assert_eq!(v["files"], json!({"/app/notes/note.txt": b64("base\n"), "/nope": null}));
        assert!(v["duration_us"].as_u64().unwrap() > 0);
        assert!(v.get("snapshot").is_none());
        let v = s.run(json!({"base": "demo", "module": "cat", "stdin_base64": b64("bytes")})).await;
        assert_eq!(v["stdout"], "bytes");
        let v = s.run(json!({"base": "demo", "module": "note", "args": ["x"], "diff": true,
                             "read": ["/log.txt"], "save": true})).await;
        assert_eq!(v["diff"], json!([{"path": "/log.txt", "kind": "added"}]));
        assert_eq!(v["files"]["/log.txt"], b64("x\n"));
        assert_eq!(v["snapshot"].as_str().unwrap().len(), 64);
        assert!(v.get("name").is_none());
        // Output cap.
        let v = s.run(json!({"base": "demo", "module": "cat", "stdin": "0123456789", "max_output_bytes": 4})).await;
        assert_eq!((v["stdout"].as_str(), v["truncated"].as_bool()), (Some("0123"), Some(true)));

        // Each error code of a run.
        let v = s.run(json!({"base": "demo", "module": "loop", "timeout_ms": 100})).await;
        assert_eq!((v["exit_code"].as_i64(), code(&v)), (Some(124), "deadline_exceeded"), "{v}");
        let v = s.run(json!({"base": "demo", "module": "trap"})).await;
        assert_eq!((v["exit_code"].as_i64(), code(&v)), (Some(134), "trapped"), "{v}");
        let v = s.run(json!({"base": "demo", "module": "bomb", "max_memory_bytes": 4 << 20})).await;
        assert_eq!((v["exit_code"].as_i64(), code(&v)), (Some(3), "limit_exceeded"), "{v}");
        let cases = [
            (json!({"base": "nosuch", "module": "note"}), 404, "unknown_snapshot"),
            (json!({"base": "0".repeat(64), "module": "note"}), 404, "unknown_snapshot"),
            (json!({"base": "demo", "module": "nosuch"}), 404, "unknown_module"),
            (json!({"base": "demo"}), 400, "bad_request"),
            (json!({"base": "demo", "module": "note", "colour": "red"}), 400, "bad_request"),
            (json!({"base": "demo", "module": "note", "timeout_ms": 60_000}), 400, "bad_request"),
            (json!({"base": "demo", "module": "note", "timeout_ms": 0}), 400, "bad_request"),
            (json!({"base": "demo", "module": "note", "max_memory_bytes": 1u64 << 40}), 400, "bad_request"),
            (json!({"base": "demo", "module": "note", "env": {"A=B": "1"}}), 400, "bad_request"),
            (json!({"base": "demo", "module": "note", "read": ["relative"]}), 400, "bad_request"),
            (json!({"base": "demo", "module": "note", "save": "bad name"}), 400, "bad_request"),
            (json!({"base": "demo", "module": "note", "stdin": "a", "stdin_base64": "YQ=="}), 400, "bad_request"),
            (json!({"base": "demo", "module": "note", "stdin_base64": "!!"}), 400, "bad_request"),
        ];
        for (req, status, want) in cases {
            let (st, v) = s.json("POST", "/v1/run", Some(req.clone())).await;
            assert_eq!((st, code(&v)), (status, want), "{req} -> {v}");
        }
        let (st, body) = s.send("POST", "/v1/run", Some((b"{not json".to_vec(), "application/json"))).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((st, code(&v)), (400, "bad_request"));
        // Body limit on JSON: 413 with its code.
        let big = json!({"base": "demo", "module": "cat", "stdin": "x".repeat(100 << 10)});
        let (st, v) = s.json("POST", "/v1/run", Some(big)).await;
        assert_eq!((st, code(&v)), (413, "payload_too_large"));

        // Unknown routes and methods.
        let (st, v) = s.json("GET", "/v1/nothing", None).await;
        assert_eq!((st, code(&v)), (404, "not_found"));
        let (st, v) = s.json("PATCH", "/v1/run", None).await;
        assert_eq!((st, code(&v)), (405, "method_not_allowed"));

        // Deleting: a name, then a root (with all its names).
        let (st, _) = s.json("DELETE", "/v1/snapshots/one", None).await;
        assert_eq!(st, 200);
        let (st, v) = s.json("GET", "/v1/snapshots/one", None).await;
        assert_eq!((st, code(&v)), (404, "unknown_snapshot"));
        let (st, _) = s.json("GET", &format!("/v1/snapshots/{one}"), None).await;
        assert_eq!(st, 200, "the snapshot outlives its name until evicted or deleted");
        let (st, _) = s.json("DELETE", &format!("/v1/snapshots/{one}"), None).await;
        assert_eq!(st, 200);
        let (st, v) = s.json("GET", &format!("/v1/snapshots/{one}/files/log.txt"), None).await;
        assert_eq!((st, code(&v)), (404, "unknown_snapshot"));
        let (st, v) = s.json("DELETE", "/v1/snapshots/one", None).await;
        assert_eq!((st, code(&v)), (404, "unknown_snapshot"));

        // Metrics saw all of it.
        let (st, text) = s.get("/metrics").await;
        let text = String::from_utf8(text).unwrap();
        assert_eq!(st, 200);
        assert!(text.contains("cowvfs_http_requests_total{route=\"/v1/run\",method=\"POST\",status=\"200\"}"), "{text}");
        assert!(text.contains("cowvfs_http_request_duration_seconds_bucket{route=\"/v1/run\",le=\"+Inf\"}"));
        assert!(text.contains("cowvfs_runs_total{outcome=\"deadline_exceeded\"} 1"), "{text}");
        assert!(text.contains("cowvfs_active_sandboxes 0"));
        assert!(text.lines().any(|l| l.starts_with("cowvfs_snapshot_memory_bytes ") && !l.ends_with(" 0")));
    });
}

/// Every path and method the OpenAPI document lists answers (no 404 for
/// a missing route, no 405), and a few it does not list do not.
#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let s = Server::start(&["--demo"], None);
    runtime().block_on(async {
        let (st, doc) = s.json("GET", "/v1/openapi.json", None).await;
        assert_eq!(st, 200);
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let mut seen = Vec::new();
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                let concrete = path
                    .replace("{name}", if method == "put" || method == "delete" { "probe" } else { "demo" })
                    .replace("{other}", "demo")
                    .replace("{path}", if path.contains("/files/") { "app/notes/note.txt" } else { "app" });
                let (st, body) = s.send(&method.to_uppercase(), &concrete, None).await;
                let text = String::from_utf8_lossy(&body);
                assert!(st != 405 && !(st == 404 && text.contains("no such route")),
                        "{method} {path} ({concrete}) is documented but answers {st}: {text}");
                seen.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        seen.sort();
        let mut want = vec![
            "DELETE /v1/modules/{name}", "DELETE /v1/snapshots/{name}", "GET /healthz", "GET /metrics",
            "GET /v1/modules", "GET /v1/modules/{name}", "GET /v1/openapi.json", "GET /v1/snapshots",
            "GET /v1/snapshots/{name}", "GET /v1/snapshots/{name}/checkpoint",
            "GET /v1/snapshots/{name}/diff/{other}", "GET /v1/snapshots/{name}/dirs",
            "GET /v1/snapshots/{name}/dirs/{path}", "GET /v1/snapshots/{name}/files/{path}",
            "POST /v1/run", "PUT /v1/modules/{name}", "PUT /v1/snapshots/{name}",
        ];
        want.sort();
        assert_eq!(seen, want);
        for (method, path) in [("GET", "/v1"), ("GET", "/v1/run/x"), ("POST", "/v1/snapshots/demo/files"), ("GET", "/v2/run")] {
            let (st, _) = s.send(method, path, None).await;
            assert!(st == 404 || st == 405, "{method} {path} is not documented but answers {st}");
        }
        let codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"].clone();
        for c in ["bad_module", "unknown_snapshot", "unknown_module", "limit_exceeded", "deadline_exceeded",
                  "overloaded", "unauthorized", "bad_request", "payload_too_large", "not_found"] {
            assert!(codes.as_array().unwrap().contains(&json!(c)), "{c}");
        }
    });
}

#[test]
fn a_public_address_without_a_token_is_refused() {
    let out = command(&["--listen", "0.0.0.0:0"], None).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without a token"), "{err}");
    assert!(out.stdout.is_empty(), "it never listened");
    // With one, it starts (and is stopped at once).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "tok\n").unwrap();
    let s = Server::start(&["--token-file", file.to_str().unwrap()], None);
    runtime().block_on(async {
        assert_eq!(
            s.send_as("GET", "/v1/modules", None, Some("tok"))
                .await
                .unwrap()
                .0,
            200
        );
        assert_eq!(
            s.send_as("GET", "/v1/modules", None, Some(""))
                .await
                .unwrap()
                .0,
            401
        );
    });
}

#[test]
fn a_thousand_concurrent_runs_each_see_only_their_own_id() {
    let s = Server::start(&["--demo", "--max-queue", "2000"], None);
    runtime().block_on(async {
        s.put_module("note", &note_wat(false)).await;
        let runs = (0..1000).map(|i| {
            let s = &s;
            async move {
                let id = format!("req-{i:04}-{}", i * 7919 % 1000);
                let v = s
                    .run(json!({"base": "demo", "module": "note", "args": [id]}))
                    .await;
                (id, v)
            }
        });
        let done = futures_join_all(runs).await;
        assert_eq!(done.len(), 1000);
        for (id, v) in done {
            assert_eq!(v["exit_code"], 0, "{v}");
            assert_eq!(
                v["stdout"].as_str().unwrap(),
                format!("{id}\n"),
                "cross-talk in {v}"
            );
        }
        // The base never changed.
        let (st, v) = s
            .json("GET", "/v1/snapshots/demo/files/log.txt", None)
            .await;
        assert_eq!((st, code(&v)), (404, "not_found"));
    });
}

/// Polls every future to completion, all at once.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

#[test]
fn a_chain_of_saved_runs_continues_and_rolls_back() {
    let s = Server::start(&["--demo"], None);
    runtime().block_on(async {
        s.put_module("note", &note_wat(false)).await;
        let step = |base: String, word: &'static str, save: Value| {
            let s = &s;
            async move {
                s.run(json!({"base": base, "module": "note", "args": [word], "save": save}))
                    .await
            }
        };
        let a = step("demo".into(), "a", json!(true)).await;
        assert_eq!(a["stdout"], "a\n");
        let ra = a["snapshot"].as_str().unwrap().to_string();
        let b = step(ra.clone(), "b", json!("turn-2")).await;
        assert_eq!(b["stdout"], "a\nb\n");
        let c = step("turn-2".into(), "c", json!(true)).await;
        assert_eq!(c["stdout"], "a\nb\nc\n");
        // Rollback: from the first turn again, the later ones never happened.
        let x = step(ra.clone(), "x", json!(false)).await;
        assert_eq!(x["stdout"], "a\nx\n");
        assert!(x.get("snapshot").is_none());
        // Every saved turn still reads as it was.
        for (id, want) in [
            (ra.as_str(), "a\n"),
            ("turn-2", "a\nb\n"),
            (c["snapshot"].as_str().unwrap(), "a\nb\nc\n"),
        ] {
            let (st, body) = s.get(&format!("/v1/snapshots/{id}/files/log.txt")).await;
            assert_eq!((st, String::from_utf8(body).unwrap().as_str()), (200, want));
        }
        let (_, v) = s
            .json("GET", &format!("/v1/snapshots/{ra}/diff/turn-2"), None)
            .await;
        assert_eq!(
            v["changes"],
            json!([{"path": "/log.txt", "kind": "modified"}])
        );
    });
}

#[test]
fn hostile_guests_end_with_their_own_errors_and_disturb_no_one() {
    let s = Server::start(&["--demo", "--max-running", "4"], None);
    // CAT after a busy loop of about a hundred milliseconds.
    let slow_cat = CAT_WAT.replace(
        "(func (export \"_start\")",
        &format!("(func (export \"_start\") (local $i i32) {SPIN}"),
    );
    runtime().block_on(async {
        for (n, w) in [
            ("note", note_wat(false).as_str()),
            ("loop", LOOP_WAT),
            ("bomb", BOMB_WAT),
            ("flood-bytes", FLOOD_BYTES_WAT),
            ("flood-inodes", FLOOD_INODES_WAT),
            ("shout", SHOUT_WAT),
            ("slow", note_wat(true).as_str()),
            ("slow-cat", slow_cat.as_str()),
        ] {
            s.put_module(n, w).await;
        }
        let jobs = (0..160).map(|i| {
            let s = &s;
            async move {
                let req = match i % 16 {
                    3 => json!({"base": "demo", "module": "loop", "timeout_ms": 300}),
                    7 => json!({"base": "demo", "module": "bomb", "max_memory_bytes": 8 << 20}),
                    9 => json!({"base": "demo", "module": "flood-bytes", "max_fs_bytes": 2 << 20}),
                    11 => json!({"base": "demo", "module": "flood-inodes", "max_fs_inodes": 50}),
                    13 => json!({"base": "demo", "module": "shout", "max_output_bytes": 1000}),
                    // Past the slice a guest may run on the request's
                    // thread: started over on a blocking one, with the
                    // same arguments and stdin, its first try unseen.
                    5 => json!({"base": "demo", "module": "slow", "args": [format!("n{i}")],
                                "diff": true}),
                    15 => json!({"base": "demo", "module": "slow-cat", "stdin": format!("in{i}")}),
                    _ => json!({"base": "demo", "module": "note", "args": [format!("n{i}")]}),
                };
                (i, s.run(req).await)
            }
        });
        for (i, v) in futures_join_all(jobs).await {
            match i % 16 {
                3 => assert_eq!(
                    (v["exit_code"].as_i64(), code(&v)),
                    (Some(124), "deadline_exceeded"),
                    "{v}"
                ),
                7 => assert_eq!(
                    (v["exit_code"].as_i64(), code(&v)),
                    (Some(3), "limit_exceeded"),
                    "{v}"
                ),
                9 => {
                    assert_eq!(v["exit_code"], 151, "ENOSPC: {v}");
                    assert!(
                        v["usage"]["private_bytes"].as_u64().unwrap() <= 2 << 20,
                        "{v}"
                    );
                }
                11 => {
                    assert_eq!(v["exit_code"], 119, "EDQUOT: {v}");
                    assert_eq!(v["usage"]["inodes"].as_u64().unwrap(), 5057 + 50, "{v}");
                }
                5 => {
                    assert_eq!(v["exit_code"], 0, "{v}");
                    assert_eq!(v["stdout"].as_str().unwrap(), format!("n{i}\n"));
                    let diff = v["diff"].as_array().unwrap();
                    assert_eq!(diff.len(), 1, "one log.txt, not one per try: {v}");
                    assert!(v["timings"]["run_us"].as_u64().unwrap() > 0, "{v}");
                }
                15 => {
                    assert_eq!(v["exit_code"], 0, "{v}");
                    assert_eq!(v["stdout"].as_str().unwrap(), format!("in{i}"), "{v}");
                }
                13 => {
                    assert_eq!(
                        (v["exit_code"].as_i64(), v["truncated"].as_bool()),
                        (Some(0), Some(true)),
                        "{v}"
                    );
                    assert_eq!(v["stdout"].as_str().unwrap(), "x".repeat(1000));
                }
                _ => {
                    assert_eq!(v["exit_code"], 0, "{v}");
                    assert_eq!(v["stdout"].as_str().unwrap(), format!("n{i}\n"));
                    assert!(v.get("error").is_none(), "{v}");
                }
            }
        }
        // The slow guests and the loops went past the slice and were
        // started over (once per module at least; then they skip it).
        let (_, text) = s.get("/metrics").await;
        let text = String::from_utf8(text).unwrap();
        let restarted: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("cowvfs_runs_restarted_total "))
            .and_then(|n| n.parse().ok())
            .expect("the restart counter");
        assert!(restarted >= 3, "{text}");
    });
}

#[test]
fn past_the_queue_requests_get_overloaded() {
    let s = Server::start(&["--demo", "--max-running", "1", "--max-queue", "1"], None);
    runtime().block_on(async {
        s.put_module("loop", LOOP_WAT).await;
        let slow = json!({"base": "demo", "module": "loop", "timeout_ms": 1500});
        let running = s.json("POST", "/v1/run", Some(slow.clone()));
        let waiting = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.json("POST", "/v1/run", Some(slow.clone())).await
        };
        let refused = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            s.json("POST", "/v1/run", Some(slow.clone())).await
        };
        let ((s1, v1), (s2, v2), (s3, v3)) = tokio::join!(running, waiting, refused);
        assert_eq!((s1, code(&v1)), (200, "deadline_exceeded"));
        assert_eq!(
            (s2, code(&v2)),
            (200, "deadline_exceeded"),
            "the queued one ran after"
        );
        assert_eq!((s3, code(&v3)), (429, "overloaded"), "{v3}");
    });
}

/// Bodies being received are charged to `--max-body-memory` before they
/// are buffered: while a slow client holds most of it, another upload is
/// refused with `429 overloaded` (a small request still fits), and once
/// the slow client is gone the same upload goes through.
#[test]
fn uploads_past_the_body_memory_get_overloaded() {
    use std::io::Write;
    let s = Server::start(
        &[
            "--demo",
            "--max-upload",
            "1M",
            "--max-body",
            "64K",
            "--max-body-memory",
            "1M",
        ],
        None,
    );
    runtime().block_on(async {
        let addr = s.url.strip_prefix("http://").unwrap().to_string();
        let mut slow = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            slow,
            "PUT /v1/snapshots/slow HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000000\r\n\r\n"
        )
        .unwrap();
        slow.write_all(&[0u8; 4096]).unwrap();
        slow.flush().unwrap();
        // The server charges the slow body once it reads its headers.
        let mut held = 0.0;
        for _ in 0..100 {
            let (_, text) = s.get("/metrics").await;
            let text = String::from_utf8(text).unwrap();
            held = text
                .lines()
                .find_map(|l| l.strip_prefix("cowvfs_request_body_bytes "))
                .expect("the body gauge")
                .parse::<f64>()
                .unwrap();
            if held >= 1e6 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(held >= 1e6, "the slow body is charged: {held}");
        let wat = format!("{LOOP_WAT}{}", " ".repeat(200_000));
        let (st, body) = s
            .send(
                "PUT",
                "/v1/modules/big",
                Some((wat.clone().into_bytes(), "application/wasm")),
            )
            .await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((st, code(&v)), (429, "overloaded"), "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("request bodies"),
            "{v}"
        );
        // A small body still fits beside the slow one.
        s.put_module("small", LOOP_WAT).await;
        drop(slow);
        let mut last = (0, Value::Null);
        for _ in 0..100 {
            let (st, body) = s
                .send(
                    "PUT",
                    "/v1/modules/big",
                    Some((wat.clone().into_bytes(), "application/wasm")),
                )
                .await;
            last = (st, serde_json::from_slice(&body).unwrap());
            if st == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(last.0, 200, "the budget came back: {}", last.1);
    });
}

/// A checkpoint of a tree with one small file, made with the library.
fn tiny_checkpoint() -> Vec<u8> {
    let mut v = cowvfs::Vfs::new();
    v.write_file("/hello.txt", b"hi\n").unwrap();
    let mut out = Vec::new();
    v.snapshot().save_to(&mut out).unwrap();
    out
}

#[test]
fn snapshots_past_the_memory_budget_are_evicted_oldest_unnamed_first() {
    // Room for the base and a handful of saved snapshots (each charged an
    // upper bound of what it holds: about 11 KiB for one small change).
    let s = Server::start(&["--max-snapshot-memory", "64K"], None);
    runtime().block_on(async {
        s.put_module("note", &note_wat(false)).await;
        let (st, body) = s.send("PUT", "/v1/snapshots/tiny", Some((tiny_checkpoint(), "application/octet-stream"))).await;
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        let mut roots = Vec::new();
        for i in 0..40 {
            let v = s.run(json!({"base": "tiny", "module": "note", "args": [format!("u{i}")], "save": true})).await;
            assert!(v.get("save_error").is_none(), "unnamed saves always fit: {v}");
            roots.push(v["snapshot"].as_str().unwrap().to_string());
        }
        let (_, list) = s.json("GET", "/v1/snapshots", None).await;
        assert!(list["memory_bytes"].as_u64().unwrap() <= 64 << 10, "{list}");
        // The oldest went, the newest stayed, the named base stayed.
        let (st, v) = s.json("POST", "/v1/run", Some(json!({"base": roots[0], "module": "note", "args": ["z"]}))).await;
        assert_eq!((st, code(&v)), (404, "unknown_snapshot"));
        let v = s.run(json!({"base": roots[39], "module": "note", "args": ["z"]})).await;
        assert_eq!(v["stdout"], "u39\nz\n");
        assert_eq!(s.json("GET", "/v1/snapshots/tiny", None).await.0, 200);
        // Named snapshots are never evicted: past the budget a named save
        // is refused (the run itself still answers).
        let mut refused = None;
        for i in 0..40 {
            let v = s.run(json!({"base": "tiny", "module": "note", "args": [format!("n{i}")], "save": format!("keep-{i}")})).await;
            assert_eq!(v["stdout"], format!("n{i}\n"));
            if let Some(e) = v.get("save_error") {
                assert_eq!(e["code"], "limit_exceeded", "{v}");
                assert!(v.get("snapshot").is_none());
                refused = Some(i);
                break;
            }
        }
        let refused = refused.expect("the budget filled up");
        assert!(refused > 3, "several named saves fit first ({refused})");
        for i in 0..refused {
            let (st, body) = s.get(&format!("/v1/snapshots/keep-{i}/files/log.txt")).await;
            assert_eq!((st, body), (200, format!("n{i}\n").into_bytes()));
        }
        let (_, text) = s.get("/metrics").await;
        let text = String::from_utf8(text).unwrap();
        assert!(!text.contains("cowvfs_snapshots_evicted 0\n"), "{text}");
    });
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib << 10
}

#[test]
fn saved_snapshots_are_charged_what_they_hold_never_less() {
    // One malloc arena: a run that outlasts its inline slice restarts on a
    // blocking thread, and glibc gives each new thread an arena of its own
    // (up to 8 per core) whose pages stay resident after the run. How many
    // such threads a loaded machine starts has nothing to do with the
    // snapshots, and on a busy CI host it added as much resident memory as
    // the snapshots themselves. With one arena the growth measured is what
    // the saved snapshots hold, plus the heap's own fragmentation.
    let s = Server::start_env(&["--demo"], None, &[("MALLOC_ARENA_MAX", "1".to_string())]);
    runtime().block_on(async {
        s.put_module("note", &note_wat(false)).await;
        s.put_module("flood", FLOOD_BYTES_WAT).await;
        let charged = || async { s.json("GET", "/v1/snapshots", None).await.1["memory_bytes"].as_u64().unwrap() };
        let saves = |from: usize, n: usize| {
            let s = &s;
            futures_join_all((from..from + n).map(move |i| async move {
                let v = s.run(json!({"base": "demo", "module": "note", "args": [format!("s{i}")], "save": true})).await;
                assert!(v["snapshot"].is_string(), "{v}");
            }))
        };
        // Warm up: the allocator's arenas and the registry's map grow.
        saves(0, 300).await;
        let (rss0, charged0) = (rss(s.pid()), charged().await);
        for batch in 0..10 {
            saves(1000 + batch * 100, 100).await;
        }
        let (rss1, charged1) = (rss(s.pid()), charged().await);
        let (grew, charge) = (rss1.saturating_sub(rss0), charged1 - charged0);
        eprintln!("1,000 one-change snapshots: resident memory +{grew} B, charged +{charge} B");
        assert!(charge >= grew, "charged {charge} B for {grew} B of resident growth");
        // An upper bound, not an estimate: one small change pays for the
        // whole trie and map paths it might have copied, about 3-4 times
        // the 1.4-2 KiB per snapshot measured here. Far more would waste
        // the budget.
        assert!(charge <= 6 * grew.max(1 << 20), "charged {charge} B for {grew} B");
        // 10 MiB and more of new data is charged at least that.
        let v = s.run(json!({"base": "demo", "module": "flood", "max_fs_bytes": 12 << 20, "save": true})).await;
        assert_eq!(v["exit_code"], 151, "ENOSPC: {v}");
        let root = v["snapshot"].as_str().unwrap();
        let (_, demo) = s.json("GET", "/v1/snapshots/demo", None).await;
        let (_, saved) = s.json("GET", &format!("/v1/snapshots/{root}"), None).await;
        let new = saved["usage"]["held_bytes"].as_u64().unwrap() - demo["usage"]["held_bytes"].as_u64().unwrap();
        assert!(new >= 10 << 20, "{saved}");
        assert!(saved["memory_bytes"].as_u64().unwrap() >= new, "{saved}");
    });
}

/// Registers the note guest on both servers and the tiny base on `a`,
/// runs the guest there with "on-a" and saves the fork: its root.
async fn saved_on_first(a: &Server, b: &Server) -> String {
    for s in [a, b] {
        s.put_module("note", &note_wat(false)).await;
    }
    let (st, body) = a
        .send(
            "PUT",
            "/v1/snapshots/tiny",
            Some((tiny_checkpoint(), "application/octet-stream")),
        )
        .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let v = a
        .run(json!({"base": "tiny", "module": "note", "args": ["on-a"], "save": true}))
        .await;
    v["snapshot"].as_str().unwrap().to_string()
}

#[test]
fn servers_sharing_a_store_share_saved_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let a = Server::start(&["--store", store], None);
    let b = Server::start(&["--store", store], None);
    runtime().block_on(async {
        let root = saved_on_first(&a, &b).await;
        // B has never seen it: it opens it from the store by its root.
        let v = b
            .run(json!({"base": root, "module": "note", "args": ["on-b"]}))
            .await;
        assert_eq!(v["stdout"], "on-a\non-b\n");
        let (st, body) = b
            .get(&format!("/v1/snapshots/{root}/files/hello.txt"))
            .await;
        assert_eq!((st, body.as_slice()), (200, &b"hi\n"[..]));
        // And names it.
        let (st, v) = b
            .json("PUT", "/v1/snapshots/from-a", Some(json!({"root": root})))
            .await;
        assert_eq!((st, v["root"].as_str()), (200, Some(root.as_str())), "{v}");
        let (st, v) = b
            .json(
                "PUT",
                "/v1/snapshots/none",
                Some(json!({"root": "ab".repeat(32)})),
            )
            .await;
        assert_eq!((st, code(&v)), (404, "unknown_snapshot"), "{v}");

        // Names are shared through the store's refs: a name saved on A,
        // which B has never seen, B finds there.
        let v = a
            .run(json!({"base": "tiny", "module": "note", "args": ["named-on-a"], "save": "chat"}))
            .await;
        assert_eq!(v["name"], "chat", "{v}");
        let v = b
            .run(json!({"base": "chat", "module": "note", "args": ["on-b"], "save": "chat2"}))
            .await;
        assert_eq!(v["stdout"], "named-on-a\non-b\n", "{v}");
        // A does not hold chat2: it follows the ref, and moves as B moves it.
        let v = a
            .run(json!({"base": "chat2", "module": "note", "args": ["x"]}))
            .await;
        assert_eq!(v["stdout"], "named-on-a\non-b\nx\n", "{v}");
        let moved = b
            .run(json!({"base": "chat2", "module": "note", "args": ["again"], "save": "chat2"}))
            .await;
        let v = a
            .run(json!({"base": "chat2", "module": "note", "args": ["y"]}))
            .await;
        assert_eq!(v["stdout"], "named-on-a\non-b\nagain\ny\n", "{v}");
        // The ref is the store's own, as the library reads it.
        let shared = cowvfs::store::open_store(store, false).unwrap();
        let r = cowvfs::store::refs::read_ref(&*shared, "chat2")
            .unwrap()
            .unwrap();
        assert_eq!(
            r.root().to_hex().as_str(),
            moved["snapshot"].as_str().unwrap()
        );
        assert_eq!(r.history.len(), 2, "two saves, two entries");
        // A name neither holds nor the store has is unknown.
        let (st, v) = a
            .json(
                "POST",
                "/v1/run",
                Some(json!({"base": "nobody", "module": "note"})),
            )
            .await;
        assert_eq!((st, code(&v)), (404, "unknown_snapshot"), "{v}");
    });
}

#[test]
fn servers_sharing_a_seaweedfs_store_share_saved_snapshots() {
    let weed = store_support::Weed::start();
    // The bucket, as an operator would have made it (SeaweedFS makes one
    // on the first write into it).
    cowvfs::store::BlobStore::put_objects(&weed.store("serve", ""), &[("made", b"".as_slice())])
        .expect("create the bucket");
    let caches = tempfile::tempdir().unwrap();
    // Each server has its own chunk cache, as on two hosts: what B knows
    // of A's snapshot came through S3.
    let start = |name: &str| {
        let mut env = weed.env();
        let cache = caches.path().join(name);
        env.push(("COWVFS_CACHE", cache.to_str().unwrap().to_string()));
        Server::start_env(&["--store", "s3://serve/shared"], None, &env)
    };
    let a = start("a");
    let b = start("b");
    runtime().block_on(async {
        let root = saved_on_first(&a, &b).await;
        // B never saw it: it runs from the root, opened from SeaweedFS.
        let v = b
            .run(json!({"base": root, "module": "note", "args": ["on-b"], "save": true}))
            .await;
        assert_eq!(v["stdout"], "on-a\non-b\n", "{v}");
        let (st, body) = b.get(&format!("/v1/snapshots/{root}/files/log.txt")).await;
        assert_eq!((st, body.as_slice()), (200, &b"on-a\n"[..]));
        let (st, body) = b
            .get(&format!("/v1/snapshots/{root}/files/hello.txt"))
            .await;
        assert_eq!((st, body.as_slice()), (200, &b"hi\n"[..]));
        // And back: what B saved on top of it, A reads.
        let on_b = v["snapshot"].as_str().unwrap().to_string();
        let (st, body) = a.get(&format!("/v1/snapshots/{on_b}/files/log.txt")).await;
        assert_eq!((st, body.as_slice()), (200, &b"on-a\non-b\n"[..]));
        // A root neither has saved is unknown on both.
        let missing = "cd".repeat(32);
        let (st, v) = b
            .json(
                "POST",
                "/v1/run",
                Some(json!({"base": missing, "module": "note", "args": ["x"]})),
            )
            .await;
        assert_eq!((st, code(&v)), (404, "unknown_snapshot"), "{v}");
    });
}

#[test]
fn shutdown_under_load_finishes_every_request_in_progress() {
    let s = Server::start(&["--demo", "--max-running", "2"], None);
    let rt = runtime();
    rt.block_on(async {
        s.put_module("slow", &note_wat(true)).await;
        let pid = s.pid();
        let runs = (0..24).map(|i| {
            let s = &s;
            async move {
                let id = format!("late-{i}");
                let req = json!({"base": "demo", "module": "slow", "args": [id]});
                let body = (serde_json::to_vec(&req).unwrap(), "application/json");
                (id, s.send_as("POST", "/v1/run", Some(body), None).await)
            }
        });
        let signal = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let st = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(st.success());
        };
        let (done, ()) = tokio::join!(futures_join_all(runs), signal);
        for (id, r) in done {
            let (st, body) =
                r.unwrap_or_else(|e| panic!("{id} was in progress and got no answer: {e}"));
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(st, 200, "{v}");
            assert_eq!(v["stdout"].as_str().unwrap(), format!("{id}\n"));
        }
    });
    // It then exits by itself, successfully.
    let mut s = s;
    let mut child = s.child.take().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
