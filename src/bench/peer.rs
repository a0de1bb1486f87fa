//! The peer measured in the same run: the `gemm` crate (its `unsafe` raw-pointer API).

/// `c = a·bᵀ` with the `gemm` crate (row-major a `[M,K]`, b `[N,K]`, c `[M,N]`) on the current pool.
///
/// # Panics
/// When a buffer's length is not exactly its shape's size (or a size overflows).
pub fn gemm_bt<T: 'static + Copy + Default + gemm_scalar::Zero>(a: &[T], b: &[T], c: &mut [T], [m, k, n]: [usize; 3]) {
    let size = |rows: usize, cols: usize| rows.checked_mul(cols).expect("gemm_bt: size overflows usize");
    assert_eq!(a.len(), size(m, k), "gemm_bt: a is not m×k");
    assert_eq!(b.len(), size(n, k), "gemm_bt: b is not n×k");
    assert_eq!(c.len(), size(m, n), "gemm_bt: c is not m×n");
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the pointers and strides describe the three row-major buffers exactly (their
    // lengths are asserted above: a: m×k, b viewed as k×n through strides (1, k), c: m×n),
    // which outlive the call.
    // gemm computes dst = alpha·dst + beta·lhs·rhs; alpha is ignored when read_dst is false.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The scalar types `gemm_bt` is used with.
pub mod gemm_scalar {
    /// 0 and 1 of a gemm scalar.
    pub trait Zero {
        /// Zero.
        fn zero() -> Self;
        /// One.
        fn one() -> Self;
    }
    impl Zero for f32 {
        fn zero() -> Self {
            0.0
        }
        fn one() -> Self {
            1.0
        }
    }
    impl Zero for half::f16 {
        fn zero() -> Self {
            half::f16::ZERO
        }
        fn one() -> Self {
            half::f16::ONE
        }
    }
}
