//! Errors: one [`ErrorKind`] per errno name, plus optional context.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

/// What went wrong, as a POSIX errno would say it.
///
/// Every kind maps to exactly one errno name ([`ErrorKind::errno_name`]) and
/// back, so the WASI layer and tests can compare errors with the host OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `ENOENT`: a path component does not exist.
    NotFound,
    /// `EEXIST`: the name is already taken.
    AlreadyExists,
    /// `ENOTDIR`: a directory was needed.
    NotADirectory,
    /// `EISDIR`: a non-directory was needed.
    IsADirectory,
    /// `ENOTEMPTY`: the directory still has entries.
    DirectoryNotEmpty,
    /// `ELOOP`: too many symlink hops, or a symlink where none may be followed.
    Loop,
    /// `ENAMETOOLONG`: a name or path is over its limit.
    NameTooLong,
    /// `EINVAL`: an argument is out of range or malformed.
    InvalidInput,
    /// `EBADF`: the descriptor is closed or lacks the access the call needs.
    BadDescriptor,
    /// `EACCES`: permission bits forbid the access.
    PermissionDenied,
    /// `EPERM`: the operation is never allowed here (link to a directory,
    /// escaping a directory in beneath mode).
    NotPermitted,
    /// `ENOSPC`: the byte limit would be exceeded.
    NoSpace,
    /// `EDQUOT`: the inode limit would be exceeded.
    QuotaExceeded,
    /// `EFBIG`: the file-size limit would be exceeded.
    FileTooLarge,
    /// `EMFILE`: the open-descriptor limit would be exceeded.
    TooManyOpenFiles,
    /// `EMLINK`: a file has as many hard links as it may have.
    TooManyLinks,
    /// `EXDEV`: the two paths are on different filesystems (memory and a mount).
    CrossDevice,
    /// `EROFS`: the tree or mount is read-only.
    ReadOnly,
    /// `EBUSY`: the object is in use (the root cannot be removed or renamed).
    Busy,
    /// `ENOTSUP`: the operation or format version is not supported.
    Unsupported,
    /// `EBADMSG`: stored data is corrupt (a checkpoint that fails verification).
    Corrupt,
    /// `EIO`: an I/O error from the host.
    Io,
}

impl ErrorKind {
    /// The errno name, e.g. `"ENOENT"`.
    pub fn errno_name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "ENOENT",
            ErrorKind::AlreadyExists => "EEXIST",
            ErrorKind::NotADirectory => "ENOTDIR",
            ErrorKind::IsADirectory => "EISDIR",
            ErrorKind::DirectoryNotEmpty => "ENOTEMPTY",
            ErrorKind::Loop => "ELOOP",
            ErrorKind::NameTooLong => "ENAMETOOLONG",
            ErrorKind::InvalidInput => "EINVAL",
            ErrorKind::BadDescriptor => "EBADF",
            ErrorKind::PermissionDenied => "EACCES",
            ErrorKind::NotPermitted => "EPERM",
            ErrorKind::NoSpace => "ENOSPC",
            ErrorKind::QuotaExceeded => "EDQUOT",
            ErrorKind::FileTooLarge => "EFBIG",
            ErrorKind::TooManyOpenFiles => "EMFILE",
            ErrorKind::TooManyLinks => "EMLINK",
            ErrorKind::CrossDevice => "EXDEV",
            ErrorKind::ReadOnly => "EROFS",
            ErrorKind::Busy => "EBUSY",
            ErrorKind::Unsupported => "ENOTSUP",
            ErrorKind::Corrupt => "EBADMSG",
            ErrorKind::Io => "EIO",
        }
    }

    /// A short human description.
    pub fn description(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "no such file or directory",
            ErrorKind::AlreadyExists => "file exists",
            ErrorKind::NotADirectory => "not a directory",
            ErrorKind::IsADirectory => "is a directory",
            ErrorKind::DirectoryNotEmpty => "directory not empty",
            ErrorKind::Loop => "too many levels of symbolic links",
            ErrorKind::NameTooLong => "file name too long",
            ErrorKind::InvalidInput => "invalid argument",
            ErrorKind::BadDescriptor => "bad file descriptor",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::NotPermitted => "operation not permitted",
            ErrorKind::NoSpace => "no space left in the sandbox",
            ErrorKind::QuotaExceeded => "inode quota exceeded",
            ErrorKind::FileTooLarge => "file too large",
            ErrorKind::TooManyOpenFiles => "too many open files",
            ErrorKind::TooManyLinks => "too many links",
            ErrorKind::CrossDevice => "cross-device link",
            ErrorKind::ReadOnly => "read-only file system",
            ErrorKind::Busy => "device or resource busy",
            ErrorKind::Unsupported => "operation not supported",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::Io => "input/output error",
        }
    }

    /// The kind for an errno name, the inverse of [`ErrorKind::errno_name`].
    pub fn from_errno_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL
            .iter()
            .copied()
            .find(|k| k.errno_name() == name)
    }

    /// Every kind, for tables and tests.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::NotADirectory,
        ErrorKind::IsADirectory,
        ErrorKind::DirectoryNotEmpty,
        ErrorKind::Loop,
        ErrorKind::NameTooLong,
        ErrorKind::InvalidInput,
        ErrorKind::BadDescriptor,
        ErrorKind::PermissionDenied,
        ErrorKind::NotPermitted,
        ErrorKind::NoSpace,
        ErrorKind::QuotaExceeded,
        ErrorKind::FileTooLarge,
        ErrorKind::TooManyOpenFiles,
        ErrorKind::TooManyLinks,
        ErrorKind::CrossDevice,
        ErrorKind::ReadOnly,
        ErrorKind::Busy,
        ErrorKind::Unsupported,
        ErrorKind::Corrupt,
        ErrorKind::Io,
    ];

    /// The kind that best describes a host I/O error: by errno when the
    /// error carries one (std folds `EPERM` and `EACCES` together), else by
    /// its `std::io::ErrorKind`.
    pub fn from_io(err: &std::io::Error) -> ErrorKind {
        if let Some(k) = err.raw_os_error().and_then(ErrorKind::from_linux_errno) {
            return k;
        }
        use std::io::ErrorKind as K;
        match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::NotADirectory => ErrorKind::NotADirectory,
            K::IsADirectory => ErrorKind::IsADirectory,
            K::DirectoryNotEmpty => ErrorKind::DirectoryNotEmpty,
            K::InvalidInput | K::InvalidFilename => ErrorKind::InvalidInput,
            K::StorageFull => ErrorKind::NoSpace,
            K::FileTooLarge => ErrorKind::FileTooLarge,
            K::CrossesDevices => ErrorKind::CrossDevice,
            K::ReadOnlyFilesystem => ErrorKind::ReadOnly,
            K::ResourceBusy => ErrorKind::Busy,
            K::TooManyLinks => ErrorKind::TooManyLinks,
            K::Unsupported => ErrorKind::Unsupported,
            K::InvalidData | K::UnexpectedEof => ErrorKind::Corrupt,
            _ => ErrorKind::Io,
        }
    }

    /// The kind for a Linux errno number, if it is one cowvfs reports.
    pub fn from_linux_errno(errno: i32) -> Option<ErrorKind> {
        Some(match errno {
            1 => ErrorKind::NotPermitted,
            2 => ErrorKind::NotFound,
            5 => ErrorKind::Io,
            9 => ErrorKind::BadDescriptor,
            13 => ErrorKind::PermissionDenied,
            16 => ErrorKind::Busy,
            17 => ErrorKind::AlreadyExists,
            18 => ErrorKind::CrossDevice,
            20 => ErrorKind::NotADirectory,
            21 => ErrorKind::IsADirectory,
            22 => ErrorKind::InvalidInput,
            24 => ErrorKind::TooManyOpenFiles,
            27 => ErrorKind::FileTooLarge,
            28 => ErrorKind::NoSpace,
            30 => ErrorKind::ReadOnly,
            31 => ErrorKind::TooManyLinks,
            36 => ErrorKind::NameTooLong,
            39 => ErrorKind::DirectoryNotEmpty,
            40 => ErrorKind::Loop,
            74 => ErrorKind::Corrupt,
            95 => ErrorKind::Unsupported,
            122 => ErrorKind::QuotaExceeded,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.description(), self.errno_name())
    }
}

/// An error from cowvfs: a kind and, where it helps, what it was about.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    context: Option<Cow<'static, str>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of this kind with no context.
    pub const fn new(kind: ErrorKind) -> Error {
        Error {
            kind,
            context: None,
        }
    }

    /// An error of this kind about `context` (a path, a field, a reason).
    pub fn with(kind: ErrorKind, context: impl Into<Cow<'static, str>>) -> Error {
        Error {
            kind,
            context: Some(context.into()),
        }
    }

    /// Stored data that fails a check (`EBADMSG`), saying which.
    pub(crate) fn corrupt(what: impl Into<Cow<'static, str>>) -> Error {
        Error::with(ErrorKind::Corrupt, what)
    }

    /// A broken engine invariant, found by `check_invariants`.
    pub(crate) fn invariant(what: String) -> Error {
        Error::corrupt(format!("invariant violated: {what}"))
    }

    /// A host I/O error about `path`: the kind [`ErrorKind::from_io`]
    /// gives, and a context naming the path before the OS's message.
    pub(crate) fn io_at(path: &Path, err: impl Into<std::io::Error>) -> Error {
        let err = err.into();
        Error::with(
            ErrorKind::from_io(&err),
            format!("{}: {err}", path.display()),
        )
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What it was about, if known.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// The same error, now about `context` if it had none.
    pub fn or_context(mut self, context: impl FnOnce() -> String) -> Error {
        if self.context.is_none() {
            self.context = Some(Cow::Owned(context()));
        }
        self
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error::new(kind)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        Error::with(ErrorKind::from_io(&err), err.to_string())
    }
}

impl From<Error> for std::io::Error {
    fn from(err: Error) -> std::io::Error {
        use std::io::ErrorKind as K;
        let kind = match err.kind {
            ErrorKind::NotFound => K::NotFound,
            ErrorKind::AlreadyExists => K::AlreadyExists,
            ErrorKind::NotADirectory => K::NotADirectory,
            ErrorKind::IsADirectory => K::IsADirectory,
            ErrorKind::DirectoryNotEmpty => K::DirectoryNotEmpty,
            ErrorKind::PermissionDenied | ErrorKind::NotPermitted => K::PermissionDenied,
            ErrorKind::InvalidInput | ErrorKind::NameTooLong | ErrorKind::BadDescriptor => {
                K::InvalidInput
            }
            ErrorKind::NoSpace | ErrorKind::QuotaExceeded => K::StorageFull,
            ErrorKind::FileTooLarge => K::FileTooLarge,
            ErrorKind::CrossDevice => K::CrossesDevices,
            ErrorKind::ReadOnly => K::ReadOnlyFilesystem,
            ErrorKind::Busy => K::ResourceBusy,
            ErrorKind::TooManyLinks => K::TooManyLinks,
            ErrorKind::Unsupported => K::Unsupported,
            ErrorKind::Corrupt => K::InvalidData,
            ErrorKind::Loop | ErrorKind::TooManyOpenFiles | ErrorKind::Io => K::Other,
        };
        std::io::Error::new(kind, err)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.context {
            Some(c) => write!(f, "{}: {c}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for an `Err` of a kind.
pub(crate) fn err<T>(kind: ErrorKind) -> Result<T> {
    Err(Error::new(kind))
}
