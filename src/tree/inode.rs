//! Inodes: what one file, directory or symlink holds, its kind and what
//! it costs toward `max_bytes`.

use std::sync::{Arc, OnceLock};

use imbl::OrdMap;

use crate::content::Content;
use crate::time::Timestamp;

pub(crate) type Ino = u64;
/// A name in a directory, as listings hand it out ([`DirEntry::name`]):
/// names up to 23 bytes live in place, longer ones behind a shared
/// pointer, so neither listing a directory nor cloning a name allocates.
/// Reads as a `str` (it derefs to one) and compares with `str` and
/// `String`; `String::from` or `to_string` makes an owned copy. Ordered
/// bytewise, as `str` is.
///
/// [`DirEntry::name`]: crate::DirEntry::name
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Name(smol_str::SmolStr);

impl Name {
    /// The name as a `str`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<std::path::Path> for Name {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(self.0.as_str())
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0.as_str() == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        self.0.as_str() == other.as_str()
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.0.as_str()
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == other.0.as_str()
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.0.as_str()
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0.to_string()
    }
}

impl From<&Name> for String {
    fn from(n: &Name) -> String {
        n.0.to_string()
    }
}

// Bytewise, as `str` orders (so `Borrow<str>` lookups agree), by
// `name_cmp`: a directory insert compares the new name with several keys.
impl Ord for Name {
    #[inline]
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        name_cmp(self.as_bytes(), other.as_bytes())
    }
}

impl PartialOrd for Name {
    #[inline]
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.0.as_str(), f)
    }
}

impl Name {
    /// Where a long name's bytes live (shared by its clones), or 0 for a
    /// short one, which lives in place: two names with the same non-zero
    /// pointer hold one allocation between them. Read by the service's
    /// charge only.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn heap_ptr(&self) -> usize {
        if self.0.is_heap_allocated() {
            self.0.as_str().as_ptr() as usize
        } else {
            0
        }
    }
}

impl From<&str> for Name {
    /// A short name is built in place by `new_inline`, which the compiler
    /// inlines; `SmolStr::from` is an out-of-line call that also looks for
    /// runs of whitespace.
    #[inline]
    fn from(s: &str) -> Name {
        if s.len() <= smol_str::SmolStr::INLINE_CAP {
            Name(smol_str::SmolStr::new_inline(s))
        } else {
            Name(smol_str::SmolStr::from(s))
        }
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name(smol_str::SmolStr::from(s))
    }
}

/// A name as a directory is searched for it: the same order as `str`'s
/// (bytewise), compared eight bytes at a time. Names are short, and a
/// B-tree search compares one with several keys, where a call to
/// `memcmp` per key cost more than the comparison itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe<'a>(pub &'a str);

impl equivalent::Equivalent<Name> for Probe<'_> {
    fn equivalent(&self, key: &Name) -> bool {
        self.0.len() == key.len() && name_cmp(self.0.as_bytes(), key.as_bytes()).is_eq()
    }
}

impl equivalent::Comparable<Name> for Probe<'_> {
    fn compare(&self, key: &Name) -> std::cmp::Ordering {
        name_cmp(self.0.as_bytes(), key.as_bytes())
    }
}

/// Bytewise order of two names (as `<[u8]>::cmp`): whole words compared
/// as big-endian integers, then the tail byte by byte, then the lengths.
#[inline]
pub(crate) fn name_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    let (mut wa, mut wb) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    for (x, y) in (&mut wa).zip(&mut wb) {
        let (x, y) = (word(x), word(y));
        if x != y {
            return x.cmp(&y);
        }
    }
    for (x, y) in wa.remainder().iter().zip(wb.remainder()) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Eight bytes as a big-endian integer (so integer order is byte order).
#[inline]
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    u64::from_be_bytes(w)
}

/// A symlink's target: often a whole path, so kept behind one `Arc`
/// (resolution hands out pieces of it by range, without a copy).
pub(crate) type Target = Arc<str>;

/// The root directory's inode number.
pub(crate) const ROOT: Ino = 1;
/// The most hard links one file may have.
pub(crate) const MAX_LINKS: u32 = 65_000;

/// What one inode costs toward `max_bytes` beyond its data: the inode
/// itself (about 200 bytes behind its `Arc`), its slot in the inode map,
/// the first allocation of its list of names, and for a directory the
/// first node of its entry map. Rounded up from measurements.
pub(crate) const INODE_CHARGE: u64 = 384;
/// What one directory entry costs toward `max_bytes` beyond its name's
/// bytes: its slot in the directory's map, a long name's shared header and
/// the `(directory, name)` back link in the inode it names.
pub(crate) const ENTRY_CHARGE: u64 = 160;

/// The charge of one directory entry called `name`.
pub(crate) fn entry_charge(name: &str) -> u64 {
    ENTRY_CHARGE + name.len() as u64
}

/// What kind of object an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// A directory entry as stored: the inode and its kind (kinds never change,
/// so keeping it here makes listing a directory need no inode lookups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub ino: Ino,
    pub kind: FileType,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    File(Content),
    Dir(OrdMap<Name, Entry>),
    Symlink(Target),
}

#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub node: Node,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Entries naming a non-directory; 2 + subdirectories for a directory.
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// `(directory, name)` of every entry naming this inode.
    pub links: Links,
    pub(super) memo: OnceLock<blake3::Hash>,
}

impl PartialEq for Inode {
    fn eq(&self, o: &Inode) -> bool {
        self.mode == o.mode
            && self.nlink == o.nlink
            && self.atime == o.atime
            && self.mtime == o.mtime
            && self.ctime == o.ctime
            && self.links == o.links
            && self.node == o.node
    }
}
impl Eq for Inode {}

impl Inode {
    pub(crate) fn new(node: Node, mode: u32, now: Timestamp) -> Inode {
        let nlink = if matches!(node, Node::Dir(_)) { 2 } else { 0 };
        Inode {
            node,
            mode: mode & 0o7777,
            nlink,
            atime: now,
            mtime: now,
            ctime: now,
            links: Links::default(),
            memo: OnceLock::new(),
        }
    }

    pub(crate) fn kind(&self) -> FileType {
        match self.node {
            Node::File(_) => FileType::File,
            Node::Dir(_) => FileType::Dir,
            Node::Symlink(_) => FileType::Symlink,
        }
    }

    pub(crate) fn entries(&self) -> Option<&OrdMap<Name, Entry>> {
        match &self.node {
            Node::Dir(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn content(&self) -> Option<&Content> {
        match &self.node {
            Node::File(c) => Some(c),
            _ => None,
        }
    }

    /// Logical size as `stat` reports it.
    pub(crate) fn size(&self) -> u64 {
        match &self.node {
            Node::File(c) => c.size(),
            Node::Dir(e) => e.len() as u64,
            Node::Symlink(t) => t.len() as u64,
        }
    }

    pub(crate) fn held(&self) -> u64 {
        self.content().map_or(0, Content::held)
    }

    /// What the inode costs toward `max_bytes`, its entries (charged to
    /// the entries themselves) aside: the fixed charge, plus its chunks
    /// or its symlink target.
    pub(crate) fn charge(&self) -> u64 {
        INODE_CHARGE
            + match &self.node {
                Node::File(c) => c.charge(),
                Node::Symlink(t) => t.len() as u64,
                Node::Dir(_) => 0,
            }
    }

    /// Whether what the root hash covers (kind, permissions, content, link
    /// count, target) differs; timestamps and inode numbers do not count.
    pub(crate) fn same_payload(&self, o: &Inode) -> bool {
        if self.mode != o.mode {
            return false;
        }
        match (&self.node, &o.node) {
            (Node::File(a), Node::File(b)) => self.nlink == o.nlink && a.same_bytes(b),
            (Node::Symlink(a), Node::Symlink(b)) => a == b,
            (Node::Dir(_), Node::Dir(_)) => true,
            _ => false,
        }
    }
}

/// The `(directory, name)` back links of an inode, read as a slice. The
/// usual single link lives in place, so making a file allocates no list;
/// a second one moves them into a vector.
#[derive(Clone, Debug, Default)]
pub(crate) enum Links {
    #[default]
    None,
    One([(Ino, Name); 1]),
    Many(Vec<(Ino, Name)>),
}

impl Links {
    pub(crate) fn push(&mut self, link: (Ino, Name)) {
        match self {
            Links::None => *self = Links::One([link]),
            Links::One(_) => {
                let Links::One([first]) = std::mem::take(self) else {
                    return;
                };
                *self = Links::Many(vec![first, link]);
            }
            Links::Many(v) => v.push(link),
        }
    }

    /// Takes out link `i` (the last one takes its place); panics if out of
    /// range, as `Vec::swap_remove` does.
    pub(crate) fn swap_remove(&mut self, i: usize) -> (Ino, Name) {
        match self {
            Links::Many(v) => v.swap_remove(i),
            _ => {
                assert!(i < self.len(), "link {i} of {}", self.len());
                let Links::One([only]) = std::mem::take(self) else {
                    unreachable!("one link checked above")
                };
                only
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn clear(&mut self) {
        *self = Links::None;
    }
}

impl std::ops::Deref for Links {
    type Target = [(Ino, Name)];

    fn deref(&self) -> &[(Ino, Name)] {
        match self {
            Links::None => &[],
            Links::One(one) => one,
            Links::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Links {
    fn deref_mut(&mut self) -> &mut [(Ino, Name)] {
        match self {
            Links::None => &mut [],
            Links::One(one) => one,
            Links::Many(v) => v,
        }
    }
}

impl PartialEq for Links {
    fn eq(&self, o: &Links) -> bool {
        **self == **o
    }
}
impl Eq for Links {}

impl From<Vec<(Ino, Name)>> for Links {
    fn from(mut v: Vec<(Ino, Name)>) -> Links {
        match v.len() {
            0 => Links::None,
            1 => match v.pop() {
                Some(only) => Links::One([only]),
                None => Links::None,
            },
            _ => Links::Many(v),
        }
    }
}

impl<'a> IntoIterator for &'a Links {
    type Item = &'a (Ino, Name);
    type IntoIter = std::slice::Iter<'a, (Ino, Name)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::{Name, Probe, name_cmp};
    use equivalent::{Comparable, Equivalent};

    #[test]
    fn names_order_as_their_bytes_do() {
        let samples = [
            "",
            "a",
            "b",
            "ab",
            "aa",
            "a\u{1}",
            "n0",
            "n9",
            "n10",
            "n99",
            "f42",
            "abcdefg",
            "abcdefgh",
            "abcdefgi",
            "abcdefghi",
            "abcdefgh\u{7f}",
            "abcdefghabcdefgh",
            "abcdefghabcdefgi",
            "__init__.cpython-311.pyc",
            "__init__.cpython-312.pyc",
            "é",
            "ü",
            "eé",
            "\u{ff}",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            // Pairs that differ inside a whole word in both directions
            // at once (a little-endian or signed word would order them
            // wrongly), and non-ASCII bytes inside whole words.
            "azzzzzzz",
            "baaaaaaa",
            "azzzzzzzz",
            "baaaaaaaa",
            "éééé",
            "eeeeeeee",
            "ÿÿÿÿ",
            "ÿÿÿÿÿÿÿÿ",
            "\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}",
            "abcdefgh\u{80}",
            "abcdefghé",
        ];
        for a in samples {
            for b in samples {
                let want = a.as_bytes().cmp(b.as_bytes());
                assert_eq!(name_cmp(a.as_bytes(), b.as_bytes()), want, "{a:?} {b:?}");
                assert_eq!(Name::from(a).cmp(&Name::from(b)), want, "{a:?} {b:?}");
                assert_eq!(Probe(a).compare(&Name::from(b)), want, "{a:?} {b:?}");
                assert_eq!(Probe(a).equivalent(&Name::from(b)), a == b);
            }
        }
    }

    proptest::proptest! {
        /// Random names sharing a random prefix: the order and equality
        /// are those of their bytes.
        #[test]
        fn names_order_as_bytes_for_any_pair(
            prefix in "[a-cé\u{7f}-\u{ff}]{0,20}",
            a in "[a-cé\u{7f}-\u{ff}]{0,12}",
            b in "[a-cé\u{7f}-\u{ff}]{0,12}",
        ) {
            let (a, b) = (format!("{prefix}{a}"), format!("{prefix}{b}"));
            let want = a.as_bytes().cmp(b.as_bytes());
            proptest::prop_assert_eq!(name_cmp(a.as_bytes(), b.as_bytes()), want);
            proptest::prop_assert_eq!(Name::from(a.as_str()).cmp(&Name::from(b.as_str())), want);
            proptest::prop_assert_eq!(Probe(&a).compare(&Name::from(b.as_str())), want);
            proptest::prop_assert_eq!(Probe(&a).equivalent(&Name::from(b.as_str())), a == b);
        }
    }

    #[test]
    fn a_directory_finds_names_by_probe_as_by_str() {
        let mut m = imbl::OrdMap::new();
        for i in 0..300 {
            m.insert(Name::from(format!("name-{i}").as_str()), i);
        }
        for i in 0..300 {
            let n = format!("name-{i}");
            assert_eq!(m.get(&Probe(&n)), Some(&i));
            assert_eq!(m.get(n.as_str()), Some(&i));
        }
        assert_eq!(m.get(&Probe("name-300")), None);
        // Removal by probe takes out exactly the named entry.
        assert_eq!(m.remove(&Probe("name-150")), Some(150));
        assert_eq!(m.remove(&Probe("name-150")), None);
        assert_eq!(m.len(), 299);
        assert_eq!(m.get("name-149"), Some(&149));
        assert_eq!(m.get("name-151"), Some(&151));
        let names: Vec<&str> = m.keys().map(|k| &**k).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }
}
