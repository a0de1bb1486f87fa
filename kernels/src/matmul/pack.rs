//! Packing: B into `NR`-column panels (`[panel][k][NR]`, N tail zero-padded; f32, or bf16/f16
//! kept as they are, widened in registers by the micro-kernel) and A into `MR`-row panels
//! (`[panel][k][rows]`, widened to f32), so the micro-kernel reads contiguous runs.

use super::kernel::NR;
use crate::dtype::{DType, Element, bf16};
use crate::isa::Isa;
use crate::simd::aligned::AlignedVec;
use crate::tensor::{Data, View};
use rayon::prelude::*;
use std::cell::Cell;

/// Elements below which packing runs on the calling thread.
const PARALLEL_PACK_ELEMS: usize = 1 << 16;

thread_local! {
    /// The per-call packing buffers of [`super::matmul`] (B panels, A panels), kept between
    /// calls: allocating and zeroing megabytes per call cost about a tenth of a MiniLM-sized
    /// matmul. Each thread keeps the largest it has needed.
    static PER_CALL: Cell<[AlignedVec; 2]> = const { Cell::new([AlignedVec::EMPTY, AlignedVec::EMPTY]) };
}

/// Runs `f` with this thread's per-call (B, A) packing buffers.
pub(super) fn with_per_call_buffers<R>(f: impl FnOnce(&mut AlignedVec, &mut AlignedVec) -> R) -> R {
    let [mut b, mut a] = PER_CALL.take();
    let result = f(&mut b, &mut a);
    PER_CALL.set([b, a]);
    result
}

/// Packs the logical `[n, k]` view `b` into `n.div_ceil(NR)` panels of `k·NR` f32.
pub(super) fn pack_b(b: &View, isa: Isa) -> AlignedVec {
    let mut buf = AlignedVec::EMPTY;
    pack_b_into(b, isa, 0..b.shape()[0].div_ceil(NR), &mut buf);
    buf
}

/// [`pack_b`]'s panels `panels` (of all `⌈n/NR⌉`) into `buf`, panel `panels.start` first
/// (reusing its allocation; every element is written).
pub(super) fn pack_b_into(b: &View, isa: Isa, panels: std::ops::Range<usize>, buf: &mut AlignedVec) {
    let k = b.shape()[1];
    buf.resize_uninit(panels.len() * k * NR);
    if k == 0 || panels.is_empty() {
        return;
    }
    let pack_panel = |(jp, panel): (usize, &mut [f32])| pack_b_panel(b, isa, (panels.start + jp) * NR, panel);
    if panels.len() * NR * k >= PARALLEL_PACK_ELEMS {
        buf.par_chunks_mut(k * NR).enumerate().for_each(pack_panel);
    } else {
        buf.chunks_mut(k * NR).enumerate().for_each(pack_panel);
    }
}

/// Packs the logical `[n, k]` view `b` into panels of its own 16-bit type (values copied,
/// not converted). `src` is `b`'s data.
pub(super) fn pack_b_16<T: Element>(b: &View, src: &[T]) -> Vec<T> {
    let (n, k) = (b.shape()[0], b.shape()[1]);
    let mut buf = vec![T::from_f32(0.0); n.div_ceil(NR) * k * NR];
    if k == 0 || n == 0 {
        return buf;
    }
    let (sn, sk) = (b.strides()[0], b.strides()[1]);
    let pack_panel = |(jp, panel): (usize, &mut [T])| {
        let j0 = jp * NR;
        let cols = NR.min(n - j0);
        let base = b.layout().offset(&[j0, 0]);
        if sk == 1 || k == 1 {
            for jj in 0..cols {
                let row = &src[base + jj * sn..][..k];
                for (dst, &v) in panel.chunks_exact_mut(NR).zip(row) {
                    dst[jj] = v;
                }
            }
        } else {
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                for (jj, d) in dst[..cols].iter_mut().enumerate() {
                    *d = src[base + jj * sn + p * sk];
                }
            }
        }
    };
    if n * k >= PARALLEL_PACK_ELEMS {
        buf.par_chunks_mut(k * NR).enumerate().for_each(pack_panel);
    } else {
        buf.chunks_mut(k * NR).enumerate().for_each(pack_panel);
    }
    buf
}

/// Fills one panel (`[k][NR]`) with columns `j0..j0+NR` of B (rows of the `[n,k]` view).
fn pack_b_panel(b: &View, isa: Isa, j0: usize, panel: &mut [f32]) {
    let (n, k) = (b.shape()[0], b.shape()[1]);
    let (sn, sk) = (b.strides()[0], b.strides()[1]);
    let cols = NR.min(n - j0);
    let data = b.data();
    let base = b.layout().offset(&[j0, 0]);
    if sn == 1 || cols == 1 {
        // [K, N] storage: each k gives a contiguous run of the panel's columns.
        for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
            data.widen(base + p * sk, &mut dst[..cols], isa);
        }
    } else if sk == 1 || k == 1 {
        // [N, K] storage: a transpose.
        match data {
            Data::F32(src) => transpose_rows(src, base, sn, cols, k, panel, isa),
            Data::BF16(src) => transpose_rows(src, base, sn, cols, k, panel, isa),
            Data::F16(src) => transpose_rows(src, base, sn, cols, k, panel, isa),
        }
    } else {
        for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
            for (jj, d) in dst[..cols].iter_mut().enumerate() {
                *d = data.get_f32(base + jj * sn + p * sk);
            }
        }
    }
    if cols < NR {
        // The tail panel's padding columns (the buffer may hold stale values).
        for dst in panel.chunks_exact_mut(NR) {
            dst[cols..].fill(0.0);
        }
    }
}

/// Panel column `jj` ← weight row `src[base + jj·sn..][..k]`, for `jj < cols`: a blocked
/// transpose ([`crate::simd::transpose`], in registers for f32 rows at AVX-512; 16-bit rows in
/// the same 16 × 16 blocks, widened element by element).
#[allow(clippy::too_many_arguments)]
fn transpose_rows<T: Element>(src: &[T], base: usize, sn: usize, cols: usize, k: usize, panel: &mut [f32], isa: Isa) {
    if let Some(src) = T::as_f32(src) {
        return crate::simd::transpose::transpose(isa, &src[base..], sn, (cols, k), panel, NR);
    }
    const BLOCK: usize = 16;
    for j0 in (0..cols).step_by(BLOCK) {
        let width = BLOCK.min(cols - j0);
        let rows: [&[T]; BLOCK] =
            std::array::from_fn(|jj| if jj < width { &src[base + (j0 + jj) * sn..][..k] } else { &[] });
        for p0 in (0..k).step_by(BLOCK) {
            let depth = BLOCK.min(k - p0);
            for row in &rows[..width] {
                crate::simd::prefetch::l1(row.as_ptr().wrapping_add(p0 + 2 * BLOCK));
            }
            let dst = &mut panel[p0 * NR + j0..];
            for p in 0..depth {
                for (d, row) in dst[p * NR..p * NR + width].iter_mut().zip(&rows) {
                    *d = row[p0 + p].to_f32();
                }
            }
        }
    }
}

/// Packs A (`[m, k]`, any strides) into `buf` as `mr`-row panels: panel `ip` starts at
/// `ip·mr·k` and is `[k][rows]` with `rows = min(mr, m − ip·mr)` (every element is written).
pub(super) fn pack_a_into(a: &View, mr: usize, isa: Isa, parallel: bool, buf: &mut AlignedVec) {
    let (m, k) = (a.shape()[0], a.shape()[1]);
    buf.resize_uninit(m * k);
    if m == 0 || k == 0 {
        return;
    }
    let pack_panel = |(ip, panel): (usize, &mut [f32])| pack_a_panel(a, isa, ip * mr, panel.len() / k, panel);
    if parallel && m * k >= PARALLEL_PACK_ELEMS {
        buf.par_chunks_mut(mr * k).enumerate().for_each(pack_panel);
    } else {
        buf.chunks_mut(mr * k).enumerate().for_each(pack_panel);
    }
}

fn pack_a_panel(a: &View, isa: Isa, i0: usize, rows: usize, panel: &mut [f32]) {
    let k = a.shape()[1];
    let (si, sk) = (a.strides()[0], a.strides()[1]);
    let data = a.data();
    let base = a.layout().offset(&[i0, 0]);
    if sk == 1 || k == 1 {
        // 16-bit rows are widened first, then interleaved like f32 ones.
        let mut widened = vec![0f32; if data.dtype() == DType::F32 { 0 } else { rows * k }];
        for (i, row) in widened.chunks_exact_mut(k).enumerate() {
            data.widen(base + i * si, row, isa);
        }
        let row = |i: usize| match data.f32_run(base + i * si, k) {
            Some(run) => run,
            None => &widened[i * k..(i + 1) * k],
        };
        match rows {
            1 => panel.copy_from_slice(row(0)),
            2 => interleave::<2>([0, 1].map(row), panel),
            3 => interleave::<3>([0, 1, 2].map(row), panel),
            4 => interleave::<4>([0, 1, 2, 3].map(row), panel),
            5 => interleave::<5>([0, 1, 2, 3, 4].map(row), panel),
            6 => interleave::<6>([0, 1, 2, 3, 4, 5].map(row), panel),
            _ => unreachable!("A panels have at most 6 rows"),
        }
    } else {
        for (p, dst) in panel.chunks_exact_mut(rows).enumerate() {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = data.get_f32(base + i * si + p * sk);
            }
        }
    }
}

/// `panel[p·R + i] = rows[i][p]`: R equal-length rows interleaved into `[k][R]`, one panel
/// step (R consecutive stores) at a time.
fn interleave<const R: usize>(rows: [&[f32]; R], panel: &mut [f32]) {
    let k = panel.len() / R;
    let rows = rows.map(|row| &row[..k]);
    for (p, step) in panel.chunks_exact_mut(R).enumerate() {
        for (d, row) in step.iter_mut().zip(&rows) {
            *d = row[p];
        }
    }
}

/// A (`[m, k]`, any strides) widened to f32, row-major `[m][k]`.
pub(super) fn widen_rows(a: &View, isa: Isa) -> Vec<f32> {
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let mut out = vec![0f32; m * k];
    if k == 0 {
        return out;
    }
    for (i, row) in out.chunks_exact_mut(k).enumerate() {
        let base = a.layout().offset(&[i, 0]);
        if a.strides()[1] == 1 || k == 1 {
            a.data().widen(base, row, isa);
        } else {
            for (p, v) in row.iter_mut().enumerate() {
                *v = a.data().get_f32(base + p * a.strides()[1]);
            }
        }
    }
    out
}

/// Packs the logical `[n, k]` bf16 view `b` into pair-interleaved panels: panel `jp` is
/// `[⌈k/2⌉][NR][2]`, element `(k, j)` at `((k/2)·NR + j)·2 + k%2`; the odd-K tail and the N
/// tail are zero. One 32-bit lane holds two consecutive k of one column, the operand layout of
/// `vdpbf16ps`, and widens to two f32 rows with a shift and a mask.
pub(super) fn pack_b_bf16_pairs(b: &View, src: &[bf16]) -> Vec<bf16> {
    let (n, k) = (b.shape()[0], b.shape()[1]);
    let kp = k.div_ceil(2);
    let mut buf = vec![bf16::ZERO; n.div_ceil(NR) * kp * 2 * NR];
    if k == 0 || n == 0 {
        return buf;
    }
    let (sn, sk) = (b.strides()[0], b.strides()[1]);
    let pack_panel = |(jp, panel): (usize, &mut [bf16])| {
        let j0 = jp * NR;
        let cols = NR.min(n - j0);
        let base = b.layout().offset(&[j0, 0]);
        if sk == 1 || k == 1 {
            pair_rows(src, base, sn, cols, k, panel);
            return;
        }
        // K blocks of 64 so the written block (32 pairs × NR × 2 bf16 = 8 KiB) stays in L1.
        const KB: usize = 64;
        for p0 in (0..k).step_by(KB) {
            for jj in 0..cols {
                let row = base + jj * sn;
                for p in p0..k.min(p0 + KB) {
                    panel[((p / 2) * NR + jj) * 2 + p % 2] = src[row + p * sk];
                }
            }
        }
    };
    if n * k >= PARALLEL_PACK_ELEMS {
        buf.par_chunks_mut(kp * 2 * NR).enumerate().for_each(pack_panel);
    } else {
        buf.chunks_mut(kp * 2 * NR).enumerate().for_each(pack_panel);
    }
    buf
}

/// Panel pair `(kp, jj)` ← elements `2kp, 2kp + 1` of weight row `src[base + jj·sn..][..k]`
/// (the odd-K tail zero), for `jj < cols`: [`transpose_rows`]'s blocking with a k pair as the
/// element.
fn pair_rows(src: &[bf16], base: usize, sn: usize, cols: usize, k: usize, panel: &mut [bf16]) {
    const BLOCK: usize = 16;
    for j0 in (0..cols).step_by(BLOCK) {
        let width = BLOCK.min(cols - j0);
        let rows: [&[bf16]; BLOCK] =
            std::array::from_fn(|jj| if jj < width { &src[base + (j0 + jj) * sn..][..k] } else { &[] });
        for (kp, dst) in panel.chunks_exact_mut(2 * NR).enumerate() {
            let p = 2 * kp;
            if kp % BLOCK == 0 {
                for row in &rows[..width] {
                    crate::simd::prefetch::l1(row.as_ptr().wrapping_add(p + 4 * BLOCK));
                }
            }
            for (pair, row) in dst[2 * j0..2 * (j0 + width)].chunks_exact_mut(2).zip(&rows) {
                pair[0] = row[p];
                pair[1] = if p + 1 < k { row[p + 1] } else { bf16::ZERO };
            }
        }
    }
}

/// Packs bf16 A (`[m, k]`, any strides; `src` is its data) into `mr`-row panels of k pairs:
/// panel `ip` starts at `ip·mr·⌈k/2⌉` and is `[⌈k/2⌉][rows]` u32, each `a[i,2p] | a[i,2p+1] << 16`
/// (the odd-K tail zero).
pub(super) fn pack_a_bf16_pairs(a: &View, src: &[bf16], mr: usize) -> Vec<u32> {
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let kp = k.div_ceil(2);
    let mut buf = vec![0u32; m * kp];
    if m == 0 || k == 0 {
        return buf;
    }
    let sk = a.strides()[1];
    for (ip, panel) in buf.chunks_mut(mr * kp).enumerate() {
        let rows = panel.len() / kp;
        for i in 0..rows {
            let row = a.layout().offset(&[ip * mr + i, 0]);
            for p in 0..k {
                panel[(p / 2) * rows + i] |= u32::from(src[row + p * sk].to_bits()) << (16 * (p % 2));
            }
        }
    }
    buf
}
