//! What a merge reports: each [`Conflict`] with its path, what each side
//! did, why the changes could not be combined and how the policy settled
//! it; and the options that choose the policy.

use std::fmt;
use std::ops::Range;

/// What a conflict does ([`MergeOptions::policy`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConflictPolicy {
    /// No merged tree if anything conflicts; the conflicts are reported.
    #[default]
    Fail,
    /// Ours wins each conflict; theirs' changes that do not conflict stay.
    Ours,
    /// Theirs wins each conflict; ours' changes that do not conflict stay.
    Theirs,
    /// Ours wins at the conflicting path and theirs' version is kept
    /// beside it under the name with `.theirs` appended (`.theirs.2`, ...
    /// if that is taken); where nothing can be kept twice (permissions, a
    /// directory moved to two places) ours wins.
    KeepBoth,
}

/// How [`Snapshot::merge`](crate::Snapshot::merge) settles conflicts. A
/// merge without conflicts needs no options: the default fails on one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MergeOptions {
    /// What a conflict does.
    pub policy: ConflictPolicy,
    /// Bytes the paths and byte ranges of the listed conflicts may take in
    /// all ([`MergeOptions::DEFAULT_REPORT_BYTES`] by default). Conflicts
    /// are listed in the order the merge finds them (then sorted by path)
    /// until one does not fit; that one and all after it are settled as
    /// the rest but only counted ([`Merge::omitted`](crate::Merge::omitted)).
    pub max_report_bytes: usize,
}

impl Default for MergeOptions {
    fn default() -> MergeOptions {
        MergeOptions {
            policy: ConflictPolicy::default(),
            max_report_bytes: MergeOptions::DEFAULT_REPORT_BYTES,
        }
    }
}

impl MergeOptions {
    /// The default of [`MergeOptions::max_report_bytes`]: 16 MiB.
    pub const DEFAULT_REPORT_BYTES: usize = 16 << 20;

    /// The default options: [`ConflictPolicy::Fail`], a 16 MiB report.
    pub fn new() -> MergeOptions {
        MergeOptions::default()
    }

    /// Sets the conflict policy.
    pub fn policy(mut self, policy: ConflictPolicy) -> MergeOptions {
        self.policy = policy;
        self
    }

    /// Sets [`MergeOptions::max_report_bytes`].
    pub fn max_report_bytes(mut self, bytes: usize) -> MergeOptions {
        self.max_report_bytes = bytes;
        self
    }
}

/// Why two changes could not be combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictKind {
    /// Both changed the same bytes of a file differently
    /// ([`Conflict::ranges`] says which).
    Content,
    /// Both changed a file's size, to different sizes.
    Size,
    /// Both changed the permission bits, differently.
    Mode,
    /// Both put something different at one name (created, replaced or
    /// renamed onto it).
    Name,
    /// One side deleted what the other changed, renamed, linked or created
    /// something inside.
    DeleteModify,
    /// A directory moved to two places, or the two moves would put
    /// directories inside each other.
    Moved,
}

/// What one side did to the object of a conflict, relative to the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Nothing.
    Unchanged,
    /// Created it.
    Added,
    /// Deleted it.
    Deleted,
    /// Changed its bytes, permissions or target.
    Modified,
    /// Renamed or moved it (gave it other names).
    Moved,
}

/// How the policy settled a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// Not settled: the policy is [`ConflictPolicy::Fail`].
    Unresolved,
    /// Ours' version stands.
    Ours,
    /// Theirs' version stands.
    Theirs,
    /// Ours' version stands at the path and theirs' is at `beside`.
    Both {
        /// Where theirs' version is.
        beside: String,
    },
}

/// One conflict of a merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub(super) path: String,
    pub(super) kind: ConflictKind,
    pub(super) ours: Action,
    pub(super) theirs: Action,
    pub(super) ranges: Vec<Range<u64>>,
    pub(super) resolution: Resolution,
}

impl Conflict {
    /// The path: where the merged tree has the object, or else where the
    /// side that kept it has it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Why the changes could not be combined.
    pub fn kind(&self) -> ConflictKind {
        self.kind
    }

    /// What ours did.
    pub fn ours(&self) -> Action {
        self.ours
    }

    /// What theirs did.
    pub fn theirs(&self) -> Action {
        self.theirs
    }

    /// For [`ConflictKind::Content`]: the byte ranges both sides changed
    /// differently, coalesced, in order; at most 64, the last one then
    /// stretched over every later conflicting byte. For
    /// [`ConflictKind::Size`]: the range between the two new sizes. Empty
    /// otherwise.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// How the policy settled it.
    pub fn resolution(&self) -> &Resolution {
        &self.resolution
    }
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictKind::Content => "content",
            ConflictKind::Size => "size",
            ConflictKind::Mode => "mode",
            ConflictKind::Name => "name",
            ConflictKind::DeleteModify => "delete/modify",
            ConflictKind::Moved => "moved",
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Unchanged => "unchanged",
            Action::Added => "added",
            Action::Deleted => "deleted",
            Action::Modified => "modified",
            Action::Moved => "moved",
        })
    }
}

/// `content /data.bin: ours modified, theirs modified; bytes 0..4 (kept ours)`.
impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: ours {}, theirs {}",
            self.kind, self.path, self.ours, self.theirs
        )?;
        if !self.ranges.is_empty() {
            f.write_str("; bytes")?;
            for (i, r) in self.ranges.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                write!(f, "{sep}{}..{}", r.start, r.end)?;
            }
        }
        match &self.resolution {
            Resolution::Unresolved => Ok(()),
            Resolution::Ours => f.write_str(" (kept ours)"),
            Resolution::Theirs => f.write_str(" (kept theirs)"),
            Resolution::Both { beside } => write!(f, " (kept ours; theirs at {beside})"),
        }
    }
}
