//! Bulk f32 ⇄ bf16 / f16 conversions, bit-exact with the `half` crate on every ISA level
//! (round-to-nearest-even; NaNs stay NaN with the quiet bit set; subnormals kept, not flushed).
//!
//! `half`'s own slice conversions are scalar loops; these process 16 elements per step.
//! AVX512_BF16's `vcvtneps2bf16` is not used for f32→bf16: it flushes subnormal inputs to
//! zero, which would break exactness. The integer rounding trick below does not.

use crate::dtype::{bf16, f16};
use crate::error::{Error, Result};
use crate::isa::{Isa, detected_isa, effective_isa, record_dispatch};

fn check_lengths(src: usize, dst: usize) -> Result<()> {
    if src != dst {
        return Err(Error::shape("dst", [src], [dst]));
    }
    Ok(())
}

macro_rules! public_conversion {
    ($(#[$doc:meta])* $name:ident, $with:ident, $src:ty, $dst:ty) => {
        $(#[$doc])*
        ///
        /// Runs at [`effective_isa`]; fails when the slices differ in length.
        pub fn $name(src: &[$src], dst: &mut [$dst]) -> Result<()> {
            check_lengths(src.len(), dst.len())?;
            let isa = effective_isa();
            record_dispatch(isa.min(Isa::Avx512));
            $with(isa, src, dst);
            Ok(())
        }
    };
}

public_conversion!(
    /// Rounds f32 values to bf16 (nearest-even).
    f32_to_bf16, f32_to_bf16_with, f32, bf16
);
public_conversion!(
    /// Widens bf16 values to f32 (exact).
    bf16_to_f32, bf16_to_f32_with, bf16, f32
);
public_conversion!(
    /// Rounds f32 values to f16 (nearest-even, overflow to ±∞).
    f32_to_f16, f32_to_f16_with, f32, f16
);
public_conversion!(
    /// Widens f16 values to f32 (exact).
    f16_to_f32, f16_to_f32_with, f16, f32
);

/// [`f32_to_bf16`] at a given level, for kernels that already chose theirs. Equal lengths.
#[inline]
pub fn f32_to_bf16_with(isa: Isa, src: &[f32], dst: &mut [bf16]) {
    assert_eq!(src.len(), dst.len());
    let done = match isa.min(detected_isa()) {
        Isa::Scalar => 0,
        // SAFETY: the level is clamped to the detected one, so AVX2 is present.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::f32_to_bf16_avx2(src, dst) },
        // SAFETY: the level is clamped to the detected one, so AVX-512 F/BW are present.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::f32_to_bf16_avx512(src, dst) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => 0,
    };
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = bf16::from_f32(*s);
    }
}

/// [`bf16_to_f32`] at a given level. Equal lengths.
#[inline]
pub fn bf16_to_f32_with(isa: Isa, src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let done = match isa.min(detected_isa()) {
        Isa::Scalar => 0,
        // SAFETY: the level is clamped to the detected one, so AVX2 is present.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::bf16_to_f32_avx2(src, dst) },
        // SAFETY: the level is clamped to the detected one, so AVX-512 F/BW are present.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::bf16_to_f32_avx512(src, dst) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => 0,
    };
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = s.to_f32();
    }
}

/// [`f32_to_f16`] at a given level. Equal lengths.
#[inline]
pub fn f32_to_f16_with(isa: Isa, src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len());
    let done = match isa.min(detected_isa()) {
        Isa::Scalar => 0,
        // SAFETY: the level is clamped to the detected one, so AVX2 and F16C are present.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::f32_to_f16_avx2(src, dst) },
        // SAFETY: the level is clamped to the detected one, so AVX-512 F is present.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::f32_to_f16_avx512(src, dst) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => 0,
    };
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = f16::from_f32(*s);
    }
}

/// [`f16_to_f32`] at a given level. Equal lengths.
#[inline]
pub fn f16_to_f32_with(isa: Isa, src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let done = match isa.min(detected_isa()) {
        Isa::Scalar => 0,
        // SAFETY: the level is clamped to the detected one, so AVX2 and F16C are present.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::f16_to_f32_avx2(src, dst) },
        // SAFETY: the level is clamped to the detected one, so AVX-512 F is present.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => unsafe { x86::f16_to_f32_avx512(src, dst) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => 0,
    };
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = s.to_f32();
    }
}

/// The vector bodies. Each converts the longest prefix that is a multiple of its width and
/// returns its length; the caller finishes the tail with `half`'s scalar conversion.
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{bf16, f16};
    use std::arch::x86_64::*;

    /// f32 bits rounded to bf16 in each dword's upper half: nearest-even (`x + 0x7fff + lsb`,
    /// the `+ lsb` as a masked add where bit 16 is set), NaN → quiet (`x | 0x0040_0000`, whose
    /// upper half is `(x >> 16) | 0x40`). Five instructions per 16 lanes.
    #[target_feature(enable = "avx512f,avx512bw")]
    fn round_to_bf16_high_512(x: __m512i) -> __m512i {
        let odd = _mm512_test_epi32_mask(x, _mm512_set1_epi32(0x1_0000));
        let rounded =
            _mm512_mask_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), odd, x, _mm512_set1_epi32(0x8000));
        let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(_mm512_castsi512_ps(x), _mm512_castsi512_ps(x));
        _mm512_mask_or_epi32(rounded, is_nan, x, _mm512_set1_epi32(0x0040_0000))
    }

    /// Word `j` is word `2j + 1` of the 64-word pair `(a, b)`: every dword's upper half, in order.
    static UPPER_WORDS: [u16; 32] = {
        let mut index = [0u16; 32];
        let mut j = 0;
        while j < 32 {
            index[j] = 2 * j as u16 + 1;
            j += 1;
        }
        index
    };

    /// 16 f32 (as bits) → 16 bf16: nearest-even, NaN → quiet NaN.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in crate::simd) fn round_to_bf16_512(x: __m512i) -> __m256i {
        // SAFETY: UPPER_WORDS is 64 readable bytes; unaligned load.
        let index = unsafe { _mm512_loadu_si512(UPPER_WORDS.as_ptr().cast()) };
        _mm512_castsi512_si256(_mm512_permutexvar_epi16(index, round_to_bf16_high_512(x)))
    }

    /// 2 × 16 f32 (as bits) → 32 bf16, `a`'s then `b`'s: one word permute packs both.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in crate::simd) fn round_pair_to_bf16_512(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: UPPER_WORDS is 64 readable bytes; unaligned load.
        let index = unsafe { _mm512_loadu_si512(UPPER_WORDS.as_ptr().cast()) };
        _mm512_permutex2var_epi16(round_to_bf16_high_512(a), index, round_to_bf16_high_512(b))
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn f32_to_bf16_avx512(src: &[f32], dst: &mut [bf16]) -> usize {
        let pairs = src.len() / 32 * 32;
        for i in (0..pairs).step_by(32) {
            // SAFETY: i + 32 <= pairs <= src.len() == dst.len(); unaligned loads/stores.
            unsafe {
                let a = _mm512_castps_si512(_mm512_loadu_ps(src.as_ptr().add(i)));
                let b = _mm512_castps_si512(_mm512_loadu_ps(src.as_ptr().add(i + 16)));
                _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), round_pair_to_bf16_512(a, b));
            }
        }
        let n = src.len() / 16 * 16;
        for i in (pairs..n).step_by(16) {
            // SAFETY: i + 16 <= n <= src.len() == dst.len(); unaligned loads/stores.
            unsafe {
                let x = _mm512_castps_si512(_mm512_loadu_ps(src.as_ptr().add(i)));
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), round_to_bf16_512(x));
            }
        }
        n
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn bf16_to_f32_avx512(src: &[bf16], dst: &mut [f32]) -> usize {
        let n = src.len() / 16 * 16;
        for i in (0..n).step_by(16) {
            // SAFETY: i + 16 <= n <= src.len() == dst.len(); unaligned loads/stores.
            unsafe {
                let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(src.as_ptr().add(i).cast()));
                let is_nan =
                    _mm512_cmpgt_epu32_mask(_mm512_and_si512(h, _mm512_set1_epi32(0x7fff)), _mm512_set1_epi32(0x7f80));
                let h = _mm512_mask_or_epi32(h, is_nan, h, _mm512_set1_epi32(0x40));
                _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), _mm512_slli_epi32::<16>(h));
            }
        }
        n
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn f32_to_f16_avx512(src: &[f32], dst: &mut [f16]) -> usize {
        let n = src.len() / 16 * 16;
        for i in (0..n).step_by(16) {
            // SAFETY: i + 16 <= n <= src.len() == dst.len(); unaligned loads/stores.
            unsafe {
                let x = _mm512_loadu_ps(src.as_ptr().add(i));
                let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), h);
            }
        }
        n
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn f16_to_f32_avx512(src: &[f16], dst: &mut [f32]) -> usize {
        let n = src.len() / 16 * 16;
        for i in (0..n).step_by(16) {
            // SAFETY: i + 16 <= n <= src.len() == dst.len(); unaligned loads/stores.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(i).cast());
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
            }
        }
        n
    }

    /// 8 f32 (as bits) → 8 bf16 in the low halves of 32-bit lanes: nearest-even, NaN → quiet NaN.
    #[target_feature(enable = "avx2")]
    pub(in crate::simd) fn round_to_bf16_256(x: __m256i) -> __m256i {
        let high = _mm256_srli_epi32::<16>(x);
        let lsb = _mm256_and_si256(high, _mm256_set1_epi32(1));
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))));
        // One unordered compare finds the NaNs (an integer test on the bits took three ops).
        let is_nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(_mm256_castsi256_ps(x), _mm256_castsi256_ps(x)));
        let quiet = _mm256_or_si256(high, _mm256_set1_epi32(0x40));
        _mm256_blendv_epi8(rounded, quiet, is_nan)
    }

    /// 2 × 8 f32 (as bits) → 16 bf16, `a`'s then `b`'s.
    #[target_feature(enable = "avx2")]
    pub(in crate::simd) fn round_pair_to_bf16_256(a: __m256i, b: __m256i) -> __m256i {
        // Values are < 2^16, so the saturating pack is exact; it interleaves 128-bit lanes,
        // which the permute undoes.
        _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(round_to_bf16_256(a), round_to_bf16_256(b)))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn f32_to_bf16_avx2(src: &[f32], dst: &mut [bf16]) -> usize {
        let n = src.len() / 16 * 16;
        for i in (0..n).step_by(16) {
            // SAFETY: i + 16 <= n <= src.len() == dst.len(); unaligned loads/stores.
            unsafe {
                let lo = _mm256_castps_si256(_mm256_loadu_ps(src.as_ptr().add(i)));
                let hi = _mm256_castps_si256(_mm256_loadu_ps(src.as_ptr().add(i + 8)));
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), round_pair_to_bf16_256(lo, hi));
            }
        }
        n
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn bf16_to_f32_avx2(src: &[bf16], dst: &mut [f32]) -> usize {
        let n = src.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= src.len() == dst.len(); unaligned loads/stores.
            unsafe {
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(src.as_ptr().add(i).cast()));
                let is_nan =
                    _mm256_cmpgt_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x7fff)), _mm256_set1_epi32(0x7f80));
                let h = _mm256_or_si256(h, _mm256_and_si256(is_nan, _mm256_set1_epi32(0x40)));
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), _mm256_slli_epi32::<16>(h));
            }
        }
        n
    }

    /// 2 × 8 f32 → 16 f16, `a`'s then `b`'s, joined in a register. A lone conversion whose
    /// result is only stored compiles to `vcvtps2ph` with a memory destination, which made f16
    /// norms on Zen 3 2–3× slower than bf16 once their rows came from L3.
    #[target_feature(enable = "avx2,f16c")]
    pub(in crate::simd) fn pair_to_f16_256(a: __m256, b: __m256) -> __m256i {
        const ROUND: i32 = _MM_FROUND_TO_NEAREST_INT;
        _mm256_set_m128i(_mm256_cvtps_ph::<ROUND>(b), _mm256_cvtps_ph::<ROUND>(a))
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn f32_to_f16_avx2(src: &[f32], dst: &mut [f16]) -> usize {
        let pairs = src.len() / 16 * 16;
        for i in (0..pairs).step_by(16) {
            // SAFETY: i + 16 <= pairs <= src.len() == dst.len(); unaligned loads/stores.
            unsafe {
                let (lo, hi) = (_mm256_loadu_ps(src.as_ptr().add(i)), _mm256_loadu_ps(src.as_ptr().add(i + 8)));
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), pair_to_f16_256(lo, hi));
            }
        }
        if src.len() - pairs < 8 {
            return pairs;
        }
        // SAFETY: pairs + 8 <= src.len() == dst.len(); unaligned loads/stores.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(pairs)));
            _mm_storeu_si128(dst.as_mut_ptr().add(pairs).cast(), h);
        }
        pairs + 8
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn f16_to_f32_avx2(src: &[f16], dst: &mut [f32]) -> usize {
        let n = src.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= src.len() == dst.len(); unaligned loads/stores.
            unsafe {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().add(i).cast()));
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), x);
            }
        }
        n
    }
}
