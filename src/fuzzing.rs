//! The bodies of the cargo-fuzz targets in `fuzz/`, kept here so that `cargo test` replays
//! every committed corpus and crash input on stable (`tests/fuzz_corpus.rs`) and a fixed crash
//! stays fixed. Each function takes the fuzzer's bytes and panics only on a real bug: a kernel
//! disagreeing with its reference beyond the documented tolerance, or an error from one but
//! not the other.

use crate::capi::{fk_attention, fk_attention_params, fk_causal, fk_dtype, fk_matmul, fk_status, fk_tensor};
use arbitrary::{Result, Unstructured};
use flashkern_kernels::attention::{AttentionParams, Causal};
use flashkern_kernels::isa::{Isa, with_max_isa};
use flashkern_kernels::matmul::{Activation, MatmulParams, PackedMatrix};
use flashkern_kernels::norm::{NormInputs, NormKind, NormParams};
use flashkern_kernels::testing::{Buffer, Rng, Tolerance, compare};
use flashkern_kernels::{DType, View, ViewMut, reference};
use std::ffi::c_void;

/// Elements in the buffer every `capi_descriptors` descriptor points into.
const ARENA: usize = 4096;

/// Arbitrary `fk_tensor` descriptors over one bounded buffer, through `fk_matmul` and
/// `fk_attention`: each call returns a status (never panics into `FK_ERR_INTERNAL`) and, under
/// AddressSanitizer, never touches memory outside the buffer. The values of successful calls
/// are not checked here: the other targets compare the same kernels with their references.
pub fn capi_descriptors(data: &[u8]) {
    let _ = capi_descriptors_inner(&mut Unstructured::new(data));
}

/// One arbitrary descriptor into `arena`. Descriptors that are well-formed (ndim 1..=4,
/// non-negative extents and strides) are kept inside the arena — the ABI's contract is that
/// the caller's memory holds what a descriptor addresses; malformed ones may say anything,
/// since the ABI must reject them before any access.
fn descriptor(u: &mut Unstructured, arena: &mut [f32]) -> Result<fk_tensor> {
    let ndim = *u.choose(&[1i32, 2, 3, 4, 4, 4, 0, 5, -1])?;
    let mut t = fk_tensor {
        data: arena.as_mut_ptr().cast::<c_void>(),
        dtype: fk_dtype::FK_F32,
        ndim,
        shape: [0; 4],
        strides: [0; 4],
    };
    for d in 0..4 {
        t.shape[d] = if u.ratio(1, 20)? { u.arbitrary()? } else { i64::from(u.int_in_range(0u8..=9)?) };
        t.strides[d] = if u.ratio(1, 20)? { u.arbitrary()? } else { i64::from(u.int_in_range(0u8..=40)?) };
    }
    t.dtype = *u.choose(&[fk_dtype::FK_F32, fk_dtype::FK_F32, fk_dtype::FK_F16, fk_dtype::FK_BF16])?;
    let size = if t.dtype == fk_dtype::FK_F32 { 4 } else { 2 };
    let well_formed = (1..=4).contains(&ndim) && (0..ndim as usize).all(|d| t.shape[d] >= 0 && t.strides[d] >= 0);
    let capacity_elems = (arena.len() * 4) / size;
    let offset = usize::from(u.int_in_range(0u16..=64)?);
    if well_formed {
        let dims = 0..ndim as usize;
        let extent = if dims.clone().any(|d| t.shape[d] == 0) {
            Some(0)
        } else {
            dims.map(|d| (t.shape[d] as u128 - 1) * t.strides[d] as u128).sum::<u128>().checked_add(1)
        };
        if extent.is_none_or(|e| e + offset as u128 > capacity_elems as u128) {
            return Err(arbitrary::Error::IncorrectFormat);
        }
    }
    // SAFETY: offset ≤ 64 elements of at most 4 bytes lies inside the 4096-element arena.
    t.data = unsafe { arena.as_mut_ptr().cast::<u8>().add(offset * size).cast::<c_void>() };
    if u.ratio(1, 30)? {
        t.data = std::ptr::null_mut();
    }
    Ok(t)
}

fn capi_descriptors_inner(u: &mut Unstructured) -> Result<()> {
    // Separate arenas per argument so outputs rarely alias inputs (aliasing is also fuzzed
    // when the fuzzer picks the same arena twice).
    let mut arenas: Vec<Vec<f32>> =
        (0..4).map(|i| (0..ARENA).map(|j| ((i * 31 + j * 7) % 13) as f32 * 0.1 - 0.6).collect()).collect();
    let picks: Vec<usize> = (0..4).map(|_| u.int_in_range(0..=3)).collect::<Result<_>>()?;
    let level = *u.choose(&Isa::ALL)?;
    let mut tensors = Vec::new();
    for &p in &picks {
        tensors.push(descriptor(u, &mut arenas[p])?);
    }
    let [a, b, c, d] = [tensors[0], tensors[1], tensors[2], tensors[3]];
    with_max_isa(level, || {
        if u.ratio(1, 2).unwrap_or(true) {
            let mut c = c;
            let bias = if u.ratio(1, 3).unwrap_or(false) { &d as *const fk_tensor } else { std::ptr::null() };
            // SAFETY: every well-formed descriptor addresses only arena memory (see `descriptor`).
            let status = unsafe { fk_matmul(&a, &b, bias, 1.0, 0.0, &mut c) };
            assert!(status != fk_status::FK_ERR_INTERNAL, "fk_matmul panicked: {:?}", last_error());
        } else {
            let mut out = d;
            let params = fk_attention_params {
                scale: 0.0,
                causal: fk_causal::FK_CAUSAL_BOTTOM_RIGHT,
                key_lengths: std::ptr::null(),
                additive_mask: std::ptr::null(),
                window_left: -1,
                softcap: 0.0,
                lse: std::ptr::null_mut(),
            };
            // SAFETY: as above.
            let status = unsafe { fk_attention(&a, &b, &c, &mut out, &params) };
            assert!(status != fk_status::FK_ERR_INTERNAL, "fk_attention panicked: {:?}", last_error());
        }
    });
    Ok(())
}

fn last_error() -> String {
    // SAFETY: fk_last_error returns a valid NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(crate::capi::fk_last_error()) }.to_string_lossy().into_owned()
}

/// Values stored as `dtype`, drawn in `[-range, range)` from `seed`.
fn values(dtype: DType, n: usize, range: f32, seed: u64) -> Buffer {
    Buffer::random(dtype, n, &mut Rng::new(seed), -range, range)
}

fn dtype(u: &mut Unstructured) -> Result<DType> {
    u.choose(&DType::ALL).copied()
}

/// A strided view of `buffer` as `[rows, cols]` with row stride `cols + pad`.
fn matrix<'a>(
    buffer: &'a Buffer,
    arg: &'static str,
    [rows, cols, pad]: [usize; 3],
) -> flashkern_kernels::Result<View<'a>> {
    buffer.view(arg, &[rows, cols], &[cols + pad, 1])
}

/// Both results must be errors of the same kind, or both succeed.
fn same_outcome(what: &str, fast: &flashkern_kernels::Result<()>, slow: &flashkern_kernels::Result<()>) -> bool {
    match (fast, slow) {
        (Ok(()), Ok(())) => true,
        (Err(a), Err(b)) => {
            assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b), "{what}: different errors {a} / {b}");
            false
        }
        _ => panic!("{what}: fast {fast:?} but reference {slow:?}"),
    }
}

/// A small arbitrary matmul (shapes, row padding, B layout, dtypes, α/β, bias, activation,
/// packed or not, ISA cap) against `reference::matmul` within `Tolerance::accumulation`.
pub fn matmul_vs_reference(data: &[u8]) {
    let _ = matmul_inner(&mut Unstructured::new(data));
}

fn matmul_inner(u: &mut Unstructured) -> Result<()> {
    let [m, n, k] = [u.int_in_range(0..=24)?, u.int_in_range(0..=40)?, u.int_in_range(0..=70)?];
    let [pad_a, pad_c] = [u.int_in_range(0..=3)?, u.int_in_range(0..=3)?];
    let (da, db, dc) = (dtype(u)?, dtype(u)?, dtype(u)?);
    let kn_layout: bool = u.arbitrary()?;
    let packed: bool = u.arbitrary()?;
    let with_bias: bool = u.arbitrary()?;
    let alpha = *u.choose(&[1.0f32, -0.5, 2.0])?;
    let beta = *u.choose(&[0.0f32, 1.0, -0.25])?;
    let activation = *u.choose(&[Activation::None, Activation::GeluErf, Activation::GeluTanh])?;
    let level = *u.choose(&Isa::ALL)?;
    let seed: u64 = u.arbitrary()?;
    let a = values(da, m * (k + pad_a), 1.0, seed);
    let b = values(db, n * k, 1.0, seed ^ 1);
    let bias = values(DType::F32, n, 1.0, seed ^ 2);
    let c0 = values(dc, m * (n + pad_c), 1.0, seed ^ 3);
    let params = MatmulParams { alpha, beta, activation };
    let run = |fast: bool| -> (flashkern_kernels::Result<()>, Vec<f32>) {
        let mut c = values(dc, m * (n + pad_c), 1.0, seed ^ 3);
        let result = (|| {
            let a = matrix(&a, "a", [m, k, pad_a])?;
            let b = if kn_layout { b.view("b", &[n, k], &[1, n])? } else { matrix(&b, "b", [n, k, 0])? };
            let bias = if with_bias { Some(bias.view("bias", &[n], &[1])?) } else { None };
            let mut c_view = match &mut c {
                Buffer::F32(v) => ViewMut::new("c", v, &[m, n], &[n + pad_c, 1])?,
                Buffer::F16(v) => ViewMut::new("c", v, &[m, n], &[n + pad_c, 1])?,
                Buffer::BF16(v) => ViewMut::new("c", v, &[m, n], &[n + pad_c, 1])?,
            };
            match (fast, packed) {
                (false, _) => reference::matmul(&a, &b, bias.as_ref(), &mut c_view, &params),
                (true, false) => with_max_isa(level, || {
                    flashkern_kernels::matmul::matmul(&a, &b, bias.as_ref(), &mut c_view, &params)
                }),
                (true, true) => with_max_isa(level, || {
                    let packed = PackedMatrix::pack(&b)?;
                    flashkern_kernels::matmul::matmul_packed(&a, &packed, bias.as_ref(), &mut c_view, &params)
                }),
            }
        })();
        (result, c.to_f32())
    };
    let (fast, got) = run(true);
    let (slow, want) = run(false);
    if same_outcome("matmul", &fast, &slow) {
        let (a32, b32, c32) = (a.to_f32(), b.to_f32(), c0.to_f32());
        let scale: Vec<f64> = (0..m * (n + pad_c))
            .map(|idx| {
                let (i, j) = (idx / (n + pad_c), idx % (n + pad_c));
                if j >= n {
                    return 1.0;
                }
                let b_at = |p: usize| if kn_layout { b32[p * n + j] } else { b32[j * k + p] };
                let dot: f64 = (0..k).map(|p| f64::from((a32[i * (k + pad_a) + p] * b_at(p)).abs())).sum();
                f64::from(alpha.abs()) * dot + f64::from((beta * c32[idx]).abs()) + 1.0
            })
            .collect();
        if let Err(report) = compare(&got, &want, Some(&scale), Tolerance::accumulation(k, dc)) {
            panic!(
                "matmul m={m} n={n} k={k} {da}/{db}/{dc} kn={kn_layout} packed={packed} {params:?} at {level}: {report}"
            );
        }
    }
    Ok(())
}

/// A small arbitrary residual + norm call against `reference::add_norm`.
pub fn norm_vs_reference(data: &[u8]) {
    let _ = norm_inner(&mut Unstructured::new(data));
}

fn norm_inner(u: &mut Unstructured) -> Result<()> {
    let rows = u.int_in_range(0..=5)?;
    let hidden = u.int_in_range(1..=300)?;
    let (dx, dout) = (dtype(u)?, dtype(u)?);
    let kind = *u.choose(&[NormKind::LayerNorm, NormKind::RmsNorm])?;
    let [with_residual, with_bias, with_beta, with_sum]: [bool; 4] = u.arbitrary()?;
    let eps = *u.choose(&[1e-5f32, 1e-12, 0.0, -1.0])?;
    let level = *u.choose(&Isa::ALL)?;
    let seed: u64 = u.arbitrary()?;
    let mean = *u.choose(&[0.0f32, 3.0, -100.0])?;
    let x = values(dx, rows * hidden, 1.0, seed);
    let x = match x {
        Buffer::F32(v) => Buffer::F32(v.iter().map(|e| e + mean).collect()),
        other => other,
    };
    let r = values(dx, rows * hidden, 1.0, seed ^ 1);
    let vectors: Vec<Buffer> = (2..5).map(|i| values(DType::F32, hidden, 1.5, seed ^ i)).collect();
    let params = NormParams { kind, eps };
    let run = |fast: bool| -> (flashkern_kernels::Result<()>, Vec<f32>, Vec<f32>) {
        let mut out = values(dout, rows * hidden, 1.0, 7);
        let mut sum = values(dout, rows * hidden, 1.0, 8);
        let result = (|| {
            let inputs = NormInputs {
                x: x.view("x", &[rows, hidden], &[hidden, 1])?,
                residual: if with_residual { Some(r.view("residual", &[rows, hidden], &[hidden, 1])?) } else { None },
                bias: if with_bias { Some(vectors[0].view("bias", &[hidden], &[1])?) } else { None },
                gamma: vectors[1].view("gamma", &[hidden], &[1])?,
                beta: if with_beta { Some(vectors[2].view("beta", &[hidden], &[1])?) } else { None },
            };
            let mut out_view = out.contiguous_mut("out", &[rows, hidden])?;
            let mut sum_view = sum.contiguous_mut("sum_out", &[rows, hidden])?;
            let sum_arg = if with_sum { Some(&mut sum_view) } else { None };
            if fast {
                with_max_isa(level, || flashkern_kernels::norm::add_norm(&inputs, &params, &mut out_view, sum_arg))
            } else {
                reference::add_norm(&inputs, &params, &mut out_view, sum_arg)
            }
        })();
        (result, out.to_f32(), sum.to_f32())
    };
    let (fast, got, got_sum) = run(true);
    let (slow, want, want_sum) = run(false);
    if same_outcome("norm", &fast, &slow) {
        // Errors scale with |γ|·(1 + A/σ): the f32 rounding of h (≈ u·A, A = max|h| of the row)
        // divided by the row's spread σ = √(var + eps), plus the output's own magnitude.
        let gamma = vectors[1].to_f32();
        let (xs, rs, bs) = (x.to_f32(), r.to_f32(), vectors[0].to_f32());
        let mut scale = Vec::with_capacity(rows * hidden);
        for row in 0..rows {
            let h: Vec<f64> = (0..hidden)
                .map(|c| {
                    let mut v = f64::from(xs[row * hidden + c]);
                    if with_residual {
                        v += f64::from(rs[row * hidden + c]);
                    }
                    if with_bias {
                        v += f64::from(bs[c]);
                    }
                    v
                })
                .collect();
            let n = hidden as f64;
            let mean = if kind == NormKind::LayerNorm { h.iter().sum::<f64>() / n } else { 0.0 };
            let var = h.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            let sigma = (var + f64::from(eps.max(0.0))).sqrt();
            let spread = h.iter().fold(0f64, |a, v| a.max(v.abs())) / sigma.max(f64::MIN_POSITIVE);
            scale.extend((0..hidden).map(|c| f64::from(gamma[c].abs()) * (2.0 + 4.0 * spread) + 1.0));
        }
        let tol = Tolerance::accumulation(hidden, dout);
        if let Err(report) = compare(&got, &want, Some(&scale), tol) {
            panic!("norm {rows}x{hidden} {dx}->{dout} {params:?} r={with_residual} b={with_bias} at {level}: {report}");
        }
        if with_sum
            && let Err(report) = compare(
                &got_sum,
                &want_sum,
                None,
                Tolerance { abs: 1e-6 * (1.0 + f64::from(mean.abs())), rel: 2.0 * dout.unit_roundoff() },
            )
        {
            panic!("norm sum_out {rows}x{hidden} at {level}: {report}");
        }
    }
    Ok(())
}

/// A small arbitrary attention call (GQA, `[B,H,N,D]` or `[B,N,H,D]` layout, every mask, softcap,
/// dtypes, LSE, ISA cap) against `reference::attention`.
pub fn attention_vs_reference(data: &[u8]) {
    let _ = attention_inner(&mut Unstructured::new(data));
}

fn attention_inner(u: &mut Unstructured) -> Result<()> {
    let b = u.int_in_range(1..=2)?;
    let h_kv = u.int_in_range(1..=2)?;
    let h_q = h_kv * u.int_in_range(1..=3)?;
    let [n_q, n_kv, d] = [u.int_in_range(1..=40)?, u.int_in_range(1..=70)?, u.int_in_range(1..=40)?];
    let (dq, dkv, dout) = (dtype(u)?, dtype(u)?, dtype(u)?);
    let interleaved: bool = u.arbitrary()?;
    let causal = *u.choose(&[Causal::None, Causal::TopLeft, Causal::BottomRight])?;
    let lengths: Option<Vec<usize>> =
        if u.arbitrary()? { Some((0..b).map(|_| u.int_in_range(0..=n_kv)).collect::<Result<_>>()?) } else { None };
    let window_left = if u.ratio(1, 4)? { Some(u.int_in_range(0..=8)?) } else { None };
    let softcap = if u.ratio(1, 5)? { Some(5.0f32) } else { None };
    let with_mask = u.ratio(1, 3)?;
    let logit_range = *u.choose(&[1.0f32, 4.0, 30.0])?;
    let level = *u.choose(&Isa::ALL)?;
    let seed: u64 = u.arbitrary()?;
    let q = values(dq, b * h_q * n_q * d, logit_range, seed);
    let k = values(dkv, b * h_kv * n_kv * d, 1.0, seed ^ 1);
    let v = values(dkv, b * h_kv * n_kv * d, 1.0, seed ^ 2);
    let mut mask: Vec<f32> = Rng::new(seed ^ 3).vec(n_q * n_kv, -2.0, 2.0);
    mask.iter_mut().step_by(7).for_each(|m| *m = f32::NEG_INFINITY);
    // [B,H,N,D] strides, or [B,N,H,D] memory seen as [B,H,N,D].
    let strides = |h: usize, n: usize| if interleaved { [n * h * d, d, h * d, 1] } else { [h * n * d, n * d, d, 1] };
    let run = |fast: bool| -> (flashkern_kernels::Result<()>, Vec<f32>, Vec<f32>) {
        let mut out = values(dout, b * h_q * n_q * d, 1.0, 9);
        let mut lse = vec![f32::NAN; b * h_q * n_q];
        let result = (|| {
            let qv = q.view("q", &[b, h_q, n_q, d], &strides(h_q, n_q))?;
            let kv = k.view("k", &[b, h_kv, n_kv, d], &strides(h_kv, n_kv))?;
            let vv = v.view("v", &[b, h_kv, n_kv, d], &strides(h_kv, n_kv))?;
            let params = AttentionParams {
                scale: None,
                causal,
                key_lengths: lengths.as_deref(),
                additive_mask: if with_mask {
                    Some(View::new("additive_mask", &mask, &[1, 1, n_q, n_kv], &[0, 0, n_kv, 1])?)
                } else {
                    None
                },
                window_left,
                softcap,
            };
            let out_strides = strides(h_q, n_q);
            let mut out_view = match &mut out {
                Buffer::F32(o) => ViewMut::new("out", o, &[b, h_q, n_q, d], &out_strides)?,
                Buffer::F16(o) => ViewMut::new("out", o, &[b, h_q, n_q, d], &out_strides)?,
                Buffer::BF16(o) => ViewMut::new("out", o, &[b, h_q, n_q, d], &out_strides)?,
            };
            let mut lse_view = ViewMut::contiguous("lse", &mut lse, &[b, h_q, n_q])?;
            if fast {
                with_max_isa(level, || {
                    flashkern_kernels::attention::attention(&qv, &kv, &vv, &mut out_view, &params, Some(&mut lse_view))
                })
            } else {
                reference::attention(&qv, &kv, &vv, &mut out_view, &params, Some(&mut lse_view))
            }
        })();
        (result, out.to_f32(), lse)
    };
    let (fast, got, got_lse) = run(true);
    let (slow, want, want_lse) = run(false);
    if same_outcome("attention", &fast, &slow) {
        // Output error ≈ (error of the scores) × |v| ≤ u·√terms·(1 + Σ|q||k|·scale + |mask|).
        let logit = 1.0 + f64::from(logit_range) * d as f64 / (d as f64).sqrt() + 2.0 + softcap.map_or(0.0, f64::from);
        let scale = vec![logit; got.len()];
        let tol = Tolerance::accumulation(n_kv + d, dout);
        let what = format!(
            "attention b={b} hq={h_q} hkv={h_kv} nq={n_q} nkv={n_kv} d={d} {dq}/{dkv}/{dout} {causal:?} lengths={lengths:?} window={window_left:?} cap={softcap:?} mask={with_mask} at {level}"
        );
        if let Err(report) = compare(&got, &want, Some(&scale), tol) {
            panic!("{what}: {report}");
        }
        let lse_scale = vec![logit; got_lse.len()];
        if let Err(report) =
            compare(&got_lse, &want_lse, Some(&lse_scale), Tolerance::accumulation(n_kv + d, DType::F32))
        {
            panic!("{what} (lse): {report}");
        }
    }
    Ok(())
}

/// Arbitrary bytes as a safetensors file (owned buffer): every tensor view is touched (summed)
/// and, when the names fit, a tiny GPT-2 is built and run. Any outcome but a panic is fine.
pub fn safetensors_load(data: &[u8]) {
    use crate::config::Gpt2Config;
    use crate::models::gpt2::Gpt2Model;
    use crate::weights::Weights;
    let Ok(weights) = Weights::from_bytes(data.to_vec(), "fuzz.safetensors") else { return };
    let names: Vec<String> = weights.names().map(str::to_string).collect();
    for name in &names {
        if let Ok(tensor) = weights.get(name) {
            let data = tensor.data();
            let sum: f32 = (0..data.len()).map(|i| data.get_f32(i)).sum();
            std::hint::black_box(sum);
        }
    }
    let config = Gpt2Config {
        vocab_size: 8,
        n_positions: 8,
        n_embd: 4,
        n_layer: 1,
        n_head: 2,
        n_inner: 8,
        layer_norm_epsilon: 1e-5,
        tie_word_embeddings: true,
    };
    if let Ok(model) = Gpt2Model::from_weights(config, weights, DType::F32) {
        let _ = model.logits(&[0, 1, 7]);
        let _ = model.logits(&[9]); // out of the vocabulary: an error, not a panic
    }
}

/// Arbitrary bytes as a Hugging Face `config.json`.
pub fn config_parse(data: &[u8]) {
    let _ = crate::config::ModelConfig::parse(data, std::path::Path::new("fuzz/config.json"));
}
