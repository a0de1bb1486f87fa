//! Blocked f32 transposes: 16 × 16 blocks, in registers at AVX-512 (and as four 8 × 8 ones at
//! AVX2).
//!
//! Kernels that keep a different dimension in the lanes than their inputs or outputs (the
//! matmul's packed B panels, the prefill attention's Qᵀ and Oᵀ) turn rows into columns here.
//! A block's 16 source rows are read one cache line each, and its 16 destination rows are
//! written one 64-byte run each; transposing one element at a time costs a strided store per
//! element (measured 5× slower on the matmul's B panels).

use crate::isa::{Isa, detected_isa};

/// Side of a block.
const BLOCK: usize = 16;

/// `dst[c·ld_dst + r] = src[r·ld_src + c]` for `r < rows`, `c < cols` (nothing else in `dst`
/// is written). Full blocks go through registers at AVX-512, and full 8 × 8 quarters (of every
/// block at AVX2, of edge blocks at AVX-512) too (`isa` is clamped to the detected level); the
/// rest is copied element by element.
///
/// # Panics
/// If `src` or `dst` is too short for the shape and strides.
pub fn transpose(isa: Isa, src: &[f32], ld_src: usize, (rows, cols): (usize, usize), dst: &mut [f32], ld_dst: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * ld_src + cols, "transpose: source too short");
    assert!(dst.len() >= (cols - 1) * ld_dst + rows, "transpose: destination too short");
    let level = if cfg!(target_arch = "x86_64") { isa.min(detected_isa()) } else { Isa::Scalar };
    for r0 in (0..rows).step_by(BLOCK) {
        let height = BLOCK.min(rows - r0);
        for c0 in (0..cols).step_by(BLOCK) {
            let width = BLOCK.min(cols - c0);
            // These rows' lines two blocks ahead (large row strides defeat the hardware
            // prefetcher).
            for r in r0..r0 + height {
                crate::simd::prefetch::l1(src.as_ptr().wrapping_add(r * ld_src + c0 + 2 * BLOCK));
            }
            #[cfg(target_arch = "x86_64")]
            if level >= Isa::Avx512 && height == BLOCK && width == BLOCK {
                // SAFETY: AVX-512 F was detected (the level is clamped to the detected one).
                unsafe { x86::transpose16(&src[r0 * ld_src + c0..], ld_src, &mut dst[c0 * ld_dst + r0..], ld_dst) };
                continue;
            }
            // AVX-512 edge blocks too: their full quarters need only AVX.
            #[cfg(target_arch = "x86_64")]
            if level >= Isa::Avx2 {
                const HALF: usize = BLOCK / 2;
                for (r1, c1) in [(r0, c0), (r0, c0 + HALF), (r0 + HALF, c0), (r0 + HALF, c0 + HALF)] {
                    // A quarter past the block's edge is partly (or wholly: an empty range) absent.
                    let (r_end, c_end) = ((r1 + HALF).min(r0 + height), (c1 + HALF).min(c0 + width));
                    if r_end == r1 + HALF && c_end == c1 + HALF {
                        let (src, dst) = (&src[r1 * ld_src + c1..], &mut dst[c1 * ld_dst + r1..]);
                        // SAFETY: AVX was detected (the AVX2 and AVX-512 levels include it).
                        unsafe { x86::transpose8(src, ld_src, dst, ld_dst) };
                    } else {
                        copy_transposed(src, ld_src, r1..r_end, c1..c_end, dst, ld_dst);
                    }
                }
                continue;
            }
            copy_transposed(src, ld_src, r0..r0 + height, c0..c0 + width, dst, ld_dst);
        }
    }
}

/// The element-by-element transpose of rows `rows` × columns `cols` (an edge, or a level
/// without a register transpose).
fn copy_transposed(
    src: &[f32],
    ld_src: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    dst: &mut [f32],
    ld_dst: usize,
) {
    for c in cols {
        for r in rows.clone() {
            dst[c * ld_dst + r] = src[r * ld_src + c];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// `dst[p·ld_dst + j] = src[j·ld_src + p]` for an 8 × 8 block: pairs, then 2 × 2 blocks
    /// within each 128-bit lane, then the lanes.
    #[target_feature(enable = "avx")]
    pub(super) fn transpose8(src: &[f32], ld_src: usize, dst: &mut [f32], ld_dst: usize) {
        const N: usize = 8;
        assert!(src.len() >= (N - 1) * ld_src + N && dst.len() >= (N - 1) * ld_dst + N);
        let r: [__m256; N] = std::array::from_fn(|j| {
            // SAFETY: j·ld_src + 8 ≤ src.len() (asserted above); unaligned load.
            unsafe { _mm256_loadu_ps(src.as_ptr().add(j * ld_src)) }
        });
        let mut t = r;
        for i in 0..4 {
            t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // Column p of rows 0–3 (low lane) and p + 4 (high lane), then the same for rows 4–7.
        let mut s = t;
        for g in 0..2 {
            let b = 4 * g;
            s[b] = _mm256_shuffle_ps::<0x44>(t[b], t[b + 2]);
            s[b + 1] = _mm256_shuffle_ps::<0xEE>(t[b], t[b + 2]);
            s[b + 2] = _mm256_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
            s[b + 3] = _mm256_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
        }
        for p in 0..4 {
            let low = _mm256_permute2f128_ps::<0x20>(s[p], s[4 + p]);
            let high = _mm256_permute2f128_ps::<0x31>(s[p], s[4 + p]);
            // SAFETY: (p + 4)·ld_dst + 8 ≤ dst.len() (asserted above); unaligned stores.
            unsafe {
                _mm256_storeu_ps(dst.as_mut_ptr().add(p * ld_dst), low);
                _mm256_storeu_ps(dst.as_mut_ptr().add((p + 4) * ld_dst), high);
            }
        }
    }

    /// `dst[p·ld_dst + j] = src[j·ld_src + p]` for a 16 × 16 block: four stages of in-lane and
    /// cross-lane shuffles (pairs, then 2 × 2 blocks, then 128-bit lanes twice).
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose16(src: &[f32], ld_src: usize, dst: &mut [f32], ld_dst: usize) {
        assert!(src.len() >= (BLOCK - 1) * ld_src + BLOCK && dst.len() >= (BLOCK - 1) * ld_dst + BLOCK);
        let mut r: [__m512; BLOCK] = std::array::from_fn(|j| {
            // SAFETY: j·ld_src + 16 ≤ src.len() (asserted above); unaligned load.
            unsafe { _mm512_loadu_ps(src.as_ptr().add(j * ld_src)) }
        });
        let mut t = r;
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for g in 0..4 {
            let b = 4 * g;
            r[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
            r[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
            r[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
            r[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
        }
        for h in 0..2 {
            let b = 8 * h;
            for i in 0..4 {
                t[b + i] = _mm512_shuffle_f32x4::<0x88>(r[b + i], r[b + 4 + i]);
                t[b + 4 + i] = _mm512_shuffle_f32x4::<0xDD>(r[b + i], r[b + 4 + i]);
            }
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
            r[8 + i] = _mm512_shuffle_f32x4::<0xDD>(t[i], t[8 + i]);
        }
        for (p, v) in r.iter().enumerate() {
            // SAFETY: p·ld_dst + 16 ≤ dst.len() (asserted above); unaligned store.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(p * ld_dst), *v) };
        }
    }
}
