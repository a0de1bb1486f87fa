//! Numerically hostile inputs through the public API, checked against the f64 reference:
//! subnormals are kept (no flush-to-zero in f32 paths), scores far beyond exp's range stay
//! finite thanks to the max subtraction, ±∞ and NaN reach only the rows they touch.

use flashkern::attention::{self, AttentionParams};
use flashkern::isa::Isa;
use flashkern::kernels::testing::{Tolerance, assert_close, on_every_isa};
use flashkern::matmul::{self, MatmulParams};
use flashkern::norm::{self, NormInputs, NormKind, NormParams};
use flashkern::{DType, View, ViewMut, reference};

#[test]
fn subnormal_operands_are_not_flushed_in_f32_matmul() {
    let (m, k, n) = (3, 40, 5);
    let a: Vec<f32> = (0..m * k).map(|i| f32::from_bits(1 + (i as u32 % 50) * 1000)).collect(); // subnormals
    let b: Vec<f32> = (0..n * k).map(|i| 1.0 + (i % 7) as f32).collect();
    let mut want = vec![f32::NAN; m * n];
    let (av, bv) = (View::contiguous("a", &a, &[m, k]).unwrap(), View::contiguous("b", &b, &[n, k]).unwrap());
    reference::matmul(
        &av,
        &bv,
        None,
        &mut ViewMut::contiguous("c", &mut want, &[m, n]).unwrap(),
        &MatmulParams::default(),
    )
    .unwrap();
    assert!(want.iter().all(|&x| x != 0.0 && x.is_subnormal() || x.is_normal()));
    on_every_isa(Isa::Avx512, |isa| {
        let mut got = vec![f32::NAN; m * n];
        matmul::matmul(
            &av,
            &bv,
            None,
            &mut ViewMut::contiguous("c", &mut got, &[m, n]).unwrap(),
            &MatmulParams::default(),
        )
        .unwrap();
        // Subnormal arithmetic loses relative precision, so compare against |want| loosely —
        // a flush to zero would be off by 100 %.
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-3 * w.abs(), "{isa}: got {g:e}, want {w:e}");
        }
    });
}

#[test]
fn attention_keeps_subnormal_values_and_survives_huge_and_infinite_inputs() {
    let (n, d) = (9, 8);
    let mut q: Vec<f32> = (0..n * d).map(|i| ((i % 5) as f32 - 2.0) * 1e3).collect(); // scores ~1e6·scale
    q[4 * d + 2] = f32::INFINITY; // query row 4 only: its scores include ∞·0 = NaN
    let k: Vec<f32> = (0..n * d).map(|i| ((i % 3) as f32 - 1.0) * 1e2).collect();
    let v: Vec<f32> = (0..n * d).map(|i| f32::from_bits(10_000 + i as u32)).collect(); // subnormal V
    let shape = [1, 1, n, d];
    let (qv, kv, vv) = (
        View::contiguous("q", &q, &shape).unwrap(),
        View::contiguous("k", &k, &shape).unwrap(),
        View::contiguous("v", &v, &shape).unwrap(),
    );
    let params = AttentionParams::default();
    let mut want = vec![f32::NAN; n * d];
    reference::attention(&qv, &kv, &vv, &mut ViewMut::contiguous("out", &mut want, &shape).unwrap(), &params, None)
        .unwrap();
    on_every_isa(Isa::Avx512, |isa| {
        let mut got = vec![f32::NAN; n * d];
        attention::attention(&qv, &kv, &vv, &mut ViewMut::contiguous("out", &mut got, &shape).unwrap(), &params, None)
            .unwrap();
        assert!(want[4 * d..5 * d].iter().all(|w| w.is_nan()) && want[..4 * d].iter().all(|w| w.is_finite()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let same_class = g.is_nan() == w.is_nan() && g.is_infinite() == w.is_infinite();
            let close = !w.is_finite() || (g - w).abs() <= 1e-2 * w.abs() + f32::from_bits(64);
            assert!(same_class && close, "{isa} element {i}: got {g:e}, want {w:e}");
        }
    });
}

#[test]
fn norm_rows_with_infinity_or_nan_stay_in_their_row_and_eps_zero_constant_rows_are_nan() {
    let hidden = 37;
    let mut x: Vec<f32> = (0..4 * hidden).map(|i| (i % 11) as f32).collect();
    x[hidden + 5] = f32::INFINITY;
    x[2 * hidden + 7] = f32::NAN;
    x[3 * hidden..].fill(2.5); // a constant row
    let gamma = vec![1f32; hidden];
    let inputs = NormInputs {
        x: View::contiguous("x", &x, &[4, hidden]).unwrap(),
        residual: None,
        bias: None,
        gamma: View::contiguous("gamma", &gamma, &[hidden]).unwrap(),
        beta: None,
    };
    for eps in [0.0, 1e-5] {
        let params = NormParams { kind: NormKind::LayerNorm, eps };
        let mut want = vec![0f32; 4 * hidden];
        reference::add_norm(&inputs, &params, &mut ViewMut::contiguous("out", &mut want, &[4, hidden]).unwrap(), None)
            .unwrap();
        on_every_isa(Isa::Avx512, |_| {
            let mut got = vec![0f32; 4 * hidden];
            norm::add_norm(&inputs, &params, &mut ViewMut::contiguous("out", &mut got, &[4, hidden]).unwrap(), None)
                .unwrap();
            assert!(got[..hidden].iter().all(|v| v.is_finite()), "row 0 untouched by the others");
            assert!(got[hidden..3 * hidden].iter().all(|v| v.is_nan()), "rows with ∞ / NaN are NaN");
            let constant = &got[3 * hidden..];
            if eps == 0.0 {
                assert!(constant.iter().all(|v| v.is_nan()), "0/0 on a constant row with eps = 0");
            } else {
                assert!(constant.iter().all(|&v| v == 0.0), "constant row with eps > 0 gives β = 0");
            }
            assert_close(
                "finite row",
                &got[..hidden],
                &want[..hidden],
                None,
                Tolerance::accumulation(hidden, DType::F32),
            );
        });
    }
}
