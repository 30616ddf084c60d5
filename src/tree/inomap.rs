//! `InoMap`: a hash map keyed by inode number with a multiply-shift
//! hasher. Inode numbers are small dense integers the sandbox cannot
//! choose, so SipHash's resistance to chosen keys buys nothing here and
//! costs a few dozen nanoseconds per probe on every open and close.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::Ino;

/// A map from inode number to `V`.
pub(crate) type InoMap<V> = HashMap<Ino, V, BuildHasherDefault<InoHasher>>;

/// Multiplies the key by an odd constant (2^64 / golden ratio): distinct
/// low bits stay distinct (the bucket index) and the high bits (the
/// table's tag byte) mix every bit of the key.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InoHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for InoHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for `u64` keys; correct, if slower, for anything else.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(K);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_keys_spread() {
        let mut m: InoMap<u32> = InoMap::default();
        for i in 0..10_000u64 {
            *m.entry(i).or_default() += 1;
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u64).all(|i| m.get(&i) == Some(&1)));
        assert!(m.remove(&5).is_some() && !m.contains_key(&5));
    }
}
