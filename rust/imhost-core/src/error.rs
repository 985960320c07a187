//! The core's one error type: an opaque [`Error`] with a [`kind`](Error::kind) that maps onto the
//! C ABI's status codes, and a message written for the person who has to act on it.

use std::fmt;
use std::path::Path;

/// What went wrong, coarsely: the C ABI turns each kind into one `imh_status` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument is out of its documented range (an option value, a path extension).
    InvalidArgument,
    /// The pixel type is not one the operation accepts.
    DataType,
    /// Shape, strides or dimensionality do not fit the operation or each other.
    Shape,
    /// Spacing, origin, direction or frame times are not finite, not positive or degenerate.
    Geometry,
    /// The operating system refused a read or write.
    Io,
    /// A file is corrupt, truncated or not of the format it claims.
    Format,
    /// Well-formed input that this version does not handle.
    Unsupported,
    /// The input would need more memory than allowed.
    TooLarge,
    /// The caller cancelled the operation.
    Cancelled,
    /// A bug in imhost; the message says where.
    Internal,
    /// The model runtime failed: LibTorch reported an error, or the requested device is missing.
    Model,
    /// A run took longer than its time limit and was stopped (an isolated worker is killed).
    TimedOut,
    /// A file or folder fails the trust rules for code and weights (writable by others, owned
    /// by another user, a link to such a file, under a folder others can swap).
    Untrusted,
}

impl ErrorKind {
    /// A stable identifier (`"format"`, `"too_large"`, ...), used in JSON reports and tests.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::DataType => "data_type",
            ErrorKind::Shape => "shape",
            ErrorKind::Geometry => "geometry",
            ErrorKind::Io => "io",
            ErrorKind::Format => "format",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
            ErrorKind::Model => "model",
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::Untrusted => "untrusted",
        }
    }

    /// The kind named by [`ErrorKind::as_str`] (`None` for any other text).
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::InvalidArgument,
        ErrorKind::DataType,
        ErrorKind::Shape,
        ErrorKind::Geometry,
        ErrorKind::Io,
        ErrorKind::Format,
        ErrorKind::Unsupported,
        ErrorKind::TooLarge,
        ErrorKind::Cancelled,
        ErrorKind::Internal,
        ErrorKind::Model,
        ErrorKind::TimedOut,
        ErrorKind::Untrusted,
    ];
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every fallible function in the core.
///
/// The message is complete on its own (it names the file or argument at fault), so callers can
/// print `error.to_string()` as one line.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    /// The coarse category, stable across versions.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Attach the underlying cause (kept for `source()`, and appended to the message).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefix the message with where it happened, e.g. the file being read.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Prefix the message with a path, once (a message that already begins with it is kept).
    pub fn in_file(self, path: &Path) -> Self {
        let prefix = format!("'{}'", path.display());
        if self.message.starts_with(&format!("{prefix}: ")) { self } else { self.context(prefix) }
    }

    /// Shorthand for [`ErrorKind::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }
    /// Shorthand for [`ErrorKind::Shape`].
    pub fn shape(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Shape, message)
    }
    /// Shorthand for [`ErrorKind::Geometry`].
    pub fn geometry(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Geometry, message)
    }
    /// Shorthand for [`ErrorKind::Format`].
    pub fn format(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Format, message)
    }
    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }
    /// Shorthand for [`ErrorKind::TooLarge`].
    pub fn too_large(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::TooLarge, message)
    }
    /// Shorthand for [`ErrorKind::DataType`].
    pub fn data_type(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::DataType, message)
    }
    /// The error every cancelled operation returns.
    pub fn cancelled() -> Self {
        Error::new(ErrorKind::Cancelled, "operation cancelled by the caller")
    }
    /// Shorthand for [`ErrorKind::Model`].
    pub fn model(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Model, message)
    }

    /// Shorthand for [`ErrorKind::TimedOut`].
    pub fn timed_out(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::TimedOut, message)
    }
    /// Shorthand for [`ErrorKind::Untrusted`].
    pub fn untrusted(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Untrusted, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}, {self})", self.kind)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        // A read that stops early is a property of the file, not of the operating system.
        let kind = match err.kind() {
            std::io::ErrorKind::UnexpectedEof => ErrorKind::Format,
            std::io::ErrorKind::InvalidData => ErrorKind::Format,
            std::io::ErrorKind::OutOfMemory => ErrorKind::TooLarge,
            _ => ErrorKind::Io,
        };
        let message = match kind {
            ErrorKind::Format => "file is truncated or corrupt",
            _ => "i/o failed",
        };
        Error::new(kind, message).with_source(err)
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_name_that_reads_back() {
        let names: std::collections::HashSet<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        for k in ErrorKind::ALL {
            // An exhaustive match: a new kind fails to compile here until it is added to ALL.
            match k {
                ErrorKind::InvalidArgument
                | ErrorKind::DataType
                | ErrorKind::Shape
                | ErrorKind::Geometry
                | ErrorKind::Io
                | ErrorKind::Format
                | ErrorKind::Unsupported
                | ErrorKind::TooLarge
                | ErrorKind::Cancelled
                | ErrorKind::Internal
                | ErrorKind::Model
                | ErrorKind::TimedOut
                | ErrorKind::Untrusted => {}
            }
            assert_eq!(ErrorKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(ErrorKind::from_name("nonsense"), None);
    }

    #[test]
    fn io_errors_keep_their_cause_and_map_eof_to_format() {
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "early eof");
        let err = Error::from(eof).in_file(Path::new("/x/a.nii"));
        assert_eq!(err.kind(), ErrorKind::Format);
        assert_eq!(err.to_string(), "'/x/a.nii': file is truncated or corrupt: early eof");
        let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        assert_eq!(Error::from(denied).kind(), ErrorKind::Io);
    }
}
