//! Stores of f32 vectors as f32, bf16 or f16, rounding in registers: nearest-even, NaN stays
//! NaN (quiet), subnormals kept; bit-exact with `half` and with [`super::convert`].
//!
//! The counterpart of [`super::load`]: a kernel writing 16-bit outputs rounds each vector as it
//! is produced instead of storing an f32 chunk and converting it in a second pass.
//!
//! [`StreamF32`] adds streaming (non-temporal) stores for outputs too large to stay in cache:
//! they write whole 64-byte lines to memory without first reading them in (no
//! read-for-ownership), so each output byte costs one memory transfer instead of two. A
//! streamed output is not left in cache, so kernels use them only for outputs much larger than
//! the last-level cache, and call [`stream_fence`] before their results may be read elsewhere.

use crate::dtype::{Element, bf16, f16};
use pulp::Simd;

/// An element type a kernel can store an `S::f32s` into.
pub trait StoreF32: Element {
    /// Rounds `v` into vector `index` of `row` (elements `index·L .. (index+1)·L`,
    /// `L = S::F32_LANES`). Panics when the row is too short.
    fn store_f32s<S: Simd>(simd: S, v: S::f32s, row: &mut [Self], index: usize);

    /// Rounds `v[0]` and `v[1]` into vectors `2·pair` and `2·pair + 1` of `row`: the same
    /// values as two [`StoreF32::store_f32s`], in fewer instructions where the dtype packs a
    /// pair at once (bf16 under AVX-512 and AVX2, f16 under AVX2). Panics when the row is too
    /// short.
    #[inline(always)]
    fn store2_f32s<S: Simd>(simd: S, v: [S::f32s; 2], row: &mut [Self], pair: usize) {
        Self::store_f32s(simd, v[0], row, 2 * pair);
        Self::store_f32s(simd, v[1], row, 2 * pair + 1);
    }
}

impl StoreF32 for f32 {
    #[inline(always)]
    fn store_f32s<S: Simd>(_: S, v: S::f32s, row: &mut [f32], index: usize) {
        S::as_mut_simd_f32s(&mut row[index * S::F32_LANES..(index + 1) * S::F32_LANES]).0[0] = v;
    }
}

/// An element type a kernel can stream 32 f32 lanes into (see the module docs).
pub trait StreamF32: StoreF32 {
    /// Rounds `v[0]`, then `v[1]` (16 lanes each) into `dst[..32]` with streaming stores;
    /// `dst` must start on a 64-byte boundary. Only AVX-512's backend (`V4`) streams: callers
    /// check [`streams`] first, and any other backend panics rather than drop the values.
    fn stream32<S: Simd>(simd: S, v: [S::f32s; 2], dst: &mut [Self]);
}

/// Whether [`StreamF32::stream32`] streams under the backend `S` (AVX-512's alone).
#[inline(always)]
pub fn streams<S: Simd>() -> bool {
    cfg!(target_arch = "x86_64") && super::native::<S>() == super::Native::Avx512
}

/// Elements of `row` before its first 64-byte boundary (a streamed run starts there).
#[inline(always)]
pub fn elements_to_line<E>(row: &[E]) -> usize {
    (row.as_ptr() as usize).wrapping_neg() % 64 / size_of::<E>()
}

/// Orders this thread's streaming stores before its later stores (a fence; on x86 `sfence`).
/// A kernel calls it once it has streamed its part of an output, before the threads join.
#[inline(always)]
pub fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` only orders stores; SSE is baseline x86-64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

macro_rules! impl_stream {
    ($t:ty, $avx512:ident) => {
        impl StreamF32 for $t {
            #[inline(always)]
            fn stream32<S: Simd>(_: S, v: [S::f32s; 2], dst: &mut [$t]) {
                assert!(streams::<S>(), "streaming stores need the AVX-512 backend");
                let dst = &mut dst[..32];
                assert!(elements_to_line(dst) == 0, "streamed runs start on a 64-byte boundary");
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a `V4` token exists only when AVX-512 F/BW were detected (`streams`
                // asserted `S` is `V4`); `dst` holds the 32 elements and is 64-byte aligned.
                unsafe {
                    x86::$avx512(pulp::bytemuck::cast(v), dst.as_mut_ptr())
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = v;
            }
        }
    };
}

impl_stream!(f32, stream_f32x32);
impl_stream!(bf16, stream_bf16x32);
impl_stream!(f16, stream_f16x32);

macro_rules! impl_store_16bit {
    ($t:ty, $avx512:ident, $avx2:ident, $f16c:literal, $pair512:ident, $pair256:ident) => {
        impl StoreF32 for $t {
            #[inline(always)]
            fn store2_f32s<S: Simd>(simd: S, v: [S::f32s; 2], row: &mut [$t], pair: usize) {
                let lanes = S::F32_LANES;
                let dst = &mut row[2 * pair * lanes..2 * (pair + 1) * lanes];
                #[cfg(target_arch = "x86_64")]
                {
                    use super::{Native, f16c_detected, native};
                    use pulp::bytemuck::cast;
                    match native::<S>() {
                        // SAFETY: a `V4` token exists only when AVX-512 F/BW were detected;
                        // `dst` holds its 32 lanes.
                        Native::Avx512 => return unsafe { x86::$pair512(cast(v), dst.as_mut_ptr()) },
                        // SAFETY: a `V3` token exists only when AVX2 was detected, and F16C (f16
                        // only) was checked; `dst` holds its 16 lanes.
                        Native::Avx2 if !$f16c || f16c_detected() => {
                            return unsafe { x86::$pair256(cast(v), dst.as_mut_ptr()) };
                        }
                        _ => {}
                    }
                }
                Self::store_f32s(simd, v[0], dst, 0);
                Self::store_f32s(simd, v[1], dst, 1);
            }

            #[inline(always)]
            fn store_f32s<S: Simd>(_: S, v: S::f32s, row: &mut [$t], index: usize) {
                let lanes = S::F32_LANES;
                let dst = &mut row[index * lanes..(index + 1) * lanes];
                #[cfg(target_arch = "x86_64")]
                {
                    use super::{Native, f16c_detected, native};
                    use pulp::bytemuck::cast;
                    match native::<S>() {
                        // SAFETY: a `V4` token exists only when AVX-512 F/BW were detected;
                        // `dst` holds its 16 lanes.
                        Native::Avx512 => return unsafe { x86::$avx512(cast(v), dst.as_mut_ptr()) },
                        // SAFETY: a `V3` token exists only when AVX2 was detected, and F16C (f16
                        // only) was checked; `dst` holds its 8 lanes.
                        Native::Avx2 if !$f16c || f16c_detected() => {
                            return unsafe { x86::$avx2(cast(v), dst.as_mut_ptr()) };
                        }
                        _ => {}
                    }
                }
                let values = pulp::bytemuck::cast_slice::<S::f32s, f32>(std::slice::from_ref(&v));
                for (d, &x) in dst.iter_mut().zip(values) {
                    *d = <$t>::from_f32(x);
                }
            }
        }
    };
}

// The fourth argument: whether the 8-lane conversion needs F16C (which a `V3` token does not
// imply); the fifth and sixth: the dtype's AVX-512 and AVX2 pair stores, for `store2_f32s`.
impl_store_16bit!(bf16, bf16x16, bf16x8, false, bf16x32, bf16x8x2);
impl_store_16bit!(f16, f16x16, f16x8, true, f16x16x2, f16x8x2);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::convert::x86::{
        pair_to_f16_256, round_pair_to_bf16_256, round_pair_to_bf16_512, round_to_bf16_256, round_to_bf16_512,
    };
    use super::{bf16, f16};
    use pulp::{f32x8, f32x16};
    use std::arch::x86_64::*;

    /// 2 × 16 f32 streamed to `dst` (two lines).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn stream_f32x32(v: [f32x16; 2], dst: *mut f32) {
        // SAFETY: f32x16 and __m512 are both 16 packed f32.
        let [a, b] = unsafe { core::mem::transmute::<[f32x16; 2], [__m512; 2]>(v) };
        // SAFETY: the caller guarantees 32 writable, 64-byte aligned elements.
        unsafe {
            _mm512_stream_ps(dst, a);
            _mm512_stream_ps(dst.add(16), b);
        }
    }

    /// 2 × 16 f32 → 32 bf16 streamed to `dst` (one line).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn stream_bf16x32(v: [f32x16; 2], dst: *mut bf16) {
        // SAFETY: f32x16 and __m512i are both 64 bytes of plain bits.
        let [a, b] = unsafe { core::mem::transmute::<[f32x16; 2], [__m512i; 2]>(v) };
        // SAFETY: the caller guarantees 32 writable, 64-byte aligned elements.
        unsafe { _mm512_stream_si512(dst.cast(), round_pair_to_bf16_512(a, b)) };
    }

    /// 2 × 16 f32 → 32 f16 streamed to `dst` (one line).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn stream_f16x32(v: [f32x16; 2], dst: *mut f16) {
        // SAFETY: f32x16 and __m512 are both 16 packed f32.
        let [a, b] = unsafe { core::mem::transmute::<[f32x16; 2], [__m512; 2]>(v) };
        const ROUND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let line =
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm512_cvtps_ph::<ROUND>(a)), _mm512_cvtps_ph::<ROUND>(b));
        // SAFETY: the caller guarantees 32 writable, 64-byte aligned elements.
        unsafe { _mm512_stream_si512(dst.cast(), line) };
    }

    /// 16 f32 → 16 bf16 at `dst`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn bf16x16(v: f32x16, dst: *mut bf16) {
        // SAFETY: f32x16 and __m512i are both 64 bytes of plain bits.
        let bits = unsafe { core::mem::transmute::<f32x16, __m512i>(v) };
        // SAFETY: the caller guarantees 16 writable elements (32 bytes); unaligned store.
        unsafe { _mm256_storeu_si256(dst.cast(), round_to_bf16_512(bits)) };
    }

    /// 2 × 16 f32 → 32 bf16 at `dst`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn bf16x32(v: [f32x16; 2], dst: *mut bf16) {
        // SAFETY: f32x16 and __m512i are both 64 bytes of plain bits.
        let [a, b] = unsafe { core::mem::transmute::<[f32x16; 2], [__m512i; 2]>(v) };
        // SAFETY: the caller guarantees 32 writable elements (64 bytes); unaligned store.
        unsafe { _mm512_storeu_si512(dst.cast(), round_pair_to_bf16_512(a, b)) };
    }

    /// 16 f32 → 16 f16 at `dst`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn f16x16(v: f32x16, dst: *mut f16) {
        // SAFETY: f32x16 and __m512 are both 16 packed f32.
        let x = unsafe { core::mem::transmute::<f32x16, __m512>(v) };
        let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
        // SAFETY: the caller guarantees 16 writable elements (32 bytes); unaligned store.
        unsafe { _mm256_storeu_si256(dst.cast(), h) };
    }

    /// 8 f32 → 8 bf16 at `dst`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bf16x8(v: f32x8, dst: *mut bf16) {
        // SAFETY: f32x8 and __m256i are both 32 bytes of plain bits.
        let rounded = round_to_bf16_256(unsafe { core::mem::transmute::<f32x8, __m256i>(v) });
        // Values are < 2^16, so the saturating pack is exact; quadwords 0 and 2 hold lanes 0–3
        // and 4–7.
        let packed = _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi32(rounded, rounded));
        // SAFETY: the caller guarantees 8 writable elements (16 bytes); unaligned store.
        unsafe { _mm_storeu_si128(dst.cast(), _mm256_castsi256_si128(packed)) };
    }

    /// 2 × 8 f32 → 16 bf16 at `dst`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bf16x8x2(v: [f32x8; 2], dst: *mut bf16) {
        // SAFETY: f32x8 and __m256i are both 32 bytes of plain bits.
        let [a, b] = unsafe { core::mem::transmute::<[f32x8; 2], [__m256i; 2]>(v) };
        // SAFETY: the caller guarantees 16 writable elements (32 bytes); unaligned store.
        unsafe { _mm256_storeu_si256(dst.cast(), round_pair_to_bf16_256(a, b)) };
    }

    /// 2 × 16 f32 → 32 f16 at `dst`: the two single stores (kept as they were; only AVX2's
    /// memory-destination conversion was measured slow).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn f16x16x2(v: [f32x16; 2], dst: *mut f16) {
        // SAFETY: the caller guarantees 32 writable elements; each call writes 16 of them.
        unsafe {
            f16x16(v[0], dst);
            f16x16(v[1], dst.add(16));
        }
    }

    /// 2 × 8 f32 → 16 f16 at `dst`, in one store (see `pair_to_f16_256` for why).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16x8x2(v: [f32x8; 2], dst: *mut f16) {
        // SAFETY: f32x8 and __m256 are both 8 packed f32.
        let [a, b] = unsafe { core::mem::transmute::<[f32x8; 2], [__m256; 2]>(v) };
        // SAFETY: the caller guarantees 16 writable elements (32 bytes); unaligned store.
        unsafe { _mm256_storeu_si256(dst.cast(), pair_to_f16_256(a, b)) };
    }

    /// 8 f32 → 8 f16 at `dst`.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16x8(v: f32x8, dst: *mut f16) {
        // SAFETY: f32x8 and __m256 are both 8 packed f32.
        let x = unsafe { core::mem::transmute::<f32x8, __m256>(v) };
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        // SAFETY: the caller guarantees 8 writable elements (16 bytes); unaligned store.
        unsafe { _mm_storeu_si128(dst.cast(), h) };
    }
}
