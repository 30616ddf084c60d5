//! Host-level checks of the preview1 descriptor table that a C guest
//! cannot make precisely: what `fd_readdir` keeps per descriptor.

use super::abi::{Mem, oflags};
use super::{COOKIE_MEMORY, COOKIE_NAME_BYTES, Slot, WasiP1Ctx};
use crate::Vfs;

const PATH: u32 = 0;
const OUT: u32 = 1024;
const BUF: u32 = 4096;

/// A context with `/` preopened and `/d` holding `n` files, and `/d`
/// opened: the context, guest memory and the directory's descriptor.
fn setup(n: usize) -> (WasiP1Ctx, Vec<u8>, i32) {
    let mut vfs = Vfs::new();
    vfs.create_dir("/d").unwrap();
    for i in 0..n {
        vfs.write_file(&format!("/d/f{i:04}"), b"").unwrap();
    }
    let mut ctx = WasiP1Ctx::new(vfs);
    ctx.preopen("/", "/").unwrap();
    let mut mem = vec![0u8; 1 << 16];
    ctx.start().ok().unwrap();
    mem[..1].copy_from_slice(b"d");
    let r = ctx.path_open(
        &mut Mem(&mut mem),
        3,
        0,
        PATH as i32,
        1,
        i32::from(oflags::DIRECTORY),
        0,
        0,
        0,
        OUT as i32,
    );
    assert!(r.is_ok());
    let fd = u32::from_le_bytes(mem[OUT as usize..OUT as usize + 4].try_into().unwrap());
    (ctx, mem, fd as i32)
}

/// One `fd_readdir` call with a `len`-byte buffer: the complete entries
/// (name, d_next) it returned.
fn readdir(
    ctx: &mut WasiP1Ctx,
    mem: &mut [u8],
    fd: i32,
    len: u32,
    cookie: u64,
) -> Vec<(String, u64)> {
    let r = ctx.fd_readdir(
        &mut Mem(mem),
        fd,
        BUF as i32,
        len as i32,
        cookie as i64,
        OUT as i32,
    );
    assert!(r.is_ok());
    let used = u32::from_le_bytes(mem[OUT as usize..OUT as usize + 4].try_into().unwrap()) as usize;
    let buf = &mem[BUF as usize..BUF as usize + used];
    let mut out = Vec::new();
    let mut at = 0;
    while at + 24 <= buf.len() {
        let next = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
        let namlen = u32::from_le_bytes(buf[at + 16..at + 20].try_into().unwrap()) as usize;
        if at + 24 + namlen > buf.len() {
            break;
        }
        let name = String::from_utf8(buf[at + 24..at + 24 + namlen].to_vec()).unwrap();
        out.push((name, next));
        at += 24 + namlen;
    }
    out
}

/// Checks what the descriptor remembers is within its bounds.
fn assert_bounded(ctx: &WasiP1Ctx, fd: i32) {
    let (pairs, bytes) = match &ctx.table[fd as usize] {
        Some(Slot::Dir(d)) => d.cookies.remembered(),
        _ => panic!("not a directory"),
    };
    assert!(pairs <= COOKIE_MEMORY && bytes <= COOKIE_NAME_BYTES);
}

#[test]
fn readdir_cookies_are_bounded_and_listings_end() {
    let (mut ctx, mut mem, fd) = setup(2000);
    let mut seen = Vec::new();
    let mut cookie = 0;
    let mut calls = 0;
    loop {
        // A small buffer, as libc's first one: a few entries per call.
        let got = readdir(&mut ctx, &mut mem, fd, 200, cookie);
        calls += 1;
        assert!(calls < 10_000, "the listing does not end");
        assert_bounded(&ctx, fd);
        let Some((_, last)) = got.last() else { break };
        assert!(*last > cookie, "cookies move forward");
        cookie = *last;
        for (name, _) in &got {
            seen.push(name.clone());
            // The directory changes under the listing: what was listed
            // goes, names behind the cursor and ahead of it come.
            if name.starts_with('f') {
                ctx.with_vfs(|v| {
                    v.remove_file(&format!("/d/{name}")).unwrap();
                    v.write_file(&format!("/d/a{name}"), b"").unwrap();
                    if calls % 10 == 0 {
                        v.write_file(&format!("/d/z{name}"), b"").unwrap();
                    }
                })
                .unwrap();
            }
        }
    }
    let files: Vec<&String> = seen.iter().filter(|n| n.starts_with('f')).collect();
    assert_eq!(files.len(), 2000, "every entry present until listed, once");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "nothing listed twice");
    assert!(seen.iter().any(|n| n.starts_with('z')));
    assert!(!seen.iter().any(|n| n.starts_with('a')));
}

#[test]
fn old_and_foreign_cookies_resume_by_position() {
    let (mut ctx, mut mem, fd) = setup(300);
    // A whole listing, then an early cookie long forgotten: it resumes at
    // its position (entry 3, `f0003`, after `.`, `..` and three names).
    let mut cookie = 0;
    let mut all = Vec::new();
    loop {
        let got = readdir(&mut ctx, &mut mem, fd, 300, cookie);
        let Some((_, last)) = got.last() else { break };
        cookie = *last;
        all.extend(got);
    }
    assert_eq!(all.len(), 302);
    let early = all[4].1;
    assert_eq!(all[4].0, "f0002");
    let got = readdir(&mut ctx, &mut mem, fd, 300, early);
    assert_eq!(got[0], ("f0003".to_string(), early + 1));
    // A cookie past the end, or any number at all: nothing, no error.
    for c in [303, 1 << 40, u64::MAX - 1, u64::MAX] {
        assert_eq!(readdir(&mut ctx, &mut mem, fd, 300, c), vec![]);
    }
    assert_bounded(&ctx, fd);
}

#[test]
fn long_names_are_remembered_within_bytes() {
    let (mut ctx, mut mem, fd) = setup(0);
    ctx.with_vfs(|v| {
        for i in 0..60 {
            v.write_file(&format!("/d/{i:03}{}", "n".repeat(250)), b"")
                .unwrap();
        }
    })
    .unwrap();
    let got = readdir(&mut ctx, &mut mem, fd, 60_000, 0);
    assert_eq!(got.len(), 62);
    assert_bounded(&ctx, fd);
    // The latest cookies still resume exactly, after their name.
    let (name, cookie) = &got[60];
    let next = readdir(&mut ctx, &mut mem, fd, 60_000, *cookie);
    assert_eq!(next.len(), 1);
    assert!(next[0].0 > *name);
}
