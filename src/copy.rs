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
//! Even where the buffers lie well apart, that instruction starts slowly
//! on Zen 3. Measured 12-01 at eleven distances from 0 to 4,080 bytes,
//! one 4 KiB copy took 57–99 ns as `rep movsb` and 48–83 ns as four 1 KiB
//! copies, which were never the slower; a 64 KiB copy took the same time
//! either way.
//!
//! So every copy of 2 KiB and more is made in 1 KiB pieces, smaller than
//! any size glibc gives to `rep movsb` (its threshold is 2 KiB at the
//! least); its vector loop has no cliff and no slow start. Shorter copies
//! are one `memcpy`. Which path a copy takes depends on its length alone.

/// Size of a piece, and half the least length worth splitting.
const PIECE: usize = 1024;

/// Whether a copy of `len` bytes is made in pieces (see the module
/// documentation).
#[inline]
fn in_pieces(len: usize) -> bool {
    len >= 2 * PIECE
}

/// `dst.copy_from_slice(src)`; the lengths must be equal.
#[inline]
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    if in_pieces(src.len()) {
        copy_pieces(dst, src);
    } else {
        dst.copy_from_slice(src);
    }
}

#[inline(never)]
fn copy_pieces(dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, s) in dst.chunks_mut(PIECE).zip(src.chunks(PIECE)) {
        d.copy_from_slice(s);
    }
}

/// `out.extend_from_slice(src)`.
#[inline]
pub(crate) fn extend(out: &mut Vec<u8>, src: &[u8]) {
    if in_pieces(src.len()) {
        extend_pieces(out, src);
    } else {
        out.extend_from_slice(src);
    }
}

#[inline(never)]
fn extend_pieces(out: &mut Vec<u8>, src: &[u8]) {
    out.reserve(src.len());
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

    /// The period of `rep movsb`'s slow distances.
    const PAGE: usize = 4096;

    /// Every length around the piece size, at every distance around
    /// the range where `rep movsb` is slowest, in both directions, copies
    /// exactly the source. Source and destination are placed at the
    /// distance wanted: inside one buffer for `copy`, and for `extend` by
    /// choosing where in a pattern the source starts.
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
        let shifts = (0..=72).chain([PAGE - 16, PAGE - 1]);
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

    /// Pieces from 2 KiB up, whatever the distance; one `memcpy` below.
    #[test]
    fn copies_from_two_pieces_up_are_split() {
        assert!(!in_pieces(0));
        assert!(!in_pieces(2 * PIECE - 1));
        assert!(in_pieces(2 * PIECE));
        assert!(in_pieces(64 << 10));
    }
}
