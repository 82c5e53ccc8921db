//! The imager's error type: every failure carries the exit code of docs/ARCHITECTURE.md (invariants).

use std::fmt;

/// Exit codes (docs/ARCHITECTURE.md, invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Unknown failure.
    Unknown = 1,
    /// Invalid input (profile, flags, META).
    InvalidInput = 2,
    /// Valid but not supported (yet).
    Unsupported = 3,
    /// Environment problem.
    Environment = 4,
    /// A dependency failed (pull, signer, external tool).
    Dependency = 5,
    /// I/O failure.
    Io = 6,
    /// Install / assembly failure.
    Assembly = 7,
}

/// An error with its exit code and a context chain.
#[derive(Debug)]
pub struct Error {
    /// Exit code.
    pub code: ExitCode,
    /// Description (outermost context first).
    pub source: anyhow::Error,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // the chain, outermost first, each cause said once: a wrapper that already quotes its
        // cause (thiserror's "{context}: {source}") does not get it repeated
        let mut out = String::new();
        for c in self.source.chain() {
            let s = c.to_string();
            if s.is_empty() || out.contains(&s) {
                continue;
            }
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        f.write_str(&out)
    }
}

/// OS errors that mean the output's storage failed, whatever was being done.
const STORAGE_ERRNOS: &[i32] = &[
    libc::ENOSPC,
    libc::EDQUOT,
    libc::EFBIG,
    libc::EIO,
    libc::EROFS,
];

/// At most this many characters of an error message reach the terminal.
pub const MAX_MESSAGE: usize = 2048;

/// A message as it may reach a terminal: control characters (ESC, BEL, NUL, CR, LF, …)
/// escaped as `\u{..}`, and cut at [`MAX_MESSAGE`] characters, so an attacker-chosen name can
/// neither drive the terminal nor flood it.
pub fn printable(s: &str) -> String {
    let mut out = String::new();
    for (n, (i, c)) in s.char_indices().enumerate() {
        if n >= MAX_MESSAGE {
            out.push_str(&format!("… ({} more bytes)", s.len() - i));
            break;
        }
        if c == '\n' {
            // continuation lines are indented: nothing echoed can start a line of its own
            out.push_str("\n  ");
        } else if c.is_control() {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

impl std::error::Error for Error {}

impl Error {
    /// A new error.
    pub fn new(code: ExitCode, e: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            source: e.into(),
        }
    }
    /// The process exit code: the category given where the error arose, except that a storage
    /// failure of the machine (full disk, quota, read-only, EIO) anywhere in the chain is I/O.
    pub fn exit_code(&self) -> i32 {
        let storage = self.source.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                .is_some_and(|n| STORAGE_ERRNOS.contains(&n))
        });
        if storage {
            ExitCode::Io as i32
        } else {
            self.code as i32
        }
    }

    /// Invalid input.
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Self::new(ExitCode::InvalidInput, anyhow::anyhow!("{msg}"))
    }
    /// Unsupported.
    pub fn unsupported(msg: impl fmt::Display) -> Self {
        Self::new(ExitCode::Unsupported, anyhow::anyhow!("{msg}"))
    }
    /// Adds context, keeping the code.
    pub fn context(self, c: impl fmt::Display + Send + Sync + 'static) -> Self {
        Self {
            code: self.code,
            source: self.source.context(c),
        }
    }
}

/// The exit codes of the library errors the imager surfaces: one mapping per library, here.
impl Error {
    /// A registry, cache or layout failure: bad references and configs are invalid input,
    /// local I/O is I/O, everything else (network, registry, digests) a dependency failure.
    pub fn from_oci(what: &str, e: oci::Error) -> Self {
        let code = match &e {
            oci::Error::Reference { .. } | oci::Error::Config(_) => ExitCode::InvalidInput,
            oci::Error::Io { .. } => ExitCode::Io,
            _ => ExitCode::Dependency,
        };
        Self::new(code, anyhow::anyhow!("{what}: {e}"))
    }

    /// A hostile or unreadable archive (extensions, base installer layers): local I/O is
    /// I/O, everything else is invalid input.
    pub fn from_tree(what: &str, e: crate::inputs::tree::TreeError) -> Self {
        let code = match e {
            crate::inputs::tree::TreeError::Io { .. } => ExitCode::Io,
            _ => ExitCode::InvalidInput,
        };
        Self::new(code, anyhow::anyhow!("{what}: {e}"))
    }

    /// A disk-layout failure of the installer library.
    pub fn from_install(e: installer::InstallError) -> Self {
        let code = match e {
            installer::InstallError::Unsupported(_) => ExitCode::Unsupported,
            installer::InstallError::Value(_) => ExitCode::InvalidInput,
            installer::InstallError::Io { .. } => ExitCode::Io,
            _ => ExitCode::Assembly,
        };
        Self::new(code, e)
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

/// Attaches an exit code to any error.
pub trait WithCode<T> {
    /// Maps the error to `code` with a context message.
    fn code(self, code: ExitCode, ctx: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> WithCode<T> for std::result::Result<T, E> {
    fn code(self, code: ExitCode, ctx: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(code, e.into().context(ctx())))
    }
}
