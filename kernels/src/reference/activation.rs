//! Scalar activations and softmax in f64.

/// `x·Φ(x) = 0.5·x·(1 + erf(x/√2))`.
pub fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh(x: f64) -> f64 {
    let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (sqrt_2_over_pi * (x + 0.044715 * x * x * x)).tanh())
}

/// Softmax of one row. −∞ entries get probability 0; a row that is entirely −∞ (fully masked)
/// gives all zeros rather than NaN. NaN anywhere makes the whole row NaN.
pub fn softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if row.iter().any(|x| x.is_nan()) {
        return vec![f64::NAN; row.len()];
    }
    if max == f64::NEG_INFINITY {
        return vec![0.0; row.len()];
    }
    let exps: Vec<f64> = row.iter().map(|&x| (x - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_known_values() {
        assert_eq!(gelu_erf(0.0), 0.0);
        assert!((gelu_erf(1.0) - 0.841_344_746_068_543).abs() < 1e-12);
        assert!((gelu_erf(-1.0) + 0.158_655_253_931_457).abs() < 1e-12);
        assert!((gelu_tanh(1.0) - 0.841_191_990_607_477_9).abs() < 1e-12);
        assert!(gelu_tanh(-30.0).abs() < 1e-12 && (gelu_tanh(30.0) - 30.0).abs() < 1e-12);
    }

    #[test]
    fn softmax_sums_to_one_and_handles_masks() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((p[2] / p[1] - std::f64::consts::E).abs() < 1e-12);
        assert_eq!(softmax(&[f64::NEG_INFINITY; 3]), vec![0.0; 3]);
        assert_eq!(softmax(&[0.0, f64::NEG_INFINITY]), vec![1.0, 0.0]);
        // Huge logits: the max subtraction keeps exp finite.
        let p = softmax(&[1e4, 1e4 - 1.0]);
        assert!((p[0] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
        assert!(softmax(&[0.0, f64::NAN])[0].is_nan());
    }
}
