//! The decode micro-kernels: items with at most [`DECODE_ROWS`] rows (a few queries × the query
//! heads of one KV head over a long KV cache).
//!
//! With so few rows, the prefill layout (rows in SIMD lanes) would leave most lanes idle and
//! need one broadcast per FMA. Here the head dimension is in the lanes instead: scores are dot
//! products of a Q row with 4 K rows at a time (4 rows × 4 keys register block, one horizontal
//! sum per score), the softmax runs over a block of `DK` keys in lanes, and `O[m][·] += p·V[j][·]`
//! streams V rows. K/V f32 rows are read in place; 16-bit rows are widened into the scratch.
//! The item state is handed back in the prefill layout so the output and split-KV merge code is
//! shared.

use super::flash::{Item, Problem, Scratch, Tile, apply_element_masks, prefetch_keys, widen_rows};
use crate::simd::exp::exp_no_overflow_f32s;
use crate::tensor::Data;
use pulp::{Simd, WithSimd};

/// The most rows an item may have to use this kernel.
pub(super) const DECODE_ROWS: usize = 8;
/// Keys per block (a multiple of 16 so it is whole vectors at every level, and of 4).
const DK: usize = 64;

pub(super) struct DecodeOp<'p, 's> {
    pub(super) p: &'p Problem<'p>,
    pub(super) item: Item,
    pub(super) s: &'s mut Scratch,
}

impl WithSimd for DecodeOp<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let DecodeOp { p, item, s } = self;
        let dims = &p.dims;
        let lanes = S::F32_LANES;
        let (d, dv, r) = (dims.d, dims.d_v, p.r);
        let (d_pad, dv_pad) = (d.div_ceil(lanes) * lanes, dv.div_ceil(lanes) * lanes);
        let (i0, i1) = p.rows(item.qt);
        let rows = (i1 - i0) * r;

        s.qt.clear();
        s.qt.resize(rows * d_pad, 0.0);
        for qi in 0..i1 - i0 {
            for hl in 0..r {
                if d == 0 {
                    continue;
                }
                let m = qi * r + hl;
                let offset = p.q.layout().offset(&[item.b, item.g * r + hl, i0 + qi, 0]);
                let row = &mut s.qt[m * d_pad..m * d_pad + d];
                p.q.data().widen(offset, row, p.isa);
                for x in row.iter_mut() {
                    *x *= p.scale;
                }
            }
        }
        s.row.clear();
        s.row.resize(rows * dv_pad, 0.0); // O, row-major [rows][dv_pad]
        let mut m_run = [f32::NEG_INFINITY; DECODE_ROWS];
        let mut l_run = [0f32; DECODE_ROWS];
        let mut alpha = [0f32; DECODE_ROWS];
        s.k.clear();
        s.k.resize(DK * d_pad, 0.0);
        s.v.clear();
        s.v.resize(DK * dv_pad, 0.0);
        s.s.clear();
        s.s.resize(rows * DK, 0.0);
        s.zeros.clear();
        s.zeros.resize(d_pad, 0.0);

        let (mut start, mut end) = p.key_range(item.b, i0, i1);
        if p.chunk != usize::MAX {
            start = start.max(item.chunk * p.chunk);
            end = end.min((item.chunk + 1) * p.chunk);
        }
        let mut j0 = start;
        while j0 < end {
            let j1 = (j0 + DK).min(end);
            let nk = j1 - j0;
            if j1 < end {
                prefetch_keys(p, item, j1, (j1 + DK).min(end));
            }
            let k_tile = rows_of(p, &p.k, item, j0, nk, d, d_pad, &mut s.k);
            let v_tile = rows_of(p, &p.v, item, j0, nk, dv, dv_pad, &mut s.v);
            scores(simd, &s.qt, rows, d_pad, k_tile, &s.zeros, nk, &mut s.s);
            apply_element_masks(p, item, (i0, i1), j0, nk, &mut s.s, |t, m| m * DK + t);
            for m in 0..rows {
                let row = &mut s.s[m * DK..(m + 1) * DK];
                row[nk..].fill(f32::NEG_INFINITY);
                let (mx, a, sum) = softmax_row(simd, row, m_run[m]);
                l_run[m] = l_run[m] * a + sum;
                alpha[m] = a;
                m_run[m] = mx;
            }
            accumulate(simd, &s.s, rows, v_tile, nk, dv_pad, &alpha, &mut s.row);
            j0 = j1;
        }

        // Hand the state back in the prefill layout: Oᵀ [p.dv_pad][m_pad], m, l.
        let m_pad = super::flash::padded_rows(p, rows);
        s.o.clear();
        s.o.resize(p.dv_pad * m_pad, 0.0);
        for m in 0..rows {
            for c in 0..dv {
                s.o[c * m_pad + m] = s.row[m * dv_pad + c];
            }
        }
        s.m.clear();
        s.m.resize(m_pad, f32::NEG_INFINITY);
        s.m[..rows].copy_from_slice(&m_run[..rows]);
        s.l.clear();
        s.l.resize(m_pad, 0.0);
        s.l[..rows].copy_from_slice(&l_run[..rows]);
    }
}

/// Rows `j0..j0+nk` of K or V with row length `len_pad` (zero-padded to whole vectors): the f32
/// input in place when no padding is needed, else widened into `buf`.
#[allow(clippy::too_many_arguments)]
fn rows_of<'t>(
    p: &'t Problem,
    view: &'t crate::tensor::View<'t>,
    item: Item,
    j0: usize,
    nk: usize,
    len: usize,
    len_pad: usize,
    buf: &'t mut [f32],
) -> Tile<'t> {
    let stride = view.strides()[2];
    match view.data() {
        Data::F32(data) if len > 0 && len == len_pad => {
            let base = view.layout().offset(&[item.b, item.g, j0, 0]);
            Tile { data: &data[base..base + (nk - 1) * stride + len], stride }
        }
        _ => {
            widen_rows(p, view, item, j0, nk, len, len_pad, buf);
            Tile { data: &buf[..nk * len_pad], stride: len_pad }
        }
    }
}

/// `S[m][j] = q_m · k_j` for the tile's keys (`S` is `[rows][DK]`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scores<S: Simd>(simd: S, q: &[f32], rows: usize, d_pad: usize, k: Tile, zeros: &[f32], nk: usize, st: &mut [f32]) {
    for j in (0..nk).step_by(4) {
        let krows: [&[f32]; 4] = std::array::from_fn(|t| if j + t < nk { k.row(j + t, d_pad) } else { zeros });
        let mut m0 = 0;
        while m0 < rows {
            let nr = (rows - m0).min(4);
            match nr {
                4 => scores_block::<S, 4>(simd, q, d_pad, m0, krows, j, st),
                3 => scores_block::<S, 3>(simd, q, d_pad, m0, krows, j, st),
                2 => scores_block::<S, 2>(simd, q, d_pad, m0, krows, j, st),
                _ => scores_block::<S, 1>(simd, q, d_pad, m0, krows, j, st),
            }
            m0 += nr;
        }
    }
}

#[inline(always)]
fn scores_block<S: Simd, const R: usize>(
    simd: S,
    q: &[f32],
    d_pad: usize,
    m0: usize,
    krows: [&[f32]; 4],
    j: usize,
    st: &mut [f32],
) {
    let qs: [&[S::f32s]; R] = std::array::from_fn(|i| S::as_simd_f32s(&q[(m0 + i) * d_pad..(m0 + i + 1) * d_pad]).0);
    let ks: [&[S::f32s]; 4] = std::array::from_fn(|t| S::as_simd_f32s(&krows[t][..d_pad]).0);
    let nvec = d_pad / S::F32_LANES;
    let mut acc = [[simd.splat_f32s(0.0); 4]; R];
    for cv in 0..nvec {
        let kv = [ks[0][cv], ks[1][cv], ks[2][cv], ks[3][cv]];
        for i in 0..R {
            let qv = qs[i][cv];
            for t in 0..4 {
                acc[i][t] = simd.mul_add_e_f32s(qv, kv[t], acc[i][t]);
            }
        }
    }
    for i in 0..R {
        for t in 0..4 {
            st[(m0 + i) * DK + j + t] = simd.reduce_sum_f32s(acc[i][t]);
        }
    }
}

/// Online softmax of one row's block of `DK` scores (in place → probabilities). Returns the new
/// running max, the rescale factor of the old state and the block's sum.
#[inline(always)]
fn softmax_row<S: Simd>(simd: S, row: &mut [f32], m_old: f32) -> (f32, f32, f32) {
    let v = S::as_mut_simd_f32s(row).0;
    let mut mx = simd.splat_f32s(m_old);
    for x in v.iter() {
        mx = simd.max_f32s(mx, *x);
    }
    let mx = simd.reduce_max_f32s(mx).max(m_old);
    let base = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
    let a = simd.reduce_max_f32s(exp_no_overflow_f32s(simd, simd.splat_f32s(m_old - base)));
    let b = simd.splat_f32s(base);
    let mut sum = simd.splat_f32s(0.0);
    for x in v.iter_mut() {
        let e = exp_no_overflow_f32s(simd, simd.sub_f32s(*x, b));
        *x = e;
        sum = simd.add_f32s(sum, e);
    }
    // NaN scores make the sum NaN (reduce_max may drop NaN lanes, the sum does not).
    (mx, a, simd.reduce_sum_f32s(sum))
}

/// `O[m][·] = α_m·O[m][·] + Σ_j P[m][j]·V[j][·]` (`O` is `[rows][dv_pad]`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accumulate<S: Simd>(
    simd: S,
    pt: &[f32],
    rows: usize,
    v: Tile,
    nk: usize,
    dv_pad: usize,
    alpha: &[f32; DECODE_ROWS],
    o: &mut [f32],
) {
    let nvec = dv_pad / S::F32_LANES;
    let o = S::as_mut_simd_f32s(o).0;
    macro_rules! block {
        ($r:literal, $c:literal, $m0:expr, $c0:expr) => {
            accumulate_block::<S, $r, $c>(simd, pt, $m0, $c0, v, nk, dv_pad, nvec, alpha, o)
        };
    }
    let mut m0 = 0;
    while m0 < rows {
        let nr = (rows - m0).min(4);
        let mut c0 = 0;
        while c0 < nvec {
            let nc = (nvec - c0).min(4);
            match (nr, nc) {
                (4, 4) => block!(4, 4, m0, c0),
                (4, 3) => block!(4, 3, m0, c0),
                (4, 2) => block!(4, 2, m0, c0),
                (4, _) => block!(4, 1, m0, c0),
                (3, 4) => block!(3, 4, m0, c0),
                (3, 3) => block!(3, 3, m0, c0),
                (3, 2) => block!(3, 2, m0, c0),
                (3, _) => block!(3, 1, m0, c0),
                (2, 4) => block!(2, 4, m0, c0),
                (2, 3) => block!(2, 3, m0, c0),
                (2, 2) => block!(2, 2, m0, c0),
                (2, _) => block!(2, 1, m0, c0),
                (_, 4) => block!(1, 4, m0, c0),
                (_, 3) => block!(1, 3, m0, c0),
                (_, 2) => block!(1, 2, m0, c0),
                (_, _) => block!(1, 1, m0, c0),
            }
            c0 += nc;
        }
        m0 += nr;
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accumulate_block<S: Simd, const R: usize, const C: usize>(
    simd: S,
    pt: &[f32],
    m0: usize,
    c0: usize,
    v: Tile,
    nk: usize,
    dv_pad: usize,
    nvec: usize,
    alpha: &[f32; DECODE_ROWS],
    o: &mut [S::f32s],
) {
    let mut acc = [[simd.splat_f32s(0.0); C]; R];
    for i in 0..R {
        let a = simd.splat_f32s(alpha[m0 + i]);
        for u in 0..C {
            acc[i][u] = simd.mul_f32s(o[(m0 + i) * nvec + c0 + u], a);
        }
    }
    for j in 0..nk {
        let vrow = S::as_simd_f32s(v.row(j, dv_pad)).0;
        let vv: &[S::f32s; C] = vrow[c0..c0 + C].try_into().unwrap_or_else(|_| unreachable!());
        for i in 0..R {
            let pb = simd.splat_f32s(pt[(m0 + i) * DK + j]);
            for u in 0..C {
                acc[i][u] = simd.mul_add_e_f32s(pb, vv[u], acc[i][u]);
            }
        }
    }
    for i in 0..R {
        o[(m0 + i) * nvec + c0..(m0 + i) * nvec + c0 + C].copy_from_slice(&acc[i]);
    }
}
