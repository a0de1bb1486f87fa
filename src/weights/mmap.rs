//! The weights' `unsafe`: mapping a file into memory, and viewing aligned little-endian bytes
//! as `f32` / `f16` / `bf16` slices without copying. (The model layer's other `unsafe` is the
//! KV cache's anonymous huge-page mapping, `models::huge_pages`; beyond it, the C ABI, the
//! fuzz bodies and the gemm peer of the bench are the crate's only `unsafe` modules.)

use flashkern_kernels::{bf16, f16};
use std::fs::File;

/// A read-only memory map of a whole file.
#[derive(Debug)]
pub(crate) struct Mapped(memmap2::Mmap);

impl Mapped {
    /// Maps `file` read-only.
    pub(crate) fn map(file: &File) -> std::io::Result<Mapped> {
        // SAFETY: the map is read-only and private to this process. Another process truncating
        // or rewriting the file while it is mapped is outside what Rust can guard against
        // (every mmap-based loader shares this caveat, documented on `Weights::open`); the
        // loader validates every offset against the length the map has now.
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        Ok(Mapped(map))
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Plain element types that every bit pattern inhabits and whose little-endian bytes equal
/// their in-memory representation on this target.
pub(crate) trait Pod: Copy + Default {
    /// Builds a value from exactly `size_of::<Self>()` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
}

impl Pod for f32 {
    fn from_le(bytes: &[u8]) -> Self {
        f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

impl Pod for f16 {
    fn from_le(bytes: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
}

impl Pod for bf16 {
    fn from_le(bytes: &[u8]) -> Self {
        bf16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
}

/// `bytes` as a slice of `T` without copying, or `None` when the bytes are misaligned for
/// `T`, their length is not a multiple of its size, or the target is big-endian.
pub(crate) fn cast_slice<T: Pod>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if cfg!(target_endian = "big")
        || !bytes.len().is_multiple_of(size)
        || bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0
    {
        return None;
    }
    // SAFETY: the pointer is aligned for T (checked above), the length covers exactly
    // `bytes.len() / size` elements inside the borrowed slice, T is a plain f32 or a
    // `repr(transparent)` u16 wrapper that every bit pattern inhabits, and on a little-endian
    // target the file's bytes are its in-memory representation. The result borrows `bytes`.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

/// Copies little-endian `bytes` into a new, aligned vector of `T` (for misaligned tensors).
pub(crate) fn copy_slice<T: Pod>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(std::mem::size_of::<T>()).map(T::from_le).collect()
}
