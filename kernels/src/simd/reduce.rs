//! Horizontal reductions of several vectors at once.
//!
//! A kernel that keeps the reduced dimension in the lanes ends with one horizontal reduction
//! per result. Reducing four vectors together in one shuffle tree costs about a third of four
//! separate reductions, which matters when the reduced rows are short (attention decode,
//! D = 128: 8 FMAs per score; its softmax: 4 vectors per row and tile).

use pulp::Simd;

/// `[Σ v[0], Σ v[1], Σ v[2], Σ v[3]]`, each the sum over all lanes.
///
/// The order of the additions is fixed per ISA level, so results are deterministic.
#[inline(always)]
pub fn sum4<S: Simd>(simd: S, v: [S::f32s; 4]) -> [f32; 4] {
    match reduce4::<S, false>(v) {
        Some(sums) => sums,
        None => [
            simd.reduce_sum_f32s(v[0]),
            simd.reduce_sum_f32s(v[1]),
            simd.reduce_sum_f32s(v[2]),
            simd.reduce_sum_f32s(v[3]),
        ],
    }
}

/// `[max v[0], max v[1], max v[2], max v[3]]`, each the maximum over all lanes.
///
/// Like `maxps`, a NaN lane may or may not win; callers that must see NaN carry it elsewhere
/// (e.g. in a sum).
#[inline(always)]
pub fn max4<S: Simd>(simd: S, v: [S::f32s; 4]) -> [f32; 4] {
    match reduce4::<S, true>(v) {
        Some(maxima) => maxima,
        None => [
            simd.reduce_max_f32s(v[0]),
            simd.reduce_max_f32s(v[1]),
            simd.reduce_max_f32s(v[2]),
            simd.reduce_max_f32s(v[3]),
        ],
    }
}

/// The shuffle-tree reduction at the x86 levels (`None` where there is none).
#[inline(always)]
fn reduce4<S: Simd, const MAX: bool>(v: [S::f32s; 4]) -> Option<[f32; 4]> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::{Native, native};
        use pulp::bytemuck::cast;
        match native::<S>() {
            // SAFETY: a `V4` token exists only when AVX-512 F was detected; its vectors are
            // 16 f32.
            Native::Avx512 => return Some(unsafe { x86::reduce4_avx512::<MAX>(cast(v)) }),
            // SAFETY: a `V3` token exists only when AVX2 (and so AVX) was detected; its
            // vectors are 8 f32.
            Native::Avx2 => return Some(unsafe { x86::reduce4_avx::<MAX>(cast(v)) }),
            Native::Portable => {}
        }
    }
    let _ = v;
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use pulp::{f32x8, f32x16};
    use std::arch::x86_64::*;

    /// Each step folds the upper half of every partial into its lower half, packing the four
    /// inputs' partials side by side, until lane `i` of a 128-bit vector holds input `i`'s total.
    #[target_feature(enable = "avx512f")]
    pub(super) fn reduce4_avx512<const MAX: bool>(v: [f32x16; 4]) -> [f32; 4] {
        macro_rules! op {
            ($x:expr, $y:expr) => {
                if MAX { _mm512_max_ps($x, $y) } else { _mm512_add_ps($x, $y) }
            };
        }
        // SAFETY: f32x16 and __m512 are both 16 packed f32 (64 bytes, no invalid bit patterns).
        let [a, b, c, d]: [__m512; 4] = unsafe { core::mem::transmute(v) };
        // 256-bit halves: [a₀∘a₁ | b₀∘b₁] and [c₀∘c₁ | d₀∘d₁] (8 partials each).
        let ab = op!(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b));
        let cd = op!(_mm512_shuffle_f32x4::<0b01_00_01_00>(c, d), _mm512_shuffle_f32x4::<0b11_10_11_10>(c, d));
        // 128-bit quarters: [a | b | c | d], 4 partials each.
        let x = op!(_mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd), _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd));
        // Within each quarter: lane 0 ends up with the quarter's total.
        let x = op!(x, _mm512_permute_ps::<0b01_00_11_10>(x));
        let x = op!(x, _mm512_permute_ps::<0b10_11_00_01>(x));
        let totals = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), x);
        let mut out = [0f32; 4];
        // SAFETY: `out` holds 4 f32, the unaligned store writes exactly 16 bytes.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), _mm512_castps512_ps128(totals)) };
        out
    }

    #[target_feature(enable = "avx")]
    pub(super) fn reduce4_avx<const MAX: bool>(v: [f32x8; 4]) -> [f32; 4] {
        macro_rules! op {
            ($x:expr, $y:expr) => {
                if MAX { _mm256_max_ps($x, $y) } else { _mm256_add_ps($x, $y) }
            };
        }
        // SAFETY: f32x8 and __m256 are both 8 packed f32 (32 bytes, no invalid bit patterns).
        let [a, b, c, d]: [__m256; 4] = unsafe { core::mem::transmute(v) };
        // Per 128-bit half: [a₀∘a₂ b₀∘b₂ a₁∘a₃ b₁∘b₃], and the same for c, d.
        let ab = op!(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        let cd = op!(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
        // Per half: [a b c d] partials, then the two halves folded.
        let x = op!(_mm256_shuffle_ps::<0b01_00_01_00>(ab, cd), _mm256_shuffle_ps::<0b11_10_11_10>(ab, cd));
        let lo = _mm256_castps256_ps128(x);
        let hi = _mm256_extractf128_ps::<1>(x);
        let totals = if MAX { _mm_max_ps(lo, hi) } else { _mm_add_ps(lo, hi) };
        let mut out = [0f32; 4];
        // SAFETY: `out` holds 4 f32, the unaligned store writes exactly 16 bytes.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), totals) };
        out
    }
}
