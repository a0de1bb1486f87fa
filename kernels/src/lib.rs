//! # flashkern-kernels
//!
//! Hand-tuned SIMD CPU kernels for transformer inference: fused attention, matmul and
//! residual + norm, each with a naive f64 reference twin in [`reference`](mod@reference).
//!
//! ## Conventions
//! - Row-major; strides are in **elements**, non-negative; stride 0 broadcasts (inputs only).
//!   Views are checked when built ([`tensor`]); kernels then check shapes against each other.
//! - Linear-layer weights are `[N, K]` (`C = A·Bᵀ`); a `[K, N]` weight is the same logical
//!   `[N, K]` view with strides `[1, N]`.
//! - dtypes: f32, f16, bf16 ([`dtype`]) for inputs and outputs; **all arithmetic is f32** (16-bit
//!   values are widened exactly, results rounded once to nearest-even).
//! - Errors: every public kernel returns [`Result`]; bad shapes, strides, dtypes or scalars give
//!   an [`Error`] naming the argument. Kernels do not panic on bad input.
//!
//! ## Accuracy contract
//! Against the f64 reference, with `u` the unit roundoff of f32 (2⁻²⁴) and of the 16-bit types
//! (f16 2⁻¹¹, bf16 2⁻⁸): a dot product of length `K` differs by at most about `K·u·Σ|aᵢbᵢ|`
//! (in practice ~√K·u); a 16-bit output adds one rounding (`u₁₆·|y|`). The tests use those
//! bounds, see [`testing::Tolerance`].
//!
//! ## NaN policy
//! NaN and ±∞ inputs propagate through the arithmetic to the outputs they touch and no further
//! (a NaN in one row of x or Q affects only that row). Fully masked attention rows output 0.
//!
//! ## ISA levels and environment
//! [`isa`]: `scalar`, `avx2` (x86-64-v3 + F16C), `avx512` (x86-64-v4), `avx512bf16`; detected once.
//! `FLASHKERN_MAX_ISA=<level>` or [`isa::set_max_isa`] cap it; [`isa::with_max_isa`] caps it for
//! calls from one thread.
//!
//! ## Threading
//! Kernels split work with rayon on the **caller's current pool**: an engine bounds threads by
//! calling from inside `rayon::ThreadPool::install`. Work is split into pieces whose boundaries
//! never depend on the pool size, and no reduction crosses pieces, so results are
//! **bit-identical for any thread count**. Small problems run on the calling thread.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod attention;
pub mod dtype;
pub mod error;
pub mod isa;
pub mod matmul;
#[allow(unsafe_code)]
pub mod norm;
pub mod reference;
#[allow(unsafe_code)]
pub mod simd;
#[allow(unsafe_code)]
pub mod tensor;
pub mod testing;

pub use dtype::{DType, Element, bf16, f16};
pub use error::{Error, Result};
pub use isa::{Isa, effective_isa, set_max_isa};
pub use tensor::{Buffer, Data, DataMut, Layout, View, ViewMut};
