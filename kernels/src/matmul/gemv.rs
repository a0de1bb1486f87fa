//! The skinny path (M ≤ [`MAX_ROWS`], decode) for unpacked weights whose K is contiguous (the
//! nn.Linear `[N, K]` layout): each weight row is streamed once, in chunks, widened in
//! registers and dotted with every row of A; no B packing (which would read and write all of B
//! once more).
//!
//! Register tile: 4 weight rows × M rows of A, one vector of K each (`4·M ≤ 16` accumulators),
//! reduced horizontally at the end; the K tail is added in scalar. 16-bit weights are widened
//! in registers ([`LoadF32`]). N is split into fixed chunks
//! of [`ROWS_PER_TASK`] weight rows (never depending on the thread count), so the result is
//! bit-identical for any pool size. Accumulation order differs from the packed path's, so the
//! two agree within the accumulation tolerance, not bitwise.

use super::MatmulParams;
use super::driver::{epilogue_row, widen_bias};
use crate::isa::Isa;
use crate::simd::load::LoadF32;
use crate::tensor::{Data, SharedOut, View};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// The largest M this path takes.
pub(super) const MAX_ROWS: usize = 4;
/// Weight rows per task.
const ROWS_PER_TASK: usize = 64;
/// K chunk per step: 8 KiB bursts per f32 weight row (fewer, longer streams measured ≈ 10 %
/// faster than 1 KiB).
const CHUNK: usize = 2048;
/// Below this many weight elements the call runs on the calling thread.
const PARALLEL_ELEMS: usize = 1 << 16;

pub(super) struct Skinny<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A widened to f32, `[m][k]` contiguous.
    pub a: &'a [f32],
    pub b: &'a View<'a>,
    pub bias: Option<&'a View<'a>>,
    pub params: MatmulParams,
    pub isa: Isa,
}

impl Skinny<'_> {
    pub(super) fn run(&self, out: &SharedOut) {
        let tasks = self.n.div_ceil(ROWS_PER_TASK);
        let task = |t: usize| crate::simd::vectorize(self.isa, Task { p: self, t, out });
        if tasks > 1 && self.n * self.k >= PARALLEL_ELEMS && rayon::current_num_threads() > 1 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
    }
}

struct Task<'a> {
    p: &'a Skinny<'a>,
    t: usize,
    out: &'a SharedOut<'a>,
}

impl WithSimd for Task<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        match self.p.m {
            1 => self.rows::<S, 1>(simd),
            2 => self.rows::<S, 2>(simd),
            3 => self.rows::<S, 3>(simd),
            4 => self.rows::<S, 4>(simd),
            m => unreachable!("skinny path with {m} rows"),
        }
    }
}

impl Task<'_> {
    #[inline(always)]
    fn rows<S: Simd, const M: usize>(self, simd: S) {
        match self.p.b.data() {
            Data::F32(w) => self.rows_of::<S, f32, M>(simd, w),
            Data::BF16(w) => self.rows_of::<S, crate::bf16, M>(simd, w),
            Data::F16(w) => self.rows_of::<S, crate::f16, M>(simd, w),
        }
    }

    /// The task's weight rows, 4 at a time and [`CHUNK`] elements at a time, against every row
    /// of A; `w` is the weights' data.
    #[inline(always)]
    fn rows_of<S: Simd, E: LoadF32, const M: usize>(self, simd: S, w: &[E]) {
        let Task { p, t, out } = self;
        let (j0, j1) = (t * ROWS_PER_TASK, ((t + 1) * ROWS_PER_TASK).min(p.n));
        let (k, sn) = (p.k, p.b.strides()[0]);
        let base = p.b.layout().offset(&[j0, 0]);
        let mut dots = vec![0f32; M * (j1 - j0)]; // [i][j - j0]
        let mut j = j0;
        while j < j1 {
            let rows = 4.min(j1 - j);
            let mut sums = [[0f32; 4]; M];
            for c0 in (0..k).step_by(CHUNK) {
                let len = CHUNK.min(k - c0);
                // Missing weight rows repeat the last one so the kernel stays branch-free (their
                // sums are dropped).
                let mut brows: [&[E]; 4] = [&[]; 4];
                for (r, brow) in brows.iter_mut().enumerate() {
                    let off = base + (j - j0 + r.min(rows - 1)) * sn + c0;
                    *brow = &w[off..off + len];
                }
                let mut arows: [&[f32]; M] = [&[]; M];
                for (i, arow) in arows.iter_mut().enumerate() {
                    *arow = &p.a[i * k + c0..][..len];
                }
                let part = dot4::<S, E, M>(simd, &arows, &brows);
                for (sum, part) in sums.iter_mut().zip(&part) {
                    for (s, &v) in sum.iter_mut().zip(part) {
                        *s += v;
                    }
                }
            }
            for (i, sum) in sums.iter().enumerate() {
                dots[i * (j1 - j0) + (j - j0)..][..rows].copy_from_slice(&sum[..rows]);
            }
            j += rows;
        }
        let bias = p.bias.map(|b| widen_bias(b, j0..j1, p.isa));
        for (i, row) in dots.chunks_exact_mut(j1 - j0).enumerate() {
            epilogue_row(simd, out, row, bias.as_deref(), &p.params, p.isa, i, j0..j1);
        }
    }
}

/// `out[i][r] = Σ_p a[i][p]·b[r][p]` for equal-length rows, the weights widened in registers:
/// vector FMAs over the full-vector prefix, a horizontal sum, then the scalar tail in order.
#[inline(always)]
fn dot4<S: Simd, E: LoadF32, const M: usize>(simd: S, a: &[&[f32]; M], b: &[&[E]; 4]) -> [[f32; 4]; M] {
    let len = b[0].len();
    let lanes = S::F32_LANES;
    let full = len / lanes;
    assert!(a.iter().all(|r| r.len() == len) && b.iter().all(|r| r.len() == len));
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; 4]; M];
    for q in 0..full {
        let mut bv = [zero; 4];
        for (bv, row) in bv.iter_mut().zip(b) {
            *bv = E::load_f32s(simd, row, q);
        }
        for (acc, row) in acc.iter_mut().zip(a) {
            let av = f32::load_f32s(simd, row, q);
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = simd.mul_add_e_f32s(av, bv, *acc);
            }
        }
    }
    let mut out = [[0f32; 4]; M];
    for i in 0..M {
        for r in 0..4 {
            let mut s = simd.reduce_sum_f32s(acc[i][r]);
            for q in full * lanes..len {
                s += a[i][q] * b[r][q].to_f32();
            }
            out[i][r] = s;
        }
    }
    out
}
