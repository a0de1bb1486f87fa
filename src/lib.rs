//! # flashkern
//!
//! The user-facing crate: it re-exports the pure-compute kernels of [`flashkern_kernels`]
//! (attention, matmul, norms, their references and the ISA controls); the model layer, the
//! C ABI and the CLI build on them here.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
#[allow(unsafe_code)]
pub mod capi;

#[allow(unsafe_code)]
pub mod fuzzing;

pub use flashkern_kernels as kernels;
pub use flashkern_kernels::{DType, Error, Isa, Result, View, ViewMut, attention, isa, matmul, norm, reference};
