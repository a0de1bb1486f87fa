//! Safetensors checkpoints: memory-mapped (or owned) bytes, a fully validated header, and
//! typed zero-copy views of the f32 / f16 / bf16 tensors.
//!
//! ## Format
//! An 8-byte little-endian header length `n`, `n` bytes of UTF-8 JSON mapping tensor names to
//! `{"dtype", "shape", "data_offsets": [start, end]}` (offsets relative to the end of the
//! header; an optional `"__metadata__"` string map), then the data section.
//!
//! ## Validation (each failure is its own [`ModelError`] variant naming the tensor)
//! Header length bounded by [`MAX_HEADER_LEN`] and inside the file; UTF-8; JSON of exactly that
//! form; no duplicate names; known dtypes; shape products and byte sizes computed with
//! checked arithmetic; `start ≤ end`; `end − start = elements × dtype size`; every range inside
//! the data section (a cut-short file is reported as [`ModelError::Truncated`]); no two tensors
//! overlapping; no bytes belonging to no tensor.
//!
//! ## Zero copy
//! Tensor data is handed out as slices of the mapped (or owned) bytes. Writers pad the header
//! so data is aligned, but a file need not be: a tensor whose bytes are misaligned for its
//! dtype is copied once, at load, into an aligned buffer ([`Tensor::is_zero_copy`] tells).

#[allow(unsafe_code)]
mod mmap;

use crate::error::{ModelError, ModelResult};
use flashkern_kernels::tensor::Data;
use flashkern_kernels::{Buffer, DType, View, bf16, f16};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// The largest header accepted (the bound the reference implementation uses too): a header
/// larger than this is treated as hostile rather than parsed.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The element types safetensors defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StDtype {
    /// Booleans, one byte each.
    Bool,
    /// Unsigned 8-bit integers.
    U8,
    /// Signed 8-bit integers.
    I8,
    /// 8-bit float, 5 exponent and 2 mantissa bits.
    F8E5M2,
    /// 8-bit float, 4 exponent and 3 mantissa bits.
    F8E4M3,
    /// Signed 16-bit integers.
    I16,
    /// Unsigned 16-bit integers.
    U16,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integers.
    I32,
    /// Unsigned 32-bit integers.
    U32,
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
    /// Signed 64-bit integers.
    I64,
    /// Unsigned 64-bit integers.
    U64,
}

impl StDtype {
    /// Parses a header dtype string.
    pub fn parse(name: &str) -> Option<StDtype> {
        use StDtype::*;
        Some(match name {
            "BOOL" => Bool,
            "U8" => U8,
            "I8" => I8,
            "F8_E5M2" => F8E5M2,
            "F8_E4M3" => F8E4M3,
            "I16" => I16,
            "U16" => U16,
            "F16" => F16,
            "BF16" => BF16,
            "I32" => I32,
            "U32" => U32,
            "F32" => F32,
            "F64" => F64,
            "I64" => I64,
            "U64" => U64,
            _ => return None,
        })
    }

    /// The header spelling.
    pub fn name(self) -> &'static str {
        use StDtype::*;
        match self {
            Bool => "BOOL",
            U8 => "U8",
            I8 => "I8",
            F8E5M2 => "F8_E5M2",
            F8E4M3 => "F8_E4M3",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            F64 => "F64",
            I64 => "I64",
            U64 => "U64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        use StDtype::*;
        match self {
            Bool | U8 | I8 | F8E5M2 | F8E4M3 => 1,
            I16 | U16 | F16 | BF16 => 2,
            I32 | U32 | F32 => 4,
            F64 | I64 | U64 => 8,
        }
    }

    /// The kernel dtype, for the three float types the kernels take.
    pub fn kernel_dtype(self) -> Option<DType> {
        match self {
            StDtype::F32 => Some(DType::F32),
            StDtype::F16 => Some(DType::F16),
            StDtype::BF16 => Some(DType::BF16),
            _ => None,
        }
    }

    /// The header spelling of a kernel dtype.
    pub fn from_kernel(dtype: DType) -> StDtype {
        match dtype {
            DType::F32 => StDtype::F32,
            DType::F16 => StDtype::F16,
            DType::BF16 => StDtype::BF16,
        }
    }
}

impl fmt::Display for StDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One validated header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: StDtype,
    /// Its shape (a scalar has an empty shape).
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub data_offsets: (usize, usize),
}

#[derive(Debug)]
enum Storage {
    Mapped(mmap::Mapped),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m.bytes(),
            Storage::Owned(v) => v,
        }
    }
}

/// One safetensors file (mapped or owned), validated.
#[derive(Debug)]
pub struct SafeTensors {
    source: String,
    storage: Storage,
    data_start: usize,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    copies: Vec<Option<Buffer>>,
    metadata: BTreeMap<String, String>,
}

/// A borrowed float tensor.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    name: &'a str,
    shape: &'a [usize],
    data: Data<'a>,
    zero_copy: bool,
}

impl<'a> Tensor<'a> {
    /// The tensor's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Its shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// Its element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The elements, row-major.
    pub fn data(&self) -> Data<'a> {
        self.data
    }

    /// True when the data is a view of the file's bytes; false when it was copied at load
    /// because the bytes were misaligned for the dtype.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// A row-major kernel view (a scalar is seen as shape `[1]`).
    pub fn view(&self) -> ModelResult<View<'a>> {
        let shape: &[usize] = if self.shape.is_empty() { &[1] } else { self.shape };
        Ok(View::from_data(
            "tensor",
            self.data,
            shape,
            &flashkern_kernels::Layout::contiguous_strides(shape).unwrap_or_default(),
        )?)
    }

    /// Fails with [`ModelError::TensorShape`] unless the shape is `expected`.
    pub fn expect_shape(self, expected: &[usize]) -> ModelResult<Tensor<'a>> {
        if self.shape != expected {
            return Err(ModelError::TensorShape {
                tensor: self.name.to_string(),
                expected: expected.to_vec(),
                got: self.shape.to_vec(),
            });
        }
        Ok(self)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

#[derive(Default)]
struct RawHeader {
    entries: Vec<(String, RawEntry)>,
    metadata: BTreeMap<String, String>,
    duplicate: Option<String>,
}

impl<'de> serde::Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object mapping tensor names to {dtype, shape, data_offsets}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut header = RawHeader::default();
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        if !seen.insert(key.clone()) {
                            header.duplicate.get_or_insert(key);
                            map.next_value::<de::IgnoredAny>()?;
                            continue;
                        }
                        header.metadata = map.next_value().map_err(|e| {
                            de::Error::custom(format!("`__metadata__` must map strings to strings: {e}"))
                        })?;
                        continue;
                    }
                    let entry: RawEntry =
                        map.next_value().map_err(|e| de::Error::custom(format!("tensor `{key}`: {e}")))?;
                    if !seen.insert(key.clone()) {
                        header.duplicate.get_or_insert(key);
                        continue;
                    }
                    header.entries.push((key, entry));
                }
                Ok(header)
            }
        }
        deserializer.deserialize_map(HeaderVisitor)
    }
}

/// Parses and validates the header of `bytes`; returns the entries (in header order), the
/// metadata and where the data section starts.
fn parse_header(source: &str, bytes: &[u8]) -> ModelResult<(Vec<TensorInfo>, BTreeMap<String, String>, usize)> {
    let src = || source.to_string();
    if bytes.len() < 8 {
        return Err(ModelError::FileTooShort { source: src(), len: bytes.len() });
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_LEN {
        return Err(ModelError::HeaderTooLarge { source: src(), header_len, limit: MAX_HEADER_LEN });
    }
    let header_len_usize = header_len as usize; // ≤ 100 MB: fits
    if header_len_usize > bytes.len() - 8 {
        return Err(ModelError::HeaderBeyondFile { source: src(), header_len, file_len: bytes.len() });
    }
    let data_start = 8 + header_len_usize;
    let header = std::str::from_utf8(&bytes[8..data_start])
        .map_err(|e| ModelError::HeaderUtf8 { source: src(), offset: e.valid_up_to() })?;
    let raw: RawHeader =
        serde_json::from_str(header).map_err(|e| ModelError::HeaderJson { source: src(), reason: e.to_string() })?;
    if let Some(tensor) = raw.duplicate {
        return Err(ModelError::DuplicateTensor { source: src(), tensor });
    }
    let data_len = (bytes.len() - data_start) as u64;
    let mut tensors = Vec::with_capacity(raw.entries.len());
    for (name, entry) in raw.entries {
        let dtype = StDtype::parse(&entry.dtype).ok_or_else(|| ModelError::UnknownDtype {
            source: src(),
            tensor: name.clone(),
            dtype: entry.dtype.clone(),
        })?;
        let overflow = || ModelError::ShapeOverflow { source: src(), tensor: name.clone(), shape: entry.shape.clone() };
        let elements = entry.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
        let nbytes = elements.checked_mul(dtype.size() as u64).ok_or_else(overflow)?;
        let shape = entry
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| overflow())?;
        let (start, end) = entry.data_offsets;
        if end < start {
            return Err(ModelError::OffsetsReversed { source: src(), tensor: name, start, end });
        }
        if end - start != nbytes {
            return Err(ModelError::ByteLengthMismatch {
                source: src(),
                tensor: name,
                expected: nbytes,
                got: end - start,
            });
        }
        // Ranges are later checked against the data length, which fits in usize; until then
        // clamp so the conversion cannot fail.
        let clamp = |x: u64| usize::try_from(x).unwrap_or(usize::MAX);
        tensors.push((TensorInfo { name, dtype, shape, data_offsets: (clamp(start), clamp(end)) }, (start, end)));
    }

    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].1);
    let max_end = tensors.iter().map(|t| t.1.1).max().unwrap_or(0);
    if max_end > data_len {
        let first_outside = order.iter().map(|&i| &tensors[i]).find(|t| t.1.1 > data_len).expect("max_end > data_len");
        let mut cursor = 0u64;
        let tiles = order.iter().all(|&i| {
            let ok = tensors[i].1.0 == cursor;
            cursor = tensors[i].1.1;
            ok
        });
        let (info, (start, end)) = first_outside;
        return Err(if tiles {
            ModelError::Truncated {
                source: src(),
                tensor: info.name.clone(),
                expected_len: (data_start as u64).saturating_add(max_end),
                file_len: bytes.len(),
            }
        } else {
            ModelError::OffsetsOutsideData {
                source: src(),
                tensor: info.name.clone(),
                start: *start,
                end: *end,
                data_len,
            }
        });
    }
    let mut cursor = 0u64;
    let mut previous: Option<&str> = None;
    for &i in &order {
        let (info, (start, end)) = &tensors[i];
        if *start < cursor {
            return Err(ModelError::OverlappingTensors {
                source: src(),
                tensor: info.name.clone(),
                other: previous.unwrap_or_default().to_string(),
            });
        }
        if *start > cursor {
            return Err(ModelError::Gap { source: src(), tensor: info.name.clone(), start: cursor, end: *start });
        }
        cursor = *end;
        previous = Some(&info.name);
    }
    if cursor < data_len {
        return Err(ModelError::Gap {
            source: src(),
            tensor: previous.unwrap_or("(none: the header lists no tensors)").to_string(),
            start: cursor,
            end: data_len,
        });
    }
    Ok((tensors.into_iter().map(|t| t.0).collect(), raw.metadata, data_start))
}

impl SafeTensors {
    /// Maps and validates a `.safetensors` file.
    ///
    /// The file is memory-mapped read-only: do not modify or truncate it while the returned
    /// value (or anything borrowing from it) lives — the operating system, not this crate,
    /// decides what a mapping of a changed file shows.
    pub fn open(path: impl AsRef<Path>) -> ModelResult<SafeTensors> {
        let path = path.as_ref();
        let io = |source| ModelError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let mapped = mmap::Mapped::map(&file).map_err(io)?;
        Self::from_storage(path.display().to_string(), Storage::Mapped(mapped))
    }

    /// Validates an owned buffer (for tests, fuzzing, or bytes that came from elsewhere).
    /// `source` names the buffer in errors.
    pub fn from_bytes(bytes: Vec<u8>, source: &str) -> ModelResult<SafeTensors> {
        Self::from_storage(source.to_string(), Storage::Owned(bytes))
    }

    fn from_storage(source: String, storage: Storage) -> ModelResult<SafeTensors> {
        let bytes = storage.bytes();
        let (tensors, metadata, data_start) = parse_header(&source, bytes)?;
        let copies = tensors
            .iter()
            .map(|t| {
                let raw = &bytes[data_start + t.data_offsets.0..data_start + t.data_offsets.1];
                match t.dtype {
                    StDtype::F32 if mmap::cast_slice::<f32>(raw).is_none() => Some(Buffer::F32(mmap::copy_slice(raw))),
                    StDtype::F16 if mmap::cast_slice::<f16>(raw).is_none() => Some(Buffer::F16(mmap::copy_slice(raw))),
                    StDtype::BF16 if mmap::cast_slice::<bf16>(raw).is_none() => {
                        Some(Buffer::BF16(mmap::copy_slice(raw)))
                    }
                    _ => None,
                }
            })
            .collect();
        let by_name = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(SafeTensors { source, storage, data_start, tensors, by_name, copies, metadata })
    }

    /// Where the bytes came from (the path, or the name given to [`SafeTensors::from_bytes`]).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every entry, in header order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The header's `__metadata__`.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The entry called `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of the tensor called `name` (any dtype).
    pub fn bytes(&self, name: &str) -> ModelResult<&[u8]> {
        let info = self.info(name).ok_or_else(|| self.missing(name))?;
        Ok(&self.storage.bytes()[self.data_start + info.data_offsets.0..self.data_start + info.data_offsets.1])
    }

    /// The float tensor called `name`, zero-copy when aligned.
    pub fn tensor(&self, name: &str) -> ModelResult<Tensor<'_>> {
        let &i = self.by_name.get(name).ok_or_else(|| self.missing(name))?;
        let info = &self.tensors[i];
        let raw = &self.storage.bytes()[self.data_start + info.data_offsets.0..self.data_start + info.data_offsets.1];
        let (data, zero_copy) = match (&self.copies[i], info.dtype) {
            (Some(Buffer::F32(v)), _) => (Data::F32(v), false),
            (Some(Buffer::F16(v)), _) => (Data::F16(v), false),
            (Some(Buffer::BF16(v)), _) => (Data::BF16(v), false),
            (None, StDtype::F32) => (Data::F32(mmap::cast_slice(raw).expect("checked at load")), true),
            (None, StDtype::F16) => (Data::F16(mmap::cast_slice(raw).expect("checked at load")), true),
            (None, StDtype::BF16) => (Data::BF16(mmap::cast_slice(raw).expect("checked at load")), true),
            (None, other) => {
                return Err(ModelError::UnsupportedDtype { tensor: name.to_string(), dtype: other.to_string() });
            }
        };
        Ok(Tensor { name: &info.name, shape: &info.shape, data, zero_copy })
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::MissingTensor { source: self.source.clone(), tensor: name.to_string() }
    }
}

/// A whole checkpoint: one safetensors file or the shards of a sharded one.
#[derive(Debug)]
pub struct Weights {
    source: String,
    files: Vec<SafeTensors>,
    by_name: HashMap<String, usize>,
}

/// The file name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The file name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// The part of `model.safetensors.index.json` that matters (its `metadata` is ignored).
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Weights {
    /// Opens a checkpoint: a `.safetensors` file, or a directory holding `model.safetensors`
    /// or `model.safetensors.index.json` (sharded; every shard is mapped).
    pub fn open(path: impl AsRef<Path>) -> ModelResult<Weights> {
        let path = path.as_ref();
        if !path.is_dir() {
            return Ok(Self::single(SafeTensors::open(path)?));
        }
        let single = path.join(SINGLE_FILE);
        if single.is_file() {
            return Ok(Self::single(SafeTensors::open(single)?));
        }
        let index = path.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_sharded(&index);
        }
        Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {SINGLE_FILE} or {INDEX_FILE} in this directory"),
            ),
        })
    }

    /// Wraps one validated file.
    pub fn single(file: SafeTensors) -> Weights {
        let by_name = file.tensors.iter().map(|t| (t.name.clone(), 0)).collect();
        Weights { source: file.source.clone(), files: vec![file], by_name }
    }

    /// Validates one owned buffer (see [`SafeTensors::from_bytes`]).
    pub fn from_bytes(bytes: Vec<u8>, source: &str) -> ModelResult<Weights> {
        Ok(Self::single(SafeTensors::from_bytes(bytes, source)?))
    }

    /// Opens a sharded checkpoint from its index file.
    pub fn open_sharded(index: &Path) -> ModelResult<Weights> {
        let bad = |reason: String| ModelError::InvalidIndex { path: index.to_path_buf(), reason };
        let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io { path: index.into(), source })?;
        let parsed: ShardIndex = serde_json::from_str(&text).map_err(|e| bad(format!("not a shard index: {e}")))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&String> = parsed.weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();
        let mut files = Vec::with_capacity(shard_names.len());
        let mut shard_of = HashMap::new();
        for name in shard_names {
            let plain = Path::new(name).file_name().is_some_and(|f| f == name.as_str());
            if !plain {
                return Err(bad(format!("shard {name:?} is not a plain file name in the index's directory")));
            }
            shard_of.insert(name.clone(), files.len());
            files.push(SafeTensors::open(dir.join(name))?);
        }
        let mut by_name = HashMap::new();
        for (tensor, shard) in &parsed.weight_map {
            let i = shard_of[shard];
            if files[i].info(tensor).is_none() {
                return Err(bad(format!("tensor `{tensor}` is mapped to {shard}, which does not contain it")));
            }
            by_name.insert(tensor.clone(), i);
        }
        let mut owner: HashMap<&str, usize> = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            for t in file.tensors() {
                if let Some(prev) = owner.insert(&t.name, i)
                    && prev != i
                {
                    return Err(ModelError::DuplicateTensor {
                        source: format!("{} and {}", files[prev].source, file.source),
                        tensor: t.name.clone(),
                    });
                }
            }
        }
        Ok(Weights { source: index.display().to_string(), files, by_name })
    }

    /// The checkpoint's path (or buffer name).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The files (one unless sharded).
    pub fn files(&self) -> &[SafeTensors] {
        &self.files
    }

    /// True when a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every tensor name (unordered).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The header entry of `name`.
    pub fn info(&self, name: &str) -> ModelResult<&TensorInfo> {
        let &i = self.by_name.get(name).ok_or_else(|| self.missing(name))?;
        self.files[i].info(name).ok_or_else(|| self.missing(name))
    }

    /// The float tensor called `name`.
    pub fn get(&self, name: &str) -> ModelResult<Tensor<'_>> {
        let &i = self.by_name.get(name).ok_or_else(|| self.missing(name))?;
        self.files[i].tensor(name)
    }

    /// The float tensor called `name`, which must have shape `expected`
    /// ([`ModelError::TensorShape`] otherwise).
    pub fn get_shaped(&self, name: &str, expected: &[usize]) -> ModelResult<Tensor<'_>> {
        self.get(name)?.expect_shape(expected)
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::MissingTensor { source: self.source.clone(), tensor: name.to_string() }
    }
}

/// One tensor for [`serialize`]: name, dtype, shape and its little-endian bytes.
pub type TensorBytes<'a> = (&'a str, StDtype, &'a [usize], &'a [u8]);

/// Writes a safetensors file image: tensors in the given order, the header padded with spaces
/// so the data section starts 8-byte aligned. Fails when a tensor's byte length disagrees
/// with its shape or a name repeats.
pub fn serialize(tensors: &[TensorBytes], metadata: &BTreeMap<String, String>) -> ModelResult<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("string map"));
    }
    let mut offset = 0usize;
    for &(name, dtype, shape, bytes) in tensors {
        let expected = shape.iter().try_fold(dtype.size(), |total, &extent| total.checked_mul(extent));
        if expected != Some(bytes.len()) {
            let needs = expected.map_or("more than usize::MAX".to_string(), |bytes| bytes.to_string());
            return Err(ModelError::InvalidInput {
                arg: "tensors",
                reason: format!(
                    "tensor `{name}`: {} bytes given, shape {shape:?} × {dtype} needs {needs}",
                    bytes.len()
                ),
            });
        }
        let entry =
            serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [offset, offset + bytes.len()]});
        if header.insert(name.to_string(), entry).is_some() {
            return Err(ModelError::InvalidInput { arg: "tensors", reason: format!("tensor `{name}` given twice") });
        }
        offset += bytes.len();
    }
    let mut json = serde_json::to_string(&header).expect("JSON map");
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    for &(_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// The little-endian bytes of f32 values (for [`serialize`]).
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
