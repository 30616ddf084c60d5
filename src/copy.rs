//! Copies of file data between callers' buffers and chunks, at `memcpy`
//! speed wherever the two buffers lie.
//!
//! glibc's `memcpy` (2.36, Debian 12's) hands copies of about 2 KiB and
//! more (2,112 bytes on the machines BENCHMARKS.md was measured on) to
//! `rep movsb` on CPUs that claim fast string moves. On AMD EPYC (Zen 3)
//! that instruction runs 15 to 30 times slower when the destination
//! starts 1 to 31 bytes after the source, counted modulo 4 KiB: 2.1 µs
//! instead of 70 ns for 4 KiB, 38 µs instead of 2 µs for 64 KiB (glibc
//! bug 30994). The case is common, not contrived: two blocks `malloc`
//! hands out one after the other are 16 bytes apart in that sense (a
//! chunk, then the vector `read_file` copies it into), and so is a
//! guest's buffer 8 bytes into a page written into a chunk that starts
//! 16 bytes into one.
//!
//! So a copy whose buffers are that close is made in pieces smaller than
//! any size glibc gives to `rep movsb` (its threshold is 2 KiB at the
//! least); its vector loop has no such cliff. Every other copy is one
//! `memcpy`, as before. The test is one subtraction, and the pieces cost
//! a few calls more on the copies they take.

/// The page size the cliff repeats at.
const PAGE: usize = 4096;
/// Distances (destination minus source, modulo [`PAGE`]) copied in pieces:
/// the slow range, 1 to 31, with room to spare.
const NEAR: usize = 64;
/// Size of a piece, and half the least length worth splitting.
const PIECE: usize = 1024;

/// Whether a copy from `src` to `dst` of `len` bytes is one glibc would
/// make slowly (see the module documentation).
#[inline]
fn near(dst: *const u8, src: *const u8, len: usize) -> bool {
    let d = (dst as usize).wrapping_sub(src as usize) % PAGE;
    len >= 2 * PIECE && d != 0 && d < NEAR
}

/// `dst.copy_from_slice(src)`; the lengths must be equal.
#[inline]
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    if near(dst.as_ptr(), src.as_ptr(), src.len()) {
        copy_pieces(dst, src);
    } else {
        dst.copy_from_slice(src);
    }
}

#[inline(never)]
#[cold]
fn copy_pieces(dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, s) in dst.chunks_mut(PIECE).zip(src.chunks(PIECE)) {
        d.copy_from_slice(s);
    }
}

/// `out.extend_from_slice(src)`.
#[inline]
pub(crate) fn extend(out: &mut Vec<u8>, src: &[u8]) {
    out.reserve(src.len());
    // Where the bytes will go: the vector's end, now that it has room.
    let at = out.as_ptr().wrapping_add(out.len());
    if near(at, src.as_ptr(), src.len()) {
        extend_pieces(out, src);
    } else {
        out.extend_from_slice(src);
    }
}

#[inline(never)]
#[cold]
fn extend_pieces(out: &mut Vec<u8>, src: &[u8]) {
    for s in src.chunks(PIECE) {
        out.extend_from_slice(s);
    }
}

/// A new vector holding `src`, with no spare capacity.
#[inline]
pub(crate) fn to_vec(src: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(src.len());
    extend(&mut v, src);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the piece size and every distance around the
    /// near range, in both directions, copies exactly the source. Source
    /// and destination are placed at the distance wanted: inside one
    /// buffer for `copy`, and for `extend` by choosing where in a pattern
    /// the source starts.
    #[test]
    fn copies_are_exact_at_every_distance() {
        let pattern: Vec<u8> = (0..5 * PAGE).map(|i| (i * 7 + i / 251) as u8).collect();
        let lens = [
            0,
            1,
            2 * PIECE - 1,
            2 * PIECE,
            2 * PIECE + 1,
            PAGE,
            PAGE + 17,
            3 * PAGE - 5,
        ];
        let shifts = (0..=NEAR + 8).chain([PAGE - 16, PAGE - 1]);
        for shift in shifts {
            for len in lens {
                // `copy`: the destination `4 * PAGE + shift` bytes after the source.
                let mut buf = vec![0xAAu8; 12 * PAGE];
                buf[..len].copy_from_slice(&pattern[..len]);
                let (a, b) = buf.split_at_mut(4 * PAGE);
                copy(&mut b[shift..shift + len], &a[..len]);
                assert_eq!(
                    &b[shift..shift + len],
                    &pattern[..len],
                    "copy {len} at {shift}"
                );
                assert!(b[..shift].iter().all(|&x| x == 0xAA), "wrote before");
                assert!(b[shift + len..].iter().all(|&x| x == 0xAA), "wrote after");

                // `extend`: the vector's end `shift` bytes after the source,
                // modulo the page.
                let mut v = Vec::with_capacity(len + 3);
                v.extend_from_slice(&[3, 3, 3]);
                let at = v.as_ptr() as usize + v.len();
                let from = at
                    .wrapping_sub(pattern.as_ptr() as usize)
                    .wrapping_sub(shift)
                    % PAGE;
                let src = &pattern[from..from + len];
                extend(&mut v, src);
                assert_eq!(&v[..3], &[3, 3, 3]);
                assert_eq!(&v[3..], src, "extend {len} at {shift}");
                assert_eq!(to_vec(src), src);
                assert_eq!(to_vec(src).capacity(), len);
            }
        }
    }

    /// The split path is the one taken for near buffers (so the test above
    /// exercises it), and only for them.
    #[test]
    fn only_near_copies_are_split() {
        let base = 0x1000_0000usize;
        let p = |a: usize| a as *const u8;
        assert!(near(p(base + 16), p(base), PAGE));
        assert!(near(p(base + PAGE + 16), p(base), PAGE));
        assert!(near(p(base + 1), p(base), 2 * PIECE));
        assert!(!near(p(base + 16), p(base), 2 * PIECE - 1));
        assert!(!near(p(base), p(base), PAGE));
        assert!(!near(p(base + NEAR), p(base), PAGE));
        assert!(!near(p(base), p(base + 16), PAGE));
    }
}
