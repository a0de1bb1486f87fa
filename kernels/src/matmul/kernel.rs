//! The register-blocked micro-kernel: `C_tile[MR, NR] (+)= A_panel · B_panel` in f32.
//!
//! Register tile: `MR` rows × `NV` vectors (`NR = NV · lanes = 64` columns): 6 × 4 zmm on
//! AVX-512 (24 accumulators of 32 registers), 1 × 8 ymm on AVX2, 1 × 64 scalars. Per `k` it
//! loads `NV` vectors of the packed B panel and broadcasts `MR` values of the packed A panel.
//! 6 × 4 measured ≈ 10 % faster than 8 × 3 on Zen 4 (6 broadcasts per 24 FMAs instead of 8:
//! the broadcasts compete with the FMAs for issue slots). Accumulation is f32 with FMA
//! (`mul_add_e`: fused where the ISA has FMA, separate multiply-add in the scalar fallback).
//!
//! Reads: A panel `[kc][MR]` (row count `MR` exactly: the M tail gets its own instantiation,
//! so nothing is computed for padding rows), B panel `[kc][NR]` (N tail zero-padded at pack
//! time). Writes: an f32 scratch tile with row stride `ldc`, overwriting it or adding to it.
//! No closures here or in the driver's task body: a closure is a separate function that does
//! not inherit the caller's target features, and the SIMD intrinsics would not inline into it.
//!
//! The sum for one element is `Σ_p a·b` in increasing `p`, then added to the scratch: the order
//! never depends on threads.

use pulp::Simd;

/// Columns of a packed B panel; the same for every ISA so a [`super::PackedMatrix`] serves all.
pub(super) const NR: usize = 64;

/// Rows of the register tile (and of packed A panels) for a SIMD width.
pub(super) const fn mr_for_lanes(lanes: usize) -> usize {
    match lanes {
        16 => 6,
        8 => 1,
        _ => 1,
    }
}

/// One micro-tile. `a.len() ≥ kc·MR`, `b.len() ≥ kc·NR`, `c.len() ≥ (MR−1)·ldc + NR`.
#[inline(always)]
fn tile<S: Simd, const MR: usize, const NV: usize>(
    simd: S,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let lanes = S::F32_LANES;
    assert!(NV * lanes == NR && a.len() >= kc * MR && b.len() >= kc * NR && c.len() >= (MR - 1) * ldc + NR);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; NV]; MR];
    let (a, b) = (a.as_ptr(), b.as_ptr());
    for p in 0..kc {
        // SAFETY: p < kc and the lengths were asserted above, so every read is inside `b`
        // (`p·NR + v·lanes + lanes ≤ kc·NR`) and `a` (`p·MR + i < kc·MR`); unaligned reads of
        // plain f32 data are always valid.
        unsafe {
            let bp = b.add(p * NR);
            let mut bv = [zero; NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = bp.add(v * lanes).cast::<S::f32s>().read_unaligned();
            }
            let ap = a.add(p * MR);
            for (i, row) in acc.iter_mut().enumerate() {
                let av = simd.splat_f32s(*ap.add(i));
                for (acc, &bv) in row.iter_mut().zip(&bv) {
                    *acc = simd.mul_add_e_f32s(av, bv, *acc);
                }
            }
        }
    }
    let cp = c.as_mut_ptr();
    for (i, row) in acc.iter().enumerate() {
        for (v, &value) in row.iter().enumerate() {
            // SAFETY: `i·ldc + v·lanes + lanes ≤ (MR−1)·ldc + NR ≤ c.len()` (asserted), and `c`
            // is borrowed mutably so nothing else accesses it.
            unsafe {
                let ptr = cp.add(i * ldc + v * lanes).cast::<S::f32s>();
                let value = if accumulate { simd.add_f32s(ptr.read_unaligned(), value) } else { value };
                ptr.write_unaligned(value);
            }
        }
    }
}

/// [`tile`] for a runtime row count `rows ≤ mr_for_lanes(lanes)`; `kc = b.len() / NR`.
#[inline(always)]
pub(super) fn tile_rows<S: Simd>(
    simd: S,
    rows: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let kc = b.len() / NR;
    macro_rules! by_rows {
        ($nv:literal, $($r:literal)*) => {
            match rows {
                $($r => tile::<S, $r, $nv>(simd, kc, a, b, c, ldc, accumulate),)*
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
