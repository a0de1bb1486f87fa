//! The FlashAttention-2 style kernel behind [`super::attention`].
//!
//! ## Work decomposition
//! A *work item* is `(b, kv head g, q tile, kv chunk)`. Its rows are the `bq` queries of the tile
//! times the `r = Hq/Hkv` query heads that share KV head `g` (row `m = qi·r + h_local`), so every
//! K/V tile is read once per KV head (GQA/MQA). `bq·r ≈ 64` rows (128 when K or V is 16-bit,
//! so each widened tile serves more rows).
//!
//! All per-row state is *transposed*: rows live in SIMD lanes. With Qᵀ `[D][M]` packed once per
//! item, the scores of a K tile are `Sᵀ[j][m..m+L] = Σ_c K[j][c] · Qᵀ[c][m..m+L]` (broadcast a K
//! element, FMA a vector of rows: K needs no transposition), the online-softmax max and sum are
//! vertical (no horizontal reductions), and `Oᵀ[c][m..] = α·Oᵀ[c][m..] + Σ_j V[j][c] · Pᵀ[j][m..]`
//! uses V in its natural layout too; the rescale by α is folded into loading the accumulator.
//! Both products are register-blocked micro-kernels: 4 broadcast values × up to 4 vectors at 16
//! lanes, 6 (or 4, at a tile's end) × up to 2 vectors at 8 lanes (AVX2's 16 registers).
//!
//! K/V tiles (`BK` keys) are read in place when f32 and widened to f32 scratch otherwise; Qᵀ,
//! Sᵀ, Oᵀ, the tiles and a staging buffer (Q rows before their transpose, O rows after it) are
//! the only buffers: O(rows × (D + Dv + BK)) per thread (kept in a thread-local between calls),
//! independent of N.
//!
//! The key range of an item is clipped by key lengths, causal and window masks, so fully masked
//! tiles are never touched; causal/window edges are applied (as row ranges per key) only on tiles
//! that straddle them; an additive mask or a softcap is applied element-wise on every tile.
//!
//! Items with at most `DECODE_ROWS` rows (decode) use the kernels in `decode.rs` instead, which
//! put the head dimension in the lanes; the split-KV, merge and output code is shared.
//!
//! ## Split-KV (decode)
//! When the queries fit one q tile and `Nkv > KV_CHUNK`, each item covers one fixed chunk of
//! `KV_CHUNK` keys; the partial (unnormalised O, max, sum) of the chunks are merged by their
//! log-sum-exp in chunk order. Chunking depends only on the shape, so results are bit-identical
//! for any thread count.

use super::decode::{DECODE_ROWS, DecodeOp};
use super::prefetch::{Hint, KeyPrefetcher};
use super::{AttentionDims, AttentionParams, Causal, mask_value};
use crate::dtype::DType;
use crate::isa::Isa;
use crate::simd::aligned::AlignedVec;
use crate::simd::exp::exp_no_overflow_f32s;
use crate::simd::transpose::transpose;
use crate::simd::vectorize;
use crate::tensor::{Data, DataMut, SharedOut, View, ViewMut};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;
use std::cell::RefCell;

/// Keys per K/V tile.
const BK: usize = 64;
/// Target rows (queries × grouped heads) per work item whose K and V are f32 (read in place).
const TARGET_ROWS: usize = 64;
/// Target rows per work item when K or V is 16-bit: each item widens every K/V tile it visits,
/// so twice the rows halve that work per FLOP. Xeon (AVX-512), bf16, 1 thread: long2k 89.4 →
/// 84.3 ms, bert512 5.74 → 5.47 ms; f32 measured 1–2 % slower with 128 (its Sᵀ, Qᵀ and Oᵀ
/// then outgrow L1), so it keeps 64.
const TARGET_ROWS_WIDENED: usize = 128;
/// Keys per split-KV chunk (a multiple of `BK`).
const KV_CHUNK: usize = 512;
/// Below this many multiply-adds the call runs on the calling thread.
const SERIAL_MACS: usize = 1 << 19;
/// Broadcast values per micro-kernel block (keys for Sᵀ, value columns for Oᵀ); tiles are padded
/// to a multiple of it.
const AB: usize = 4;
/// The wider block 8-lane ISAs run where it fits: 6 broadcasts × 2 row vectors are 12
/// accumulators (+ 2 Q/P vectors + 1 broadcast of AVX2's 16 registers), enough independent FMA
/// chains to cover their latency, where 4 × 2 left exactly the 8 the two FMA pipes need.
const AB_WIDE: usize = 6;

/// Everything a work item needs, shared by all tasks.
pub(super) struct Problem<'a> {
    pub(super) q: View<'a>,
    pub(super) k: View<'a>,
    pub(super) v: View<'a>,
    pub(super) params: &'a AttentionParams<'a>,
    pub(super) dims: AttentionDims,
    pub(super) isa: Isa,
    pub(super) scale: f32,
    /// Query heads per KV head.
    pub(super) r: usize,
    /// Queries per q tile.
    pub(super) bq: usize,
    pub(super) n_qt: usize,
    /// Keys per chunk (`usize::MAX` when not split).
    pub(super) chunk: usize,
    pub(super) n_chunks: usize,
    /// `Dv` rounded up to a multiple of `AB`.
    pub(super) dv_pad: usize,
}

/// One work item's identity.
#[derive(Clone, Copy)]
pub(super) struct Item {
    pub(super) b: usize,
    pub(super) g: usize,
    pub(super) qt: usize,
    pub(super) chunk: usize,
}

/// Per-task scratch (f32); reused across the items a task runs. The prefill kernel pads its
/// row dimension to whole vectors; decode keeps exactly `rows` entries of `m` and `l`.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) qt: AlignedVec,
    pub(super) k: AlignedVec,
    pub(super) v: AlignedVec,
    pub(super) s: AlignedVec,
    /// The item's unnormalised O, laid out as `o_layout` says.
    pub(super) o: AlignedVec,
    pub(super) o_layout: OLayout,
    /// Whether O is already divided by `l` (a prefill item that is not split).
    pub(super) o_normalised: bool,
    pub(super) m: AlignedVec,
    pub(super) l: AlignedVec,
    pub(super) alpha: AlignedVec,
    /// Rows on their way into or out of a transpose: Q `[rows][D]` before Qᵀ, O `[rows][Dv]`
    /// after Oᵀ.
    pub(super) staging: AlignedVec,
    pub(super) zeros: AlignedVec,
}

/// How an item leaves its O in [`Scratch::o`]: each kernel keeps the layout its lanes run
/// along, so neither transposes its state before the rows are written out.
#[derive(Clone, Copy)]
pub(super) enum OLayout {
    /// Oᵀ, `[dv_pad][m_pad]`: the prefill kernel, rows in lanes.
    Transposed { m_pad: usize },
    /// O, `[rows][stride]`: the decode kernel, columns in lanes.
    Rows { stride: usize },
}

impl Default for OLayout {
    fn default() -> Self {
        OLayout::Rows { stride: 0 }
    }
}

/// The item's O by rows (`rows × dv`, returned with its row stride): decode's O as it is, a
/// prefill item's Oᵀ transposed into `buf`.
fn o_by_rows<'s>(
    isa: Isa,
    (o, layout): (&'s mut [f32], OLayout),
    (rows, dv): (usize, usize),
    buf: &'s mut AlignedVec,
) -> (&'s mut [f32], usize) {
    match layout {
        OLayout::Rows { stride } => (o, stride),
        OLayout::Transposed { m_pad } => {
            // Overwritten whole by the transpose.
            buf.resize(rows * dv, 0.0);
            transpose(isa, o, m_pad, (dv, rows), buf, dv);
            (buf, dv)
        }
    }
}

/// The result of an item that is merged with other chunks: rows × Dv (unnormalised), max, sum.
struct Partial {
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

impl<'a> Problem<'a> {
    pub(super) fn rows(&self, qt: usize) -> (usize, usize) {
        let i0 = qt * self.bq;
        (i0, (i0 + self.bq).min(self.dims.n_q))
    }

    /// The keys `[start, end)` some row of `[i0, i1)` may see (empty when all are masked).
    pub(super) fn key_range(&self, b: usize, i0: usize, i1: usize) -> (usize, usize) {
        let p = self.params;
        let off = self.dims.diagonal_offset(p.causal);
        let mut end = self.dims.n_kv as i64;
        if let Some(lengths) = p.key_lengths {
            end = end.min(lengths[b] as i64);
        }
        if p.causal != Causal::None {
            end = end.min(i1 as i64 - 1 + off + 1);
        }
        let mut start = 0i64;
        if let Some(w) = p.window_left {
            start = start.max(i0 as i64 + off - w as i64);
        }
        let end = end.max(0) as usize;
        (start.clamp(0, end as i64) as usize, end)
    }

    /// The element distance between consecutive rows `m = qi·r + h_local` of an item's Q, when
    /// it is the same for all of them: Q's query stride with one head per KV head, its head
    /// stride when the heads of a query are that far apart and its queries `r` heads apart
    /// (the `[B, N, H, D]` layout).
    fn q_row_stride(&self) -> Option<usize> {
        let [_, head, query, _] = <[usize; 4]>::try_from(self.q.strides()).ok()?;
        if self.r == 1 { Some(query) } else { (query == self.r * head).then_some(head) }
    }

    fn n_items(&self) -> usize {
        self.dims.b * self.dims.h_kv * self.n_qt * self.n_chunks
    }

    /// Item `idx` in (b, g, q tile, chunk) order; enumerated, never materialised (no O(N) list).
    fn item(&self, idx: usize) -> Item {
        let chunk = idx % self.n_chunks;
        let rest = idx / self.n_chunks;
        let qt = rest % self.n_qt;
        let rest = rest / self.n_qt;
        Item { b: rest / self.dims.h_kv, g: rest % self.dims.h_kv, qt, chunk }
    }
}

/// Runs the kernel at level `isa` (the caller validated the arguments and recorded the level).
pub(super) fn run(
    isa: Isa,
    [q, k, v]: [&View; 3],
    out: &mut ViewMut,
    params: &AttentionParams,
    lse: Option<&mut ViewMut>,
    dims: AttentionDims,
) {
    if dims.b == 0 || dims.h_q == 0 || dims.n_q == 0 {
        return;
    }
    let r = dims.h_q / dims.h_kv;
    let bq = q_tile(&dims, k.dtype() != DType::F32 || v.dtype() != DType::F32);
    let n_qt = dims.n_q.div_ceil(bq);
    let (chunk, n_chunks) =
        if n_qt == 1 && dims.n_kv > KV_CHUNK { (KV_CHUNK, dims.n_kv.div_ceil(KV_CHUNK)) } else { (usize::MAX, 1) };
    let problem = Problem {
        q: *q,
        k: *k,
        v: *v,
        params,
        dims,
        isa,
        scale: params.scale_for(dims.d),
        r,
        bq,
        n_qt,
        chunk,
        n_chunks,
        dv_pad: dims.d_v.div_ceil(AB) * AB,
    };
    let out = out.shared();
    let lse = lse.map(|l| l.shared());
    let sink = Sink { out: &out, lse: lse.as_ref() };
    let n_items = problem.n_items();
    let macs = [dims.h_q, dims.n_q, dims.n_kv, dims.d + dims.d_v].iter().fold(dims.b, |a, &x| a.saturating_mul(x));
    let serial = macs < SERIAL_MACS || rayon::current_num_threads() == 1;
    if n_chunks == 1 {
        let work = |idx: usize| {
            let item = problem.item(idx);
            with_scratch(|scratch| {
                compute(&problem, item, scratch);
                write_rows(&problem, item, scratch, &sink);
            });
        };
        if serial {
            (0..n_items).for_each(work);
        } else {
            (0..n_items).into_par_iter().with_max_len(1).for_each(work);
        }
    } else {
        let work = |idx: usize| {
            let item = problem.item(idx);
            with_scratch(|scratch| {
                compute(&problem, item, scratch);
                extract_partial(&problem, item, scratch)
            })
        };
        let partials: Vec<Partial> = if serial {
            (0..n_items).map(work).collect()
        } else {
            (0..n_items).into_par_iter().with_max_len(1).map(work).collect()
        };
        let merge = |(group, parts): (usize, &[Partial])| {
            merge_partials(&problem, problem.item(group * n_chunks), parts, &sink);
        };
        if serial {
            partials.chunks(n_chunks).enumerate().for_each(merge);
        } else {
            partials.par_chunks(n_chunks).enumerate().for_each(merge);
        }
    }
}

thread_local! {
    /// Each thread's scratch, kept between calls (O(tile): its size is set by the largest item
    /// the thread ran, never by N).
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a fresh one should the thread's be in use).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Queries per q tile for `r` query heads per KV head; `widened`: K or V is not f32.
pub(super) fn q_tile(dims: &AttentionDims, widened: bool) -> usize {
    let target = if widened { TARGET_ROWS_WIDENED } else { TARGET_ROWS };
    (target / (dims.h_q / dims.h_kv.max(1)).max(1)).max(1).min(dims.n_q.max(1))
}

/// Where finished rows go.
struct Sink<'s, 'o> {
    out: &'s SharedOut<'o>,
    lse: Option<&'s SharedOut<'o>>,
}

impl Sink<'_, '_> {
    /// Normalises (unless `normalised`) and stores one output row, and its LSE.
    fn store(&self, p: &Problem, [b, h, i]: [usize; 3], o: &mut [f32], (m, l): (f32, f32), normalised: bool) {
        let inv = if l == 0.0 { 0.0 } else { 1.0 / l };
        if !o.is_empty() {
            let offset = self.out.layout().offset(&[b, h, i, 0]);
            // SAFETY: row (b, h, i) is written by exactly one task (the item owning query tile of
            // i, KV head of h, batch b), and the output layout was validated as non-overlapping,
            // so this run of Dv elements is disjoint from every other task's.
            match unsafe { self.out.run(offset, o.len()) } {
                DataMut::F32(y) if normalised => y.copy_from_slice(o),
                // Scaled straight into an f32 output: one pass over the row, no copy call.
                DataMut::F32(y) => {
                    for (y, &x) in y.iter_mut().zip(o.iter()) {
                        *y = x * inv;
                    }
                }
                mut run => {
                    if !normalised {
                        for x in o.iter_mut() {
                            *x *= inv;
                        }
                    }
                    run.store(0, o, p.isa);
                }
            }
        }
        if let Some(lse) = self.lse {
            let value = if l == 0.0 { f32::NEG_INFINITY } else { m + l.ln() };
            let offset = lse.layout().offset(&[b, h, i]);
            // SAFETY: as above, element (b, h, i) of the validated, non-overlapping LSE view
            // belongs to this task alone.
            unsafe { lse.run(offset, 1) }.store(0, &[value], p.isa);
        }
    }
}

/// Writes the finished rows of an unsplit item.
fn write_rows(p: &Problem, item: Item, s: &mut Scratch, sink: &Sink) {
    let (i0, i1) = p.rows(item.qt);
    let dv = p.dims.d_v;
    let (o, stride) = o_by_rows(p.isa, (&mut s.o, s.o_layout), ((i1 - i0) * p.r, dv), &mut s.staging);
    for qi in 0..i1 - i0 {
        for hl in 0..p.r {
            let m = qi * p.r + hl;
            let (row, state) = (&mut o[m * stride..][..dv], (s.m[m], s.l[m]));
            sink.store(p, [item.b, item.g * p.r + hl, i0 + qi], row, state, s.o_normalised);
        }
    }
}

/// Copies an item's state out as a chunk partial (rows × Dv).
fn extract_partial(p: &Problem, item: Item, s: &mut Scratch) -> Partial {
    let (i0, i1) = p.rows(item.qt);
    let rows = (i1 - i0) * p.r;
    let dv = p.dims.d_v;
    let (o, stride) = o_by_rows(p.isa, (&mut s.o, s.o_layout), (rows, dv), &mut s.staging);
    let mut rows_o = Vec::with_capacity(rows * dv);
    for m in 0..rows {
        rows_o.extend_from_slice(&o[m * stride..][..dv]);
    }
    Partial { o: rows_o, m: s.m[..rows].to_vec(), l: s.l[..rows].to_vec() }
}

/// Merges the chunk partials of one (b, g, q tile) in chunk order and writes the rows.
fn merge_partials(p: &Problem, item: Item, parts: &[Partial], sink: &Sink) {
    let (i0, i1) = p.rows(item.qt);
    let dv = p.dims.d_v;
    let mut row = vec![0.0f32; dv];
    for qi in 0..i1 - i0 {
        for hl in 0..p.r {
            let m = qi * p.r + hl;
            let max = parts.iter().map(|part| part.m[m]).fold(f32::NEG_INFINITY, f32::max);
            let base = if max == f32::NEG_INFINITY { 0.0 } else { max };
            row.fill(0.0);
            let mut l = 0.0f32;
            for part in parts {
                let w = (part.m[m] - base).exp();
                l += w * part.l[m];
                for (x, y) in row.iter_mut().zip(&part.o[m * dv..(m + 1) * dv]) {
                    *x += w * y;
                }
            }
            sink.store(p, [item.b, item.g * p.r + hl, i0 + qi], &mut row, (max, l), false);
        }
    }
}

/// Runs one item: leaves O (unnormalised), m and l in the scratch.
fn compute(p: &Problem, item: Item, scratch: &mut Scratch) {
    let (i0, i1) = p.rows(item.qt);
    if (i1 - i0) * p.r <= DECODE_ROWS {
        vectorize(p.isa, DecodeOp { p, item, s: scratch });
    } else {
        vectorize(p.isa, ItemOp { p, item, s: scratch });
    }
}

struct ItemOp<'p, 's> {
    p: &'p Problem<'p>,
    item: Item,
    s: &'s mut Scratch,
}

impl WithSimd for ItemOp<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let ItemOp { p, item, s } = self;
        let dims = &p.dims;
        let (d, dv_pad, r) = (dims.d, p.dv_pad, p.r);
        let (i0, i1) = p.rows(item.qt);
        let rows = (i1 - i0) * r;
        let lanes = S::F32_LANES;
        let m_pad = rows.div_ceil(lanes) * lanes;
        let mv = m_pad / lanes;
        let vmax = if lanes >= 16 { 4 } else { 2 };

        // Qᵀ, pre-scaled; padding rows are zero. f32 rows a fixed stride apart are transposed
        // in place; others are widened into the staging buffer first (in one call when they are
        // back to back: one per row measured 9 % of minilm128 bf16). Buffers that are
        // overwritten whole keep their stale contents rather than being zero-filled first (the
        // fills measured ~3 % of short-sequence prefill).
        s.qt.resize(d * m_pad, 0.0);
        let first_row = p.q.layout().offset(&[item.b, item.g * r, i0, 0]);
        match (p.q.data(), p.q_row_stride()) {
            (Data::F32(q), Some(ld)) if d > 0 => {
                transpose(p.isa, &q[first_row..], ld, (rows, d), &mut s.qt, m_pad);
            }
            (_, Some(ld)) if ld == d && d > 0 => {
                // 16-bit rows back to back: widened in one call, not one per row.
                s.staging.resize(rows * d, 0.0);
                p.q.data().widen(first_row, &mut s.staging[..rows * d], p.isa);
                transpose(p.isa, &s.staging, d, (rows, d), &mut s.qt, m_pad);
            }
            _ => {
                s.staging.resize(rows * d, 0.0);
                if d > 0 {
                    for qi in 0..i1 - i0 {
                        for hl in 0..r {
                            let m = qi * r + hl;
                            let offset = p.q.layout().offset(&[item.b, item.g * r + hl, i0 + qi, 0]);
                            p.q.data().widen(offset, &mut s.staging[m * d..(m + 1) * d], p.isa);
                        }
                    }
                }
                transpose(p.isa, &s.staging, d, (rows, d), &mut s.qt, m_pad);
            }
        }
        if rows < m_pad {
            for qt_row in s.qt.chunks_exact_mut(m_pad) {
                qt_row[rows..].fill(0.0);
            }
        }
        let scale = simd.splat_f32s(p.scale);
        for x in S::as_mut_simd_f32s(&mut s.qt).0 {
            *x = simd.mul_f32s(*x, scale);
        }
        s.o.clear();
        s.o.resize(dv_pad * m_pad, 0.0);
        s.o_layout = OLayout::Transposed { m_pad };
        s.m.clear();
        s.m.resize(m_pad, f32::NEG_INFINITY);
        s.l.clear();
        s.l.resize(m_pad, 0.0);
        s.alpha.resize(m_pad, 0.0);
        s.k.resize(BK * d, 0.0);
        // Widened V rows leave their padding columns (if any) as they find them: zero.
        if dv_pad != dims.d_v {
            s.v.clear();
        }
        s.v.resize(BK * dv_pad, 0.0);
        s.zeros.clear();
        s.zeros.resize(d, 0.0);
        s.s.resize(BK * m_pad, 0.0);

        let (mut start, mut end) = p.key_range(item.b, i0, i1);
        if p.chunk != usize::MAX {
            start = start.max(item.chunk * p.chunk);
            end = end.min((item.chunk + 1) * p.chunk);
        }
        let prefetcher = KeyPrefetcher::new(p, item);
        let mut j0 = start;
        while j0 < end {
            let j1 = (j0 + BK).min(end);
            let nk = j1 - j0;
            let nk_pad = nk.div_ceil(AB) * AB;
            // Prefill re-reads each K/V tile for every q tile (from L2/L3); only split-KV items
            // stream the cache once, from memory, and hint the next tile a step at a time.
            let next = (p.chunk != usize::MAX).then(|| prefetcher.tile(Hint::KV, j1, end));
            let prefetch_step = |j: usize, keys: usize| {
                if let Some(next) = &next {
                    next.fetch(j, keys);
                }
            };
            let (k_tile, v_tile) = load_tile(p, item, j0, nk, &mut s.k, &mut s.v);
            scores(simd, &s.qt, k_tile, &s.zeros, d, mv, vmax, (nk, nk_pad), &mut s.s, prefetch_step);
            apply_masks(p, item, (i0, i1), (j0, nk, nk_pad), m_pad, &mut s.s);
            softmax_update(simd, mv, nk_pad, &mut s.s, &mut s.m, &mut s.l, &mut s.alpha);
            accumulate(simd, &s.s, v_tile, &s.alpha, dv_pad, mv, vmax, nk, &mut s.o);
            j0 = j1;
        }
        // An unsplit item's O is final: it is divided by `l` here, a vector of rows at a time
        // (1/l into `alpha`, whose work is done; 0 for a fully masked row), so its rows are only
        // copied out.
        s.o_normalised = p.chunk == usize::MAX;
        if s.o_normalised {
            let (one, zero) = (simd.splat_f32s(1.0), simd.splat_f32s(0.0));
            let inv = S::as_mut_simd_f32s(&mut s.alpha).0;
            for (inv, &l) in inv.iter_mut().zip(S::as_simd_f32s(&s.l).0) {
                *inv = simd.select_f32s(simd.equal_f32s(l, zero), zero, simd.div_f32s(one, l));
            }
            for column in S::as_mut_simd_f32s(&mut s.o).0.chunks_exact_mut(mv) {
                for (x, &inv) in column.iter_mut().zip(inv.iter()) {
                    *x = simd.mul_f32s(*x, inv);
                }
            }
        }
    }
}

/// Rows of a K or V tile: row `t` is `data[t·stride..][..len]` (the input itself for f32 data,
/// else the widened scratch).
#[derive(Clone, Copy)]
pub(super) struct Tile<'t, E = f32> {
    pub(super) data: &'t [E],
    pub(super) stride: usize,
}

impl<'t, E> Tile<'t, E> {
    #[inline(always)]
    pub(super) fn row(&self, t: usize, len: usize) -> &'t [E] {
        &self.data[t * self.stride..t * self.stride + len]
    }
}

/// K and V rows `j0..j0+nk`: borrowed from f32 inputs, widened into the scratch otherwise (V also
/// when Dv is not a multiple of `AB`, since the micro-kernel reads `AB` columns at a time).
fn load_tile<'t>(
    p: &'t Problem,
    item: Item,
    j0: usize,
    nk: usize,
    kbuf: &'t mut [f32],
    vbuf: &'t mut [f32],
) -> (Tile<'t>, Tile<'t>) {
    let (d, dv, dv_pad) = (p.dims.d, p.dims.d_v, p.dv_pad);
    let k_stride = p.k.strides()[2];
    let v_stride = p.v.strides()[2];
    let k_tile = match p.k.data() {
        crate::tensor::Data::F32(data) if d > 0 => {
            let base = p.k.layout().offset(&[item.b, item.g, j0, 0]);
            Tile { data: &data[base..base + (nk - 1) * k_stride + d], stride: k_stride }
        }
        _ => {
            widen_rows(p, &p.k, item, j0, nk, d, d, kbuf);
            Tile { data: &kbuf[..nk * d], stride: d }
        }
    };
    let v_tile = match p.v.data() {
        crate::tensor::Data::F32(data) if dv > 0 && dv == dv_pad => {
            let base = p.v.layout().offset(&[item.b, item.g, j0, 0]);
            Tile { data: &data[base..base + (nk - 1) * v_stride + dv], stride: v_stride }
        }
        _ => {
            widen_rows(p, &p.v, item, j0, nk, dv, dv_pad, vbuf);
            Tile { data: &vbuf[..nk * dv_pad], stride: dv_pad }
        }
    };
    (k_tile, v_tile)
}

/// Widens rows `j0..j0+nk` (of length `len`) of K or V of item's (b, g) into `buf` with row
/// stride `len_pad`: in one call when both the source rows and the destination are contiguous.
#[allow(clippy::too_many_arguments)]
pub(super) fn widen_rows(
    p: &Problem,
    view: &View,
    item: Item,
    j0: usize,
    nk: usize,
    len: usize,
    len_pad: usize,
    buf: &mut [f32],
) {
    if len == 0 || nk == 0 {
        return;
    }
    let base = view.layout().offset(&[item.b, item.g, j0, 0]);
    if len == len_pad && (nk == 1 || view.strides()[2] == len) {
        view.data().widen(base, &mut buf[..nk * len], p.isa);
        return;
    }
    for t in 0..nk {
        let offset = base + t * view.strides()[2];
        view.data().widen(offset, &mut buf[t * len_pad..t * len_pad + len], p.isa);
    }
}

/// `Sᵀ[j][·] = Σ_c K[j][c]·Qᵀ[c][·]` for the `nk_pad` keys of the tile.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scores<S: Simd>(
    simd: S,
    qt: &[f32],
    k: Tile,
    zeros: &[f32],
    d: usize,
    mv: usize,
    vmax: usize,
    (nk, nk_pad): (usize, usize),
    st: &mut [f32],
    prefetch_step: impl Fn(usize, usize),
) {
    let qt = S::as_simd_f32s(qt).0;
    let st = S::as_mut_simd_f32s(st).0;
    for (j, width) in blocks(nk_pad, vmax) {
        prefetch_step(j, width);
        let mut v0 = 0;
        while v0 < mv {
            let nv = (mv - v0).min(vmax);
            match (width, nv) {
                (AB_WIDE, 2) => scores_block::<S, AB_WIDE, 2>(simd, qt, k, zeros, (d, nk), mv, v0, j, st),
                (AB_WIDE, _) => scores_block::<S, AB_WIDE, 1>(simd, qt, k, zeros, (d, nk), mv, v0, j, st),
                (_, 4) => scores_block::<S, AB, 4>(simd, qt, k, zeros, (d, nk), mv, v0, j, st),
                (_, 3) => scores_block::<S, AB, 3>(simd, qt, k, zeros, (d, nk), mv, v0, j, st),
                (_, 2) => scores_block::<S, AB, 2>(simd, qt, k, zeros, (d, nk), mv, v0, j, st),
                _ => scores_block::<S, AB, 1>(simd, qt, k, zeros, (d, nk), mv, v0, j, st),
            }
            v0 += nv;
        }
    }
}

/// Splits `0..n` (a multiple of `AB`) into `(start, width)` blocks: as many `AB_WIDE` blocks as
/// leave a multiple of `AB` when the micro-kernel holds at most 2 row vectors (8-lane ISAs, whose
/// 16 registers cannot hold 4 × 4), then `AB` blocks.
fn blocks(n: usize, vmax: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut n_wide = if vmax <= 2 { n / AB_WIDE } else { 0 };
    while !(n - n_wide * AB_WIDE).is_multiple_of(AB) {
        n_wide -= 1;
    }
    let wide_end = n_wide * AB_WIDE;
    (0..wide_end).step_by(AB_WIDE).map(|j| (j, AB_WIDE)).chain((wide_end..n).step_by(AB).map(|j| (j, AB)))
}

/// `Sᵀ` for keys `j..j+A` (keys at or past `nk` score against zeros) and row vectors `v0..v0+V`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scores_block<S: Simd, const A: usize, const V: usize>(
    simd: S,
    qt: &[S::f32s],
    k: Tile,
    zeros: &[f32],
    (d, nk): (usize, usize),
    mv: usize,
    v0: usize,
    j: usize,
    st: &mut [S::f32s],
) {
    let mut acc = [[simd.splat_f32s(0.0); V]; A];
    // Each row sliced to exactly `d`, so the indexing below needs no per-element bounds check.
    let krows: [&[f32]; A] = std::array::from_fn(|t| if j + t < nk { k.row(j + t, d) } else { &zeros[..d] });
    // A macro, not a closure: closures are not inlined into pulp's target-feature context.
    macro_rules! step {
        ($c:expr, $acc:expr) => {{
            let c = $c;
            let qv: &[S::f32s; V] = qt[c * mv + v0..c * mv + v0 + V].try_into().unwrap_or_else(|_| unreachable!());
            for t in 0..A {
                let b = simd.splat_f32s(krows[t][c]);
                for u in 0..V {
                    $acc[t][u] = simd.mul_add_e_f32s(b, qv[u], $acc[t][u]);
                }
            }
        }};
    }
    let mut c = 0;
    if V == 1 {
        // A single vector gives only A dependency chains: interleave a second set to hide latency.
        let mut acc2 = [[simd.splat_f32s(0.0); V]; A];
        while c + 1 < d {
            step!(c, acc);
            step!(c + 1, acc2);
            c += 2;
        }
        for t in 0..A {
            acc[t][0] = simd.add_f32s(acc[t][0], acc2[t][0]);
        }
    }
    while c < d {
        step!(c, acc);
        c += 1;
    }
    for t in 0..A {
        st[(j + t) * mv + v0..(j + t) * mv + v0 + V].copy_from_slice(&acc[t]);
    }
}

/// Softcap, additive mask and the element masks of tiles that straddle a mask edge; padding
/// keys become −∞.
fn apply_masks(
    p: &Problem,
    item: Item,
    (i0, i1): (usize, usize),
    (j0, nk, nk_pad): (usize, usize, usize),
    m_pad: usize,
    st: &mut [f32],
) {
    apply_element_masks(p, item, (i0, i1), j0, nk, st, |t, m| t * m_pad + m);
    st[nk * m_pad..nk_pad * m_pad].fill(f32::NEG_INFINITY);
}

/// Softcap, additive mask and (on tiles that straddle a causal or window edge) the element masks
/// for keys `j0..j0+nk` and every valid row; `index(t, m)` locates key `t`, row `m` in `st`.
pub(super) fn apply_element_masks(
    p: &Problem,
    item: Item,
    (i0, i1): (usize, usize),
    j0: usize,
    nk: usize,
    st: &mut [f32],
    index: impl Fn(usize, usize) -> usize,
) {
    let params = p.params;
    let off = p.dims.diagonal_offset(params.causal);
    let (diag_lo, diag_hi) = (i0 as i64 + off, i1 as i64 - 1 + off);
    let j_last = (j0 + nk) as i64 - 1;
    let causal_edge = params.causal != Causal::None && j_last > diag_lo;
    let window_edge = params.window_left.is_some_and(|w| (j0 as i64) + (w as i64) < diag_hi);
    let rows = (i1 - i0) * p.r;
    if params.additive_mask.is_some() || params.softcap.is_some() {
        for t in 0..nk {
            let j = j0 + t;
            for m in 0..rows {
                let s = &mut st[index(t, m)];
                if let Some(cap) = params.softcap {
                    *s = cap * (*s / cap).tanh();
                }
                if let Some(mask) = &params.additive_mask {
                    *s += mask_value(mask, item.b, item.g * p.r + m % p.r, i0 + m / p.r, j);
                }
            }
        }
    }
    if causal_edge || window_edge {
        // Row m is query i0 + m/r: key j is visible to the rows lo..hi (causal: i ≥ j − offset;
        // window: i ≤ j + w − offset), so the rest of the key's rows are set to −∞.
        let r = p.r as i64;
        let rows_i = rows as i64;
        for t in 0..nk {
            let j = (j0 + t) as i64;
            let lo = if params.causal != Causal::None { ((j - off - i0 as i64) * r).clamp(0, rows_i) } else { 0 };
            let hi = match params.window_left {
                Some(w) => ((j + w as i64 - off - i0 as i64 + 1) * r).clamp(0, rows_i),
                None => rows_i,
            };
            for m in (0..lo as usize).chain((hi.max(lo) as usize)..rows) {
                st[index(t, m)] = f32::NEG_INFINITY;
            }
        }
    }
}

/// Online softmax over the tile: new running max, `P = exp(S − m)` in place, `α = exp(m_old − m)`,
/// `l = α·l + Σ P`. A row whose max is still −∞ uses 0 as its reference (so −∞ − −∞ never occurs).
#[inline(always)]
fn softmax_update<S: Simd>(
    simd: S,
    mv: usize,
    nk_pad: usize,
    st: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    let st = S::as_mut_simd_f32s(st).0;
    let m = S::as_mut_simd_f32s(m).0;
    let l = S::as_mut_simd_f32s(l).0;
    let alpha = S::as_mut_simd_f32s(alpha).0;
    let neg_inf = simd.splat_f32s(f32::NEG_INFINITY);
    let zero = simd.splat_f32s(0.0);
    for v in 0..mv {
        let mut mx = m[v];
        for j in 0..nk_pad {
            mx = simd.max_f32s(mx, st[j * mv + v]);
        }
        let base = simd.select_f32s(simd.equal_f32s(mx, neg_inf), zero, mx);
        let a = exp_no_overflow_f32s(simd, simd.sub_f32s(m[v], base));
        let mut sum0 = zero;
        let mut sum1 = zero;
        let mut j = 0;
        while j + 1 < nk_pad {
            let p0 = exp_no_overflow_f32s(simd, simd.sub_f32s(st[j * mv + v], base));
            let p1 = exp_no_overflow_f32s(simd, simd.sub_f32s(st[(j + 1) * mv + v], base));
            st[j * mv + v] = p0;
            st[(j + 1) * mv + v] = p1;
            sum0 = simd.add_f32s(sum0, p0);
            sum1 = simd.add_f32s(sum1, p1);
            j += 2;
        }
        if j < nk_pad {
            let p0 = exp_no_overflow_f32s(simd, simd.sub_f32s(st[j * mv + v], base));
            st[j * mv + v] = p0;
            sum0 = simd.add_f32s(sum0, p0);
        }
        l[v] = simd.mul_add_e_f32s(l[v], a, simd.add_f32s(sum0, sum1));
        alpha[v] = a;
        m[v] = mx;
    }
}

/// `Oᵀ[c][·] = α·Oᵀ[c][·] + Σ_j V[j][c]·Pᵀ[j][·]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accumulate<S: Simd>(
    simd: S,
    pt: &[f32],
    vt: Tile,
    alpha: &[f32],
    dv_pad: usize,
    mv: usize,
    vmax: usize,
    nk: usize,
    ot: &mut [f32],
) {
    let pt = S::as_simd_f32s(pt).0;
    let alpha = S::as_simd_f32s(alpha).0;
    let ot = S::as_mut_simd_f32s(ot).0;
    for (c, width) in blocks(dv_pad, vmax) {
        let mut v0 = 0;
        while v0 < mv {
            let nv = (mv - v0).min(vmax);
            match (width, nv) {
                (AB_WIDE, 2) => accumulate_block::<S, AB_WIDE, 2>(simd, pt, vt, alpha, mv, v0, c, nk, ot),
                (AB_WIDE, _) => accumulate_block::<S, AB_WIDE, 1>(simd, pt, vt, alpha, mv, v0, c, nk, ot),
                (_, 4) => accumulate_block::<S, AB, 4>(simd, pt, vt, alpha, mv, v0, c, nk, ot),
                (_, 3) => accumulate_block::<S, AB, 3>(simd, pt, vt, alpha, mv, v0, c, nk, ot),
                (_, 2) => accumulate_block::<S, AB, 2>(simd, pt, vt, alpha, mv, v0, c, nk, ot),
                _ => accumulate_block::<S, AB, 1>(simd, pt, vt, alpha, mv, v0, c, nk, ot),
            }
            v0 += nv;
        }
    }
}

/// `Oᵀ` for value columns `c..c+A` and row vectors `v0..v0+V`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accumulate_block<S: Simd, const A: usize, const V: usize>(
    simd: S,
    pt: &[S::f32s],
    vt: Tile,
    alpha: &[S::f32s],
    mv: usize,
    v0: usize,
    c: usize,
    nk: usize,
    ot: &mut [S::f32s],
) {
    let mut acc = [[simd.splat_f32s(0.0); V]; A];
    for t in 0..A {
        for u in 0..V {
            acc[t][u] = simd.mul_f32s(ot[(c + t) * mv + v0 + u], alpha[v0 + u]);
        }
    }
    macro_rules! step {
        ($j:expr, $acc:expr) => {{
            let j = $j;
            let pv: &[S::f32s; V] = pt[j * mv + v0..j * mv + v0 + V].try_into().unwrap_or_else(|_| unreachable!());
            let vc: &[f32; A] =
                vt.data[j * vt.stride + c..j * vt.stride + c + A].try_into().unwrap_or_else(|_| unreachable!());
            for t in 0..A {
                let b = simd.splat_f32s(vc[t]);
                for u in 0..V {
                    $acc[t][u] = simd.mul_add_e_f32s(b, pv[u], $acc[t][u]);
                }
            }
        }};
    }
    let mut j = 0;
    if V == 1 {
        // As in `scores_block`: a second accumulator set (even/odd keys) hides FMA latency.
        let mut acc2 = [[simd.splat_f32s(0.0); V]; A];
        while j + 1 < nk {
            step!(j, acc);
            step!(j + 1, acc2);
            j += 2;
        }
        for t in 0..A {
            acc[t][0] = simd.add_f32s(acc[t][0], acc2[t][0]);
        }
    }
    while j < nk {
        step!(j, acc);
        j += 1;
    }
    for t in 0..A {
        ot[(c + t) * mv + v0..(c + t) * mv + v0 + V].copy_from_slice(&acc[t]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_tile_every_padded_length_exactly() {
        for vmax in [2, 4] {
            for n in (0..=520).step_by(AB) {
                let mut next = 0;
                let mut wide = 0;
                for (start, width) in blocks(n, vmax) {
                    assert_eq!(start, next, "n {n}, vmax {vmax}: blocks are contiguous");
                    assert!(width == AB || (width == AB_WIDE && vmax <= 2), "n {n}, vmax {vmax}: width {width}");
                    wide += usize::from(width == AB_WIDE);
                    next = start + width;
                }
                assert_eq!(next, n, "n {n}, vmax {vmax}: blocks cover the range");
                // All but at most two `AB` blocks are wide, where wide blocks are allowed.
                if vmax <= 2 {
                    assert!(n - wide * AB_WIDE <= 2 * AB, "n {n}: {wide} wide blocks");
                }
            }
        }
    }
}
