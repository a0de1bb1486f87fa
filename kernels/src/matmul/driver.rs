//! The blocked, threaded driver over packed operands, and the fused epilogue.
//!
//! C is cut into a grid of tasks (`mt` rows × `ntp` B panels) set by the problem shape (and,
//! for skinny problems only, by whether the pool has more than one thread). A task accumulates
//! its tile over K blocks of `KC` into an f32 scratch tile (so 16-bit outputs are rounded
//! once, at the end), then applies `α·acc (+ β·C) (+ bias)`, the activation, and stores. Tasks
//! never share output elements, no reduction crosses tasks, and every element is summed in the
//! same order whichever task holds it, so results are bit-identical for any grid and pool size.
//!
//! Blocking (Zen 4: 32 KiB L1d, 1 MiB L2 per core): a B micro-panel `KC × NR` f32 is
//! 96·64·4 = 24 KiB and stays in L1 while the task's A panels (`MR × KC`, 2.3 KiB each) stream
//! from L2; the task's B block (`KC × 8·NR` = 192 KiB) and scratch (`≤ 120 × 512` f32 = 240 KiB)
//! stay in L2. KC = 64 and 128 measured no better. While a block computes, its micro-tiles
//! hint the task's next B block into L2 ([`NextBlock`]), each a share: skinny problems use each
//! block for only a few tiles, so without it they wait on B from DRAM (MiniLM at 16 tokens,
//! 1 thread, Zen 5: 3.5–3.8 → 2.0 ms).

use super::MatmulParams;
use super::activation::activate;
use super::kernel::{NR, NextBlock, Pairs, Panel, Rows, tile_rows};
use crate::isa::Isa;
use crate::simd::store::StoreF32;
use crate::tensor::{DataMut, SharedOut, View};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;
use std::cell::Cell;

/// The K block.
const KC: usize = 96;
/// About the most rows per task (MT = 120 measured ≈ 8 % faster than 60 on sq2048: each B block
/// fetched into L2 serves twice the rows).
const MT: usize = 120;
/// Below this many FLOPs the call runs on the calling thread.
const PARALLEL_FLOPS: usize = 1 << 22;

/// The validated problem over packed operands.
pub(super) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Rows of the A panels (the register tile's MR for `isa` and the panels' storage).
    pub mr: usize,
    pub a: &'a [f32],
    /// B panels `panel0..` (all of them, or one group of a per-call packing: see
    /// [`Problem::run_panels`]).
    pub b: PanelsRef<'a>,
    pub panel0: usize,
    pub bias: Option<&'a View<'a>>,
    pub params: MatmulParams,
    pub isa: Isa,
    /// A packed as bf16 k pairs (`[panel][⌈k/2⌉][rows]` u32) when the `vdpbf16ps` kernel runs:
    /// set only with bf16 panels, bf16 A and a CPU with AVX512_BF16.
    pub a_pairs: Option<&'a [u32]>,
}

/// Packed B panels in their storage type.
pub(super) enum PanelsRef<'a> {
    F32(&'a [f32]),
    BF16(&'a [crate::bf16]),
    F16(&'a [crate::f16]),
}

impl PanelsRef<'_> {
    /// The elements holding k rows `kb..kb + kc` of held panel `held` (of `k` k rows): `kc`
    /// rows of `NR`, or for bf16 pairs the pairs that hold them (`kb` is even).
    fn block_range(&self, k: usize, held: usize, kb: usize, kc: usize) -> std::ops::Range<usize> {
        match self {
            PanelsRef::F32(_) | PanelsRef::F16(_) => held * k * NR + kb * NR..held * k * NR + (kb + kc) * NR,
            PanelsRef::BF16(_) => {
                let panel = held * k.div_ceil(2) * 2 * NR;
                panel + kb * NR..panel + (kb + kc).div_ceil(2) * 2 * NR
            }
        }
    }

    /// [`PanelsRef::block_range`]'s bytes, for prefetching.
    fn block(&self, k: usize, held: usize, kb: usize, kc: usize) -> NextBlock {
        let range = self.block_range(k, held, kb, kc);
        let (base, size): (*const u8, usize) = match self {
            PanelsRef::F32(b) => (b.as_ptr().cast(), 4),
            PanelsRef::F16(b) => (b.as_ptr().cast(), 2),
            PanelsRef::BF16(b) => (b.as_ptr().cast(), 2),
        };
        NextBlock { start: base.wrapping_add(range.start * size), bytes: range.len() * size }
    }
}

struct Grid {
    /// Rows of A panels (row tiles start on multiples of it).
    mr: usize,
    m: usize,
    ntp: usize,
    row_tiles: usize,
    col_tiles: usize,
}

impl Grid {
    /// The first row of row tile `ti` (`m` for `ti == row_tiles`): `ti·m / row_tiles` rounded
    /// to the nearest multiple of `mr`.
    fn row_start(&self, ti: usize) -> usize {
        let unit = self.row_tiles * self.mr;
        if ti >= self.row_tiles { self.m } else { (ti * self.m + unit / 2) / unit * self.mr }
    }
}

impl Problem<'_> {
    fn grid(&self) -> Grid {
        let panels = self.n.div_ceil(NR);
        // Skinny (decode-like) problems: one row tile and a fine N split, so both cores stream
        // B. One panel per task balances a pool of several threads (M = 16, N = 384, 2 threads:
        // 126 -> 148 GFLOP/s against two panels); alone, two per task cost ~2 % less overhead.
        if self.m <= 16 {
            let ntp = if rayon::current_num_threads() > 1 { 1 } else { 2 };
            return Grid { mr: self.mr, m: self.m, ntp, row_tiles: 1, col_tiles: panels.div_ceil(ntp) };
        }
        // Row tiles of about MT rows, as equal as whole A panels allow (a tile of 80 rows
        // after four of 108 left one of two threads idle for a twelfth of gpt2_up), and at
        // most 8 B panels.
        let row_tiles = self.m.div_ceil(MT);
        let ntp = panels.div_ceil(panels.div_ceil(8));
        Grid { mr: self.mr, m: self.m, ntp, row_tiles, col_tiles: panels.div_ceil(ntp) }
    }

    /// Runs every task, writing C through `out`.
    pub(super) fn run(&self, out: &SharedOut) {
        self.run_panels(out, 0..self.n.div_ceil(NR));
    }

    /// B panels per column of tasks: a group of panels for [`Problem::run_panels`] must start
    /// and end on a multiple of this (or at the last panel).
    pub(super) fn task_panels(&self) -> usize {
        self.grid().ntp
    }

    /// Runs the tasks of the B panels `panels` (`b` holds them, from `panel0`), writing their
    /// columns of C through `out`. The tasks are those of the whole grid, so running the
    /// groups of a matrix one after another computes exactly what one [`Problem::run`] does.
    pub(super) fn run_panels(&self, out: &SharedOut, panels: std::ops::Range<usize>) {
        if self.m == 0 || self.n == 0 || panels.is_empty() {
            return;
        }
        let grid = self.grid();
        let ntp = grid.ntp;
        debug_assert!(panels.start.is_multiple_of(ntp) && self.panel0 <= panels.start);
        let col_tiles = panels.start / ntp..panels.end.div_ceil(ntp);
        let tasks = grid.row_tiles * col_tiles.len();
        let task = |t: usize| {
            let t = (t / col_tiles.len()) * grid.col_tiles + col_tiles.start + t % col_tiles.len();
            crate::simd::vectorize(self.isa, Task { problem: self, grid: &grid, t, out });
        };
        let flops = 2 * self.m * self.n * self.k.max(1);
        if tasks > 1 && flops >= PARALLEL_FLOPS && rayon::current_num_threads() > 1 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
    }
}

thread_local! {
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

struct Task<'a> {
    problem: &'a Problem<'a>,
    grid: &'a Grid,
    t: usize,
    out: &'a SharedOut<'a>,
}

impl WithSimd for Task<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Task { problem: p, grid, t, out } = self;
        let (ti, tj) = (t / grid.col_tiles, t % grid.col_tiles);
        let (i0, i1) = (grid.row_start(ti), grid.row_start(ti + 1));
        let panels = p.n.div_ceil(NR);
        let (jp0, jp1) = (tj * grid.ntp, ((tj + 1) * grid.ntp).min(panels));
        let (j0, j1) = (jp0 * NR, (jp1 * NR).min(p.n));
        let ldc = (jp1 - jp0) * NR;
        let rows = i1 - i0;
        // Taken out of the thread-local (not borrowed in a closure: see the kernel's docs).
        let mut scratch_buf = SCRATCH.take();
        {
            let scratch = &mut scratch_buf;
            if scratch.len() < rows * ldc {
                scratch.resize(rows * ldc, 0.0);
            }
            let scratch = &mut scratch[..rows * ldc];
            if p.k == 0 {
                scratch.fill(0.0);
            }
            for kb in (0..p.k).step_by(KC) {
                let kc = KC.min(p.k - kb);
                for jp in jp0..jp1 {
                    let (next_kb, next_jp) = if jp + 1 < jp1 { (kb, jp + 1) } else { (kb + KC, jp0) };
                    let next =
                        (next_kb < p.k).then(|| p.b.block(p.k, next_jp - p.panel0, next_kb, KC.min(p.k - next_kb)));
                    let range = p.b.block_range(p.k, jp - p.panel0, kb, kc);
                    let block = Block { rows: i0..i1, col: (jp - jp0) * NR, ldc, kb, kc, next };
                    match p.b {
                        PanelsRef::F32(b) => panel_tiles(simd, p, Rows(&b[range]), scratch, &block),
                        PanelsRef::BF16(b) => {
                            let pairs = &b[range];
                            match p.a_pairs {
                                Some(a_pairs) => dot_bf16_panel(p, a_pairs, pairs, scratch, &block),
                                None => panel_tiles(simd, p, Pairs(pairs), scratch, &block),
                            }
                        }
                        PanelsRef::F16(b) => panel_tiles(simd, p, Rows(&b[range]), scratch, &block),
                    }
                }
            }
            epilogue(simd, p, out, scratch, ldc, i0..i1, j0..j1);
        }
        SCRATCH.set(scratch_buf);
    }
}

/// One (K block, B panel) of a task: its rows, the panel's first column in the scratch tile
/// (row stride `ldc`), and the K block `kb..kb + kc`.
struct Block {
    rows: std::ops::Range<usize>,
    col: usize,
    ldc: usize,
    kb: usize,
    kc: usize,
    /// The block the task computes after this one.
    next: Option<NextBlock>,
}

impl Block {
    /// Each A panel of the block's rows: its first row and row count.
    fn a_panels(&self, p: &Problem) -> impl Iterator<Item = (usize, usize)> {
        // A panels start at multiples of mr (rows.start is one: see `Grid::row_start`).
        self.rows.clone().step_by(p.mr).map(|i| (i, p.mr.min(p.m - i)))
    }
}

/// The micro-tiles of one block: every A panel of the block's rows against B block `b`.
#[inline(always)]
fn panel_tiles<S: Simd, P: Panel>(simd: S, p: &Problem, b: P, scratch: &mut [f32], block: &Block) {
    let Block { ldc, kb, kc, .. } = *block;
    let parts = block.rows.len().div_ceil(p.mr);
    for (t, (i, r)) in block.a_panels(p).enumerate() {
        let a = &p.a[i * p.k + kb * r..][..kc * r];
        let c = &mut scratch[(i - block.rows.start) * ldc + block.col..];
        let next = block.next.map(|next| next.part(t, parts));
        tile_rows(simd, r, kc, a, b, c, ldc, kb > 0, next);
    }
}

/// The `vdpbf16ps` micro-tiles of one block (A and B as bf16 k pairs).
fn dot_bf16_panel(p: &Problem, a_pairs: &[u32], b: &[crate::bf16], scratch: &mut [f32], block: &Block) {
    let Block { ldc, kb, .. } = *block;
    let (kp_all, kp) = (p.k.div_ceil(2), b.len() / (2 * NR));
    for (i, r) in block.a_panels(p) {
        let a = &a_pairs[i * kp_all + (kb / 2) * r..][..kp * r];
        let c = &mut scratch[(i - block.rows.start) * ldc + block.col..];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `a_pairs` is only set when the detected ISA includes AVX-512 F and BF16.
        unsafe {
            super::kernel::dot_bf16::tile_rows(r, a, b, c, ldc, kb > 0)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("bf16 pairs on a non-x86 target {:?}", (a.len(), c.len(), ldc));
    }
}

/// [`epilogue_row`] for each row of a task's scratch tile.
#[inline(always)]
fn epilogue<S: Simd>(
    simd: S,
    p: &Problem,
    out: &SharedOut,
    scratch: &mut [f32],
    ldc: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    let bias = p.bias.map(|b| widen_bias(b, cols.clone(), p.isa));
    for (r, i) in rows.enumerate() {
        let vals = &mut scratch[r * ldc..][..cols.len()];
        epilogue_row(simd, out, vals, bias.as_deref(), &p.params, p.isa, i, cols.clone());
    }
}

/// `bias[cols]` widened to f32.
pub(super) fn widen_bias(bias: &View, cols: std::ops::Range<usize>, isa: Isa) -> Vec<f32> {
    let mut out = vec![0f32; cols.len()];
    if bias.strides()[0] == 1 || cols.len() <= 1 {
        bias.data().widen(bias.layout().offset(&[cols.start]), &mut out, isa);
    } else {
        for (o, j) in out.iter_mut().zip(cols) {
            *o = bias.get_f32(&[j]);
        }
    }
    out
}

/// Row `i`, columns `cols` of C: `act(α·acc (+ β·C) (+ bias))`, rounded once into C. `vals`
/// holds the f32 dot products (and is overwritten); `bias` is `bias[cols]`. The caller owns
/// those elements of C exclusively (its task's tile).
///
/// One vector pass when C's row is contiguous: each vector is scaled, offset, activated and
/// rounded into C in registers (the last, partial vector zero-padded, as the activation's own
/// pass pads it, so every element gets the same formula).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn epilogue_row<S: Simd>(
    simd: S,
    out: &SharedOut,
    vals: &mut [f32],
    bias: Option<&[f32]>,
    params: &MatmulParams,
    isa: Isa,
    i: usize,
    cols: std::ops::Range<usize>,
) {
    let width = cols.len();
    let layout = out.layout();
    let col_stride = layout.strides()[1];
    let base = layout.offset(&[i, cols.start]);
    let beta = params.beta;
    let mut old = vec![0f32; if beta != 0.0 { width } else { 0 }];
    if col_stride == 1 || width == 1 {
        if beta != 0.0 {
            // SAFETY: the caller owns row i's columns `cols` of C exclusively, and the
            // temporary run is dropped before any other access.
            unsafe { out.run(base, width) }.as_data().widen(0, &mut old, isa);
        }
        let old = (beta != 0.0).then_some(&old[..]);
        // SAFETY: as above; the run `base..base+width` is row i's columns `cols`.
        match unsafe { out.run(base, width) } {
            DataMut::F32(c) => finish_row(simd, vals, old, bias, params, c),
            DataMut::BF16(c) => finish_row(simd, vals, old, bias, params, c),
            DataMut::F16(c) => finish_row(simd, vals, old, bias, params, c),
        }
        return;
    }
    for (jj, o) in old.iter_mut().enumerate() {
        // SAFETY: as above, one element of the caller's tile.
        *o = unsafe { out.run(base + jj * col_stride, 1) }.as_data().get_f32(0);
    }
    let old = (beta != 0.0).then_some(&old[..]);
    finish_row::<S, f32>(simd, vals, old, bias, params, &mut []);
    for (jj, v) in vals.iter().enumerate() {
        // SAFETY: as above, one element of the caller's tile.
        unsafe { out.run(base + jj * col_stride, 1) }.store(0, std::slice::from_ref(v), isa);
    }
}

/// `vals[j] = act(α·vals[j] (+ β·old[j]) (+ bias[j]))`, each rounded into `c[j]` as it is made
/// (`c` empty: `vals` only). The operations are those of the scalar formula, in its order.
#[inline(always)]
fn finish_row<S: Simd, O: StoreF32>(
    simd: S,
    vals: &mut [f32],
    old: Option<&[f32]>,
    bias: Option<&[f32]>,
    params: &MatmulParams,
    c: &mut [O],
) {
    let lanes = S::F32_LANES;
    let (alpha, beta) = (simd.splat_f32s(params.alpha), simd.splat_f32s(params.beta));
    // Macros, not closures: closures are not inlined into pulp's target-feature context.
    // `finish!(vals, old, bias, at)`: the result for vector `at` of the three rows.
    macro_rules! finish {
        ($vals:expr, $old:expr, $bias:expr, $at:expr) => {{
            let at = $at;
            let mut x = simd.mul_f32s(alpha, S::as_simd_f32s(&$vals[at.clone()]).0[0]);
            if let Some(old) = $old {
                x = simd.add_f32s(x, simd.mul_f32s(beta, S::as_simd_f32s(&old[at.clone()]).0[0]));
            }
            if let Some(bias) = $bias {
                x = simd.add_f32s(x, S::as_simd_f32s(&bias[at]).0[0]);
            }
            activate(simd, x, params.activation)
        }};
    }
    let full = vals.len() / lanes;
    for v in 0..full {
        let at = v * lanes..(v + 1) * lanes;
        let x = finish!(vals, old, bias, at.clone());
        if c.is_empty() {
            S::as_mut_simd_f32s(&mut vals[at]).0[0] = x;
        } else {
            O::store_f32s(simd, x, c, v);
        }
    }
    let tail = full * lanes..vals.len();
    if !tail.is_empty() {
        let n = tail.len();
        let (mut v, mut o, mut b) = ([0f32; 16], [0f32; 16], [0f32; 16]);
        v[..n].copy_from_slice(&vals[tail.clone()]);
        if let Some(old) = old {
            o[..n].copy_from_slice(&old[tail.clone()]);
        }
        if let Some(bias) = bias {
            b[..n].copy_from_slice(&bias[tail.clone()]);
        }
        let x = finish!(v, old.and(Some(&o)), bias.and(Some(&b)), 0..lanes);
        let mut result = [0f32; 16];
        S::as_mut_simd_f32s(&mut result[..lanes]).0[0] = x;
        vals[tail.clone()].copy_from_slice(&result[..n]);
        if !c.is_empty() {
            for (c, &x) in c[tail].iter_mut().zip(&result[..n]) {
                *c = O::from_f32(x);
            }
        }
    }
}
