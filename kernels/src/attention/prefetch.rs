//! Software prefetch of K/V cache rows.
//!
//! Decode streams the KV cache from DRAM once per call, and the micro-kernels' access order
//! (4 K rows at a time, V by column blocks) is not one the hardware prefetchers follow well.
//! The kernels therefore hint the rows of the *next* tile into L2 a few rows at a time while they
//! compute on this one: a whole tile's hints issued at once fill the core's miss buffers and
//! stall the arithmetic behind them.

use super::flash::{Item, Problem};
use crate::tensor::{Data, View};

/// Which views' rows a hint covers.
#[derive(Clone, Copy)]
pub(super) enum Hint {
    /// K only.
    K,
    /// V only.
    V,
    /// K and V.
    KV,
}

/// One view's rows for a (batch, KV head): the address of key 0, the row stride and the row
/// length in bytes, and the number of keys. Computed once per item, so each hint is one add.
#[derive(Clone, Copy)]
struct Rows {
    base: *const u8,
    stride: usize,
    bytes: usize,
    keys: usize,
}

/// Prefetch hints for the K and V rows of one work item's (b, g).
#[derive(Clone, Copy)]
pub(super) struct KeyPrefetcher {
    rows: [Option<Rows>; 2],
}

impl KeyPrefetcher {
    pub(super) fn new(p: &Problem, item: Item) -> Self {
        let rows = |view: &View, len: usize| {
            let keys = view.shape()[2];
            if len == 0 || keys == 0 {
                return None;
            }
            let (ptr, size) = match view.data() {
                Data::F32(s) => (s.as_ptr().cast::<u8>(), 4),
                Data::F16(s) => (s.as_ptr().cast::<u8>(), 2),
                Data::BF16(s) => (s.as_ptr().cast::<u8>(), 2),
            };
            let offset = view.layout().offset(&[item.b, item.g, 0, 0]);
            Some(Rows {
                base: ptr.wrapping_add(offset * size),
                // The view is validated, so the offsets of its keys fit in the data, but the
                // stride of a one-key view may be anything (it is only ever multiplied by 0).
                stride: view.strides()[2].saturating_mul(size),
                bytes: len * size,
                keys,
            })
        };
        KeyPrefetcher { rows: [rows(&p.k, p.dims.d), rows(&p.v, p.dims.d_v)] }
    }

    /// Spreads the hints for the tile starting at key `next` over the steps of the current
    /// tile: called before the step of `step` keys at offset `j` of the current tile, it hints
    /// rows `next + j .. next + j + step` (below `end`) of `which` views.
    #[inline(always)]
    pub(super) fn fetch_step(&self, which: Hint, next: usize, j: usize, step: usize, end: usize) {
        let first = next + j;
        let views = match which {
            Hint::K => &self.rows[..1],
            Hint::V => &self.rows[1..],
            Hint::KV => &self.rows[..],
        };
        for rows in views.iter().flatten() {
            for j in first..(first + step).min(end).min(rows.keys) {
                crate::simd::prefetch::l2_range(rows.base.wrapping_add(j * rows.stride), rows.bytes);
            }
        }
    }
}
