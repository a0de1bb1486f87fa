//! Vectorised GELU for the matmul epilogue, one formula for every ISA (scalar included), so an
//! element's result never depends on where it sits in a vector (a row's partial last vector is
//! zero-padded).
//!
//! - `exp`: Cody–Waite reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, degree-6 Taylor polynomial
//!   (truncation ≤ 1.2e-7 relative) scaled by `2ⁿ` built in the exponent bits; arguments are
//!   clamped to [−87.3, 88.3] so `2ⁿ` stays normal. About 3 ulp relative.
//! - GELU-tanh: `0.5·x·(1 + tanh(u)) = x / (1 + e^(−2u))`, `u = √(2/π)·(x + 0.044715·x³)`:
//!   no cancellation for negative x; a few ulp relative to `|x|`.
//! - GELU-erf: `0.5·x·(1 + erf(x/√2))` with Abramowitz–Stegun 7.1.26 for `erfc(|z|) =
//!   poly(t)·e^(−z²)`, `t = 1/(1 + 0.3275911·|z|)` (absolute error ≤ 1.5e-7), so the output
//!   error is ≤ 0.75e-7·|x| plus a few ulp; the negative tail is computed as `0.5·x·erfc(|z|)`,
//!   without cancellation.
//!
//! NaN inputs give NaN (restored by a final select, since min/max clamping would drop it).

use super::Activation;
use pulp::Simd;

/// `activation` of every lane.
#[inline(always)]
pub(super) fn activate<S: Simd>(simd: S, x: S::f32s, activation: Activation) -> S::f32s {
    match activation {
        Activation::None => x,
        Activation::GeluErf => gelu(simd, x, true),
        Activation::GeluTanh => gelu(simd, x, false),
    }
}

#[inline(always)]
fn gelu<S: Simd>(simd: S, x: S::f32s, erf: bool) -> S::f32s {
    let y = if erf { gelu_erf(simd, x) } else { gelu_tanh(simd, x) };
    simd.select_f32s(simd.equal_f32s(x, x), y, x)
}

#[inline(always)]
fn gelu_tanh<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let c = simd.splat_f32s(-2.0 * 0.797_884_6);
    let x3 = simd.mul_f32s(simd.mul_f32s(x, x), x);
    let minus_2u = simd.mul_f32s(c, simd.mul_add_e_f32s(simd.splat_f32s(0.044_715), x3, x));
    let one = simd.splat_f32s(1.0);
    simd.div_f32s(x, simd.add_f32s(one, exp(simd, minus_2u)))
}

#[inline(always)]
fn gelu_erf<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    // |x|/√2 and −z² with the sign bit by hand: pulp's provided `abs_f32s` / `neg_f32s` are only
    // `#[inline]` and were compiled as out-of-line calls, one per vector.
    let magnitude = splat(simd, f32::from_bits(0x7fff_ffff));
    let z = simd.and_f32s(simd.mul_f32s(x, splat(simd, std::f32::consts::FRAC_1_SQRT_2)), magnitude);
    let t = simd.div_f32s(splat(simd, 1.0), simd.mul_add_e_f32s(splat(simd, 0.327_591_1), z, splat(simd, 1.0)));
    let mut poly = splat(simd, 1.061_405_4);
    for a in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
        poly = simd.mul_add_e_f32s(poly, t, splat(simd, a));
    }
    poly = simd.mul_f32s(poly, t);
    let minus_z2 = simd.mul_f32s(simd.xor_f32s(z, splat(simd, -0.0)), z);
    let erfc = simd.mul_f32s(poly, exp(simd, minus_z2));
    // 1 + erf(x/√2) is erfc(|z|) for x < 0 and 2 − erfc(|z|) otherwise.
    let negative = simd.less_than_f32s(x, splat(simd, 0.0));
    let one_plus_erf = simd.select_f32s(negative, erfc, simd.sub_f32s(splat(simd, 2.0), erfc));
    simd.mul_f32s(simd.mul_f32s(splat(simd, 0.5), x), one_plus_erf)
}

#[inline(always)]
fn exp<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let x = simd.min_f32s(simd.max_f32s(x, splat(simd, -87.3)), splat(simd, 88.3));
    // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let t = simd.mul_add_e_f32s(x, splat(simd, std::f32::consts::LOG2_E), splat(simd, MAGIC));
    let n = simd.sub_f32s(t, splat(simd, MAGIC));
    let r = simd.mul_add_e_f32s(n, splat(simd, -0.693_145_75), x);
    let r = simd.mul_add_e_f32s(n, splat(simd, -1.428_606_8e-6), r);
    let mut p = splat(simd, 1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = simd.mul_add_e_f32s(p, r, splat(simd, c));
    }
    // 2ⁿ: (n + 127) << 23, with n read back from t's bits.
    let bits = simd.transmute_u32s_f32s(t);
    let biased = simd.add_u32s(simd.sub_u32s(bits, simd.splat_u32s(MAGIC.to_bits())), simd.splat_u32s(127));
    let scale = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(biased, simd.splat_u32s(23)));
    simd.mul_f32s(p, scale)
}

/// A broadcast constant (a function, not a closure: closures do not inherit the caller's
/// target features, so the intrinsic would not inline into one).
#[inline(always)]
fn splat<S: Simd>(simd: S, v: f32) -> S::f32s {
    simd.splat_f32s(v)
}
