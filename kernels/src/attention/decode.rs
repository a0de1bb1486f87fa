//! The decode micro-kernels: items with at most [`DECODE_ROWS`] rows (a few queries × the query
//! heads of one KV head over a long KV cache).
//!
//! With so few rows, the prefill layout (rows in SIMD lanes) would leave most lanes idle and
//! need one broadcast per FMA. Here the head dimension is in the lanes instead: scores are dot
//! products of a Q row with 4 K rows at a time (4 rows × 4 keys register block, one 4-way
//! horizontal sum per row), the softmax runs over a block of `DK` keys in lanes, and
//! `O[m][·] += p·V[j][·]` streams V rows. K/V rows are read in place in their own dtype and
//! widened in registers ([`LoadF32`]), so a 16-bit cache is streamed at half the bytes; only a
//! head dimension that is not a whole number of vectors is widened into (zero-padded) scratch.
//! The item's O is left by rows ([`OLayout::Rows`]) for the shared output and split-KV merge
//! code.

use super::flash::{Item, OLayout, Problem, Scratch, Tile, apply_element_masks, widen_rows};
use super::prefetch::{Hint, KeyPrefetcher};
use crate::dtype::{bf16, f16};
use crate::simd::exp::exp_no_overflow_f32s;
use crate::simd::load::LoadF32;
use crate::simd::reduce::{max4, sum4};
use crate::tensor::{Data, View};
use pulp::{Simd, WithSimd};

/// The most rows an item may have to use this kernel.
pub(super) const DECODE_ROWS: usize = 8;
/// Keys per block (a multiple of 16 so it is whole vectors at every level, and of 4). 128
/// rather than 64 halves the per-block work (softmax reductions, O rescale, hint set-up); the
/// block's K and V rows are each streamed once, so only Q, O and the scores (≤ 4 KiB) need stay
/// in L1. Zen 4, f32, 1 thread, min of 200 calls over 3 alternating runs: 32 query heads over
/// 8 KV heads × 4096 keys × 128, 1.56–1.66 → 1.39–1.56 ms; in L2 (1 KV head × 1024 keys),
/// 35–36 → 37–38 GB/s.
const DK: usize = 128;

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
        s.o.clear();
        s.o.resize(rows * dv_pad, 0.0);
        s.o_layout = OLayout::Rows { stride: dv_pad };
        s.o_normalised = false;
        let mut m_run = [f32::NEG_INFINITY; DECODE_ROWS];
        let mut l_run = [0f32; DECODE_ROWS];
        let mut alpha = [0f32; DECODE_ROWS];
        // Scratch rows for K/V only when they must be padded; their padding columns stay zero.
        let (k_in_place, v_in_place) = (d > 0 && d == d_pad, dv > 0 && dv == dv_pad);
        if !k_in_place {
            s.k.clear();
            s.k.resize(DK * d_pad, 0.0);
        }
        if !v_in_place {
            s.v.clear();
            s.v.resize(DK * dv_pad, 0.0);
        }
        s.s.resize(rows * DK, 0.0);

        let (mut start, visible_end) = p.key_range(item.b, i0, i1);
        let mut end = visible_end;
        if p.chunk != usize::MAX {
            start = start.max(item.chunk * p.chunk);
            end = end.min((item.chunk + 1) * p.chunk);
        }
        // Prefetch runs past the chunk to the head's last visible key: the next chunk of the
        // same head is usually this thread's next item.
        let prefetch_end = visible_end;
        let prefetcher = KeyPrefetcher::new(p, item);
        let mut j0 = start;
        while j0 < end {
            let j1 = (j0 + DK).min(end);
            let nk = j1 - j0;
            let k_rows = rows_of(p, &p.k, item, (j0, nk), (d, d_pad), k_in_place, &mut s.k);
            let v_rows = rows_of(p, &p.v, item, (j0, nk), (dv, dv_pad), v_in_place, &mut s.v);
            // The next tile's K rows a few at a time while the scores run, its V rows one at a
            // time while O accumulates: a whole tile's hints issued at once would fill the miss
            // buffers and stall the computation behind them.
            let (next_k, next_v) =
                (prefetcher.tile(Hint::K, j0 + DK, prefetch_end), prefetcher.tile(Hint::V, j0 + DK, prefetch_end));
            let next_k = |j: usize| next_k.fetch(j, 4);
            let next_v = |j: usize| next_v.fetch(j, 1);
            match k_rows {
                KvRows::F32(k) => scores(simd, &s.qt, rows, d_pad, k, nk, &mut s.s, next_k),
                KvRows::BF16(k) => scores(simd, &s.qt, rows, d_pad, k, nk, &mut s.s, next_k),
                KvRows::F16(k) => scores(simd, &s.qt, rows, d_pad, k, nk, &mut s.s, next_k),
            }
            apply_element_masks(p, item, (i0, i1), j0, nk, &mut s.s, |t, m| m * DK + t);
            for m in 0..rows {
                s.s[m * DK + nk..(m + 1) * DK].fill(f32::NEG_INFINITY);
            }
            softmax_rows(simd, &mut s.s[..rows * DK], &mut m_run, &mut l_run, &mut alpha);
            match v_rows {
                KvRows::F32(v) => accumulate(simd, &s.s, rows, v, nk, dv_pad, &alpha, &mut s.o, next_v),
                KvRows::BF16(v) => accumulate(simd, &s.s, rows, v, nk, dv_pad, &alpha, &mut s.o, next_v),
                KvRows::F16(v) => accumulate(simd, &s.s, rows, v, nk, dv_pad, &alpha, &mut s.o, next_v),
            }
            j0 = j1;
        }

        s.m.clear();
        s.m.extend_from_slice(&m_run[..rows]);
        s.l.clear();
        s.l.extend_from_slice(&l_run[..rows]);
    }
}

/// Rows `j0..j0+nk` of K or V: in place in their own dtype when the row length is whole
/// vectors, else widened into `buf` with row stride `len_pad` (its padding columns zero).
fn rows_of<'t>(
    p: &'t Problem,
    view: &'t View<'t>,
    item: Item,
    (j0, nk): (usize, usize),
    (len, len_pad): (usize, usize),
    in_place: bool,
    buf: &'t mut [f32],
) -> KvRows<'t> {
    if !in_place {
        widen_rows(p, view, item, j0, nk, len, len_pad, buf);
        return KvRows::F32(Tile { data: &buf[..nk * len_pad], stride: len_pad });
    }
    let stride = view.strides()[2];
    let base = view.layout().offset(&[item.b, item.g, j0, 0]);
    let range = base..base + (nk - 1) * stride + len;
    match view.data() {
        Data::F32(data) => KvRows::F32(Tile { data: &data[range], stride }),
        Data::BF16(data) => KvRows::BF16(Tile { data: &data[range], stride }),
        Data::F16(data) => KvRows::F16(Tile { data: &data[range], stride }),
    }
}

/// A tile of K or V rows in the dtype the kernel reads them in.
enum KvRows<'t> {
    F32(Tile<'t, f32>),
    BF16(Tile<'t, bf16>),
    F16(Tile<'t, f16>),
}

/// `S[m][j] = q_m · k_j` for the tile's keys (`S` is `[rows][DK]`), calling `prefetch_step(j)`
/// before each block of 4 keys.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scores<S: Simd, E: LoadF32>(
    simd: S,
    q: &[f32],
    rows: usize,
    d_pad: usize,
    k: Tile<E>,
    nk: usize,
    st: &mut [f32],
    prefetch_step: impl Fn(usize),
) {
    // 4 rows × 4 keys is 16 accumulators beside the 4 K vectors: right for AVX-512's 32
    // registers, spilled in AVX2's 16, where 2 rows (K reloaded from L1 for the next two) fit.
    let max_rows = if S::F32_LANES >= 16 { 4 } else { 2 };
    for j in (0..nk).step_by(4) {
        prefetch_step(j);
        // Past the tile's last key, repeat it: those scores are masked to −∞ afterwards.
        let krows: [&[E]; 4] = std::array::from_fn(|t| k.row((j + t).min(nk - 1), d_pad));
        let mut m0 = 0;
        while m0 < rows {
            let nr = (rows - m0).min(max_rows);
            match nr {
                4 => scores_block::<S, E, 4>(simd, q, d_pad, m0, krows, j, st),
                3 => scores_block::<S, E, 3>(simd, q, d_pad, m0, krows, j, st),
                2 => scores_block::<S, E, 2>(simd, q, d_pad, m0, krows, j, st),
                _ => scores_block::<S, E, 1>(simd, q, d_pad, m0, krows, j, st),
            }
            m0 += nr;
        }
    }
}

#[inline(always)]
fn scores_block<S: Simd, E: LoadF32, const R: usize>(
    simd: S,
    q: &[f32],
    d_pad: usize,
    m0: usize,
    krows: [&[E]; 4],
    j: usize,
    st: &mut [f32],
) {
    let qs: [&[S::f32s]; R] = std::array::from_fn(|i| S::as_simd_f32s(&q[(m0 + i) * d_pad..(m0 + i + 1) * d_pad]).0);
    let nvec = d_pad / S::F32_LANES;
    let mut acc = [[simd.splat_f32s(0.0); 4]; R];
    for cv in 0..nvec {
        // Written out, not `array::from_fn`: its closure was compiled out of line for f16 under
        // AVX2 (a call per load, the F16C conversion called from inside it): decode_gqa f16 took
        // 12.1 ms on Zen 3 instead of 2.8.
        let load = |t: usize| E::load_f32s(simd, krows[t], cv);
        let kv = [load(0), load(1), load(2), load(3)];
        for (acc, q) in acc.iter_mut().zip(&qs) {
            for (acc, k) in acc.iter_mut().zip(kv) {
                *acc = simd.mul_add_e_f32s(q[cv], k, *acc);
            }
        }
    }
    for (i, acc) in acc.into_iter().enumerate() {
        st[(m0 + i) * DK + j..][..4].copy_from_slice(&sum4(simd, acc));
    }
}

/// Online softmax of the tile's scores `S` (`[rows][DK]`, in place → probabilities): updates
/// each row's running max `m_run` and sum `l_run`, and leaves in `alpha` the factor its old O
/// is to be rescaled by. Rows go four at a time through one max and one sum shuffle tree, and
/// all rows' rescale factors through one vector `exp`.
#[inline(always)]
fn softmax_rows<S: Simd>(
    simd: S,
    st: &mut [f32],
    m_run: &mut [f32; DECODE_ROWS],
    l_run: &mut [f32; DECODE_ROWS],
    alpha: &mut [f32; DECODE_ROWS],
) {
    let rows = st.len() / DK;
    // Subtracted from each row's scores: its new max, or 0 while the row is fully masked.
    let mut base = [0f32; DECODE_ROWS];
    // `m_old − base` per row (−∞ for a row seeing its first key); whole vectors at every level.
    const _: () = assert!(DECODE_ROWS <= 16);
    let mut shift = [0f32; 16];
    for m0 in (0..rows).step_by(4) {
        let mut row_max = [simd.splat_f32s(f32::NEG_INFINITY); 4];
        for (m, mx) in (m0..rows).zip(&mut row_max) {
            for x in S::as_simd_f32s(&st[m * DK..][..DK]).0 {
                *mx = simd.max_f32s(*mx, *x);
            }
        }
        for (m, tile_max) in (m0..rows).zip(max4(simd, row_max)) {
            let mx = tile_max.max(m_run[m]);
            base[m] = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
            shift[m] = m_run[m] - base[m];
            m_run[m] = mx;
        }
    }
    let shift_vectors = S::as_mut_simd_f32s(&mut shift).0;
    for x in &mut shift_vectors[..rows.div_ceil(S::F32_LANES)] {
        *x = exp_no_overflow_f32s(simd, *x);
    }
    alpha[..rows].copy_from_slice(&shift[..rows]);
    for m0 in (0..rows).step_by(4) {
        let mut row_sum = [simd.splat_f32s(0.0); 4];
        for (m, sum) in (m0..rows).zip(&mut row_sum) {
            let b = simd.splat_f32s(base[m]);
            for x in S::as_mut_simd_f32s(&mut st[m * DK..][..DK]).0 {
                let e = exp_no_overflow_f32s(simd, simd.sub_f32s(*x, b));
                *x = e;
                *sum = simd.add_f32s(*sum, e);
            }
        }
        // NaN scores make the sum NaN (the max may drop NaN lanes, the sum does not).
        for (m, sum) in (m0..rows).zip(sum4(simd, row_sum)) {
            l_run[m] = l_run[m] * alpha[m] + sum;
        }
    }
}

/// `O[m][·] = α_m·O[m][·] + Σ_j P[m][j]·V[j][·]` (`O` is `[rows][dv_pad]`), calling
/// `prefetch_key(j)` once per key, during the first block's pass over the keys.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accumulate<S: Simd, E: LoadF32>(
    simd: S,
    pt: &[f32],
    rows: usize,
    v: Tile<E>,
    nk: usize,
    dv_pad: usize,
    alpha: &[f32; DECODE_ROWS],
    o: &mut [f32],
    prefetch_key: impl Fn(usize),
) {
    let nvec = dv_pad / S::F32_LANES;
    let o = S::as_mut_simd_f32s(o).0;
    macro_rules! call {
        ($r:literal, $c:literal, $hint:literal, $m0:expr, $c0:expr) => {
            accumulate_block::<S, E, $r, $c, $hint>(simd, pt, $m0, $c0, v, nk, dv_pad, nvec, alpha, o, &prefetch_key)
        };
    }
    // Only the first block hints (once per key); the others are compiled without the call.
    macro_rules! block {
        ($r:literal, $c:literal, $m0:expr, $c0:expr) => {
            if $m0 == 0 && $c0 == 0 { call!($r, $c, true, $m0, $c0) } else { call!($r, $c, false, $m0, $c0) }
        };
    }
    // As in `scores`: 4 rows × 4 vectors of O, plus 4 of V, spill AVX2's 16 registers; 4 × 2 fit.
    let max_columns = if S::F32_LANES >= 16 { 4 } else { 2 };
    let mut m0 = 0;
    while m0 < rows {
        let nr = (rows - m0).min(4);
        let mut c0 = 0;
        while c0 < nvec {
            let nc = (nvec - c0).min(max_columns);
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
fn accumulate_block<S: Simd, E: LoadF32, const R: usize, const C: usize, const HINT: bool>(
    simd: S,
    pt: &[f32],
    m0: usize,
    c0: usize,
    v: Tile<E>,
    nk: usize,
    dv_pad: usize,
    nvec: usize,
    alpha: &[f32; DECODE_ROWS],
    o: &mut [S::f32s],
    prefetch_key: &impl Fn(usize),
) {
    let mut acc = [[simd.splat_f32s(0.0); C]; R];
    for i in 0..R {
        let a = simd.splat_f32s(alpha[m0 + i]);
        for u in 0..C {
            acc[i][u] = simd.mul_f32s(o[(m0 + i) * nvec + c0 + u], a);
        }
    }
    let lanes = S::F32_LANES;
    // Each row's probabilities and each V row's C vectors sliced once, so that the loop over
    // keys carries no bounds checks beyond the V row's.
    let probabilities: [&[f32]; R] = std::array::from_fn(|i| &pt[(m0 + i) * DK..][..nk]);
    for j in 0..nk {
        if HINT {
            prefetch_key(j);
        }
        let columns = &v.row(j, dv_pad)[c0 * lanes..(c0 + C) * lanes];
        let mut vv = [simd.splat_f32s(0.0); C];
        for (u, v) in vv.iter_mut().enumerate() {
            *v = E::load_f32s(simd, columns, u);
        }
        for (acc, p) in acc.iter_mut().zip(&probabilities) {
            let pb = simd.splat_f32s(p[j]);
            for (acc, v) in acc.iter_mut().zip(vv) {
                *acc = simd.mul_add_e_f32s(pb, v, *acc);
            }
        }
    }
    for i in 0..R {
        o[(m0 + i) * nvec + c0..(m0 + i) * nvec + c0 + C].copy_from_slice(&acc[i]);
    }
}
