//! Shared by the checkpoint decoding targets: the small parent their deltas
//! name, and what they ask of a tree that loaded: a whole, valid tree that
//! can be walked and read. Files are read in a few 64 KiB
//! windows (start, middle, end), never whole: a checkpoint may rightly
//! declare a sparse file of many GiB.

use cowvfs::{FileType, OpenOptions, Snapshot, Vfs};

/// The parent every delta input is offered.
pub fn parent() -> Snapshot {
    let mut v = Vfs::new();
    let _ = v.create_dir("/p");
    let _ = v.write_file("/p/f", b"parent");
    v.snapshot()
}

pub fn accept(s: Snapshot) {
    if let Err(e) = s.check_invariants() {
        panic!("loaded tree breaks an invariant: {e}");
    }
    let _ = s.root_hash();
    let mut reader = s.fork();
    let mut buf = vec![0u8; 64 << 10];
    let mut work = vec!["/".to_string()];
    while let Some(dir) = work.pop() {
        let Ok(entries) = s.read_dir(&dir) else { continue };
        for e in entries {
            let p = if dir == "/" { format!("/{}", e.name) } else { format!("{dir}/{}", e.name) };
            match e.kind {
                FileType::Dir => work.push(p),
                // Lazy chunks may fail verification: an error, never a panic.
                FileType::File => {
                    let Ok(fd) = reader.open(&p, &OpenOptions::new()) else { continue };
                    let size = reader.file_metadata(fd).map(|m| m.len).unwrap_or(0);
                    for at in [0, size / 2, size.saturating_sub(buf.len() as u64)] {
                        let _ = reader.read_at(fd, &mut buf, at);
                    }
                    let _ = reader.close(fd);
                }
                FileType::Symlink => {
                    let _ = s.read_link(&p);
                }
            }
        }
    }
}
