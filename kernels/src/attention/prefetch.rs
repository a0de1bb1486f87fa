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

    /// The hints for the tile of keys `next..` (below `end`) of `which` views, to be spread over
    /// the steps of the current tile with [`TileHints::fetch`]. The clipping to `end` and the
    /// tile's first row are worked out here once, so that each step is one compare and its
    /// lines.
    #[inline(always)]
    pub(super) fn tile(&self, which: Hint, next: usize, end: usize) -> TileHints {
        let views = match which {
            Hint::K => [self.rows[0], None],
            Hint::V => [self.rows[1], None],
            Hint::KV => self.rows,
        };
        TileHints {
            rows: views.map(|rows| {
                rows.map(|rows| Rows {
                    base: rows.base.wrapping_add(next.saturating_mul(rows.stride)),
                    keys: end.min(rows.keys).saturating_sub(next),
                    ..rows
                })
            }),
        }
    }
}

/// The rows of one tile to hint: [`Rows`] whose `base` is the tile's first row and whose `keys`
/// counts the tile's rows that exist.
#[derive(Clone, Copy)]
pub(super) struct TileHints {
    rows: [Option<Rows>; 2],
}

impl TileHints {
    /// Hints the tile's rows `j..j + step` (those that exist) into L2.
    #[inline(always)]
    pub(super) fn fetch(&self, j: usize, step: usize) {
        for rows in self.rows.iter().flatten() {
            for t in j..(j + step).min(rows.keys) {
                crate::simd::prefetch::l2_range(rows.base.wrapping_add(t * rows.stride), rows.bytes);
            }
        }
    }
}
