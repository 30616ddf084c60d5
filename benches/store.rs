//! Fleet store transfers against a real S3 server (SeaweedFS on loopback,
//! started like the tests start it): a full push, a near-identical push,
//! a pull and a lazy start, each beside the plain alternative: one PUT (or
//! GET) of the whole checkpoint file through the same object_store client.
//! Prints a Markdown table for BENCHMARKS.md. Not criterion: each row is a
//! network transfer of tens of MiB; the median of a few runs is reported.
//!
//!     cargo bench --bench store [-- MIB]

#[path = "../tests/store_support/mod.rs"]
mod store_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cowvfs::Vfs;
use cowvfs::store::{self, Metered, TransferOptions};
use store_support::noise;

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

fn main() {
    // `cargo test --all-targets` runs this too, without `--bench`: then a
    // 1 MiB smoke run keeps CI short.
    let bench = std::env::args().any(|a| a == "--bench");
    let total_mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 64 } else { 1 });
    #[allow(non_snake_case)]
    let RUNS: usize = if bench { 3 } else { 1 };
    let weed = store_support::Weed::start();
    let dir = tempfile::tempdir().unwrap();

    // 256 KiB files of unique data, plus one small file a guest reads.
    let files = total_mib * 4;
    let mut v = Vfs::new();
    v.create_dir_all("/data").unwrap();
    for i in 0..files {
        v.write_file(&format!("/data/f{i:05}"), &noise(i as u64, 256 << 10))
            .unwrap();
    }
    v.write_file("/data/small.txt", b"hello\n").unwrap();
    let a = v.snapshot();
    let mut f = v.read_file("/data/f00001").unwrap();
    f[1000] ^= 1;
    v.write_file("/data/f00001", &f).unwrap();
    let b = v.snapshot();
    let (ck_a, ck_b) = (dir.path().join("a.ck"), dir.path().join("b.ck"));
    a.save(&ck_a).unwrap();
    b.save(&ck_b).unwrap();
    let file_a = std::fs::read(&ck_a).unwrap();
    let file_b = std::fs::read(&ck_b).unwrap();
    let opts = TransferOptions::default();

    // Every request counts (GETs, PUTs and HEADs alike). What a real
    // object store's round trip would add: at 10 ms a request, with as
    // many in flight as a transfer keeps (`opts.batch`), and one at a time.
    let rtt = |reqs: u64| {
        let waves = reqs.div_ceil(opts.batch as u64);
        format!(
            "+{:.2} s / +{:.1} s",
            waves as f64 * 0.010,
            reqs as f64 * 0.010
        )
    };
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut row = |what: &str, d: Duration, bytes: u64, reqs: u64, base: &str| {
        rows.push([
            what.to_string(),
            format!("{:.0} ms", d.as_secs_f64() * 1000.0),
            mib(bytes),
            reqs.to_string(),
            rtt(reqs),
            base.to_string(),
        ]);
    };

    // Full push of A to an empty prefix, and the whole-file PUT.
    let (mut t_push, mut t_put, mut t_near, mut t_put_b) = (vec![], vec![], vec![], vec![]);
    let (mut pushed, mut near) = (None, None);
    for r in 0..RUNS {
        let s3 = Arc::new(Metered::new(weed.store("bench", &format!("run{r}"))));
        let t = Instant::now();
        let st = store::push(&a, &*s3, &opts).unwrap();
        t_push.push(t.elapsed());
        let full = s3.meter().totals();
        let t = Instant::now();
        let st_b = store::push(&b, &*s3, &opts).unwrap();
        t_near.push(t.elapsed());
        let after = s3.meter().totals();
        pushed = Some((st, full));
        near = Some((
            st_b,
            (after.2 - full.2 + after.4 - full.4, after.3 - full.3),
        ));

        let raw = weed.store("bench", &format!("whole{r}"));
        let t = Instant::now();
        raw.put_raw("a.ck", file_a.clone()).unwrap();
        t_put.push(t.elapsed());
        let t = Instant::now();
        raw.put_raw("b.ck", file_b.clone()).unwrap();
        t_put_b.push(t.elapsed());
    }
    let (st, full) = pushed.unwrap();
    let (_, (near_reqs, near_bytes)) = near.unwrap();
    let d = median(t_push);
    let base = median(t_put);
    row(
        "push, full (empty store)",
        d,
        full.3,
        full.2 + full.4,
        &format!(
            "{} ({} for one PUT of the file)",
            rate(full.3, d),
            rate(file_a.len() as u64, base)
        ),
    );
    row(
        "  baseline: PUT whole checkpoint",
        base,
        file_a.len() as u64,
        1,
        &rate(file_a.len() as u64, base),
    );
    let d = median(t_near);
    let base_b = median(t_put_b);
    row(
        "push, one file changed",
        d,
        near_bytes,
        near_reqs,
        &format!(
            "{:.0}x fewer bytes than the PUT",
            file_b.len() as f64 / near_bytes as f64
        ),
    );
    row(
        "  baseline: PUT whole new checkpoint",
        base_b,
        file_b.len() as u64,
        1,
        &rate(file_b.len() as u64, base_b),
    );

    // Pull without a cache, and the whole-file GET.
    let s3 = Arc::new(Metered::new(weed.store("bench", "run0")));
    let raw = weed.store("bench", "whole0");
    let (mut t_pull, mut t_get) = (vec![], vec![]);
    let mut pulled = (0, 0);
    for r in 0..RUNS {
        let before = s3.meter().totals();
        let t = Instant::now();
        store::pull(
            &*s3,
            &st.root,
            dir.path().join(format!("p{r}.ck")),
            None,
            &opts,
        )
        .unwrap();
        t_pull.push(t.elapsed());
        let after = s3.meter().totals();
        pulled = (after.1 - before.1, after.0 - before.0 + after.4 - before.4);
        let t = Instant::now();
        let got = raw.get_raw("a.ck").unwrap().unwrap();
        t_get.push(t.elapsed());
        assert_eq!(got.len(), file_a.len());
    }
    let d = median(t_pull);
    let base = median(t_get);
    row(
        "pull to a checkpoint file (no cache)",
        d,
        pulled.0,
        pulled.1,
        &format!(
            "{} ({} for one GET of the file)",
            rate(pulled.0, d),
            rate(file_a.len() as u64, base)
        ),
    );
    row(
        "  baseline: GET whole checkpoint",
        base,
        file_a.len() as u64,
        1,
        &rate(file_a.len() as u64, base),
    );

    // Lazy start: open, then read one small file.
    let mut t_lazy = vec![];
    let mut lazy_moved = (0, 0);
    for _ in 0..RUNS {
        let before = s3.meter().totals();
        let t = Instant::now();
        let snap = store::open_lazy(s3.clone(), &st.root, None).unwrap();
        assert_eq!(
            snap.fork().read_file("/data/small.txt").unwrap(),
            b"hello\n"
        );
        t_lazy.push(t.elapsed());
        let after = s3.meter().totals();
        lazy_moved = (after.1 - before.1, after.0 - before.0 + after.4 - before.4);
    }
    row(
        "lazy start + read one small file",
        median(t_lazy),
        lazy_moved.0,
        lazy_moved.1,
        "manifest + one chunk",
    );

    println!(
        "Tree: {files} files of 256 KiB unique data + 1 small file ({}); checkpoint file {}; \
         SeaweedFS weed server -s3 on loopback, median of {RUNS} runs.\n",
        mib(st.chunk_bytes),
        mib(file_a.len() as u64),
    );
    println!(
        "| transfer | time | bytes moved | requests | at 10 ms/request ({} in flight / one at a time) | rate / note |",
        opts.batch
    );
    println!("|---|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r[0], r[1], r[2], r[3], r[4], r[5]
        );
    }
}
