//! Loads of f32, bf16 or f16 elements straight into f32 vectors, widening in registers.
//!
//! Kernels that stream 16-bit data (a KV cache, weights, activations) would otherwise widen it
//! into an f32 scratch buffer and read it back: an extra store and load per element, which in a
//! bandwidth-bound kernel costs more than the arithmetic. The widening here is exact (bf16 is a
//! shift; f16 uses the F16C / AVX-512 conversion); NaNs stay NaN.

use crate::dtype::{Element, bf16, f16};
use pulp::Simd;

/// An element type a kernel can load into `S::f32s`.
pub trait LoadF32: Element {
    /// Vector `index` of `row` (elements `index·L .. (index+1)·L`, `L = S::F32_LANES`) as f32.
    /// Panics when the row is too short.
    fn load_f32s<S: Simd>(simd: S, row: &[Self], index: usize) -> S::f32s;
}

/// Elements `2·pair·L .. 2·(pair+1)·L` of `row`, read as `L` 32-bit words, widened to the even
/// elements (each word's low half, `<< 16`) and the odd ones (its high half, masked): exact, and
/// one load for two vectors (the matmul's bf16 k-pair panels). Panics when the row is too short.
#[inline(always)]
pub fn bf16_pairs_f32s<S: Simd>(simd: S, row: &[bf16], pair: usize) -> (S::f32s, S::f32s) {
    let lanes = S::U32_LANES;
    let words = &row[2 * pair * lanes..2 * (pair + 1) * lanes];
    // SAFETY: `words` holds 2·L bf16 = L u32 (a whole `S::u32s`); an unaligned read, since a
    // bf16 slice is only 2-byte aligned.
    let x: S::u32s = unsafe { words.as_ptr().cast::<S::u32s>().read_unaligned() };
    let even = simd.wrapping_dyn_shl_u32s(x, simd.splat_u32s(16));
    let odd = simd.and_u32s(x, simd.splat_u32s(0xffff_0000));
    (simd.transmute_f32s_u32s(even), simd.transmute_f32s_u32s(odd))
}

impl LoadF32 for f32 {
    #[inline(always)]
    fn load_f32s<S: Simd>(_: S, row: &[f32], index: usize) -> S::f32s {
        S::as_simd_f32s(&row[index * S::F32_LANES..(index + 1) * S::F32_LANES]).0[0]
    }
}

macro_rules! impl_load_16bit {
    ($t:ty, $avx512:ident, $avx2:ident, $f16c:literal) => {
        impl LoadF32 for $t {
            #[inline(always)]
            fn load_f32s<S: Simd>(simd: S, row: &[$t], index: usize) -> S::f32s {
                let lanes = S::F32_LANES;
                let src = &row[index * lanes..(index + 1) * lanes];
                #[cfg(target_arch = "x86_64")]
                {
                    use super::{Native, f16c_detected, native};
                    use pulp::bytemuck::cast;
                    match native::<S>() {
                        // SAFETY: a `V4` token exists only when AVX-512 F/BW were detected;
                        // `src` holds its 16 lanes.
                        Native::Avx512 => return cast(unsafe { x86::$avx512(src.as_ptr()) }),
                        // SAFETY: a `V3` token exists only when AVX2 was detected, and F16C (f16
                        // only) was checked; `src` holds its 8 lanes.
                        Native::Avx2 if !$f16c || f16c_detected() => return cast(unsafe { x86::$avx2(src.as_ptr()) }),
                        _ => {}
                    }
                }
                let mut lanes_f32 = simd.splat_f32s(0.0);
                let out = pulp::bytemuck::cast_slice_mut::<S::f32s, f32>(std::slice::from_mut(&mut lanes_f32));
                for (o, x) in out.iter_mut().zip(src) {
                    *o = x.to_f32();
                }
                lanes_f32
            }
        }
    };
}

// The last argument: whether the 8-lane conversion needs F16C (which a `V3` token does not imply).
impl_load_16bit!(bf16, bf16x16, bf16x8, false);
impl_load_16bit!(f16, f16x16, f16x8, true);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{bf16, f16};
    use pulp::{f32x8, f32x16};
    use std::arch::x86_64::*;

    /// 16 bf16 at `src` → f32 (a bf16 is the upper half of an f32).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn bf16x16(src: *const bf16) -> f32x16 {
        // SAFETY: the caller guarantees 16 readable elements (32 bytes); unaligned load.
        let bits = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(unsafe { _mm256_loadu_si256(src.cast()) }));
        // SAFETY: __m512i and f32x16 are both 64 bytes of plain bits.
        unsafe { core::mem::transmute::<__m512i, f32x16>(bits) }
    }

    /// 16 f16 at `src` → f32.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn f16x16(src: *const f16) -> f32x16 {
        // SAFETY: the caller guarantees 16 readable elements (32 bytes); unaligned load.
        let x = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(src.cast()) });
        // SAFETY: __m512 and f32x16 are both 16 packed f32.
        unsafe { core::mem::transmute::<__m512, f32x16>(x) }
    }

    /// 8 bf16 at `src` → f32.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bf16x8(src: *const bf16) -> f32x8 {
        // SAFETY: the caller guarantees 8 readable elements (16 bytes); unaligned load.
        let bits = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(src.cast()) }));
        // SAFETY: __m256i and f32x8 are both 32 bytes of plain bits.
        unsafe { core::mem::transmute::<__m256i, f32x8>(bits) }
    }

    /// 8 f16 at `src` → f32.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16x8(src: *const f16) -> f32x8 {
        // SAFETY: the caller guarantees 8 readable elements (16 bytes); unaligned load.
        let x = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(src.cast()) });
        // SAFETY: __m256 and f32x8 are both 8 packed f32.
        unsafe { core::mem::transmute::<__m256, f32x8>(x) }
    }
}
