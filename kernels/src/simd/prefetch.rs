//! Cache prefetch hints.

/// Hints the cache line holding `address` into L1. Only a hint: it never faults, whatever the
/// address (a pointer one past a row's end is fine).
#[inline(always)]
pub fn l1<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no architectural effect and never faults; SSE is baseline x86-64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
