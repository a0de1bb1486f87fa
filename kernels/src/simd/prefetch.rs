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
    for_each_line(start, bytes, l2);
}

/// Hints the cache line holding `address` into L1 in a writable state (`prefetchw`), so that
/// a later store to it does not wait for the line to be read first.
#[inline(always)]
pub fn l1_for_write<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as for `l1`.
    unsafe {
        _mm_prefetch::<_MM_HINT_ET0>(address.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// [`l1_for_write`] for every cache line of `bytes` bytes starting at `start`.
#[inline(always)]
pub fn l1_for_write_range<T>(start: *const T, bytes: usize) {
    for_each_line(start, bytes, l1_for_write);
}

/// Calls `hint` with an address in each 64-byte step of `bytes` bytes from `start`.
#[inline(always)]
fn for_each_line<T>(start: *const T, bytes: usize, hint: impl Fn(*const u8)) {
    let start = start.cast::<u8>();
    for line in (0..bytes).step_by(64) {
        hint(start.wrapping_add(line));
    }
}
