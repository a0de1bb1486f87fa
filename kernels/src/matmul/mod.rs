//! Matrix multiplication in the linear-layer layout:
//! `C[M,N] = act(α·A[M,K]·B[N,K]ᵀ + β·C + bias[N])`.
//!
//! B is a logical `[N, K]` view with any strides, so nn.Linear weights (`[N,K]` row-major,
//! strides `[K, 1]`) and Conv1D / plain `A·B` weights (`[K,N]` row-major, viewed as `[N,K]` with
//! strides `[1, N]`) both work without copies.

use crate::error::{Error, Result};
use crate::tensor::{View, ViewMut};

/// The elementwise function applied after bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// `x·Φ(x)` with the exact error function (BERT).
    GeluErf,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (GPT-2's `gelu_new`).
    GeluTanh,
}

/// Scalars and epilogue of a matmul.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulParams {
    /// Multiplies `A·Bᵀ`.
    pub alpha: f32,
    /// Multiplies the old `C`; when exactly 0, `C` is never read (it may hold NaN).
    pub beta: f32,
    /// Applied last, after bias.
    pub activation: Activation,
}

impl Default for MatmulParams {
    fn default() -> Self {
        MatmulParams { alpha: 1.0, beta: 0.0, activation: Activation::None }
    }
}

/// The problem size of a validated matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    /// Rows of A and C.
    pub m: usize,
    /// Rows of B (columns of C).
    pub n: usize,
    /// The reduction length.
    pub k: usize,
}

/// Checks ranks and shapes of a matmul's arguments and returns its dimensions.
pub fn check_shapes(a: &View, b: &View, bias: Option<&View>, c: &ViewMut) -> Result<MatmulDims> {
    a.layout().require_rank("a", 2)?;
    b.layout().require_rank("b", 2)?;
    c.layout().require_rank("c", 2)?;
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let n = b.shape()[0];
    if b.shape()[1] != k {
        return Err(Error::shape("b", [n, k], b.shape()));
    }
    if c.shape() != [m, n] {
        return Err(Error::shape("c", [m, n], c.shape()));
    }
    if let Some(bias) = bias
        && bias.shape() != [n]
    {
        return Err(Error::shape("bias", [n], bias.shape()));
    }
    Ok(MatmulDims { m, n, k })
}

// TEMPORARY (replaced by the matmul issue): the fast entry points forward to the reference so
// that code above the kernels can be written against the final API.

/// `C = act(α·A·Bᵀ + β·C + bias)`; see the module docs.
pub fn matmul(a: &View, b: &View, bias: Option<&View>, c: &mut ViewMut, params: &MatmulParams) -> Result<()> {
    crate::reference::matmul(a, b, bias, c, params)
}

/// Weights `B[N, K]` packed once (at model load) for repeated [`matmul_packed`] calls.
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    data: Vec<f32>,
    n: usize,
    k: usize,
}

impl PackedMatrix {
    /// Packs a logical `[N, K]` view (any strides, any dtype).
    pub fn pack(b: &View) -> Result<PackedMatrix> {
        b.layout().require_rank("b", 2)?;
        let (n, k) = (b.shape()[0], b.shape()[1]);
        let data = (0..n).flat_map(|j| (0..k).map(move |p| (j, p))).map(|(j, p)| b.get_f32(&[j, p])).collect();
        Ok(PackedMatrix { data, n, k })
    }

    /// Rows of B (output features).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns of B (input features).
    pub fn k(&self) -> usize {
        self.k
    }
}

/// [`matmul`] with prepacked weights.
pub fn matmul_packed(
    a: &View,
    b: &PackedMatrix,
    bias: Option<&View>,
    c: &mut ViewMut,
    params: &MatmulParams,
) -> Result<()> {
    let b = View::contiguous("b", &b.data, &[b.n, b.k])?;
    crate::reference::matmul(a, &b, bias, c, params)
}
