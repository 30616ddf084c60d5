use cowvfs::{OpenOptions, Snapshot, Vfs};
use std::time::Instant;
fn main() {
    let p = std::path::Path::new("/dev/shm/ckprof/many.ck");
    if !p.exists() {
        let mut v = Vfs::with_limits(cowvfs::Limits::unlimited());
        let buf = vec![7u8; 10_000];
        for i in 0..100_000usize {
            let dir = format!("/d{}", i / 1000);
            if i % 1000 == 0 {
                v.create_dir(&dir).unwrap();
            }
            let fd = v
                .open(
                    &format!("{dir}/f{i}"),
                    OpenOptions::new().write(true).create(true),
                )
                .unwrap();
            let mut b = buf.clone();
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            v.write_at(fd, &b, 0).unwrap();
            v.close(fd).unwrap();
        }
        v.snapshot().save(p).unwrap();
    }
    for _ in 0..20 {
        let t = Instant::now();
        let s = Snapshot::open(p).unwrap();
        eprintln!("{:?}", t.elapsed());
        drop(s);
    }
}
