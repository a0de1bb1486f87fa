//! Cache prefetch hints. A prefetch has no architectural effect and never faults, whatever the
//! address, so these are safe to call with any pointer (one past a row's end is fine).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{_MM_HINT_ET0, _MM_HINT_T0, _MM_HINT_T1, _mm_prefetch};

/// Hints the cache line holding `address` into L1.
#[inline(always)]
pub fn l1<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint (no fault, no memory change); SSE is baseline x86-64.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(address.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Hints the cache line holding `address` into L2 (for data a tile ahead, which would not fit
/// L1 beside the current tile).
#[inline(always)]
pub fn l2<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as for `l1`.
    unsafe {
        _mm_prefetch::<_MM_HINT_T1>(address.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// [`l2`] for every cache line of `bytes` bytes starting at `start`.
#[inline(always)]
pub fn l2_range<T>(start: *const T, bytes: usize) {
    let start = start.cast::<u8>();
    for line in (0..bytes).step_by(64) {
        l2(start.wrapping_add(line));
    }
}

/// Hints every cache line of `bytes` bytes starting at `start` into L1 in a writable state
/// (`prefetchw`), so that stores to them later do not wait for the line to be read first.
#[inline(always)]
pub fn l1_for_write_range<T>(start: *const T, bytes: usize) {
    let start = start.cast::<u8>();
    for line in (0..bytes).step_by(64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as for `l1`.
        unsafe {
            _mm_prefetch::<_MM_HINT_ET0>(start.wrapping_add(line).cast::<i8>())
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
    }
}
