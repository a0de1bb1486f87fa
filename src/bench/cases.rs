//! One function per op: builds the SHAPES.md problem, times our kernel and its baseline.

use super::peer::gemm_bt;
use super::shapes::{AttentionShape, MatmulShape, NormShape};
use flashkern_kernels::attention::{self, AttentionParams, Causal};
use flashkern_kernels::matmul::{self, MatmulParams, PackedMatrix};
use flashkern_kernels::norm::{self, NormInputs, NormKind, NormParams};
use flashkern_kernels::testing::{Buffer, Rng};
use flashkern_kernels::{DType, Result, View, ViewMut, f16};
use std::time::Instant;

/// Median seconds of `f` over repetitions filling about `budget` seconds (at most 1000), after
/// one warm-up call; a call that alone takes longer than the budget is measured once more.
pub fn median_seconds(budget: f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    let first = start.elapsed().as_secs_f64();
    // Up to 1000 repetitions: a microsecond-scale case (a norm over 128 rows) then fills its
    // budget, and one call preempted by another tenant moves the median less than among 30.
    let reps = ((budget / first.max(1e-9)) as usize).clamp(1, 1000);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

/// `n` random values in `[-1, 1)` stored as `dtype`.
pub fn random(dtype: DType, n: usize, seed: u64) -> Buffer {
    Buffer::random(dtype, n, &mut Rng::new(seed), -1.0, 1.0)
}

/// Seconds of (ours, baseline) for one matmul shape: f32 runs `matmul` against the `gemm`
/// crate's f32; 16-bit dtypes run `matmul_packed` with weights stored in that dtype (packed
/// once, as at model load) against `gemm`'s f16 (for f16) or f32 (for bf16, which gemm lacks).
pub fn matmul(shape: &MatmulShape, dtype: DType, budget: f64) -> Result<(f64, f64)> {
    let MatmulShape { m, k, n, .. } = *shape;
    let a = random(DType::F32, m * k, 1);
    let b = random(dtype, n * k, 2);
    let mut c = vec![0f32; m * n];
    let params = MatmulParams::default();
    let a_view = a.contiguous("a", &[m, k])?;
    let b_view = b.contiguous("b", &[n, k])?;
    let ours = if dtype == DType::F32 {
        median_seconds(budget, || {
            matmul::matmul(&a_view, &b_view, None, &mut ViewMut::contiguous("c", &mut c, &[m, n])?, &params)
        })?
    } else {
        let packed = PackedMatrix::pack(&b_view)?;
        median_seconds(budget, || {
            matmul::matmul_packed(&a_view, &packed, None, &mut ViewMut::contiguous("c", &mut c, &[m, n])?, &params)
        })?
    };
    let baseline = match dtype {
        DType::F16 => {
            let a16: Vec<f16> = (0..m * k).map(|i| f16::from_f32(a_view.data().get_f32(i))).collect();
            let b16: Vec<f16> = (0..n * k).map(|i| f16::from_f32(b_view.data().get_f32(i))).collect();
            let mut c16 = vec![f16::ZERO; m * n];
            median_seconds(budget, || {
                gemm_bt(&a16, &b16, &mut c16, [m, k, n]);
                Ok(())
            })?
        }
        _ => {
            let a32: Vec<f32> = (0..m * k).map(|i| a_view.data().get_f32(i)).collect();
            let b32: Vec<f32> = (0..n * k).map(|i| b_view.data().get_f32(i)).collect();
            median_seconds(budget, || {
                gemm_bt(&a32, &b32, &mut c, [m, k, n]);
                Ok(())
            })?
        }
    };
    Ok((ours, baseline))
}

/// Seconds of (ours, naive) for one attention shape with q, k, v stored as `dtype` and f32
/// output. The naive path materialises S = Q·Kᵀ per head with our matmul, applies the
/// (causal) mask and a softmax row by row, then O = P·V with our matmul.
pub fn attention(shape: &AttentionShape, dtype: DType, budget: f64) -> Result<(f64, f64)> {
    let AttentionShape { b, h_q, h_kv, n_q, n_kv, d, causal, .. } = *shape;
    let q = random(dtype, b * h_q * n_q * d, 3);
    let k = random(dtype, b * h_kv * n_kv * d, 4);
    let v = random(dtype, b * h_kv * n_kv * d, 5);
    let mut out = vec![0f32; b * h_q * n_q * d];
    let (qv, kv, vv) = (
        q.contiguous("q", &[b, h_q, n_q, d])?,
        k.contiguous("k", &[b, h_kv, n_kv, d])?,
        v.contiguous("v", &[b, h_kv, n_kv, d])?,
    );
    let params = AttentionParams { causal: if causal { Causal::TopLeft } else { Causal::None }, ..Default::default() };
    let ours = median_seconds(budget, || {
        attention::attention(
            &qv,
            &kv,
            &vv,
            &mut ViewMut::contiguous("out", &mut out, &[b, h_q, n_q, d])?,
            &params,
            None,
        )
    })?;
    let mut scores = vec![0f32; n_q * n_kv];
    let scale = 1.0 / (d as f32).sqrt();
    let naive = median_seconds(budget, || {
        for batch in 0..b {
            for h in 0..h_q {
                let kv_h = h / (h_q / h_kv);
                let q_off = (batch * h_q + h) * n_q * d;
                let kv_off = (batch * h_kv + kv_h) * n_kv * d;
                let q_head = View::from_data("q", slice(qv.data(), q_off, n_q * d), &[n_q, d], &[d, 1])?;
                let k_head = View::from_data("k", slice(kv.data(), kv_off, n_kv * d), &[n_kv, d], &[d, 1])?;
                // V [Nkv, D] as the logical [N = D, K = Nkv] operand: strides [1, D].
                let v_head = View::from_data("v", slice(vv.data(), kv_off, n_kv * d), &[d, n_kv], &[1, d])?;
                let s_params = MatmulParams { alpha: scale, ..MatmulParams::default() };
                matmul::matmul(
                    &q_head,
                    &k_head,
                    None,
                    &mut ViewMut::contiguous("s", &mut scores, &[n_q, n_kv])?,
                    &s_params,
                )?;
                for (i, row) in scores.chunks_exact_mut(n_kv).enumerate() {
                    let visible = if causal { i + 1 } else { n_kv };
                    softmax_prefix(row, visible);
                }
                let p = View::contiguous("p", &scores, &[n_q, n_kv])?;
                let o = &mut out[(batch * h_q + h) * n_q * d..][..n_q * d];
                matmul::matmul(
                    &p,
                    &v_head,
                    None,
                    &mut ViewMut::contiguous("o", o, &[n_q, d])?,
                    &MatmulParams::default(),
                )?;
            }
        }
        Ok(())
    })?;
    Ok((ours, naive))
}

fn slice<'a>(data: flashkern_kernels::Data<'a>, offset: usize, len: usize) -> flashkern_kernels::Data<'a> {
    use flashkern_kernels::Data;
    match data {
        Data::F32(s) => Data::F32(&s[offset..offset + len]),
        Data::F16(s) => Data::F16(&s[offset..offset + len]),
        Data::BF16(s) => Data::BF16(&s[offset..offset + len]),
    }
}

/// Softmax over `row[..visible]`, zeros after (the naive path's mask).
fn softmax_prefix(row: &mut [f32], visible: usize) {
    let max = row[..visible].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in &mut row[..visible] {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in &mut row[..visible] {
        *x /= sum;
    }
    row[visible..].fill(0.0);
}

/// Seconds of (fused, unfused) post-norm `out = LN(x + r)·γ + β` with x, r, out in `dtype`
/// (γ, β f32). Unfused writes `h = x + r` to memory, then normalises `h`.
pub fn norm(shape: &NormShape, dtype: DType, budget: f64) -> Result<(f64, f64)> {
    let NormShape { rows, hidden, .. } = *shape;
    let x = random(dtype, rows * hidden, 6);
    let r = random(dtype, rows * hidden, 7);
    let mut out = random(dtype, rows * hidden, 8);
    let mut h = random(dtype, rows * hidden, 9);
    let gamma = vec![1f32; hidden];
    let beta = vec![0f32; hidden];
    let params = NormParams { kind: NormKind::LayerNorm, eps: 1e-5 };
    let gamma_v = View::contiguous("gamma", &gamma, &[hidden])?;
    let beta_v = View::contiguous("beta", &beta, &[hidden])?;
    let fused_inputs = NormInputs {
        x: x.contiguous("x", &[rows, hidden])?,
        residual: Some(r.contiguous("residual", &[rows, hidden])?),
        bias: None,
        gamma: gamma_v,
        beta: Some(beta_v),
    };
    let fused = median_seconds(budget, || {
        norm::add_norm(&fused_inputs, &params, &mut out.contiguous_mut("out", &[rows, hidden])?, None)
    })?;
    let unfused = median_seconds(budget, || {
        add_into(&x, &r, &mut h)?;
        let inputs = NormInputs {
            x: h.contiguous("x", &[rows, hidden])?,
            residual: None,
            bias: None,
            gamma: gamma_v,
            beta: Some(beta_v),
        };
        norm::add_norm(&inputs, &params, &mut out.contiguous_mut("out", &[rows, hidden])?, None)
    })?;
    Ok((fused, unfused))
}

/// `h = x + r` in f32, rounded to h's dtype (the unfused path's first pass), in L1-sized
/// chunks with the same vectorised conversions the kernels use.
fn add_into(x: &Buffer, r: &Buffer, h: &mut Buffer) -> Result<()> {
    const CHUNK: usize = 2048;
    let isa = flashkern_kernels::effective_isa();
    let len = x.len();
    let (x, r) = (x.contiguous("x", &[len])?.data(), r.contiguous("r", &[len])?.data());
    let mut h = h.contiguous_mut("h", &[len])?;
    let (mut xs, mut rs) = (vec![0f32; CHUNK], vec![0f32; CHUNK]);
    for start in (0..len).step_by(CHUNK) {
        let n = CHUNK.min(len - start);
        x.widen(start, &mut xs[..n], isa);
        r.widen(start, &mut rs[..n], isa);
        for (a, b) in xs[..n].iter_mut().zip(&rs[..n]) {
            *a += b;
        }
        h.data_mut().store(start, &xs[..n], isa);
    }
    Ok(())
}

/// Seconds of (bf16 activations × bf16 weights, f32 × f32) for one matmul, both with the
/// weights prepacked (in bf16, and in f32), the same values in both.
pub fn matmul_bf16(shape: &MatmulShape, budget: f64) -> Result<(f64, f64)> {
    let MatmulShape { m, k, n, .. } = *shape;
    let (a, b) = (random(DType::BF16, m * k, 1), random(DType::BF16, n * k, 2));
    let (a32, b32) = (Buffer::F32(a.to_f32()), Buffer::F32(b.to_f32()));
    let mut c = vec![0f32; m * n];
    let params = MatmulParams::default();
    let mut time = |a: &Buffer, b: &Buffer| -> Result<f64> {
        let (a, packed) = (a.contiguous("a", &[m, k])?, PackedMatrix::pack(&b.contiguous("b", &[n, k])?)?);
        median_seconds(budget, || {
            matmul::matmul_packed(&a, &packed, None, &mut ViewMut::contiguous("c", &mut c, &[m, n])?, &params)
        })
    };
    Ok((time(&a, &b)?, time(&a32, &b32)?))
}

/// Seconds of (weights in `dtype`, baseline) for one MiniLM forward pass over synthetic token
/// ids (`[CLS]` … `[SEP]`, no padding). The baseline is the model with f32 weights, or for f32
/// itself, the same model with the kernels capped at AVX2.
pub fn model(
    dir: &std::path::Path,
    shape: &super::shapes::ModelShape,
    dtype: DType,
    budget: f64,
) -> Result<(f64, f64)> {
    use crate::models::bert::BertModel;
    let to_error = |e: crate::ModelError| flashkern_kernels::Error::Unsupported { what: format!("model: {e}") };
    let mut rng = Rng::new(10);
    let ids: Vec<Vec<u32>> = (0..shape.batch)
        .map(|_| {
            let mut seq = vec![101u32];
            seq.extend((2..shape.tokens).map(|_| 1000 + rng.below(20000) as u32));
            seq.push(102);
            seq
        })
        .collect();
    let time = |dtype: DType| -> Result<f64> {
        let model = BertModel::load(dir, dtype).map_err(to_error)?;
        median_seconds(budget, || model.encode(&ids).map(drop).map_err(to_error))
    };
    let ours = time(dtype)?;
    // 16-bit weights are compared with f32 weights; f32 itself with the same kernels held to
    // AVX2 (the model runs its kernels from this thread, so the thread's cap covers them all).
    let baseline = match dtype {
        DType::F32 => flashkern_kernels::isa::with_max_isa(flashkern_kernels::Isa::Avx2, || time(DType::F32))?,
        _ => time(DType::F32)?,
    };
    Ok((ours, baseline))
}
