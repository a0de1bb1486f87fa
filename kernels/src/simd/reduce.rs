//! Horizontal sums of several vectors at once.
//!
//! A dot-product kernel that keeps the reduced dimension in the lanes ends with one horizontal
//! sum per result. Summing four vectors together in one shuffle tree costs about a third of four
//! separate reductions, which matters when the dot products are short (attention decode, D = 128:
//! 8 FMAs per score).

use pulp::Simd;

/// `[Σ v[0], Σ v[1], Σ v[2], Σ v[3]]`, each the sum over all lanes.
///
/// The order of the additions is fixed per ISA level, so results are deterministic.
#[inline(always)]
pub fn sum4<S: Simd>(simd: S, v: [S::f32s; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        use pulp::bytemuck::cast;
        if S::F32_LANES == 16 {
            // SAFETY: pulp's only 16-lane f32 level is V4, whose token exists only when AVX-512 F
            // was detected.
            return unsafe { x86::sum4_avx512(cast(v)) };
        }
        if S::F32_LANES == 8 {
            // SAFETY: pulp's only 8-lane f32 level is V3, whose token exists only when AVX2 (and
            // so AVX) was detected.
            return unsafe { x86::sum4_avx(cast(v)) };
        }
    }
    v.map(|x| simd.reduce_sum_f32s(x))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use pulp::{f32x8, f32x16};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn sum4_avx512(v: [f32x16; 4]) -> [f32; 4] {
        // SAFETY: f32x16 and __m512 are both 16 packed f32 (64 bytes, no invalid bit patterns).
        let [a, b, c, d]: [__m512; 4] = unsafe { core::mem::transmute(v) };
        // 256-bit halves: [a₀+a₁ | b₀+b₁] and [c₀+c₁ | d₀+d₁] (8 partial sums each).
        let ab =
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b));
        let cd =
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(c, d), _mm512_shuffle_f32x4::<0b11_10_11_10>(c, d));
        // 128-bit quarters: [a | b | c | d], 4 partial sums each.
        let x =
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd), _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd));
        // Within each quarter: lane 0 ends up with the quarter's total.
        let x = _mm512_add_ps(x, _mm512_permute_ps::<0b01_00_11_10>(x));
        let x = _mm512_add_ps(x, _mm512_permute_ps::<0b10_11_00_01>(x));
        let totals = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), x);
        let mut out = [0f32; 4];
        // SAFETY: `out` holds 4 f32, the unaligned store writes exactly 16 bytes.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), _mm512_castps512_ps128(totals)) };
        out
    }

    #[target_feature(enable = "avx")]
    pub(super) fn sum4_avx(v: [f32x8; 4]) -> [f32; 4] {
        // SAFETY: f32x8 and __m256 are both 8 packed f32 (32 bytes, no invalid bit patterns).
        let [a, b, c, d]: [__m256; 4] = unsafe { core::mem::transmute(v) };
        // Per 128-bit half: [a, b, c, d] partial sums, then the two halves added.
        let x = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        let totals = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let mut out = [0f32; 4];
        // SAFETY: `out` holds 4 f32, the unaligned store writes exactly 16 bytes.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), totals) };
        out
    }
}
