//! The host side of a guest's `directory-entry-stream`: a listing that
//! lives across calls, unlike [`super::Descriptor::list_directory`].

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use cap_primitives::fs as cap;

use super::Kind;
use super::mem::kind_of;
use super::mount::entry_of;
use crate::Fd;
use crate::wasi::bindings::types::ErrorCode;
use crate::wasi::shared::{Held, SharedVfs, with_vfs};

/// One entry of a directory stream.
pub(crate) struct Entry {
    pub name: String,
    pub kind: Kind,
}

/// The host side of a guest's `directory-entry-stream`.
pub struct DirectoryStream {
    inner: Inner,
    /// The stream's count while the guest holds it.
    _held: Held,
}

enum Inner {
    /// Pages through a memory directory by name, so entries that stay put
    /// while the directory changes are listed exactly once.
    Mem {
        fd: Fd,
        after: Option<String>,
        page: VecDeque<crate::DirEntry>,
        done: bool,
    },
    /// A host directory's entries, read lazily.
    Mount(Mutex<cap::ReadDir>),
}

const DIR_PAGE: usize = 256;

impl DirectoryStream {
    pub(super) fn mem(fd: Fd, held: Held) -> DirectoryStream {
        let inner = Inner::Mem {
            fd,
            after: None,
            page: VecDeque::new(),
            done: false,
        };
        DirectoryStream { inner, _held: held }
    }

    pub(super) fn mount(dir: cap::ReadDir, held: Held) -> DirectoryStream {
        DirectoryStream {
            inner: Inner::Mount(Mutex::new(dir)),
            _held: held,
        }
    }

    pub(crate) fn next(&mut self, vfs: &SharedVfs) -> Result<Option<Entry>, ErrorCode> {
        match &mut self.inner {
            Inner::Mem {
                fd,
                after,
                page,
                done,
            } => {
                if page.is_empty() && !*done {
                    let more = with_vfs(vfs, |v| v.read_dir_page(*fd, after.as_deref(), DIR_PAGE))?;
                    *done = more.len() < DIR_PAGE;
                    if let Some(last) = more.last() {
                        *after = Some(last.name.to_string());
                    }
                    page.extend(more);
                }
                Ok(page.pop_front().map(|e| Entry {
                    kind: kind_of(e.kind),
                    name: e.name.into(),
                }))
            }
            Inner::Mount(iter) => {
                let iter = iter.get_mut().unwrap_or_else(PoisonError::into_inner);
                let Some(entry) = iter.next().transpose()? else {
                    return Ok(None);
                };
                let (name, kind) = entry_of(&entry)?;
                Ok(Some(Entry { name, kind }))
            }
        }
    }
}
