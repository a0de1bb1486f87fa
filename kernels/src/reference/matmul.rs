//! `C = act(α·A·Bᵀ + β·C + bias)` by the definition.

use super::activation::{gelu_erf, gelu_tanh};
use crate::error::Result;
use crate::matmul::{Activation, MatmulParams, check_shapes};
use crate::tensor::{View, ViewMut};

/// The reference twin of [`crate::matmul::matmul`]: f64 dot products, one rounding to C's
/// dtype at the end. β = 0 never reads C.
pub fn matmul(a: &View, b: &View, bias: Option<&View>, c: &mut ViewMut, params: &MatmulParams) -> Result<()> {
    let dims = check_shapes(a, b, bias, c)?;
    for i in 0..dims.m {
        for j in 0..dims.n {
            let dot: f64 = (0..dims.k).map(|p| f64::from(a.get_f32(&[i, p])) * f64::from(b.get_f32(&[j, p]))).sum();
            let mut value = f64::from(params.alpha) * dot;
            if params.beta != 0.0 {
                value += f64::from(params.beta) * f64::from(c.get_f32(&[i, j]));
            }
            if let Some(bias) = bias {
                value += f64::from(bias.get_f32(&[j]));
            }
            value = match params.activation {
                Activation::None => value,
                Activation::GeluErf => gelu_erf(value),
                Activation::GeluTanh => gelu_tanh(value),
            };
            c.set_f32(&[i, j], value as f32);
        }
    }
    Ok(())
}
