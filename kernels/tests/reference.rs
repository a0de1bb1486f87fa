//! The reference kernels on hand-computed cases and invariants: they are the spec, so they
//! are checked against arithmetic done by hand, not against themselves.

use flashkern_kernels::attention::{AttentionParams, Causal};
use flashkern_kernels::matmul::{Activation, MatmulParams};
use flashkern_kernels::norm::{NormInputs, NormKind, NormParams};
use flashkern_kernels::reference;
use flashkern_kernels::testing::Rng;
use flashkern_kernels::{View, ViewMut};

fn close(a: f32, b: f64, tol: f64) -> bool {
    (f64::from(a) - b).abs() <= tol
}

#[test]
fn matmul_by_hand() {
    // A = [[1, 2], [3, 4]], B = [[5, 6], [7, 8]] ([N, K]); A·Bᵀ = [[17, 23], [39, 53]].
    let a = [1f32, 2., 3., 4.];
    let b = [5f32, 6., 7., 8.];
    let bias = [0.5f32, -1.0];
    let mut c = [1f32, 1., 1., 1.];
    let params = MatmulParams { alpha: 2.0, beta: -1.0, activation: Activation::None };
    reference::matmul(
        &View::contiguous("a", &a, &[2, 2]).unwrap(),
        &View::contiguous("b", &b, &[2, 2]).unwrap(),
        Some(&View::contiguous("bias", &bias, &[2]).unwrap()),
        &mut ViewMut::contiguous("c", &mut c, &[2, 2]).unwrap(),
        &params,
    )
    .unwrap();
    assert_eq!(c, [2. * 17. - 1. + 0.5, 2. * 23. - 1. - 1., 2. * 39. - 1. + 0.5, 2. * 53. - 1. - 1.]);
}

#[test]
fn matmul_beta_zero_never_reads_c_and_kn_weights_work_through_strides() {
    let a = [1f32, 2., 3.];
    // B stored [K=3, N=2] row-major; as logical [N, K] its strides are [1, 2].
    let b_kn = [1f32, 10., 2., 20., 3., 30.];
    let mut c = [f32::NAN; 2];
    let params = MatmulParams { activation: Activation::GeluErf, ..MatmulParams::default() };
    reference::matmul(
        &View::contiguous("a", &a, &[1, 3]).unwrap(),
        &View::new("b", &b_kn, &[2, 3], &[1, 2]).unwrap(),
        None,
        &mut ViewMut::contiguous("c", &mut c, &[1, 2]).unwrap(),
        &params,
    )
    .unwrap();
    assert!(close(c[0], reference::gelu_erf(14.0), 1e-5) && close(c[1], 140.0, 1e-4), "{c:?}");
}

#[test]
fn matmul_shape_errors_name_the_argument() {
    let x = [0f32; 12];
    let mut c = [0f32; 4];
    let err = reference::matmul(
        &View::contiguous("a", &x, &[2, 3]).unwrap(),
        &View::contiguous("b", &x, &[2, 4]).unwrap(),
        None,
        &mut ViewMut::contiguous("c", &mut c, &[2, 2]).unwrap(),
        &MatmulParams::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("`b`") && err.to_string().contains("[2, 3]"), "{err}");
}

fn run_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    qs: [usize; 4],
    ks: [usize; 4],
    params: &AttentionParams,
) -> (Vec<f32>, Vec<f32>) {
    let vs = [ks[0], ks[1], ks[2], v.len() / (ks[0] * ks[1] * ks[2])];
    let mut out = vec![f32::NAN; qs[0] * qs[1] * qs[2] * vs[3]];
    let mut lse = vec![f32::NAN; qs[0] * qs[1] * qs[2]];
    reference::attention(
        &View::contiguous("q", q, &qs).unwrap(),
        &View::contiguous("k", k, &ks).unwrap(),
        &View::contiguous("v", v, &vs).unwrap(),
        &mut ViewMut::contiguous("out", &mut out, &[qs[0], qs[1], qs[2], vs[3]]).unwrap(),
        params,
        Some(&mut ViewMut::contiguous("lse", &mut lse, &[qs[0], qs[1], qs[2]]).unwrap()),
    )
    .unwrap();
    (out, lse)
}

#[test]
fn attention_by_hand() {
    // One query [1, 0], keys [1, 0] and [0, 1], scale 1: scores 1 and 0.
    let (out, lse) = run_attention(
        &[1., 0.],
        &[1., 0., 0., 1.],
        &[10., 0., 0., 20.],
        [1, 1, 1, 2],
        [1, 1, 2, 2],
        &AttentionParams { scale: Some(1.0), ..Default::default() },
    );
    let e = std::f64::consts::E;
    let (p0, p1) = (e / (e + 1.0), 1.0 / (e + 1.0));
    assert!(close(out[0], 10.0 * p0, 1e-5) && close(out[1], 20.0 * p1, 1e-5), "{out:?}");
    assert!(close(lse[0], (e + 1.0).ln(), 1e-6));
}

#[test]
fn attention_probabilities_rows_sum_to_one_and_respect_causality() {
    let mut rng = Rng::new(3);
    let (nq, nkv, d) = (3, 5, 4);
    let q: Vec<f32> = rng.vec(nq * d, -1., 1.);
    let k: Vec<f32> = rng.vec(nkv * d, -1., 1.);
    for causal in [Causal::None, Causal::TopLeft, Causal::BottomRight] {
        let mut p = vec![f32::NAN; nq * nkv];
        reference::attention_probabilities(
            &View::contiguous("q", &q, &[1, 1, nq, d]).unwrap(),
            &View::contiguous("k", &k, &[1, 1, nkv, d]).unwrap(),
            &AttentionParams { causal, ..Default::default() },
            &mut ViewMut::contiguous("probs", &mut p, &[1, 1, nq, nkv]).unwrap(),
        )
        .unwrap();
        for i in 0..nq {
            let row = &p[i * nkv..(i + 1) * nkv];
            assert!(close(row.iter().sum(), 1.0, 1e-6), "{causal:?} row {i}: {row:?}");
            let last_visible = match causal {
                Causal::None => nkv - 1,
                Causal::TopLeft => i,
                Causal::BottomRight => i + nkv - nq,
            };
            assert!(row[last_visible] > 0.0 && row[last_visible + 1..].iter().all(|&x| x == 0.0), "{causal:?} {row:?}");
        }
    }
}

#[test]
fn attention_is_permutation_equivariant_without_masks() {
    let mut rng = Rng::new(4);
    let (n, d) = (4, 3);
    let q: Vec<f32> = rng.vec(n * d, -1., 1.);
    let k: Vec<f32> = rng.vec(n * d, -1., 1.);
    let v: Vec<f32> = rng.vec(n * d, -1., 1.);
    let perm = [2, 0, 3, 1];
    let permute = |x: &[f32]| perm.iter().flat_map(|&r| x[r * d..(r + 1) * d].to_vec()).collect::<Vec<f32>>();
    let shape = [1, 1, n, d];
    let params = AttentionParams::default();
    let (base, _) = run_attention(&q, &k, &v, shape, shape, &params);
    // Permuting keys and values together changes nothing; permuting queries permutes rows.
    let (kv_perm, _) = run_attention(&q, &permute(&k), &permute(&v), shape, shape, &params);
    let (q_perm, _) = run_attention(&permute(&q), &k, &v, shape, shape, &params);
    for (a, b) in base.iter().zip(&kv_perm) {
        assert!((a - b).abs() < 1e-6);
    }
    for (a, b) in permute(&base).iter().zip(&q_perm) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn fully_masked_rows_output_zero_and_gqa_shares_kv_heads() {
    let q = [1f32, 2., 3., 4.]; // [1, 2 heads, 1, 2]
    let k = [1f32, 1.]; // [1, 1 head, 1, 2]
    let v = [5f32, 7.];
    let lengths = [0usize];
    let (out, lse) = run_attention(
        &q,
        &k,
        &v,
        [1, 2, 1, 2],
        [1, 1, 1, 2],
        &AttentionParams { key_lengths: Some(&lengths), ..Default::default() },
    );
    assert_eq!(out, [0.0; 4]);
    assert_eq!(lse, [f32::NEG_INFINITY; 2]);
    let (out, _) = run_attention(&q, &k, &v, [1, 2, 1, 2], [1, 1, 1, 2], &AttentionParams::default());
    assert_eq!(out, [5., 7., 5., 7.]);
}

#[test]
fn layer_norm_by_hand_and_invariants() {
    // x = [1, 2, 3] + residual [1, 1, 1] = [2, 3, 4]: mean 3, var 2/3.
    let x = [1f32, 2., 3.];
    let r = [1f32, 1., 1.];
    let gamma = [1f32, 1., 1.];
    let mut out = [f32::NAN; 3];
    let mut sum = [f32::NAN; 3];
    let inputs = NormInputs {
        x: View::contiguous("x", &x, &[1, 3]).unwrap(),
        residual: Some(View::contiguous("residual", &r, &[1, 3]).unwrap()),
        bias: None,
        gamma: View::contiguous("gamma", &gamma, &[3]).unwrap(),
        beta: None,
    };
    let params = NormParams { kind: NormKind::LayerNorm, eps: 0.0 };
    reference::add_norm(
        &inputs,
        &params,
        &mut ViewMut::contiguous("out", &mut out, &[1, 3]).unwrap(),
        Some(&mut ViewMut::contiguous("sum_out", &mut sum, &[1, 3]).unwrap()),
    )
    .unwrap();
    let s = (2.0f64 / 3.0).sqrt();
    assert!(close(out[0], -1.0 / s, 1e-6) && close(out[1], 0.0, 1e-7) && close(out[2], 1.0 / s, 1e-6), "{out:?}");
    assert_eq!(sum, [2., 3., 4.]);

    // Large mean (1e4) and unit spread: mean 0, variance 1 afterwards.
    let mut rng = Rng::new(5);
    let hidden = 1000;
    let x: Vec<f32> = (0..hidden).map(|_| 1e4 + rng.uniform(-1.7, 1.7)).collect();
    let gamma = vec![1f32; hidden];
    let mut out = vec![f32::NAN; hidden];
    let inputs = NormInputs {
        x: View::contiguous("x", &x, &[1, hidden]).unwrap(),
        residual: None,
        bias: None,
        gamma: View::contiguous("gamma", &gamma, &[hidden]).unwrap(),
        beta: None,
    };
    reference::add_norm(
        &inputs,
        &NormParams { kind: NormKind::LayerNorm, eps: 0.0 },
        &mut ViewMut::contiguous("out", &mut out, &[1, hidden]).unwrap(),
        None,
    )
    .unwrap();
    let mean: f64 = out.iter().map(|&v| f64::from(v)).sum::<f64>() / hidden as f64;
    let var: f64 = out.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / hidden as f64;
    assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "mean {mean} var {var}");
}

#[test]
fn rms_norm_by_hand() {
    let x = [3f32, 4.];
    let gamma = [2f32, 1.];
    let mut out = [f32::NAN; 2];
    let inputs = NormInputs {
        x: View::contiguous("x", &x, &[1, 2]).unwrap(),
        residual: None,
        bias: None,
        gamma: View::contiguous("gamma", &gamma, &[2]).unwrap(),
        beta: None,
    };
    reference::add_norm(
        &inputs,
        &NormParams { kind: NormKind::RmsNorm, eps: 0.0 },
        &mut ViewMut::contiguous("out", &mut out, &[1, 2]).unwrap(),
        None,
    )
    .unwrap();
    let rms = (12.5f64).sqrt();
    assert!(close(out[0], 6.0 / rms, 1e-6) && close(out[1], 4.0 / rms, 1e-6), "{out:?}");
}
