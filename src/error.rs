//! The model layer's error type: every variant names the file, tensor or setting it is about.

use std::fmt;
use std::path::PathBuf;

/// What went wrong while loading a model or running it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is shorter than the 8-byte header length that starts every safetensors file.
    FileTooShort {
        /// Where the bytes came from.
        source: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The header length exceeds the sane bound [`crate::weights::MAX_HEADER_LEN`].
    HeaderTooLarge {
        /// Where the bytes came from.
        source: String,
        /// The header length the file declares.
        header_len: u64,
        /// The bound.
        limit: u64,
    },
    /// The header length points past the end of the file.
    HeaderBeyondFile {
        /// Where the bytes came from.
        source: String,
        /// The header length the file declares.
        header_len: u64,
        /// The file's length in bytes.
        file_len: usize,
    },
    /// The header is not valid UTF-8.
    HeaderUtf8 {
        /// Where the bytes came from.
        source: String,
        /// The byte offset (within the header) of the first invalid sequence.
        offset: usize,
    },
    /// The header is not the JSON a safetensors header must be.
    HeaderJson {
        /// Where the bytes came from.
        source: String,
        /// The parser's message (line and column included).
        reason: String,
    },
    /// Two header entries have the same tensor name.
    DuplicateTensor {
        /// Where the bytes came from.
        source: String,
        /// The repeated name.
        tensor: String,
    },
    /// A dtype string safetensors does not define.
    UnknownDtype {
        /// Where the bytes came from.
        source: String,
        /// The tensor.
        tensor: String,
        /// The dtype string found.
        dtype: String,
    },
    /// The product of a tensor's shape (or its byte size) overflows.
    ShapeOverflow {
        /// Where the bytes came from.
        source: String,
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<u64>,
    },
    /// A tensor's end offset is before its start.
    OffsetsReversed {
        /// Where the bytes came from.
        source: String,
        /// The tensor.
        tensor: String,
        /// Start offset (relative to the data section).
        start: u64,
        /// End offset.
        end: u64,
    },
    /// A tensor's byte range does not hold exactly `elements × dtype size` bytes.
    ByteLengthMismatch {
        /// Where the bytes came from.
        source: String,
        /// The tensor.
        tensor: String,
        /// `elements × dtype size`.
        expected: u64,
        /// `end − start`.
        got: u64,
    },
    /// The data section ends before the tensors the header describes: the file was cut short.
    Truncated {
        /// Where the bytes came from.
        source: String,
        /// The first tensor that does not fit.
        tensor: String,
        /// The file length the header implies.
        expected_len: u64,
        /// The actual file length.
        file_len: usize,
    },
    /// A tensor's byte range lies (partly) outside the data section, in a header whose ranges do
    /// not otherwise tile the data (not a plain truncation).
    OffsetsOutsideData {
        /// Where the bytes came from.
        source: String,
        /// The tensor.
        tensor: String,
        /// Start offset (relative to the data section).
        start: u64,
        /// End offset.
        end: u64,
        /// The data section's length.
        data_len: u64,
    },
    /// Two tensors share bytes.
    OverlappingTensors {
        /// Where the bytes came from.
        source: String,
        /// The later tensor.
        tensor: String,
        /// The tensor it overlaps.
        other: String,
    },
    /// Bytes of the data section that belong to no tensor.
    Gap {
        /// Where the bytes came from.
        source: String,
        /// The tensor after the gap (or the last tensor, for trailing bytes).
        tensor: String,
        /// The first unclaimed byte (relative to the data section).
        start: u64,
        /// One past the last unclaimed byte.
        end: u64,
    },
    /// A tensor the model needs is not in the checkpoint.
    MissingTensor {
        /// Where it was looked for.
        source: String,
        /// The tensor.
        tensor: String,
    },
    /// A tensor's shape disagrees with what config.json implies.
    TensorShape {
        /// The tensor.
        tensor: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A tensor has a dtype the model layer cannot use as weights (only F32, F16, BF16).
    UnsupportedDtype {
        /// The tensor.
        tensor: String,
        /// Its safetensors dtype.
        dtype: String,
    },
    /// A sharded checkpoint's `model.safetensors.index.json` is wrong.
    InvalidIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// config.json (or another model-folder settings file) is missing a field, has an
    /// unknown one, or asks for something unsupported.
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer could not be loaded or failed.
    Tokenizer {
        /// What failed.
        reason: String,
    },
    /// Bad input to a model call (token id outside the vocabulary, sequence too long, ...).
    InvalidInput {
        /// The argument.
        arg: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// A kernel rejected its arguments (a bug in the model layer if it happens).
    Kernel(flashkern_kernels::Error),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ModelError::*;
        match self {
            Io { path, source } => write!(f, "{}: {source}", path.display()),
            FileTooShort { source, len } => {
                write!(f, "{source}: file is {len} bytes, too short for the 8-byte safetensors header length")
            }
            HeaderTooLarge { source, header_len, limit } => {
                write!(f, "{source}: header length {header_len} exceeds the limit of {limit} bytes")
            }
            HeaderBeyondFile { source, header_len, file_len } => write!(
                f,
                "{source}: header length {header_len} runs past the end of the file ({file_len} bytes, 8 used by the length)"
            ),
            HeaderUtf8 { source, offset } => write!(f, "{source}: header is not valid UTF-8 (at header byte {offset})"),
            HeaderJson { source, reason } => {
                write!(f, "{source}: header is not a valid safetensors JSON header: {reason}")
            }
            DuplicateTensor { source, tensor } => write!(f, "{source}: tensor `{tensor}` appears twice in the header"),
            UnknownDtype { source, tensor, dtype } => {
                write!(f, "{source}: tensor `{tensor}` has unknown dtype {dtype:?}")
            }
            ShapeOverflow { source, tensor, shape } => {
                write!(f, "{source}: tensor `{tensor}`: shape {shape:?} overflows the element or byte count")
            }
            OffsetsReversed { source, tensor, start, end } => {
                write!(f, "{source}: tensor `{tensor}`: data_offsets end {end} is before start {start}")
            }
            ByteLengthMismatch { source, tensor, expected, got } => write!(
                f,
                "{source}: tensor `{tensor}`: data_offsets span {got} bytes but shape × dtype size is {expected} bytes"
            ),
            Truncated { source, tensor, expected_len, file_len } => write!(
                f,
                "{source}: file is truncated: it is {file_len} bytes but the header describes {expected_len} \
                 (tensor `{tensor}` does not fit)"
            ),
            OffsetsOutsideData { source, tensor, start, end, data_len } => write!(
                f,
                "{source}: tensor `{tensor}`: data_offsets [{start}, {end}] lie outside the {data_len}-byte data section"
            ),
            OverlappingTensors { source, tensor, other } => {
                write!(f, "{source}: tensor `{tensor}` overlaps tensor `{other}`")
            }
            Gap { source, tensor, start, end } => {
                write!(f, "{source}: data bytes [{start}, {end}) belong to no tensor (next to tensor `{tensor}`)")
            }
            MissingTensor { source, tensor } => write!(f, "{source}: tensor `{tensor}` not found"),
            TensorShape { tensor, expected, got } => {
                write!(f, "tensor `{tensor}` has shape {got:?} but config.json implies {expected:?}")
            }
            UnsupportedDtype { tensor, dtype } => {
                write!(f, "tensor `{tensor}` has dtype {dtype}; weights must be F32, F16 or BF16")
            }
            InvalidIndex { path, reason } => write!(f, "{}: {reason}", path.display()),
            Config { path, reason } => write!(f, "{}: {reason}", path.display()),
            Tokenizer { reason } => write!(f, "tokenizer: {reason}"),
            InvalidInput { arg, reason } => write!(f, "invalid `{arg}`: {reason}"),
            Kernel(e) => write!(f, "kernel error: {e}"),
        }
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModelError::Io { source, .. } => Some(source),
            ModelError::Kernel(e) => Some(e),
            _ => None,
        }
    }
}

impl From<flashkern_kernels::Error> for ModelError {
    fn from(e: flashkern_kernels::Error) -> Self {
        ModelError::Kernel(e)
    }
}

/// `Result` with [`ModelError`].
pub type ModelResult<T> = std::result::Result<T, ModelError>;
