//! The one error type every fallible kernel returns.

use std::fmt;

/// What went wrong, phrased so the caller can fix it: every variant names the argument
/// it is about and, for shapes, what was expected and what was given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Two arguments (or an argument and the problem) disagree about a dimension.
    ShapeMismatch {
        /// The argument whose shape is wrong, e.g. `"k"`.
        arg: &'static str,
        /// The shape the other arguments imply.
        expected: String,
        /// The shape that was passed.
        got: String,
    },
    /// A view's shape/strides address memory outside its buffer, overflow, or overlap
    /// (for outputs), or the innermost dimension is not contiguous where a kernel needs it.
    InvalidView {
        /// The argument, e.g. `"out"`.
        arg: &'static str,
        /// Why the view is rejected.
        reason: String,
    },
    /// A dtype combination, ISA level or feature this build or machine cannot run.
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// A scalar argument is out of range (negative eps, NaN scale, unknown ISA name, ...).
    InvalidArgument {
        /// The argument, e.g. `"eps"`.
        arg: &'static str,
        /// Why it is rejected.
        reason: String,
    },
}

impl Error {
    pub(crate) fn shape(arg: &'static str, expected: impl fmt::Debug, got: impl fmt::Debug) -> Self {
        Error::ShapeMismatch { arg, expected: format!("{expected:?}"), got: format!("{got:?}") }
    }

    pub(crate) fn view(arg: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidView { arg, reason: reason.into() }
    }

    pub(crate) fn invalid(arg: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { arg, reason: reason.into() }
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> Self {
        Error::Unsupported { what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { arg, expected, got } => {
                write!(f, "shape mismatch for `{arg}`: expected {expected}, got {got}")
            }
            Error::InvalidView { arg, reason } => write!(f, "invalid view `{arg}`: {reason}"),
            Error::Unsupported { what } => write!(f, "unsupported: {what}"),
            Error::InvalidArgument { arg, reason } => write!(f, "invalid argument `{arg}`: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
