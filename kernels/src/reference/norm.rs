//! Residual add + LayerNorm / RMSNorm by the definition.

use crate::error::Result;
use crate::norm::{NormInputs, NormKind, NormParams, check_args};
use crate::tensor::ViewMut;

/// The reference twin of [`crate::norm::add_norm`]: `h = x + residual + bias` in f64,
/// mean and centred variance in f64, one rounding per output element.
pub fn add_norm(
    inputs: &NormInputs,
    params: &NormParams,
    out: &mut ViewMut,
    mut sum_out: Option<&mut ViewMut>,
) -> Result<()> {
    let dims = check_args(inputs, params, out, sum_out.as_deref())?;
    let mut h = vec![0f64; dims.hidden];
    for row in 0..dims.rows {
        for (col, value) in h.iter_mut().enumerate() {
            *value = f64::from(inputs.x.get_f32(&[row, col]));
            if let Some(residual) = &inputs.residual {
                *value += f64::from(residual.get_f32(&[row, col]));
            }
            if let Some(bias) = &inputs.bias {
                *value += f64::from(bias.get_f32(&[col]));
            }
        }
        let n = dims.hidden as f64;
        let (mean, mean_square) = match params.kind {
            NormKind::LayerNorm => {
                let mean = h.iter().sum::<f64>() / n;
                (mean, h.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n)
            }
            NormKind::RmsNorm => (0.0, h.iter().map(|v| v * v).sum::<f64>() / n),
        };
        let inv_std = 1.0 / (mean_square + f64::from(params.eps)).sqrt();
        for (col, &value) in h.iter().enumerate() {
            let mut y = (value - mean) * inv_std * f64::from(inputs.gamma.get_f32(&[col]));
            if let Some(beta) = &inputs.beta {
                y += f64::from(beta.get_f32(&[col]));
            }
            out.set_f32(&[row, col], y as f32);
            if let Some(sum_out) = sum_out.as_deref_mut() {
                sum_out.set_f32(&[row, col], value as f32);
            }
        }
    }
    Ok(())
}
