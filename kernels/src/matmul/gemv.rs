//! The skinny path (M ≤ [`MAX_ROWS`], decode) for unpacked weights whose K is contiguous (the
//! nn.Linear `[N, K]` layout): each weight row is streamed once, widened a chunk at a time, and
//! dotted with every row of A; no B packing (which would read and write all of B once more).
//!
//! Register tile: 4 weight rows × M rows of A, one vector of K each (`4·M ≤ 16` accumulators),
//! reduced horizontally at the end; the K tail is added in scalar. bf16 weights are widened in
//! registers ([`super::kernel::dot4_bf16`]); f16 weights too on AVX-512 (`vcvtph2ps`), and a
//! chunk at a time into an L1 buffer below it. N is split into fixed chunks
//! of [`ROWS_PER_TASK`] weight rows (never depending on the thread count), so the result is
//! bit-identical for any pool size. Accumulation order differs from the packed path's, so the
//! two agree within the accumulation tolerance, not bitwise.

use super::MatmulParams;
use super::driver::{epilogue_row, widen_bias};
use super::kernel::dot4_bf16;
use crate::isa::Isa;
use crate::simd::convert::f16_to_f32_with;
use crate::tensor::{Data, SharedOut, View};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// The largest M this path takes.
pub(super) const MAX_ROWS: usize = 4;
/// Weight rows per task.
const ROWS_PER_TASK: usize = 64;
/// K chunk per step: 8 KiB bursts per weight row (fewer, longer streams measured ≈ 10 %
/// faster than 1 KiB); f16 weights below AVX-512 go through a `4 × 2048` f32 buffer (32 KiB).
const CHUNK: usize = 2048;
/// Below this many weight elements the call runs on the calling thread.
const PARALLEL_ELEMS: usize = 1 << 16;

pub(super) struct Skinny<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A widened to f32, `[m][k]` contiguous.
    pub a: &'a [f32],
    /// For bf16 weights: row `i` of A split into even-k then odd-k halves (`[m][2][⌈k/2⌉]`).
    pub a_split: &'a [f32],
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
        let Task { p, t, out } = self;
        let (j0, j1) = (t * ROWS_PER_TASK, ((t + 1) * ROWS_PER_TASK).min(p.n));
        let (k, sn) = (p.k, p.b.strides()[0]);
        let base = p.b.layout().offset(&[j0, 0]);
        let data = p.b.data();
        let mut dots = vec![0f32; M * (j1 - j0)]; // [i][j - j0]
        let mut wide = vec![0f32; if matches!(data, Data::F16(_)) { 4 * CHUNK } else { 0 }];
        let mut j = j0;
        while j < j1 {
            let rows = 4.min(j1 - j);
            let mut sums = [[0f32; 4]; M];
            for c0 in (0..k).step_by(CHUNK) {
                let len = CHUNK.min(k - c0);
                if let Data::BF16(s) = data {
                    // bf16 weights: widened in registers, against A split into even/odd k.
                    let half = k.div_ceil(2);
                    let mut brows: [&[crate::bf16]; 4] = [&[]; 4];
                    for (r, brow) in brows.iter_mut().enumerate() {
                        let off = base + (j - j0 + r.min(rows - 1)) * sn + c0;
                        *brow = &s[off..off + len];
                    }
                    let mut even: [&[f32]; M] = [&[]; M];
                    let mut odd: [&[f32]; M] = [&[]; M];
                    for i in 0..M {
                        even[i] = &p.a_split[2 * i * half + c0 / 2..][..len.div_ceil(2)];
                        odd[i] = &p.a_split[(2 * i + 1) * half + c0 / 2..][..len.div_ceil(2)];
                    }
                    let part = dot4_bf16::<S, M>(simd, &even, &odd, &brows);
                    for (sum, part) in sums.iter_mut().zip(&part) {
                        for (s, &v) in sum.iter_mut().zip(part) {
                            *s += v;
                        }
                    }
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                if let Data::F16(s) = data
                    && p.isa >= Isa::Avx512
                {
                    // f16 weights on AVX-512: widened in registers.
                    let mut brows: [&[crate::f16]; 4] = [&[]; 4];
                    for (r, brow) in brows.iter_mut().enumerate() {
                        let off = base + (j - j0 + r.min(rows - 1)) * sn + c0;
                        *brow = &s[off..off + len];
                    }
                    let mut arows: [&[f32]; M] = [&[]; M];
                    for (i, arow) in arows.iter_mut().enumerate() {
                        *arow = &p.a[i * k + c0..][..len];
                    }
                    // SAFETY: `p.isa` is clamped to the detected level, which has AVX-512 F.
                    let part = unsafe { super::kernel::f16_avx512::dot4::<M>(&arows, &brows) };
                    for (sum, part) in sums.iter_mut().zip(&part) {
                        for (s, &v) in sum.iter_mut().zip(part) {
                            *s += v;
                        }
                    }
                    continue;
                }
                let mut brows: [&[f32]; 4] = [&[]; 4];
                // Widen (or borrow) `len` elements of each of the `rows` weight rows; missing rows
                // repeat the first so the kernel stays branch-free (their sums are dropped).
                if let Data::F32(s) = data {
                    for (r, brow) in brows.iter_mut().enumerate() {
                        let off = base + (j - j0 + r.min(rows - 1)) * sn + c0;
                        *brow = &s[off..off + len];
                    }
                } else {
                    for (r, dst) in wide.chunks_exact_mut(CHUNK).take(rows).enumerate() {
                        let off = base + (j - j0 + r) * sn + c0;
                        if let Data::F16(s) = data {
                            f16_to_f32_with(p.isa, &s[off..off + len], &mut dst[..len]);
                        }
                    }
                    for (r, brow) in brows.iter_mut().enumerate() {
                        *brow = &wide[r.min(rows - 1) * CHUNK..][..len];
                    }
                }
                let mut arows: [&[f32]; M] = [&[]; M];
                for (i, arow) in arows.iter_mut().enumerate() {
                    *arow = &p.a[i * k + c0..][..len];
                }
                let part = dot4::<S, M>(simd, &arows, &brows);
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
        let bias = p.bias.map(|b| widen_bias(b, j0..j1));
        for (i, row) in dots.chunks_exact_mut(j1 - j0).enumerate() {
            epilogue_row(out, row, bias.as_deref(), &p.params, p.isa, i, j0..j1);
        }
    }
}

/// `out[i][r] = Σ_p a[i][p]·b[r][p]` for equal-length rows: vector FMAs over the full-vector
/// prefix, a horizontal sum, then the scalar tail in order.
#[inline(always)]
fn dot4<S: Simd, const M: usize>(simd: S, a: &[&[f32]; M], b: &[&[f32]; 4]) -> [[f32; 4]; M] {
    let len = b[0].len();
    let lanes = S::F32_LANES;
    let full = len / lanes * lanes;
    assert!(a.iter().all(|r| r.len() == len) && b.iter().all(|r| r.len() == len));
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; 4]; M];
    let mut p = 0;
    while p < full {
        let mut bv = [zero; 4];
        for (bv, row) in bv.iter_mut().zip(b) {
            *bv = load(&row[p..p + lanes]);
        }
        for (acc, row) in acc.iter_mut().zip(a) {
            let av: S::f32s = load(&row[p..p + lanes]);
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = simd.mul_add_e_f32s(av, bv, *acc);
            }
        }
        p += lanes;
    }
    let mut out = [[0f32; 4]; M];
    for i in 0..M {
        for r in 0..4 {
            let mut s = simd.reduce_sum_f32s(acc[i][r]);
            for q in full..len {
                s += a[i][q] * b[r][q];
            }
            out[i][r] = s;
        }
    }
    out
}

/// One vector from exactly `size_of::<V>() / 4` f32 (an unaligned load).
#[inline(always)]
fn load<V: pulp::bytemuck::Pod>(run: &[f32]) -> V {
    pulp::bytemuck::pod_read_unaligned(pulp::bytemuck::cast_slice(run))
}
