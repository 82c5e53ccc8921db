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
        write!(f, "{:#}", self.source)
    }
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
