//! The one place engine and host errors become `wasi:filesystem` error codes.

use std::io;

use super::bindings::types::ErrorCode;
use crate::error::{Error, ErrorKind};

/// Every engine error kind has exactly one code; there is deliberately no
/// catch-all arm, so a new kind fails to compile until it is placed here.
impl From<ErrorKind> for ErrorCode {
    fn from(kind: ErrorKind) -> ErrorCode {
        match kind {
            ErrorKind::NotFound => ErrorCode::NoEntry,
            ErrorKind::AlreadyExists => ErrorCode::Exist,
            ErrorKind::NotADirectory => ErrorCode::NotDirectory,
            ErrorKind::IsADirectory => ErrorCode::IsDirectory,
            ErrorKind::DirectoryNotEmpty => ErrorCode::NotEmpty,
            ErrorKind::Loop => ErrorCode::Loop,
            ErrorKind::NameTooLong => ErrorCode::NameTooLong,
            ErrorKind::InvalidInput => ErrorCode::Invalid,
            ErrorKind::BadDescriptor => ErrorCode::BadDescriptor,
            ErrorKind::PermissionDenied => ErrorCode::Access,
            ErrorKind::NotPermitted => ErrorCode::NotPermitted,
            ErrorKind::NoSpace => ErrorCode::InsufficientSpace,
            ErrorKind::QuotaExceeded => ErrorCode::Quota,
            ErrorKind::FileTooLarge => ErrorCode::FileTooLarge,
            // WASI has no EMFILE; the descriptor table is memory the sandbox
            // may not grow, so the guest sees ENOMEM.
            ErrorKind::TooManyOpenFiles => ErrorCode::InsufficientMemory,
            ErrorKind::TooManyLinks => ErrorCode::TooManyLinks,
            ErrorKind::CrossDevice => ErrorCode::CrossDevice,
            ErrorKind::ReadOnly => ErrorCode::ReadOnly,
            ErrorKind::Busy => ErrorCode::Busy,
            ErrorKind::Unsupported => ErrorCode::Unsupported,
            ErrorKind::Corrupt => ErrorCode::Io,
            ErrorKind::Io => ErrorCode::Io,
        }
    }
}

impl From<&Error> for ErrorCode {
    fn from(err: &Error) -> ErrorCode {
        err.kind().into()
    }
}

impl From<Error> for ErrorCode {
    fn from(err: Error) -> ErrorCode {
        err.kind().into()
    }
}

/// The engine kind for an error from a host mount. cap-primitives reports
/// an escape attempt as `PermissionDenied` with no OS errno; WASI calls
/// that `not-permitted`, as wasmtime-wasi does. A real `EACCES` stays
/// `access`.
pub(crate) fn io_kind(err: &io::Error) -> ErrorKind {
    const EPERM: i32 = 1;
    const EACCES: i32 = 13;
    match err.raw_os_error() {
        Some(EPERM) => ErrorKind::NotPermitted,
        Some(EACCES) => ErrorKind::PermissionDenied,
        None if err.kind() == io::ErrorKind::PermissionDenied => ErrorKind::NotPermitted,
        _ => ErrorKind::from_io(err),
    }
}

impl From<&io::Error> for ErrorCode {
    fn from(err: &io::Error) -> ErrorCode {
        io_kind(err).into()
    }
}

impl From<io::Error> for ErrorCode {
    fn from(err: io::Error) -> ErrorCode {
        ErrorCode::from(&err)
    }
}

/// The code for an error a stream reported (`filesystem-error-code`).
pub(crate) fn stream_error_code(err: &wasmtime::Error) -> Option<ErrorCode> {
    if let Some(e) = err.downcast_ref::<Error>() {
        return Some(e.into());
    }
    err.downcast_ref::<io::Error>().map(ErrorCode::from)
}
