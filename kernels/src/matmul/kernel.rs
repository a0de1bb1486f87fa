//! The register-blocked micro-kernel: `C_tile[MR, NR] (+)= A_panel · B_panel` in f32.
//!
//! Register tile: `MR` rows × `NV` vectors (`NR = NV · lanes = 64` columns): 6 × 4 zmm on
//! AVX-512 (24 accumulators of 32 registers; 4 × 4 over bf16 pair panels, [`PAIRS_MR`]),
//! 1 × 8 ymm on AVX2, 1 × 64 scalars. Per `k` it
//! loads `NV` vectors of the packed B panel and broadcasts `MR` values of the packed A panel.
//! 6 × 4 measured ≈ 10 % faster than 8 × 3 on Zen 4 (6 broadcasts per 24 FMAs instead of 8:
//! the broadcasts compete with the FMAs for issue slots). Accumulation is f32 with FMA
//! (`mul_add_e`: fused where the ISA has FMA, separate multiply-add in the scalar fallback).
//!
//! Reads: A panel `[kc][MR]` (row count `MR` exactly: the M tail gets its own instantiation,
//! so nothing is computed for padding rows), B panel block through [`Panel`] (f32 or f16
//! `[kc][NR]` rows, or bf16 k pairs, widened in registers; N tail zero-padded at pack time),
//! two k rows per step. Writes: an f32 scratch tile with row stride `ldc`, overwriting it or
//! adding to it.
//! No closures around SIMD code here or in the driver's task body: a closure is a separate
//! function that does not inherit the caller's target features, and the SIMD intrinsics would
//! not inline into it.
//!
//! The sum for one element is `Σ_p a·b` in increasing `p`, then added to the scratch: the order
//! never depends on threads.

use crate::simd::load::{LoadF32, bf16_pairs_f32s};
use pulp::Simd;

/// Columns of a packed B panel; the same for every ISA so a [`super::PackedMatrix`] serves all.
pub(super) const NR: usize = 64;

/// Rows of the register tile over bf16 pair panels at AVX-512: 4 × 4 accumulators leave room
/// for a pair's 8 widened vectors, where the 6-row tile spills (4 rows measured 1.06–1.25×
/// faster than 6 with the former widened copy, and than 6 spilling; f32 and f16 panels keep 6).
pub(super) const PAIRS_MR: usize = 4;

/// Rows of the register tile (and of packed A panels) for a SIMD width, except over bf16 pair
/// panels ([`PAIRS_MR`]).
pub(super) const fn mr_for_lanes(lanes: usize) -> usize {
    match lanes {
        16 => 6,
        8 => 1,
        _ => 1,
    }
}

/// A packed B panel block (`kc` k rows of `NR` columns of f32 values, however stored): the
/// micro-kernel is written once over this and serves every panel storage.
pub(super) trait Panel: Copy {
    /// `acc[i][·] += a_lo[i]·B[2p][·]`, then `+= a_hi[i]·B[2p + 1][·]` (both k rows exist).
    fn fma_pair<S: Simd, const MR: usize, const NV: usize>(
        self,
        simd: S,
        p: usize,
        acc: &mut [[S::f32s; NV]; MR],
        a_lo: &[f32],
        a_hi: &[f32],
    );
    /// Vectors `0..NV` of k row `k` (the last row of an odd block).
    fn row<S: Simd, const NV: usize>(self, simd: S, k: usize) -> [S::f32s; NV];
}

/// A `[kc][NR]` panel block of f32 or f16, widened in registers ([`LoadF32`]).
#[derive(Clone, Copy)]
pub(super) struct Rows<'b, E>(pub &'b [E]);

impl<E: LoadF32> Panel for Rows<'_, E> {
    #[inline(always)]
    fn fma_pair<S: Simd, const MR: usize, const NV: usize>(
        self,
        simd: S,
        p: usize,
        acc: &mut [[S::f32s; NV]; MR],
        a_lo: &[f32],
        a_hi: &[f32],
    ) {
        // One k row over all rows at a time (row by row measured ≈ 15 % slower here).
        fma(simd, acc, a_lo, &self.row::<S, NV>(simd, 2 * p));
        fma(simd, acc, a_hi, &self.row::<S, NV>(simd, 2 * p + 1));
    }

    #[inline(always)]
    fn row<S: Simd, const NV: usize>(self, simd: S, k: usize) -> [S::f32s; NV] {
        let row = &self.0[k * NR..][..NR];
        let mut out = [simd.splat_f32s(0.0); NV];
        for (v, out) in out.iter_mut().enumerate() {
            *out = E::load_f32s(simd, row, v);
        }
        out
    }
}

/// A pair-interleaved bf16 panel block (`[⌈kc/2⌉][NR][2]`, see
/// [`super::pack::pack_b_bf16_pairs`]): each 32-bit pair holds row `2p` in its low half and
/// `2p + 1` in its high half, so one load widens to both (`<< 16` and `& 0xffff0000`, exact).
#[derive(Clone, Copy)]
pub(super) struct Pairs<'b>(pub &'b [crate::bf16]);

impl Pairs<'_> {
    /// Vectors `0..NV` of pair `p`, widened: (row `2p`, row `2p + 1`).
    #[inline(always)]
    fn pair<S: Simd, const NV: usize>(self, simd: S, p: usize) -> ([S::f32s; NV], [S::f32s; NV]) {
        let pairs = &self.0[2 * p * NR..][..2 * NR];
        let (mut lo, mut hi) = ([simd.splat_f32s(0.0); NV], [simd.splat_f32s(0.0); NV]);
        for (v, (lo, hi)) in lo.iter_mut().zip(&mut hi).enumerate() {
            (*lo, *hi) = bf16_pairs_f32s(simd, pairs, v);
        }
        (lo, hi)
    }
}

impl Panel for Pairs<'_> {
    #[inline(always)]
    fn fma_pair<S: Simd, const MR: usize, const NV: usize>(
        self,
        simd: S,
        p: usize,
        acc: &mut [[S::f32s; NV]; MR],
        a_lo: &[f32],
        a_hi: &[f32],
    ) {
        let (lo, hi) = self.pair::<S, NV>(simd, p);
        // Row by row, both k rows (measured fastest; the pair's 8 vectors stay live throughout,
        // which is why pair panels get 4-row tiles, `PAIRS_MR`).
        for (row, (&a0, &a1)) in acc.iter_mut().zip(a_lo.iter().zip(a_hi)) {
            let av = simd.splat_f32s(a0);
            for (acc, &bv) in row.iter_mut().zip(&lo) {
                *acc = simd.mul_add_e_f32s(av, bv, *acc);
            }
            let av = simd.splat_f32s(a1);
            for (acc, &bv) in row.iter_mut().zip(&hi) {
                *acc = simd.mul_add_e_f32s(av, bv, *acc);
            }
        }
    }

    #[inline(always)]
    fn row<S: Simd, const NV: usize>(self, simd: S, k: usize) -> [S::f32s; NV] {
        let (lo, hi) = self.pair::<S, NV>(simd, k / 2);
        if k.is_multiple_of(2) { lo } else { hi }
    }
}

/// A part of the B block a task computes next, hinted into L2 by one micro-tile of the
/// current block, spread evenly over its k pairs. Issued together, a block's hints would fill
/// the miss buffers and stall the FMAs behind them; without them the hardware prefetchers fall
/// behind when B comes from DRAM (skinny problems use each block for only a few tiles).
#[derive(Clone, Copy)]
pub(super) struct NextBlock {
    /// The part's first byte.
    pub start: *const u8,
    /// The part's length in bytes.
    pub bytes: usize,
}

impl NextBlock {
    /// Part `t` of `parts` equal parts (to the cache line) of this one.
    pub(super) fn part(self, t: usize, parts: usize) -> NextBlock {
        let lines = self.bytes.div_ceil(64);
        let (from, to) = (lines * t / parts * 64, (lines * (t + 1) / parts * 64).min(self.bytes));
        NextBlock { start: self.start.wrapping_add(from), bytes: to.saturating_sub(from) }
    }

    /// The hints for a tile of `pairs` k pairs: the same number of lines per pair (one
    /// division per tile, none per pair).
    #[inline(always)]
    fn spread(self, pairs: usize) -> Spread {
        let lines = self.bytes.div_ceil(64);
        Spread { start: self.start, lines, per_pair: lines.div_ceil(pairs.max(1)) }
    }
}

/// A [`NextBlock`] part's lines, `per_pair` of them hinted at each k pair.
#[derive(Clone, Copy)]
struct Spread {
    start: *const u8,
    lines: usize,
    per_pair: usize,
}

impl Spread {
    /// The hints for k pair `p`.
    #[inline(always)]
    fn fetch_pair(self, p: usize) {
        let from = p * self.per_pair;
        for line in from..(from + self.per_pair).min(self.lines) {
            crate::simd::prefetch::l2(self.start.wrapping_add(line * 64));
        }
    }
}

/// One micro-tile: `a.len() ≥ kc·MR`, `c.len() ≥ (MR−1)·ldc + NR`, `b` holds `kc` k rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<S: Simd, P: Panel, const MR: usize, const NV: usize>(
    simd: S,
    kc: usize,
    a: &[f32],
    b: P,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    next: Option<NextBlock>,
) {
    assert!(NV * S::F32_LANES == NR && a.len() >= kc * MR && c.len() >= (MR - 1) * ldc + NR);
    let mut acc = [[simd.splat_f32s(0.0); NV]; MR];
    let pairs = kc / 2;
    let next = next.map(|next| next.spread(pairs));
    for (p, a_pair) in a[..pairs * 2 * MR].chunks_exact(2 * MR).enumerate() {
        if let Some(next) = next {
            next.fetch_pair(p);
        }
        let (a_lo, a_hi) = a_pair.split_at(MR);
        b.fma_pair(simd, p, &mut acc, a_lo, a_hi);
    }
    if kc % 2 == 1 {
        fma(simd, &mut acc, &a[(kc - 1) * MR..kc * MR], &b.row::<S, NV>(simd, kc - 1));
    }
    for (i, row) in acc.iter().enumerate() {
        let dst = S::as_mut_simd_f32s(&mut c[i * ldc..][..NR]).0;
        for (dst, &value) in dst.iter_mut().zip(row) {
            *dst = if accumulate { simd.add_f32s(*dst, value) } else { value };
        }
    }
}

/// `acc[i][·] += a[i]·b[·]`: one k row of the tile.
#[inline(always)]
fn fma<S: Simd, const MR: usize, const NV: usize>(
    simd: S,
    acc: &mut [[S::f32s; NV]; MR],
    a: &[f32],
    b: &[S::f32s; NV],
) {
    for (row, &a) in acc.iter_mut().zip(a) {
        let av = simd.splat_f32s(a);
        for (acc, &bv) in row.iter_mut().zip(b) {
            *acc = simd.mul_add_e_f32s(av, bv, *acc);
        }
    }
}

/// [`tile`] for a runtime row count `rows ≤ mr_for_lanes(lanes)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn tile_rows<S: Simd, P: Panel>(
    simd: S,
    rows: usize,
    kc: usize,
    a: &[f32],
    b: P,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    next: Option<NextBlock>,
) {
    macro_rules! by_rows {
        ($nv:literal, $($r:literal)*) => {
            match rows {
                $($r => tile::<S, P, $r, $nv>(simd, kc, a, b, c, ldc, accumulate, next),)*
                _ => unreachable!("row count {rows} above the register tile"),
            }
        };
    }
    match S::F32_LANES {
        16 => by_rows!(4, 1 2 3 4 5 6),
        8 => by_rows!(8, 1),
        1 => by_rows!(64, 1),
        lanes => unreachable!("unsupported SIMD width {lanes}"),
    }
}

/// The `vdpbf16ps` micro-kernel (AVX512_BF16; Zen 4 runs it at twice the f32 FMA rate, Zen 5 at
/// 1.85×: sq1024 340.9 against 206.0 GFLOP/s for f32 × f32, 1 thread).
///
/// Register tile 6 rows × 4 zmm (64 columns, 24 f32 accumulators). Per k *pair* it loads 4
/// vectors of the pair-interleaved B panel (`[kp][64][2]` bf16) and broadcasts one 32-bit pair
/// `(a[i,2p], a[i,2p+1])` per row from the A panel (`[kp][MR]` u32), so each instruction adds
/// `a₀b₀ + a₁b₁` to 16 columns. bf16 products are exact in f32 and each addition rounds once,
/// like two FMAs; unlike FMA the instruction flushes subnormal inputs and results to zero.
/// Only used when A and B are both bf16 (A is never rounded to bf16 to get here).
#[cfg(target_arch = "x86_64")]
pub(super) mod dot_bf16 {
    use super::NR;
    use core::arch::x86_64::*;

    /// Rows of the register tile (the AVX-512 `mr_for_lanes(16)`, which `run_packed` packs the
    /// bf16 A pairs with).
    const MR: usize = 6;

    /// One micro-tile of `rows ≤ MR`: `a.len() ≥ kp·rows`, `b.len() ≥ kp·2·NR`,
    /// `c.len() ≥ (rows−1)·ldc + NR`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(in super::super) unsafe fn tile_rows(
        rows: usize,
        a: &[u32],
        b: &[crate::bf16],
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        assert!(rows <= MR && MR == super::mr_for_lanes(16));
        // SAFETY: the caller guarantees the features (this function has them too).
        unsafe {
            match rows {
                1 => tile::<1>(a, b, c, ldc, accumulate),
                2 => tile::<2>(a, b, c, ldc, accumulate),
                3 => tile::<3>(a, b, c, ldc, accumulate),
                4 => tile::<4>(a, b, c, ldc, accumulate),
                5 => tile::<5>(a, b, c, ldc, accumulate),
                6 => tile::<6>(a, b, c, ldc, accumulate),
                _ => unreachable!("row count {rows} above the register tile"),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize>(a: &[u32], b: &[crate::bf16], c: &mut [f32], ldc: usize, accumulate: bool) {
        const NV: usize = NR / 16;
        let kp = b.len() / (2 * NR);
        assert!(a.len() >= kp * R && c.len() >= (R - 1) * ldc + NR);
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for p in 0..kp {
            // SAFETY: p < kp, so the B reads `p·2·NR + v·32 + 32 ≤ kp·2·NR ≤ b.len()` and the A
            // reads `p·R + i < kp·R ≤ a.len()` stay inside the slices; unaligned loads.
            unsafe {
                let bq = bp.add(p * 2 * NR);
                let mut bv = [_mm512_setzero_si512(); NV];
                for (v, bv) in bv.iter_mut().enumerate() {
                    *bv = _mm512_loadu_si512(bq.add(v * 32).cast());
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let av: __m512bh = core::mem::transmute(_mm512_set1_epi32(*ap.add(p * R + i) as i32));
                    for (acc, bv) in row.iter_mut().zip(&bv) {
                        *acc = _mm512_dpbf16_ps(*acc, av, core::mem::transmute::<__m512i, __m512bh>(*bv));
                    }
                }
            }
        }
        let cp = c.as_mut_ptr();
        for (i, row) in acc.iter().enumerate() {
            for (v, &value) in row.iter().enumerate() {
                // SAFETY: `i·ldc + v·16 + 16 ≤ (R−1)·ldc + NR ≤ c.len()` (asserted); `c` is
                // borrowed mutably.
                unsafe {
                    let ptr = cp.add(i * ldc + v * 16);
                    let value = if accumulate { _mm512_add_ps(_mm512_loadu_ps(ptr), value) } else { value };
                    _mm512_storeu_ps(ptr, value);
                }
            }
        }
    }
}
