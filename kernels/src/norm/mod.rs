//! Fused residual add + LayerNorm / RMSNorm over rows:
//! `h = x [+ residual] [+ bias]`, `out = norm(h)·γ [+ β]`, optionally also writing `h`.
//!
//! Post-norm (BERT, `LN(x + sublayer(x))`) passes `sum_out = None`; pre-norm (GPT-2) passes
//! `sum_out` to receive the new residual stream `h` in the same pass. Statistics are computed
//! from `h` in f32, LayerNorm's around a shift near the mean (one pass, with a centred second
//! pass for rows where the shift is far off), never as `E[h²] − mean²`, so rows with a large
//! mean keep their accuracy.

use crate::dtype::{bf16, f16};
use crate::error::{Error, Result};
use crate::isa::{Isa, effective_isa, record_dispatch};
use crate::simd::aligned::AlignedVec;
use crate::simd::load::LoadF32;
use crate::simd::store::{StoreF32, StreamF32, elements_to_line, stream_fence, streams};
use crate::simd::vectorize;
use crate::tensor::{Data, DataMut, SharedOut, View, ViewMut};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;
use std::borrow::Cow;
use std::cell::Cell;

/// Which normalisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormKind {
    /// `(h − mean) / √(var + eps)`.
    #[default]
    LayerNorm,
    /// `h / √(mean(h²) + eps)`.
    RmsNorm,
}

/// The scalar settings of a norm call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormParams {
    /// LayerNorm or RMSNorm.
    pub kind: NormKind,
    /// Added to the variance (or mean square); must be finite and ≥ 0.
    pub eps: f32,
}

/// The inputs of a norm call: `x`, `residual` `[rows, hidden]`; `bias`, `gamma`, `beta` `[hidden]`.
#[derive(Clone, Copy, Debug)]
pub struct NormInputs<'a> {
    /// The sublayer output (or the only input).
    pub x: View<'a>,
    /// Added to `x` when present.
    pub residual: Option<View<'a>>,
    /// Added to `x` when present (the sublayer's bias, fused).
    pub bias: Option<View<'a>>,
    /// The scale γ.
    pub gamma: View<'a>,
    /// The shift β (LayerNorm's; also allowed for RMSNorm).
    pub beta: Option<View<'a>>,
}

/// The problem size of a validated norm call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormDims {
    /// Rows normalised independently.
    pub rows: usize,
    /// Elements per row.
    pub hidden: usize,
}

/// Checks every argument of a norm call and returns its dimensions.
pub fn check_args(
    inputs: &NormInputs,
    params: &NormParams,
    out: &ViewMut,
    sum_out: Option<&ViewMut>,
) -> Result<NormDims> {
    inputs.x.layout().require_rank("x", 2)?;
    let [rows, hidden] = [inputs.x.shape()[0], inputs.x.shape()[1]];
    let matrix_args = [Some(("x", inputs.x.layout())), inputs.residual.as_ref().map(|r| ("residual", r.layout()))];
    let output_args = [Some(("out", out.layout())), sum_out.map(|s| ("sum_out", s.layout()))];
    for (arg, layout) in matrix_args.into_iter().chain(output_args).flatten() {
        if layout.shape() != [rows, hidden] {
            return Err(Error::shape(arg, [rows, hidden], layout.shape()));
        }
        layout.require_inner_contiguous(arg)?;
    }
    let vector_args = [
        Some(("gamma", &inputs.gamma)),
        inputs.bias.as_ref().map(|b| ("bias", b)),
        inputs.beta.as_ref().map(|b| ("beta", b)),
    ];
    for (arg, view) in vector_args.into_iter().flatten() {
        if view.shape() != [hidden] {
            return Err(Error::shape(arg, [hidden], view.shape()));
        }
        view.layout().require_inner_contiguous(arg)?;
    }
    if !(params.eps >= 0.0 && params.eps.is_finite()) {
        return Err(Error::invalid("eps", format!("must be finite and >= 0, got {}", params.eps)));
    }
    Ok(NormDims { rows, hidden })
}

/// The per-row weights of the in-place variants: `bias`, `gamma`, `beta`, each `[hidden]`.
#[derive(Clone, Copy, Debug)]
pub struct NormWeights<'a> {
    /// Added to the sum before normalising (the sublayer's bias, fused).
    pub bias: Option<View<'a>>,
    /// The scale γ.
    pub gamma: View<'a>,
    /// The shift β.
    pub beta: Option<View<'a>>,
}

/// Elements per chunk of a row's passes (a multiple of every vector width, so chunking never
/// changes which lane an element accumulates in).
const CHUNK: usize = 512;
/// Elements of work per parallel piece: rows are grouped into blocks of about this size. The
/// block size depends only on `hidden`, never on the thread count (rows are independent, so
/// results are bit-identical for any split anyway).
const BLOCK_ELEMS: usize = 32 * 1024;
/// Below this many elements a call runs on the calling thread. Rayon's fork/join costs a few
/// microseconds; 64 Ki elements take ~10–40 µs here, so splitting smaller problems cannot pay.
/// (Estimated, not cleanly measured: the shared 2-core build machine was fully loaded.)
const PARALLEL_MIN_ELEMS: usize = 64 * 1024;
/// The one-pass LayerNorm variance is kept while `(mean − shift)² ≤` this `× var`, so it
/// errs by at most ~5× the two-pass rounding; beyond, the row takes a centred second pass.
/// (Shifting by the mean of the first vector, ordinary rows are far inside the bound.)
const ONE_PASS_MAX_SHIFT: f32 = 4.0;
/// Rows at least this long (per input, in bytes) have the next row prefetched.
const PREFETCH_MIN_ROW_BYTES: usize = 8 * 1024;
/// Outputs at least this large, of rows at least `PREFETCH_MIN_ROW_BYTES` long, are written
/// with streaming stores (see [`add_norm`]). Half the 32 MiB L3 of the machine this was tuned
/// on: with the inputs (at least as large again) passing through the cache beside it, such an
/// output would not stay cached for its reader anyway.
const STREAM_MIN_OUT_BYTES: usize = 16 << 20;

/// `h = x + residual + bias; out = norm(h)·γ + β`, writing `h` to `sum_out` when given.
///
/// Per row: `h` is formed in f32 (`(x + residual) + bias`, each input widened exactly, in
/// registers), the statistics are taken from `h` in f32 as it is formed (LayerNorm: `Σd` and
/// `Σd²` of `d = h − c` around `c`, the mean of the row's first vector; rows where `c` is far
/// from the mean get a second, centred pass while the row is in cache), and
/// `out` is rounded once to its dtype. `x + residual` is never written to memory and read back.
///
/// Edge cases, as the reference defines them: a row whose variance (LayerNorm) or mean square
/// (RMSNorm) is exactly 0 and `eps = 0` gives NaN (`0 · 1/√0`); with `eps > 0` such a row gives
/// `β` (or 0). Constant rows are detected exactly (their mean is the constant, their variance
/// 0). A NaN or ±∞ in a row makes that row's `out` NaN and touches no other row; `sum_out`
/// keeps the element-wise sums. Rows whose f32 sum overflows (|h| ≈ 10³⁸) are out of range.
///
/// An `out` of at least 16 MiB in rows of at least 8 KiB is written with streaming stores at
/// the AVX-512 level (whole 64-byte lines, not read into cache first): that saves the read of
/// every output line, a quarter of the memory traffic of an f32 call, but leaves `out` in memory
/// rather than in cache. The values are the same either way.
///
/// ISA: one body for every level (pulp's V4 / V3 / scalar; `avx512bf16` runs the AVX-512 one);
/// 16-bit outputs are rounded in registers, nearest-even, subnormals kept. Rows are
/// independent, so results are bit-identical for any thread count.
pub fn add_norm(
    inputs: &NormInputs,
    params: &NormParams,
    out: &mut ViewMut,
    sum_out: Option<&mut ViewMut>,
) -> Result<()> {
    let dims = check_args(inputs, params, out, sum_out.as_deref())?;
    let isa = effective_isa();
    let plan = Plan::new(
        dims,
        params,
        Source::Input(inputs.x),
        inputs.residual.map(Source::Input),
        &NormWeights { bias: inputs.bias, gamma: inputs.gamma, beta: inputs.beta },
        out.shared(),
        sum_out.map(|s| s.shared()),
        isa,
    );
    plan.run(isa);
    Ok(())
}

/// Post-norm for engines with one buffer: `inout ← norm(inout + other + bias)·γ + β`.
///
/// The result overwrites `inout`. Addition commutes exactly in f32, so this serves both
/// "the output overwrites x" (`inout` = x, `other` = the residual) and "the output overwrites
/// the residual stream" (`inout` = residual, `other` = the sublayer output, BERT's
/// `hidden = LN(sublayer + hidden)`); either way it equals [`add_norm`] bit for bit.
/// `other = None` is a plain in-place LayerNorm/RMSNorm. In errors `inout` is named `x`
/// (and `out`), `other` `residual`.
pub fn add_norm_in_place(
    inout: &mut ViewMut,
    other: Option<&View>,
    weights: &NormWeights,
    params: &NormParams,
) -> Result<()> {
    let inputs = NormInputs {
        x: inout.as_view(),
        residual: other.copied(),
        bias: weights.bias,
        gamma: weights.gamma,
        beta: weights.beta,
    };
    let dims = check_args(&inputs, params, inout, None)?;
    let isa = effective_isa();
    let plan =
        Plan::new(dims, params, Source::Out, other.copied().map(Source::Input), weights, inout.shared(), None, isa);
    plan.run(isa);
    Ok(())
}

/// Pre-norm for engines with one residual buffer: `residual ← h = x + residual + bias`, and
/// `out = norm(h)·γ + β`, in one pass (GPT-2's `h = h + sublayer(ln(h))` followed by the next
/// `ln`).
///
/// Equals [`add_norm`] with `sum_out` = the residual, bit for bit. Passing the sublayer output
/// as `residual` and the stream as `x` is equally valid (addition commutes exactly).
pub fn add_norm_update_residual(
    x: &View,
    residual: &mut ViewMut,
    weights: &NormWeights,
    params: &NormParams,
    out: &mut ViewMut,
) -> Result<()> {
    let inputs = NormInputs {
        x: *x,
        residual: Some(residual.as_view()),
        bias: weights.bias,
        gamma: weights.gamma,
        beta: weights.beta,
    };
    let dims = check_args(&inputs, params, out, Some(residual))?;
    let isa = effective_isa();
    let plan = Plan::new(
        dims,
        params,
        Source::Input(*x),
        Some(Source::Sum),
        weights,
        out.shared(),
        Some(residual.shared()),
        isa,
    );
    plan.run(isa);
    Ok(())
}

/// Where a matrix operand's rows come from: a read-only view, or the output (`Out`) or the
/// sum output (`Sum`) read before this row of it is written (the in-place variants).
#[derive(Clone, Copy)]
enum Source<'a> {
    Input(View<'a>),
    Out,
    Sum,
}

/// A validated call: everything the row tasks need, shared by reference across them.
struct Plan<'a> {
    rows: usize,
    hidden: usize,
    kind: NormKind,
    eps: f32,
    x: Source<'a>,
    residual: Option<Source<'a>>,
    bias: Option<Cow<'a, [f32]>>,
    gamma: Cow<'a, [f32]>,
    beta: Option<Cow<'a, [f32]>>,
    out: SharedOut<'a>,
    sum: Option<SharedOut<'a>>,
    /// The input views whose next row is prefetched while a row is stored (wide rows only).
    prefetched: [Option<View<'a>>; 2],
    /// Whether each chunk of `out` is hinted for writing while pass 1 runs (wide rows only).
    prefetch_out: bool,
    /// Whether `out` is written with streaming stores (large outputs only).
    stream_out: bool,
}

/// A `[hidden]` vector as f32: borrowed when it is f32 already, widened once otherwise.
fn vector_f32<'a>(view: View<'a>, hidden: usize, isa: Isa) -> Cow<'a, [f32]> {
    let data = view.data();
    match data {
        Data::F32(s) => Cow::Borrowed(&s[..hidden]),
        _ => {
            let mut widened = vec![0f32; hidden];
            data.widen(0, &mut widened, isa);
            Cow::Owned(widened)
        }
    }
}

impl<'a> Plan<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        dims: NormDims,
        params: &NormParams,
        x: Source<'a>,
        residual: Option<Source<'a>>,
        weights: &NormWeights<'a>,
        out: SharedOut<'a>,
        sum: Option<SharedOut<'a>>,
        isa: Isa,
    ) -> Self {
        let hidden = dims.hidden;
        // Only wide rows need it: the hardware prefetchers follow rows of a few KiB on their
        // own (hinting them measured 8–11 % slower in cache, no faster from DRAM), but not
        // 16 KiB ones. The same holds for the output's write-allocate reads: hinting `out`
        // for writing made 2048 × 4096 rows 4–7 % faster (f32, bf16) and 16384 × 768 ones
        // 15 % slower.
        let wide_input = |src: Option<Source<'a>>| match src {
            Some(Source::Input(view)) if hidden * view.dtype().size() >= PREFETCH_MIN_ROW_BYTES => Some(view),
            _ => None,
        };
        // Streaming `out` (whole lines, never read in) measured 11-22 % faster on 2048 × 4096
        // rows (f32, bf16, f16; 1 and 2 threads) but no faster on 16384 × 768 ones (f32) and
        // 17-36 % slower there for bf16 at 1 thread, so it too is for wide rows only.
        let wide_out = hidden * out.dtype().size() >= PREFETCH_MIN_ROW_BYTES;
        let stream_out =
            wide_out && dims.rows.saturating_mul(hidden).saturating_mul(out.dtype().size()) >= STREAM_MIN_OUT_BYTES;
        Plan {
            prefetched: [wide_input(Some(x)), wide_input(residual)],
            // Streamed lines are never read, so there is nothing to fetch for writing.
            prefetch_out: wide_out && !stream_out,
            stream_out,
            rows: dims.rows,
            hidden,
            kind: params.kind,
            eps: params.eps,
            x,
            residual,
            bias: weights.bias.map(|b| vector_f32(b, hidden, isa)),
            gamma: vector_f32(weights.gamma, hidden, isa),
            beta: weights.beta.map(|b| vector_f32(b, hidden, isa)),
            out,
            sum,
        }
    }

    fn run(&self, isa: Isa) {
        let top = isa.min(Isa::Avx512);
        record_dispatch(top);
        if self.rows == 0 || self.hidden == 0 {
            return;
        }
        let block_rows = (BLOCK_ELEMS / self.hidden).max(1);
        let blocks = self.rows.div_ceil(block_rows);
        let run_block = |scratch: &mut Scratch, block: usize| {
            let rows = block * block_rows..((block + 1) * block_rows).min(self.rows);
            vectorize(top, Block { plan: self, rows, scratch, isa: top });
        };
        if blocks > 1 && self.rows * self.hidden >= PARALLEL_MIN_ELEMS && rayon::current_num_threads() > 1 {
            (0..blocks).into_par_iter().for_each(|block| with_scratch(self.hidden, |s| run_block(s, block)));
        } else {
            with_scratch(self.hidden, |s| (0..blocks).for_each(|block| run_block(s, block)));
        }
    }

    /// The element offset of `row` in a matrix operand.
    #[inline(always)]
    fn row_offset(&self, src: Source, row: usize) -> usize {
        let stride = match src {
            Source::Input(view) => view.strides()[0],
            Source::Out => self.out.layout().strides()[0],
            Source::Sum => self.sum.as_ref().map_or(0, |s| s.layout().strides()[0]),
        };
        row * stride
    }

    /// Elements `c0..c0 + len` of `row` of `src`, in their stored dtype.
    ///
    /// For `Out`/`Sum` the caller must own `row` (no other task touches it) and must not hold
    /// a write to the same run while the returned slice lives.
    #[inline(always)]
    fn read<'s>(&'s self, src: Source<'s>, row: usize, c0: usize, len: usize) -> Operand<'s> {
        let offset = self.row_offset(src, row) + c0;
        let shared = match src {
            Source::Input(view) => {
                return match view.data() {
                    Data::F32(s) => Operand::F32(&s[offset..offset + len]),
                    Data::BF16(s) => Operand::BF16(&s[offset..offset + len]),
                    Data::F16(s) => Operand::F16(&s[offset..offset + len]),
                };
            }
            Source::Out => &self.out,
            Source::Sum => self.sum.as_ref().expect("a Sum source comes with sum_out"),
        };
        // SAFETY: the row belongs to the calling task (blocks of rows are disjoint and each
        // is processed by one task), and the row's writes happen only after this read's slice
        // is last used (see `form_row`: `out` is written by `finish_row`, after the row is formed,
        // and `sum_out` after each chunk's reads), so no access to this run overlaps this one.
        match unsafe { shared.run(offset, len) } {
            DataMut::F32(run) => Operand::F32(run),
            DataMut::BF16(run) => Operand::BF16(run),
            DataMut::F16(run) => Operand::F16(run),
        }
    }
}

/// A chunk of a matrix operand's row in its stored dtype: pass 1 widens it in registers.
#[derive(Clone, Copy)]
enum Operand<'s> {
    F32(&'s [f32]),
    BF16(&'s [bf16]),
    F16(&'s [f16]),
}

/// Per-thread buffers: `h` (f32) of the row being formed and of the row being stored.
#[derive(Default)]
struct Scratch {
    h: [AlignedVec; 2],
}

thread_local! {
    /// Each thread's [`Scratch`], kept between calls: allocating and zeroing it per call cost
    /// ~15 % of a one-row call (GPT-2's per-token norms).
    static SCRATCH: Cell<Scratch> = const { Cell::new(Scratch { h: [AlignedVec::EMPTY, AlignedVec::EMPTY] }) };
}

/// Runs `f` with this thread's scratch, `hidden` long. Its contents are stale: pass 1 writes
/// a row's `h` whole before anything reads it. (A nested call, were there one, would find the
/// slot empty and allocate its own.)
fn with_scratch<R>(hidden: usize, f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut scratch = SCRATCH.take();
    for h in &mut scratch.h {
        h.resize_uninit(hidden);
    }
    let result = f(&mut scratch);
    SCRATCH.set(scratch);
    result
}

/// One block of rows, run under one SIMD backend.
struct Block<'p, 's> {
    plan: &'p Plan<'p>,
    rows: std::ops::Range<usize>,
    scratch: &'s mut Scratch,
    isa: Isa,
}

impl WithSimd for Block<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // Each row is stored one row late: its statistics' reductions, division and square
        // root are a long dependency chain that pass 3 waits on, and with the next row's
        // pass 1 between them in program order the core overlaps the two.
        let plan = self.plan;
        let [h_even, h_odd] = &mut self.scratch.h;
        let mut formed: Option<(usize, RowStats)> = None;
        for row in self.rows.clone() {
            let (h_this, h_last) = if row % 2 == 0 { (&mut *h_even, &*h_odd) } else { (&mut *h_odd, &*h_even) };
            let stats = form_row(simd, plan, row, h_this, self.isa);
            if let Some((last, last_stats)) = formed {
                finish_row(simd, plan, last, h_last, last_stats);
            }
            formed = Some((row, stats));
        }
        if let Some((last, last_stats)) = formed {
            finish_row(simd, plan, last, if last % 2 == 0 { h_even } else { h_odd }, last_stats);
        }
        if self.plan.stream_out {
            stream_fence();
        }
    }
}

/// Running statistics of pass 1, from two vector accumulators each (alternating, to halve
/// the add chains) plus the scalar tail.
///
/// LayerNorm sums `d = h − c` and `d²` around a shift `c`: the mean of the row's first vector
/// (its first element when the row is shorter than a vector). With `c` near the mean, one pass
/// gives the variance `Σd²/n − (Σd/n)²` without the cancellation of `E[h²] − mean²`; a
/// constant row gives `d = 0` exactly (the mean of a vector of equal values, summed as a tree
/// of powers of two, is that value), hence variance 0 and mean `c` exactly. RMSNorm
/// (`SQUARE`) sums `h²` only.
struct Pass1<S: Simd> {
    /// `c`; `None` until the row's first value is seen.
    shift: Option<f32>,
    sum: (S::f32s, S::f32s),
    squares: (S::f32s, S::f32s),
    tail_sum: f32,
    tail_squares: f32,
}

impl<S: Simd> Pass1<S> {
    #[inline(always)]
    fn new(simd: S) -> Self {
        let zero = simd.splat_f32s(0.0);
        Pass1 { shift: None, sum: (zero, zero), squares: (zero, zero), tail_sum: 0.0, tail_squares: 0.0 }
    }

    /// Sets the shift from the row's first vector, returning it splat.
    #[inline(always)]
    fn shift_from(&mut self, simd: S, first: S::f32s) -> S::f32s {
        let c = simd.reduce_sum_f32s(first) / S::F32_LANES as f32;
        self.shift = Some(c);
        simd.splat_f32s(c)
    }

    /// Feeds the vectors of `h` (the iterator may store them as it yields) and the scalar tail.
    ///
    /// The shift is taken from the first vector inside the loop (a predictable branch): any
    /// second call of the iterator's closure (to peek at that vector first) measured outlined,
    /// with every vector operation in it a function call.
    #[inline(always)]
    fn feed<const SQUARE: bool>(
        &mut self,
        simd: S,
        vectors: impl Iterator<Item = S::f32s>,
        tail: impl Iterator<Item = f32>,
    ) {
        let mut c = self.shift.map(|c| simd.splat_f32s(c));
        let (mut s0, mut s1) = self.sum;
        let (mut q0, mut q1) = self.squares;
        for v in vectors {
            if SQUARE {
                q0 = simd.mul_add_e_f32s(v, v, q0);
            } else {
                let c = *c.get_or_insert_with(|| self.shift_from(simd, v));
                let d = simd.sub_f32s(v, c);
                s0 = simd.add_f32s(s0, d);
                q0 = simd.mul_add_e_f32s(d, d, q0);
            }
            std::mem::swap(&mut s0, &mut s1);
            std::mem::swap(&mut q0, &mut q1);
        }
        (self.sum, self.squares) = ((s0, s1), (q0, q1));
        self.feed_tail::<SQUARE>(tail);
    }

    #[inline(always)]
    fn feed_tail<const SQUARE: bool>(&mut self, tail: impl Iterator<Item = f32>) {
        for v in tail {
            if SQUARE {
                self.tail_squares += v * v;
            } else {
                let d = v - *self.shift.get_or_insert(v);
                self.tail_sum += d;
                self.tail_squares += d * d;
            }
        }
    }

    /// (Σd, Σd², c) for LayerNorm, (0, Σh², 0) for RMSNorm, over everything fed.
    #[inline(always)]
    fn finish(&self, simd: S) -> (f32, f32, f32) {
        let fold = |(a, b): (S::f32s, S::f32s)| simd.reduce_sum_f32s(simd.add_f32s(a, b));
        let shift = self.shift.unwrap_or(0.0);
        (fold(self.sum) + self.tail_sum, fold(self.squares) + self.tail_squares, shift)
    }
}

/// `h = x [+ r] [+ b]` for one chunk, feeding the statistics; `x` and `r` in any dtype.
#[inline(always)]
fn add_operands<S: Simd, const SQUARE: bool>(
    simd: S,
    x: Operand,
    r: Option<Operand>,
    b: Option<&[f32]>,
    h: &mut [f32],
    acc: &mut Pass1<S>,
) {
    macro_rules! with_x {
        ($r:expr, $R:ty) => {
            match x {
                Operand::F32(x) => add_chunk::<S, f32, $R, SQUARE>(simd, x, $r, b, h, acc),
                Operand::BF16(x) => add_chunk::<S, bf16, $R, SQUARE>(simd, x, $r, b, h, acc),
                Operand::F16(x) => add_chunk::<S, f16, $R, SQUARE>(simd, x, $r, b, h, acc),
            }
        };
    }
    match r {
        None => with_x!(None::<&[f32]>, f32),
        Some(Operand::F32(r)) => with_x!(Some(r), f32),
        Some(Operand::BF16(r)) => with_x!(Some(r), bf16),
        Some(Operand::F16(r)) => with_x!(Some(r), f16),
    }
}

/// [`add_operands`] for one pair of dtypes: stores `h` while feeding the statistics.
///
/// The vectors walk exact chunks of every operand, so the loop carries no bounds checks, and
/// each arm loads in the one closure that stores `h`: a load in a closure of its own (an inner
/// `map`) measured outlined for f16, a call per vector.
#[inline(always)]
fn add_chunk<S: Simd, X: LoadF32, R: LoadF32, const SQUARE: bool>(
    simd: S,
    x: &[X],
    r: Option<&[R]>,
    b: Option<&[f32]>,
    h: &mut [f32],
    acc: &mut Pass1<S>,
) {
    let (n, lanes) = (h.len(), S::F32_LANES);
    let tail_start = n / lanes * lanes;
    let (hv, ht) = S::as_mut_simd_f32s(h);
    let xc = x[..n].chunks_exact(lanes);
    let tail = ht.iter_mut().zip(tail_start..);
    match (r, b) {
        (Some(r), Some(b)) => {
            let (rc, bv) = (r[..n].chunks_exact(lanes), S::as_simd_f32s(&b[..n]).0);
            let vectors = hv.iter_mut().zip(xc.zip(rc).zip(bv)).map(|(h, ((x, r), &b))| {
                let sum = simd.add_f32s(X::load_f32s(simd, x, 0), R::load_f32s(simd, r, 0));
                *h = simd.add_f32s(sum, b);
                *h
            });
            let tail = tail.map(|(h, i)| {
                *h = (x[i].to_f32() + r[i].to_f32()) + b[i];
                *h
            });
            acc.feed::<SQUARE>(simd, vectors, tail);
        }
        (Some(r), None) => {
            let rc = r[..n].chunks_exact(lanes);
            let vectors = hv.iter_mut().zip(xc.zip(rc)).map(|(h, (x, r))| {
                *h = simd.add_f32s(X::load_f32s(simd, x, 0), R::load_f32s(simd, r, 0));
                *h
            });
            let tail = tail.map(|(h, i)| {
                *h = x[i].to_f32() + r[i].to_f32();
                *h
            });
            acc.feed::<SQUARE>(simd, vectors, tail);
        }
        (None, Some(b)) => {
            let bv = S::as_simd_f32s(&b[..n]).0;
            let vectors = hv.iter_mut().zip(xc.zip(bv)).map(|(h, (x, &b))| {
                *h = simd.add_f32s(X::load_f32s(simd, x, 0), b);
                *h
            });
            let tail = tail.map(|(h, i)| {
                *h = x[i].to_f32() + b[i];
                *h
            });
            acc.feed::<SQUARE>(simd, vectors, tail);
        }
        (None, None) => {
            let vectors = hv.iter_mut().zip(xc).map(|(h, x)| {
                *h = X::load_f32s(simd, x, 0);
                *h
            });
            let tail = tail.map(|(h, i)| {
                *h = x[i].to_f32();
                *h
            });
            acc.feed::<SQUARE>(simd, vectors, tail);
        }
    }
}

/// The centred second pass of LayerNorm: `(Σ(h − m), Σ(h − m)²)` with four accumulators each.
#[inline(always)]
fn centred_sums<S: Simd>(simd: S, h: &[f32], m: f32) -> (f32, f32) {
    let (hv, ht) = S::as_simd_f32s(h);
    let mv = simd.splat_f32s(m);
    let zero = simd.splat_f32s(0.0);
    let (mut s1, mut s2) = ([zero; 4], [zero; 4]);
    let quads = hv.chunks_exact(4);
    let rest = quads.remainder();
    for quad in quads {
        for (k, &v) in quad.iter().enumerate() {
            let d = simd.sub_f32s(v, mv);
            s1[k] = simd.add_f32s(s1[k], d);
            s2[k] = simd.mul_add_e_f32s(d, d, s2[k]);
        }
    }
    for &v in rest {
        let d = simd.sub_f32s(v, mv);
        s1[0] = simd.add_f32s(s1[0], d);
        s2[0] = simd.mul_add_e_f32s(d, d, s2[0]);
    }
    let fold =
        |s: [S::f32s; 4]| simd.reduce_sum_f32s(simd.add_f32s(simd.add_f32s(s[0], s[1]), simd.add_f32s(s[2], s[3])));
    let (mut t1, mut t2) = (fold(s1), fold(s2));
    for &v in ht {
        let d = v - m;
        t1 += d;
        t2 += d * d;
    }
    (t1, t2)
}

/// [`scale_chunk`] with streaming stores, two vectors at a time: `range` holds whole 32-element
/// runs and `y` (its output) starts on a 64-byte boundary. Only called where [`streams`] holds.
#[inline(always)]
fn stream_chunk<S: Simd, O: StreamF32>(simd: S, scaling: &Scaling, range: std::ops::Range<usize>, y: &mut [O]) {
    let (mv, iv) = (simd.splat_f32s(scaling.mean), simd.splat_f32s(scaling.inv));
    let hv = S::as_simd_f32s(&scaling.h[range.clone()]).0;
    let gv = S::as_simd_f32s(&scaling.gamma[range.clone()]).0;
    // Macros, not closures: closures are not inlined into pulp's target-feature context.
    macro_rules! normalised {
        ($i:expr) => {
            simd.mul_f32s(simd.sub_f32s(hv[$i], mv), iv)
        };
    }
    match scaling.beta {
        Some(beta) => {
            let bv = S::as_simd_f32s(&beta[range]).0;
            for (i, y) in (0..hv.len()).step_by(2).zip(y.chunks_exact_mut(32)) {
                let v0 = simd.mul_add_e_f32s(normalised!(i), gv[i], bv[i]);
                let v1 = simd.mul_add_e_f32s(normalised!(i + 1), gv[i + 1], bv[i + 1]);
                O::stream32(simd, [v0, v1], y);
            }
        }
        None => {
            for (i, y) in (0..hv.len()).step_by(2).zip(y.chunks_exact_mut(32)) {
                let v0 = simd.mul_f32s(normalised!(i), gv[i]);
                let v1 = simd.mul_f32s(normalised!(i + 1), gv[i + 1]);
                O::stream32(simd, [v0, v1], y);
            }
        }
    }
}

/// Pass 3: `y = (h − mean)·inv·γ [+ β]`, rounded to `y`'s dtype in registers, two vectors
/// at a time (bf16 rounds a pair in fewer instructions than two singles).
#[inline(always)]
fn scale_chunk<S: Simd, O: StoreF32>(
    simd: S,
    h: &[f32],
    mean: f32,
    inv: f32,
    gamma: &[f32],
    beta: Option<&[f32]>,
    y: &mut [O],
) {
    let lanes = S::F32_LANES;
    let (hv, ht) = S::as_simd_f32s(h);
    let (gv, gt) = S::as_simd_f32s(gamma);
    let (mv, iv) = (simd.splat_f32s(mean), simd.splat_f32s(inv));
    // `y` as its pairs of vectors, then the rest (an odd last vector, then the scalar tail).
    let (y_pairs, y_rest) = y.split_at_mut(hv.len() / 2 * 2 * lanes);
    let odd = hv.len() % 2 == 1;
    // Macros, not closures: closures are not inlined into pulp's target-feature context.
    macro_rules! normalised {
        ($h:expr) => {
            simd.mul_f32s(simd.sub_f32s($h, mv), iv)
        };
    }
    // The pairs walk exact chunks of every operand, so the loop carries no bounds checks.
    match beta {
        Some(beta) => {
            let (bv, bt) = S::as_simd_f32s(beta);
            macro_rules! value {
                ($h:expr, $g:expr, $b:expr) => {
                    simd.mul_add_e_f32s(normalised!($h), $g, $b)
                };
            }
            let pairs = hv.chunks_exact(2).zip(gv.chunks_exact(2)).zip(bv.chunks_exact(2));
            for (((h, g), b), y) in pairs.zip(y_pairs.chunks_exact_mut(2 * lanes)) {
                O::store2_f32s(simd, [value!(h[0], g[0], b[0]), value!(h[1], g[1], b[1])], y, 0);
            }
            if odd {
                let i = hv.len() - 1;
                O::store_f32s(simd, value!(hv[i], gv[i], bv[i]), y_rest, 0);
            }
            let y_tail = &mut y_rest[if odd { lanes } else { 0 }..];
            for (y, ((&h, &g), &b)) in y_tail.iter_mut().zip(ht.iter().zip(gt).zip(bt)) {
                *y = O::from_f32(((h - mean) * inv).mul_add(g, b));
            }
        }
        None => {
            macro_rules! value {
                ($h:expr, $g:expr) => {
                    simd.mul_f32s(normalised!($h), $g)
                };
            }
            for ((h, g), y) in hv.chunks_exact(2).zip(gv.chunks_exact(2)).zip(y_pairs.chunks_exact_mut(2 * lanes)) {
                O::store2_f32s(simd, [value!(h[0], g[0]), value!(h[1], g[1])], y, 0);
            }
            if odd {
                let i = hv.len() - 1;
                O::store_f32s(simd, value!(hv[i], gv[i]), y_rest, 0);
            }
            let y_tail = &mut y_rest[if odd { lanes } else { 0 }..];
            for (y, (&h, &g)) in y_tail.iter_mut().zip(ht.iter().zip(gt)) {
                *y = O::from_f32((h - mean) * inv * g);
            }
        }
    }
}

/// A plain norm of an f32 input view reads its rows in place (`Some(row)`); everything else
/// forms `h` in the scratch.
#[inline(always)]
fn direct_row<'p>(plan: &'p Plan, row: usize) -> Option<&'p [f32]> {
    match (plan.x, plan.residual, &plan.bias, &plan.sum) {
        (Source::Input(view), None, None, None) => match view.data() {
            Data::F32(s) => {
                let offset = plan.row_offset(plan.x, row);
                Some(&s[offset..offset + plan.hidden])
            }
            _ => None,
        },
        _ => None,
    }
}

/// A formed row's statistics: `out = (h − mean)·inv·γ [+ β]`.
#[derive(Clone, Copy)]
struct RowStats {
    mean: f32,
    inv: f32,
}

/// Passes 1 and 2 of a row: form `h` into `h_buf` (unless the row is read in place), with its
/// statistics and the `sum_out` store, and the centred variance where the one-pass one would
/// be inaccurate (LayerNorm).
#[inline(always)]
fn form_row<S: Simd>(simd: S, plan: &Plan, row: usize, h_buf: &mut [f32], isa: Isa) -> RowStats {
    let n = plan.hidden;
    let square = plan.kind == NormKind::RmsNorm;
    let mut acc = Pass1::new(simd);
    let h: &[f32] = match direct_row(plan, row) {
        Some(h) => {
            let (hv, ht) = S::as_simd_f32s(h);
            if square {
                acc.feed::<true>(simd, hv.iter().copied(), ht.iter().copied());
            } else {
                acc.feed::<false>(simd, hv.iter().copied(), ht.iter().copied());
            }
            h
        }
        None => {
            for c0 in (0..n).step_by(CHUNK) {
                let len = CHUNK.min(n - c0);
                // This chunk of `out` is fetched for writing while `h` is formed, so that
                // pass 3's stores find their lines in cache (wide rows only).
                if plan.prefetch_out {
                    let (start, bytes) = plan.out.run_bytes(plan.row_offset(Source::Out, row) + c0, len);
                    crate::simd::prefetch::l1_for_write_range(start, bytes);
                }
                let x = plan.read(plan.x, row, c0, len);
                let r = plan.residual.map(|src| plan.read(src, row, c0, len));
                let b = plan.bias.as_deref().map(|b| &b[c0..c0 + len]);
                let h_chunk = &mut h_buf[c0..c0 + len];
                if square {
                    add_operands::<S, true>(simd, x, r, b, h_chunk, &mut acc);
                } else {
                    add_operands::<S, false>(simd, x, r, b, h_chunk, &mut acc);
                }
                if let Some(sum) = &plan.sum {
                    let offset = plan.row_offset(Source::Sum, row) + c0;
                    // SAFETY: this task owns the row; the reads of this run above (`r` when
                    // the residual is the sum buffer) are no longer used.
                    unsafe { sum.run(offset, len) }.store(0, &h_buf[c0..c0 + len], isa);
                }
            }
            h_buf
        }
    };
    let (sum, squares, shift) = acc.finish(simd);
    let count = n as f32;
    let (mean, inv) = match plan.kind {
        NormKind::LayerNorm => {
            let z = sum / count;
            let mut mean = shift + z;
            let mut var = squares / count - z * z;
            // The one-pass variance loses `(1 + z²/var)·u` relative; when the shift sits far
            // from the mean (an outlying first vector) take the centred second pass instead.
            // A NaN row takes the second pass too, and stays NaN.
            let one_pass_is_accurate = z * z <= ONE_PASS_MAX_SHIFT * var;
            if !one_pass_is_accurate {
                let (s1, s2) = centred_sums(simd, h, mean);
                let correction = s1 / count;
                var = s2 / count - correction * correction;
                mean += correction;
            }
            // Not `max(0.0)`: that would turn a NaN variance into 0.
            let var = if var < 0.0 { 0.0 } else { var };
            (mean, 1.0 / (var + plan.eps).sqrt())
        }
        NormKind::RmsNorm => (0.0, 1.0 / (squares / count + plan.eps).sqrt()),
    };
    RowStats { mean, inv }
}

/// Pass 3 of a row formed by [`form_row`] into `h_buf` (or read in place): scale, shift and
/// store `out`.
#[inline(always)]
fn finish_row<S: Simd>(simd: S, plan: &Plan, row: usize, h_buf: &[f32], RowStats { mean, inv }: RowStats) {
    let h = direct_row(plan, row).unwrap_or(h_buf);
    let out_offset = plan.row_offset(Source::Out, row);
    let scaling = Scaling { h, mean, inv, gamma: &plan.gamma, beta: plan.beta.as_deref() };
    // SAFETY: this task owns the row; `h` is in the scratch (or a read-only input), so no
    // slice read from this run is alive.
    match unsafe { plan.out.run(out_offset, plan.hidden) } {
        DataMut::F32(y) => store_row(simd, plan, row, &scaling, y),
        DataMut::BF16(y) => store_row(simd, plan, row, &scaling, y),
        DataMut::F16(y) => store_row(simd, plan, row, &scaling, y),
    }
}

/// Pass 3's inputs for one row: `out = (h − mean)·inv·γ [+ β]`.
struct Scaling<'r> {
    h: &'r [f32],
    mean: f32,
    inv: f32,
    gamma: &'r [f32],
    beta: Option<&'r [f32]>,
}

impl Scaling<'_> {
    /// Elements `range` of the row into `y` (`y.len() == range.len()`), stored normally.
    #[inline(always)]
    fn store<S: Simd, O: StoreF32>(&self, simd: S, range: std::ops::Range<usize>, y: &mut [O]) {
        let beta = self.beta.map(|b| &b[range.clone()]);
        scale_chunk(simd, &self.h[range.clone()], self.mean, self.inv, &self.gamma[range], beta, y);
    }
}

/// Pass 3 for one row: scale, shift and store `y` (the whole output row) chunk by chunk,
/// hinting the next row's wide inputs as it goes. A streamed row writes its 64-byte lines with
/// streaming stores and its unaligned ends with ordinary stores confined to the lines the
/// streams leave alone: an ordinary store into a streamed line measured 1.7× slower than no
/// streaming at all.
#[inline(always)]
fn store_row<S: Simd, O: StreamF32>(simd: S, plan: &Plan, row: usize, scaling: &Scaling, y: &mut [O]) {
    const RUN: usize = 32;
    let n = y.len();
    // The streamed lines: `first..last`, whole 32-element runs from the first 64-byte boundary.
    let first = elements_to_line(y);
    if !(plan.stream_out && streams::<S>() && n >= first + 2 * RUN) {
        for c0 in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - c0);
            prefetch_next_row(plan, row, c0, len);
            scaling.store(simd, c0..c0 + len, &mut y[c0..c0 + len]);
        }
        return;
    }
    let last = first + (n - first) / RUN * RUN;
    // Each end is computed as a whole run into `ends`, then only its own elements are copied.
    let mut ends = [O::default(); RUN];
    scaling.store(simd, 0..RUN, &mut ends);
    y[..first].copy_from_slice(&ends[..first]);
    for c0 in (first..last).step_by(CHUNK) {
        let len = CHUNK.min(last - c0);
        prefetch_next_row(plan, row, c0, len);
        stream_chunk(simd, scaling, c0..c0 + len, &mut y[c0..c0 + len]);
    }
    scaling.store(simd, n - RUN..n, &mut ends);
    y[last..].copy_from_slice(&ends[RUN - (n - last)..]);
}

/// Hints elements `c0..c0 + len` of the row after `row` of the wide inputs into L2 (they
/// stream in while this row is stored).
#[inline(always)]
fn prefetch_next_row(plan: &Plan, row: usize, c0: usize, len: usize) {
    if row + 1 < plan.rows {
        for view in plan.prefetched.iter().flatten() {
            prefetch(view.data(), (row + 1) * view.strides()[0] + c0, len);
        }
    }
}

/// Hints the cache lines of elements `offset..offset + len` of `data` into L2 (a wide row pair
/// would not fit L1).
#[inline(always)]
fn prefetch(data: Data, offset: usize, len: usize) {
    let (start, bytes) = match data {
        Data::F32(s) => (s[offset..offset + len].as_ptr().cast::<u8>(), len * 4),
        Data::F16(s) => (s[offset..offset + len].as_ptr().cast::<u8>(), len * 2),
        Data::BF16(s) => (s[offset..offset + len].as_ptr().cast::<u8>(), len * 2),
    };
    crate::simd::prefetch::l2_range(start, bytes);
}
