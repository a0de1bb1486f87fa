//! Transformer models built from the kernels: [`bert`] (encoder, sentence embeddings) and
//! [`gpt2`] (decoder with a KV cache). The models hold no arithmetic of their own beyond
//! glue — embedding gathers, pooling, L2 normalisation and argmax; every matmul, attention
//! and norm is a kernel call.
//!
//! Weights are converted to the requested dtype and packed once at load; activations are f32.

pub mod bert;
pub mod gpt2;
#[allow(unsafe_code)]
mod huge_pages;

use crate::error::{ModelError, ModelResult};
use crate::weights::{Tensor, Weights};
use flashkern_kernels::matmul::{self, Activation, MatmulParams, PackedMatrix};
use flashkern_kernels::norm::{self, NormInputs, NormKind, NormParams};
use flashkern_kernels::simd::convert;
use flashkern_kernels::tensor::Data;
use flashkern_kernels::{Buffer, DType, View, ViewMut, bf16, f16};

/// `data` converted to `dtype` (16-bit ↔ 16-bit goes through f32, exactly for the widening).
pub(crate) fn convert_to(data: Data, dtype: DType) -> ModelResult<Buffer> {
    let wide = |data: Data| -> ModelResult<Vec<f32>> {
        let mut out = vec![0f32; data.len()];
        match data {
            Data::F32(s) => out.copy_from_slice(s),
            Data::F16(s) => convert::f16_to_f32(s, &mut out)?,
            Data::BF16(s) => convert::bf16_to_f32(s, &mut out)?,
        }
        Ok(out)
    };
    Ok(match (data, dtype) {
        (Data::F16(s), DType::F16) => Buffer::F16(s.to_vec()),
        (Data::BF16(s), DType::BF16) => Buffer::BF16(s.to_vec()),
        (data, DType::F32) => Buffer::F32(wide(data)?),
        (data, DType::F16) => {
            let src = wide(data)?;
            let mut out = vec![f16::ZERO; src.len()];
            convert::f32_to_f16(&src, &mut out)?;
            Buffer::F16(out)
        }
        (Data::F32(s), DType::BF16) => {
            let mut out = vec![bf16::ZERO; s.len()];
            convert::f32_to_bf16(s, &mut out)?;
            Buffer::BF16(out)
        }
        (data, DType::BF16) => {
            let src = wide(data)?;
            let mut out = vec![bf16::ZERO; src.len()];
            convert::f32_to_bf16(&src, &mut out)?;
            Buffer::BF16(out)
        }
    })
}

/// Converts `src` into `dst[range]` (equal lengths).
fn convert_into(src: Data, dst: &mut Buffer, range: std::ops::Range<usize>) -> ModelResult<()> {
    match (src, dst) {
        (Data::F32(s), Buffer::F32(d)) => d[range].copy_from_slice(s),
        (Data::F16(s), Buffer::F16(d)) => d[range].copy_from_slice(s),
        (Data::BF16(s), Buffer::BF16(d)) => d[range].copy_from_slice(s),
        (Data::F16(s), Buffer::F32(d)) => convert::f16_to_f32(s, &mut d[range])?,
        (Data::BF16(s), Buffer::F32(d)) => convert::bf16_to_f32(s, &mut d[range])?,
        (Data::F32(s), Buffer::BF16(d)) => convert::f32_to_bf16(s, &mut d[range])?,
        (Data::F32(s), Buffer::F16(d)) => convert::f32_to_f16(s, &mut d[range])?,
        (src, dst) => match convert_to(src, DType::F32)? {
            Buffer::F32(wide) => convert_into(Data::F32(&wide), dst, range)?,
            _ => unreachable!("converted to f32"),
        },
    }
    Ok(())
}

/// A small parameter vector (bias, γ, β), widened to f32 at load (a few KiB per layer).
pub(crate) fn vector(weights: &Weights, name: &str, len: usize) -> ModelResult<Vec<f32>> {
    let t = weights.get_shaped(name, &[len])?;
    match convert_to(t.data(), DType::F32)? {
        Buffer::F32(v) => Ok(v),
        _ => unreachable!("converted to f32"),
    }
}

/// An embedding table: a zero-copy view of the checkpoint when it already has the wanted
/// dtype, otherwise converted once at load.
#[derive(Debug)]
pub(crate) enum Table {
    Mapped(String),
    Owned(Buffer),
}

impl Table {
    pub(crate) fn load(weights: &Weights, name: &str, shape: &[usize], dtype: DType) -> ModelResult<Table> {
        let t = weights.get_shaped(name, shape)?;
        if t.dtype() == dtype {
            Ok(Table::Mapped(name.to_string()))
        } else {
            Ok(Table::Owned(convert_to(t.data(), dtype)?))
        }
    }

    pub(crate) fn data<'a>(&'a self, weights: &'a Weights) -> ModelResult<Data<'a>> {
        match self {
            Table::Mapped(name) => Ok(weights.get(name)?.data()),
            Table::Owned(o) => Ok(o.data()),
        }
    }
}

/// How a checkpoint stores a linear layer's weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightLayout {
    /// nn.Linear: `[out, in]` = the kernels' `[N, K]`.
    OutIn,
    /// GPT-2 Conv1D: `[in, out]`, seen as `[N, K]` with strides `[1, N]`.
    InOut,
}

/// A packed weight and its bias.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) weight: PackedMatrix,
    pub(crate) bias: Option<Vec<f32>>,
}

/// Packs the logical `[n, k]` weight given as consecutive `parts` along N (one part is the
/// common case; BERT's Q, K and V are fused into one), converting to `dtype` first when the
/// checkpoint holds another dtype. Only for several parts, or a conversion, is a temporary
/// made; it is dropped once packed.
pub(crate) fn pack(parts: &[Tensor], layout: WeightLayout, dtype: DType) -> ModelResult<PackedMatrix> {
    let (n_part, k) = match layout {
        WeightLayout::OutIn => (parts[0].shape()[0], parts[0].shape()[1]),
        WeightLayout::InOut => (parts[0].shape()[1], parts[0].shape()[0]),
    };
    let n = n_part * parts.len();
    let strides = match layout {
        WeightLayout::OutIn => [k, 1],
        WeightLayout::InOut => [1, n],
    };
    if parts.len() == 1 && parts[0].dtype() == dtype {
        let view = View::from_data("weight", parts[0].data(), &[n, k], &strides)?;
        return Ok(PackedMatrix::pack(&view)?);
    }
    if layout == WeightLayout::InOut && parts.len() != 1 {
        return Err(ModelError::InvalidInput { arg: "parts", reason: "Conv1D weights are packed whole".into() });
    }
    // One temporary in the target dtype, each part converted straight into its rows.
    let part_len = n_part * k;
    let mut joined = match dtype {
        DType::F32 => Buffer::F32(vec![0.0; n * k]),
        DType::F16 => Buffer::F16(vec![f16::ZERO; n * k]),
        DType::BF16 => Buffer::BF16(vec![bf16::ZERO; n * k]),
    };
    for (i, part) in parts.iter().enumerate() {
        let range = i * part_len..(i + 1) * part_len;
        convert_into(part.data(), &mut joined, range)?;
    }
    let view = View::from_data("weight", joined.data(), &[n, k], &strides)?;
    Ok(PackedMatrix::pack(&view)?)
}

/// `out[rows, N] = act(x[rows, K]·Wᵀ + bias)`.
pub(crate) fn linear(
    x: &[f32],
    rows: usize,
    weight: &PackedMatrix,
    bias: Option<&[f32]>,
    activation: Activation,
    out: &mut [f32],
) -> ModelResult<()> {
    let (n, k) = (weight.n(), weight.k());
    let a = View::contiguous("x", &x[..rows * k], &[rows, k])?;
    let mut c = ViewMut::contiguous("out", &mut out[..rows * n], &[rows, n])?;
    let bias = bias.map(|b| View::contiguous("bias", b, &[n])).transpose()?;
    let params = MatmulParams { alpha: 1.0, beta: 0.0, activation };
    matmul::matmul_packed(&a, weight, bias.as_ref(), &mut c, &params)?;
    Ok(())
}

/// Rows `start..start + len` of a row-major table with `hidden` columns, as a `[len, hidden]` view.
pub(crate) fn rows_view<'a>(table: Data<'a>, start: usize, len: usize, hidden: usize) -> ModelResult<View<'a>> {
    let range = start * hidden..(start + len) * hidden;
    let data = match table {
        Data::F32(s) => Data::F32(&s[range]),
        Data::F16(s) => Data::F16(&s[range]),
        Data::BF16(s) => Data::BF16(&s[range]),
    };
    Ok(View::from_data("table rows", data, &[len, hidden], &[hidden, 1])?)
}

/// LayerNorm parameters.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) eps: f32,
}

impl LayerNorm {
    pub(crate) fn load(weights: &Weights, prefix: &str, names: [&str; 2], len: usize, eps: f32) -> ModelResult<Self> {
        Ok(LayerNorm {
            gamma: vector(weights, &format!("{prefix}.{}", names[0]), len)?,
            beta: vector(weights, &format!("{prefix}.{}", names[1]), len)?,
            eps,
        })
    }

    /// `out = LN(x + residual + bias)`, also writing the sum to `sum_out` when given.
    pub(crate) fn apply(
        &self,
        x: View,
        residual: Option<View>,
        bias: Option<&[f32]>,
        out: &mut [f32],
        sum_out: Option<&mut [f32]>,
    ) -> ModelResult<()> {
        let [rows, hidden] = [x.shape()[0], x.shape()[1]];
        let inputs = NormInputs {
            x,
            residual,
            bias: bias.map(|b| View::contiguous("bias", b, &[hidden])).transpose()?,
            gamma: View::contiguous("gamma", &self.gamma, &[hidden])?,
            beta: Some(View::contiguous("beta", &self.beta, &[hidden])?),
        };
        let params = NormParams { kind: NormKind::LayerNorm, eps: self.eps };
        let mut out = ViewMut::contiguous("out", &mut out[..rows * hidden], &[rows, hidden])?;
        let mut sum = match sum_out {
            Some(s) => Some(ViewMut::contiguous("sum_out", &mut s[..rows * hidden], &[rows, hidden])?),
            None => None,
        };
        norm::add_norm(&inputs, &params, &mut out, sum.as_mut())?;
        Ok(())
    }
}

/// Copies embedding rows `ids` of a `[vocab, hidden]` table into `out` (widened to f32).
pub(crate) fn gather(table: Data, ids: &[u32], vocab: usize, hidden: usize, out: &mut [f32]) -> ModelResult<()> {
    let isa = flashkern_kernels::effective_isa();
    for (row, &id) in out.chunks_exact_mut(hidden).zip(ids) {
        let id = id as usize;
        if id >= vocab {
            return Err(ModelError::InvalidInput {
                arg: "ids",
                reason: format!("token id {id} is outside the vocabulary of {vocab}"),
            });
        }
        table.widen(id * hidden, row, isa);
    }
    Ok(())
}

/// Parses a `--dtype`-style name.
pub fn parse_dtype(name: &str) -> ModelResult<DType> {
    DType::ALL
        .into_iter()
        .find(|dtype| dtype.name() == name)
        .ok_or_else(|| ModelError::InvalidInput { arg: "dtype", reason: format!("{name:?} is not f32, bf16 or f16") })
}

/// The tensor-name prefix a checkpoint uses: the first of `candidates` under which `probe`
/// exists (checkpoints of the same architecture differ, e.g. `bert.` or none).
pub(crate) fn find_prefix(weights: &Weights, candidates: &[&str], probe: &str) -> ModelResult<String> {
    candidates.iter().find(|p| weights.contains(&format!("{p}{probe}"))).map(|p| p.to_string()).ok_or_else(|| {
        ModelError::MissingTensor {
            source: weights.source().to_string(),
            tensor: format!("{}{probe}", candidates.first().copied().unwrap_or_default()),
        }
    })
}
