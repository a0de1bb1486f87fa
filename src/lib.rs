//! # flashkern
//!
//! The user-facing crate: it re-exports the pure-compute kernels of [`flashkern_kernels`]
//! (attention, matmul, norms, their references and the ISA controls) and adds the model layer:
//! - [`weights`]: safetensors checkpoints, memory-mapped and validated, with zero-copy views;
//! - [`config`]: Hugging Face `config.json` for `bert` and `gpt2`;
//! - [`models`]: a BERT encoder with sentence-transformers pooling and a GPT-2 decoder with a
//!   KV cache, built from the kernels;
//! - [`tokenizer`]: a model folder's `tokenizer.json`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
#[allow(unsafe_code)]
pub mod capi;
pub mod config;
pub mod error;
#[allow(unsafe_code)]
pub mod fuzzing;
pub mod models;
pub mod tokenizer;
pub mod weights;

pub use error::{ModelError, ModelResult};
pub use flashkern_kernels as kernels;
pub use flashkern_kernels::{DType, Error, Isa, Result, View, ViewMut, attention, isa, matmul, norm, reference};
