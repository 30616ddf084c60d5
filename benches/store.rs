//! Fleet store benchmarks against a real S3 server: SeaweedFS on loopback,
//! started like the tests start it, and the same server behind
//! object_store's `ThrottledStore` adding 10 ms before every request (a
//! distant object store's round trip, with requests in flight at once
//! waiting at once).
//!
//! Two parts:
//! - bulk transfers of a tree of unique data (1 GiB by default): push to
//!   an empty prefix and pull without a cache, each beside one PUT (GET)
//!   of the whole checkpoint file through the same client, every request
//!   counted by `store::Metered`; the GET twice: into memory, and
//!   streamed into a local file that is then synced (what `aws s3 cp`
//!   does, and what a pull also ends with: a durable file); median of
//!   `RUNS` runs, printed as a Markdown table. Not criterion samples: criterion needs at least 10
//!   iterations, and 10 GiB-sized uploads per row would fill the disk.
//! - criterion benches (10 samples each): a near-identical push of that
//!   tree, lazy start first byte at 10 ms/request, and a sequential read
//!   of a 64 MiB file lazily at 10 ms/request beside one plain download
//!   of the same bytes.
//!
//! ```text
//! cargo bench --bench store                  # 1 GiB
//! COWVFS_BENCH_MIB=256 cargo bench --bench store
//! COWVFS_BENCH_BULK_ONLY=1 cargo bench --bench store   # part 1 only
//! COWVFS_BENCH_PULL_ONLY=1 COWVFS_BENCH_RUNS=7 cargo bench --bench store
//! ```
//!
//! Under `cargo test --all-targets` (no `--bench`) it runs a 2 MiB smoke
//! version of everything once.

#[path = "../tests/store_support/mod.rs"]
mod store_support;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cowvfs::store::{self, BlobStore, Metered, S3Store, TransferOptions};
use cowvfs::{OpenOptions, Snapshot, Vfs};
use criterion::Criterion;
use store_support::{Weed, noise};

const DELAY: Duration = Duration::from_millis(10);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(bytes: u64, d: Duration) -> String {
    format!(
        "{:.0} MiB/s",
        bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
    )
}

fn mib(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// `total_mib` of unique data: one `big_mib` file and 1 MiB files, plus a
/// small file a guest reads.
fn tree(total_mib: usize, big_mib: usize) -> Vfs {
    let mut v = Vfs::with_limits(cowvfs::Limits::unlimited());
    v.create_dir_all("/data").unwrap();
    v.write_file("/data/big", &noise(1_000_000, big_mib << 20))
        .unwrap();
    for i in 0..total_mib - big_mib {
        v.write_file(&format!("/data/f{i:05}"), &noise(i as u64, 1 << 20))
            .unwrap();
    }
    v.write_file("/data/small.txt", b"hello\n").unwrap();
    v
}

/// One GET of `name` (under `prefix` in `bucket`) streamed into a new
/// file at `out` as the body arrives, 1 MiB at a time, then synced: the
/// plain-download baseline that, like a pull, ends with a durable file.
/// Its own object_store client over the same server (the store's client
/// is private), on a runtime of two workers like the store's. The bytes
/// written.
fn get_to_file(weed: &Weed, bucket: &str, key: &str, out: &Path) -> u64 {
    use futures_util::StreamExt;
    use object_store::ObjectStoreExt;
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let mut b = AmazonS3Builder::new().with_bucket_name(bucket);
    for (k, v) in weed.env() {
        b = b.with_config(
            k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>().unwrap(),
            v,
        );
    }
    let client = b.build().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let path = object_store::path::Path::from(key);
    rt.block_on(async {
        let file = std::fs::File::create(out).unwrap();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut body = client.get(&path).await.unwrap().into_stream();
        let mut n = 0u64;
        while let Some(piece) = body.next().await {
            let piece = piece.unwrap();
            n += piece.len() as u64;
            w.write_all(&piece).unwrap();
        }
        w.into_inner().unwrap().sync_all().unwrap();
        n
    })
}

/// Writes back every dirty page on the machine before a timed transfer,
/// so that no row pays for the write-back of the one before it (the
/// server's copies of the gigabyte just pushed and PUT, a pulled file).
fn settle() {
    rustix::fs::sync();
}

/// Reads `/data/big` front to back in 64 KiB reads, as a guest would.
fn read_big(snap: &Snapshot) -> u64 {
    let mut sandbox = snap.fork();
    let fd = sandbox
        .open("/data/big", OpenOptions::new().read(true))
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0u64;
    loop {
        let n = sandbox.read_at(fd, &mut buf, at).unwrap();
        if n == 0 {
            return at;
        }
        at += n as u64;
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let total_mib: usize = std::env::var("COWVFS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 1024 } else { 2 });
    let big_mib = if total_mib >= 128 { 64 } else { 1 };
    let runs: usize = if bench {
        std::env::var("COWVFS_BENCH_RUNS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3)
            .max(1)
    } else {
        1
    };
    let weed = Weed::start_sized(1024, 24);
    let dir = tempfile::tempdir().unwrap();
    let v = tree(total_mib, big_mib);
    let a = v.snapshot();
    let ck = dir.path().join("a.ck");
    a.save(&ck).unwrap();
    let file = std::fs::read(&ck).unwrap();
    let big_bytes = v.read_file("/data/big").unwrap();
    let opts = TransferOptions::default();

    // Part 1: bulk push and pull beside one whole-object PUT and GET.
    let mut rows: Vec<[String; 5]> = Vec::new();
    let (mut t_push, mut t_put, mut t_pull, mut t_get) = (vec![], vec![], vec![], vec![]);
    let mut t_get_file = vec![];
    let (mut push_reqs, mut pull_reqs, mut pushed) = (0, 0, None);
    // COWVFS_BENCH_LAZY_ONLY=1: push once, untimed, and go straight to
    // the criterion part (while iterating on the lazy benches).
    let lazy_only = std::env::var_os("COWVFS_BENCH_LAZY_ONLY").is_some();
    let runs = if lazy_only { 1 } else { runs };
    // COWVFS_BENCH_PULL_ONLY=1: push once, untimed, then time only the
    // pulls (for a profiler: no push, PUT or GET in the samples).
    let pull_only = std::env::var_os("COWVFS_BENCH_PULL_ONLY").is_some();
    for r in 0..runs {
        let s3 = Arc::new(Metered::new(weed.store("bench", &format!("run{r}"))));
        if lazy_only {
            pushed = Some(store::push(&a, &*s3, &opts).unwrap());
            break;
        }
        if pull_only {
            let s3 = Metered::new(weed.store("bench", "run0"));
            let st = match pushed {
                Some(st) => st,
                None => store::push(&a, &s3, &opts).unwrap(),
            };
            let out = dir.path().join("pulled.ck");
            let before = s3.meter().requests();
            settle();
            let t = Instant::now();
            store::pull(&s3, &st.root, &out, None, &opts).unwrap();
            t_pull.push(t.elapsed());
            println!("pull {r}: {:.3} s", t.elapsed().as_secs_f64());
            pull_reqs = s3.meter().requests() - before;
            std::fs::remove_file(&out).unwrap();
            pushed = Some(st);
            continue;
        }
        settle();
        let t = Instant::now();
        let st = store::push(&a, &*s3, &opts).unwrap();
        t_push.push(t.elapsed());
        push_reqs = s3.meter().requests();
        let raw = weed.store("bench", &format!("whole{r}"));
        settle();
        let t = Instant::now();
        raw.put_raw("a.ck", file.clone()).unwrap();
        t_put.push(t.elapsed());

        let before = s3.meter().requests();
        let out = dir.path().join("pulled.ck");
        settle();
        let t = Instant::now();
        store::pull(&*s3, &st.root, &out, None, &opts).unwrap();
        t_pull.push(t.elapsed());
        pull_reqs = s3.meter().requests() - before;
        std::fs::remove_file(&out).unwrap();
        settle();
        let t = Instant::now();
        let got = raw.get_raw("a.ck").unwrap().unwrap();
        t_get.push(t.elapsed());
        assert_eq!(got.len(), file.len());
        drop(got);
        let copy = dir.path().join("copied.ck");
        settle();
        let t = Instant::now();
        let n = get_to_file(&weed, "bench", &format!("whole{r}/a.ck"), &copy);
        t_get_file.push(t.elapsed());
        assert_eq!(n, file.len() as u64);
        std::fs::remove_file(&copy).unwrap();
        pushed = Some(st);
    }
    let st = pushed.unwrap();
    let n = file.len() as u64;
    if lazy_only || pull_only {
        t_push.push(Duration::ZERO);
        t_put.push(Duration::ZERO);
        if lazy_only {
            t_pull.push(Duration::ZERO);
        }
        t_get.push(Duration::ZERO);
        t_get_file.push(Duration::ZERO);
    }
    for (what, times, bytes, reqs) in [
        ("push (empty store)", t_push, st.chunk_bytes, push_reqs),
        ("  baseline: one PUT of the checkpoint file", t_put, n, 1),
        (
            "pull to a checkpoint file (no cache)",
            t_pull,
            st.chunk_bytes,
            pull_reqs,
        ),
        (
            "  baseline: one GET of the checkpoint file, into memory",
            t_get,
            n,
            1,
        ),
        (
            "  baseline: one GET of the checkpoint file, streamed into a local file, synced",
            t_get_file,
            n,
            1,
        ),
    ] {
        let d = median(times);
        rows.push([
            what.to_string(),
            format!("{:.2} s", d.as_secs_f64()),
            rate(bytes, d),
            reqs.to_string(),
            format!("+{:.2} s", reqs as f64 * DELAY.as_secs_f64()),
        ]);
    }
    println!(
        "Tree: {} of unique data ({} chunks; one {big_mib} MiB file, the rest 1 MiB files); \
         checkpoint file {}; pack size {}; median of {runs} runs.\n",
        mib(st.chunk_bytes),
        st.chunks,
        mib(n),
        mib(opts.pack_size)
    );
    println!("| transfer | time | rate | requests | at 10 ms/request, one at a time |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
    }

    // COWVFS_BENCH_BULK_ONLY=1: stop here (while iterating on the bulk
    // transfers, or under a profiler).
    if std::env::var_os("COWVFS_BENCH_BULK_ONLY").is_some() || pull_only {
        return;
    }

    // Part 2: criterion.
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let s3 = Arc::new(Metered::new(weed.store("bench", "run0")));
    // A pushing host keeps the store's index objects in its cache, as
    // `cowvfs push` does.
    let cache = store::MemStore::new();
    let near_opts = TransferOptions {
        cache: Some(&cache),
        ..TransferOptions::default()
    };

    // Near-identical push: each iteration changes one byte of a 1 MiB file
    // (a different byte each time, so each push has one new chunk).
    let mut near = (0u64, 0u64, 0u64);
    let mut flip = 0usize;
    c.bench_function("store/near_identical_push", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut w = a.fork();
                let path = "/data/big";
                let mut f = big_bytes.clone();
                flip += 1;
                let at = (flip * 4099) % f.len();
                f[at] ^= 0x5a;
                w.write_file(path, &f).unwrap();
                let snap = w.snapshot();
                let m = s3.meter();
                let (r0, o0, i0) = (m.requests(), m.totals().3, m.totals().1);
                let t = Instant::now();
                let st = store::push(&snap, &*s3, &near_opts).unwrap();
                total += t.elapsed();
                assert_eq!(st.moved_chunks, 1);
                near = (m.requests() - r0, m.totals().3 - o0, m.totals().1 - i0);
            }
            total
        })
    });
    println!(
        "near-identical push: {} requests, {} up, {} down (the index objects read)",
        near.0,
        mib(near.1),
        mib(near.2)
    );

    // Lazy start at 10 ms per request: open, then the first byte of a file.
    let slow: Arc<dyn BlobStore> = Arc::new(
        S3Store::with_config("bench", "run0", weed.env())
            .unwrap()
            .with_request_delay(DELAY),
    );
    c.bench_function("store/lazy_first_byte_10ms", |b| {
        b.iter(|| {
            let snap = store::open_lazy(slow.clone(), &st.root, None).unwrap();
            let mut sandbox = snap.fork();
            let fd = sandbox
                .open("/data/small.txt", OpenOptions::new().read(true))
                .unwrap();
            let mut one = [0u8; 1];
            assert_eq!(sandbox.read_at(fd, &mut one, 0).unwrap(), 1);
        })
    });

    // A 64 MiB file read front to back lazily at 10 ms per request,
    // beside one plain GET of the same bytes through the same client.
    let slow_raw = S3Store::with_config("bench", "plain", weed.env())
        .unwrap()
        .with_request_delay(DELAY);
    weed.store("bench", "plain")
        .put_raw("big", big_bytes.clone())
        .unwrap();
    let mut g = c.benchmark_group("store/sequential_read_10ms");
    g.throughput(criterion::Throughput::Bytes(big_bytes.len() as u64));
    g.bench_function("lazy", |b| {
        b.iter(|| {
            let snap = store::open_lazy(slow.clone(), &st.root, None).unwrap();
            assert_eq!(read_big(&snap), big_bytes.len() as u64);
        })
    });
    g.bench_function("plain_get", |b| {
        b.iter(|| {
            let got = slow_raw.get_raw("big").unwrap().unwrap();
            assert_eq!(got.len(), big_bytes.len());
        })
    });
    g.finish();
    c.final_summary();
}
