//! The fast matmul against `reference::matmul` on every ISA level: awkward shapes, both weight
//! layouts, padded strides, α/β, bias and both GELUs, every dtype combination, packed vs
//! unpacked, 1 vs 2 threads, and shape errors.
//!
//! Tolerance: `Tolerance::accumulation(K, C's dtype)` with element scale
//! `|α|·Σₚ|aᵢₚ·bⱼₚ| + |β·cᵢⱼ| + |biasⱼ|` — the f32 rounding error of the dot product, the
//! epilogue's few operations and the final rounding to C (the `rel` term). With an activation
//! the scale doubles: GELU's slope is ≤ 1.13 and libm's `erff`/`tanhf` add a few ulps.
//! Inputs are exact in their dtypes, so they add nothing.

use flashkern_kernels::isa;
use flashkern_kernels::matmul::{Activation, MatmulParams, PackedMatrix, matmul, matmul_packed};
use flashkern_kernels::testing::{Buffer as Buf, Rng, Tolerance, assert_close, on_every_isa};
use flashkern_kernels::{DType, Isa, View, ViewMut, bf16, reference};
use proptest::prelude::*;

/// The highest level the matmul kernels have code for.
const TOP: Isa = Isa::Avx512;

/// One matmul problem with its storage.
#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    dtypes: [DType; 4], // a, b, c, bias
    kn_weights: bool,   // B stored [K, N] (strides [1, N + pad])
    pad: usize,         // extra elements at the end of every row of A, B and C
    params: MatmulParams,
    bias: bool,
    seed: u64,
}

struct Data {
    a: Buf,
    b: Buf,
    bias: Buf,
    c: Buf,
    a_shape: ([usize; 2], [usize; 2]),
    b_shape: ([usize; 2], [usize; 2]),
    c_shape: ([usize; 2], [usize; 2]),
}

impl Case {
    fn data(&self) -> Data {
        let Case { m, n, k, pad, .. } = *self;
        let mut rng = Rng::new(self.seed);
        let lda = k + pad;
        let a: Vec<f32> = rng.vec(m * lda, -1.0, 1.0);
        let (b_rows, ldb) = if self.kn_weights { (k, n + pad) } else { (n, k + pad) };
        let b: Vec<f32> = rng.vec(b_rows * ldb, -1.0, 1.0);
        let bias: Vec<f32> = rng.vec(n, -1.0, 1.0);
        let ldc = n + pad;
        let c: Vec<f32> = if self.params.beta == 0.0 { vec![f32::NAN; m * ldc] } else { rng.vec(m * ldc, -1.0, 1.0) };
        let b_strides = if self.kn_weights { [1, ldb] } else { [ldb, 1] };
        Data {
            a: Buf::from_f32(self.dtypes[0], &a),
            b: Buf::from_f32(self.dtypes[1], &b),
            c: Buf::from_f32(self.dtypes[2], &c),
            bias: Buf::from_f32(self.dtypes[3], &bias),
            a_shape: ([m, k], [lda, 1]),
            b_shape: ([n, k], b_strides),
            c_shape: ([m, n], [ldc, 1]),
        }
    }

    /// Runs `f` (the reference, [`matmul`] or [`matmul_packed`]) and returns C's buffer.
    fn run(&self, data: &Data, packed: bool, f: fn(&View, &View, Option<&View>, &mut ViewMut, &MatmulParams)) -> Buf {
        let a = data.a.view("a", &data.a_shape.0, &data.a_shape.1).unwrap();
        let b = data.b.view("b", &data.b_shape.0, &data.b_shape.1).unwrap();
        let bias = data.bias.view("bias", &[self.n], &[1]).unwrap();
        let mut c = data.c.clone();
        let mut cv = c.view_mut("c", &data.c_shape.0, &data.c_shape.1).unwrap();
        let bias = self.bias.then_some(&bias);
        if packed {
            // Panels in the weights' own dtype, and widened to f32 at pack time: the same bits.
            let pb = PackedMatrix::pack(&b).unwrap();
            assert_eq!((pb.n(), pb.k(), pb.storage()), (self.n, self.k, self.dtypes[1]));
            let mut c32 = data.c.clone();
            let mut cv32 = c32.view_mut("c", &data.c_shape.0, &data.c_shape.1).unwrap();
            let pb32 = PackedMatrix::pack_as(&b, DType::F32).unwrap();
            matmul_packed(&a, &pb32, bias, &mut cv32, &self.params).unwrap();
            matmul_packed(&a, &pb, bias, &mut cv, &self.params).unwrap();
            if !self.dot_bf16() {
                assert_eq!(c.bits(), c32.bits(), "16-bit and f32 panels differ");
            }
            return c;
        } else {
            f(&a, &b, bias, &mut cv, &self.params);
        }
        c
    }

    /// The per-element error scale of C (row-major over the padded buffer).
    fn scale(&self, data: &Data) -> Vec<f64> {
        let a = data.a.view("a", &data.a_shape.0, &data.a_shape.1).unwrap();
        let b = data.b.view("b", &data.b_shape.0, &data.b_shape.1).unwrap();
        let old = data.c.to_f32();
        let bias = data.bias.to_f32();
        let ldc = data.c_shape.1[0];
        let mut scale = vec![0.0; old.len()];
        let factor = if self.params.activation == Activation::None { 1.0 } else { 2.0 };
        for i in 0..self.m {
            for j in 0..self.n {
                let dot: f64 = (0..self.k)
                    .map(|p| f64::from(a.get_f32(&[i, p])).abs() * f64::from(b.get_f32(&[j, p])).abs())
                    .sum();
                let mut s = f64::from(self.params.alpha).abs() * dot;
                if self.params.beta != 0.0 {
                    s += f64::from(self.params.beta * old[i * ldc + j]).abs();
                }
                if self.bias {
                    s += f64::from(bias[j]).abs();
                }
                scale[i * ldc + j] = factor * s;
            }
        }
        scale
    }

    fn bf16_pair(&self) -> bool {
        self.dtypes[0] == DType::BF16 && self.dtypes[1] == DType::BF16
    }

    /// bf16 A and B: at `avx512bf16`, where enabled, the `vdpbf16ps` kernel runs (another
    /// summation order than with f32 panels, which `pack_as(F32)` forces).
    fn dot_bf16(&self) -> bool {
        self.bf16_pair() && flashkern_kernels::effective_isa() == Isa::Avx512Bf16 && isa::bf16_dot_enabled()
    }

    /// bf16 × bf16 runs `vdpbf16ps` or the widening FMA kernel depending on the CPU: both are
    /// checked, whichever this CPU defaults to.
    fn check(&self) {
        let choices: &[bool] = if self.bf16_pair() { &[true, false] } else { &[false] };
        for &dot in choices {
            isa::with_bf16_dot(dot, || self.check_with(dot));
        }
    }

    fn check_with(&self, dot: bool) {
        let data = self.data();
        let want = self.run(&data, false, reference_matmul).to_f32();
        let scale = self.scale(&data);
        let tol = Tolerance::accumulation(self.k, self.dtypes[2]);
        let top = if dot { Isa::Avx512Bf16 } else { TOP };
        // Each call records the level it ran: the unpacked one is asserted here, the packed
        // one (the last) by `on_every_isa`. Unpacked bf16 × bf16 takes `vdpbf16ps` only on
        // some paths (not the skinny one), so at that level AVX-512 is also right.
        on_every_isa(top, |isa| {
            let got = self.run(&data, false, fast_matmul);
            let ran = flashkern_kernels::isa::take_last_dispatch();
            let allowed = [Some(isa.min(top)), Some(isa.min(TOP))];
            assert!(allowed.contains(&ran), "unpacked matmul asked for {isa}, ran {ran:?}");
            let packed = self.run(&data, true, fast_matmul);
            // The skinny path (M ≤ 4, K-contiguous weights) sums in another order than the
            // packed kernel; everything else is the same computation.
            let skinny = self.m <= 4 && (!self.kn_weights || self.k == 1);
            if !skinny {
                assert_eq!(got.bits(), packed.bits(), "{isa}: packed and unpacked differ for {self:?}");
            }
            assert_close(&format!("{isa} packed {self:?}"), &packed.to_f32(), &want, Some(&scale), tol);
            let got = got.to_f32();
            // Padding columns of C are never written: they stay NaN (or their old value).
            let ldc = data.c_shape.1[0];
            let old = data.c.to_f32();
            for i in 0..self.m {
                for j in self.n..ldc {
                    let (g, o) = (got[i * ldc + j], old[i * ldc + j]);
                    assert!(g.to_bits() == o.to_bits(), "{isa}: padding element ({i},{j}) changed");
                }
            }
            assert_close(&format!("{isa} {self:?}"), &got, &want, Some(&scale), tol);
        });
    }
}

fn reference_matmul(a: &View, b: &View, bias: Option<&View>, c: &mut ViewMut, params: &MatmulParams) {
    reference::matmul(a, b, bias, c, params).unwrap();
}

fn fast_matmul(a: &View, b: &View, bias: Option<&View>, c: &mut ViewMut, params: &MatmulParams) {
    matmul(a, b, bias, c, params).unwrap();
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)]
}

fn awkward() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![0usize, 1, 5, 6, 7, 12, 13, 15, 16, 17, 63, 64, 65, 95, 96, 97, 128, 129]),
        1usize..70,
    ]
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![Just(Activation::None), Just(Activation::GeluErf), Just(Activation::GeluTanh)]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (awkward(), awkward(), awkward()),
        [dtype(), dtype(), dtype(), dtype()],
        (any::<bool>(), 0usize..3, any::<bool>(), any::<u64>()),
        (prop_oneof![Just(1.0f32), -2.0f32..2.0], prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0], activation()),
    )
        .prop_map(|((m, n, k), dtypes, (kn_weights, pad, bias, seed), (alpha, beta, activation))| Case {
            m,
            n,
            k,
            dtypes,
            kn_weights,
            pad,
            params: MatmulParams { alpha, beta, activation },
            bias,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn matches_reference_on_every_isa(case in case()) {
        case.check();
    }
}

fn simple(m: usize, n: usize, k: usize) -> Case {
    Case {
        m,
        n,
        k,
        dtypes: [DType::F32; 4],
        kn_weights: false,
        pad: 0,
        params: MatmulParams::default(),
        bias: false,
        seed: (m * 1000 + n * 10 + k) as u64,
    }
}

#[test]
fn every_awkward_size_in_each_dimension() {
    for &s in &[0usize, 1, 15, 16, 17, 47, 48, 49, 63, 64, 65, 127, 131] {
        simple(s, 37, 29).check();
        simple(23, s, 29).check();
        simple(23, 37, s).check();
    }
}

#[test]
fn k_spanning_several_blocks_and_skinny_m() {
    // K above the 96 K block (partial last block), M in the skinny (GEMV) regime and above it.
    // The skinny path: several K chunks (2048, with an odd tail), N tails of the 4-row groups,
    // several N tasks.
    for (m, n, k) in [
        (1, 100, 300),
        (1, 130, 1100),
        (2, 70, 4201),
        (3, 67, 513),
        (4, 201, 40),
        (5, 97, 257),
        (16, 50, 129),
        (17, 50, 129),
        (70, 60, 400),
        // Several row tiles (120 rows each, a multiple of both the 6- and the 4-row tiles).
        (250, 70, 200),
    ] {
        let mut case = simple(m, n, k);
        for weights in [DType::F16, DType::BF16] {
            case.dtypes = [DType::F32, weights, DType::F32, DType::F32];
            case.bias = true;
            case.params = MatmulParams { alpha: 0.5, beta: 0.0, activation: Activation::GeluTanh };
            case.check();
        }
    }
}

#[test]
fn per_call_packing_in_groups_of_task_columns() {
    // B's f32 panels above 4 MiB are packed two columns of tasks at a time: 18 panels of
    // 1000 × 64 (4.6 MB) run as groups of 12 and 6 panels (the last with the N tail), and
    // must equal the prepacked run bit for bit (`Case::check`), for [N, K] and [K, N] weights.
    for kn_weights in [false, true] {
        let mut case = simple(7, 1100, 1000);
        case.kn_weights = kn_weights;
        case.bias = true;
        case.params = MatmulParams { alpha: 0.5, beta: 0.0, activation: Activation::GeluErf };
        case.check();
    }
}

#[test]
fn every_dtype_combination() {
    for a in DType::ALL {
        for b in DType::ALL {
            for c in DType::ALL {
                let mut case = simple(19, 53, 41);
                case.dtypes = [a, b, c, b];
                case.bias = true;
                case.kn_weights = a == DType::F16;
                case.params = MatmulParams { alpha: 1.5, beta: -0.5, activation: Activation::GeluErf };
                case.check();
            }
        }
    }
}

#[test]
fn beta_zero_never_reads_c_and_nan_inputs_propagate() {
    // C is NaN-filled by `Case::data` when β = 0: the checks above already require finite
    // outputs. Here a NaN in one row of A reaches exactly that row of C.
    let (m, n, k) = (9, 50, 20);
    let mut a = vec![0.5f32; m * k];
    a[3 * k + 7] = f32::NAN;
    let b = vec![0.25f32; n * k];
    on_every_isa(TOP, |_| {
        // Refilled per level, so each level's β = 0 run is seen not reading C.
        let mut c = vec![f32::NAN; m * n];
        let av = View::contiguous("a", &a, &[m, k]).unwrap();
        let bv = View::contiguous("b", &b, &[n, k]).unwrap();
        let mut cv = ViewMut::contiguous("c", &mut c, &[m, n]).unwrap();
        matmul(&av, &bv, None, &mut cv, &MatmulParams::default()).unwrap();
        for (idx, v) in c.iter().enumerate() {
            assert_eq!(v.is_nan(), idx / n == 3, "element {idx} = {v}");
        }
    });
}

#[test]
fn one_and_two_threads_are_bit_identical() {
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    for (m, n, k, dtypes, kn_weights) in [
        (150, 200, 300, [DType::F32; 4], false),
        (3, 1000, 700, [DType::F32, DType::BF16, DType::BF16, DType::F32], false),
        (130, 97, 260, [DType::F16, DType::F32, DType::F16, DType::F16], false),
        (100, 150, 333, [DType::BF16, DType::BF16, DType::F32, DType::BF16], false),
        // Skinny M on the blocked driver ([K, N] weights), whose grid is finer with 2 threads.
        (12, 700, 600, [DType::F32; 4], true),
    ] {
        let mut case = simple(m, n, k);
        case.dtypes = dtypes;
        case.kn_weights = kn_weights;
        case.bias = true;
        case.params = MatmulParams { alpha: 1.0, beta: 0.5, activation: Activation::GeluErf };
        let data = case.data();
        for level in flashkern_kernels::isa::runnable_isas() {
            let run = |threads| {
                pool(threads).install(|| {
                    flashkern_kernels::isa::with_max_isa(level, || case.run(&data, false, fast_matmul).bits())
                })
            };
            assert_eq!(run(1), run(2), "{level}: {m}x{n}x{k} differs between 1 and 2 threads");
        }
    }
}

#[test]
fn packed_weights_are_reusable_across_calls_and_threads() {
    let (m, n, k) = (20, 70, 90);
    let mut rng = Rng::new(5);
    let a: Vec<f32> = rng.vec(m * k, -1.0, 1.0);
    let b: Vec<bf16> = rng.vec(n * k, -1.0, 1.0);
    let packed = PackedMatrix::pack(&View::contiguous("b", &b, &[n, k]).unwrap()).unwrap();
    let run = |packed: &PackedMatrix| {
        let mut c = vec![f32::NAN; m * n];
        let av = View::contiguous("a", &a, &[m, k]).unwrap();
        matmul_packed(&av, packed, None, &mut ViewMut::contiguous("c", &mut c, &[m, n]).unwrap(), &Default::default())
            .unwrap();
        c.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    let first = run(&packed);
    let clone = packed.clone();
    let from_thread = std::thread::scope(|s| s.spawn(|| run(&packed)).join().unwrap());
    assert_eq!(first, run(&clone));
    assert_eq!(first, from_thread);
}

#[test]
fn shape_errors_name_the_argument() {
    let x = vec![0f32; 64];
    let mut out = vec![0f32; 64];
    let a = View::contiguous("a", &x, &[2, 3]).unwrap();
    let b = View::contiguous("b", &x, &[4, 3]).unwrap();
    let bad_b = View::contiguous("b", &x, &[4, 5]).unwrap();
    let bias = View::contiguous("bias", &x, &[4]).unwrap();
    let bad_bias = View::contiguous("bias", &x, &[5]).unwrap();
    let p = MatmulParams::default();
    let (out, out2) = out.split_at_mut(32);
    let mut c = ViewMut::contiguous("c", &mut out[..8], &[2, 4]).unwrap();
    let err = |r: flashkern_kernels::Result<()>| r.unwrap_err().to_string();
    assert!(err(matmul(&a, &bad_b, None, &mut c, &p)).contains("`b`"));
    assert!(err(matmul(&a, &b, Some(&bad_bias), &mut c, &p)).contains("`bias`"));
    let packed = PackedMatrix::pack(&bad_b).unwrap();
    assert!(err(matmul_packed(&a, &packed, None, &mut c, &p)).contains("`b`"));
    let packed = PackedMatrix::pack(&b).unwrap();
    assert!(err(matmul_packed(&a, &packed, Some(&bad_bias), &mut c, &p)).contains("`bias`"));
    assert!(matmul_packed(&a, &packed, Some(&bias), &mut c, &p).is_ok());
    let mut bad_c = ViewMut::contiguous("c", &mut out2[..9], &[3, 3]).unwrap();
    assert!(err(matmul(&a, &b, None, &mut bad_c, &p)).contains("`c`"));
    assert!(err(matmul_packed(&a, &packed, None, &mut bad_c, &p)).contains("`c`"));
    let err16 = err(PackedMatrix::pack_as(&b, DType::BF16).map(|_| ()));
    assert!(err16.contains("`storage`") && err16.contains("f32"), "{err16}");
    let rank3 = View::contiguous("a", &x, &[2, 3, 1]).unwrap();
    assert!(err(matmul(&rank3, &b, None, &mut c, &p)).contains("`a`"));
    assert!(err(PackedMatrix::pack(&rank3).map(|_| ())).contains("`b`"));
}

#[test]
fn broadcast_operands_larger_than_their_buffers_are_rejected() {
    // A one-element buffer seen as [1, 2^34] through zero strides would make packing ask for
    // 2^34 × 64 floats; it must be an error, not an allocation failure (an abort).
    let x = [1f32];
    let huge = View::new("a", &x, &[1, 1 << 34], &[0, 0]).unwrap();
    let wide = View::new("a", &x, &[1 << 20, 1 << 14], &[0, 0]).unwrap();
    let b = View::contiguous("b", &[1f32; 4], &[1, 4]).unwrap();
    let mut out = [0f32; 1];
    let mut c = ViewMut::contiguous("c", &mut out, &[1, 1]).unwrap();
    let p = MatmulParams::default();
    for (a, b) in [(&huge, &huge), (&huge, &b), (&b, &huge)] {
        let err = matmul(a, b, None, &mut c, &p).unwrap_err().to_string();
        assert!(err.contains("materialise"), "{err}");
    }
    let err = PackedMatrix::pack(&huge).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("`b`") && err.contains("materialise"), "{err}");
    let packed = PackedMatrix::pack(&View::contiguous("b", &[1f32; 1 << 14], &[1, 1 << 14]).unwrap()).unwrap();
    let mut out = vec![0f32; 1 << 20];
    let mut c = ViewMut::contiguous("c", &mut out, &[1 << 20, 1]).unwrap();
    let err = matmul_packed(&wide, &packed, None, &mut c, &p).unwrap_err().to_string();
    assert!(err.contains("`a`") && err.contains("materialise"), "{err}");
    // A broadcast that fits its buffer's size (here a 2 × 2 view of 4 elements with a zero
    // row stride: both rows alias) is still a valid operand.
    let data = [1f32, 2.0, 3.0, 4.0];
    let rows_alias = View::new("a", &data, &[2, 2], &[0, 1]).unwrap();
    let mut out = [0f32; 4];
    let bb = View::contiguous("b", &data, &[2, 2]).unwrap();
    matmul(&rows_alias, &bb, None, &mut ViewMut::contiguous("c", &mut out, &[2, 2]).unwrap(), &p).unwrap();
    assert_eq!(out, [5.0, 11.0, 5.0, 11.0]);
}

#[test]
fn gelu_epilogues_match_reference_across_the_range() {
    // K = 1 so C holds exactly a·b; the products span [−12, 12] (both tails of GELU), plus a NaN.
    let (m, n) = (40, 50);
    let mut a: Vec<f32> = (0..m).map(|i| -12.0 + 24.0 * i as f32 / (m - 1) as f32).collect();
    a[7] = f32::NAN;
    let b: Vec<f32> = (0..n).map(|j| 0.02 * (j + 1) as f32).collect();
    let av = View::contiguous("a", &a, &[m, 1]).unwrap();
    let bv = View::contiguous("b", &b, &[n, 1]).unwrap();
    let scale: Vec<f64> = (0..m * n).map(|idx| 2.0 * f64::from(a[idx / n] * b[idx % n]).abs()).collect();
    for activation in [Activation::GeluErf, Activation::GeluTanh] {
        let params = MatmulParams { activation, ..MatmulParams::default() };
        let mut want = vec![f32::NAN; m * n];
        reference::matmul(&av, &bv, None, &mut ViewMut::contiguous("c", &mut want, &[m, n]).unwrap(), &params).unwrap();
        on_every_isa(TOP, |isa| {
            let mut got = vec![f32::NAN; m * n];
            matmul(&av, &bv, None, &mut ViewMut::contiguous("c", &mut got, &[m, n]).unwrap(), &params).unwrap();
            let tol = Tolerance::accumulation(1, DType::F32);
            assert_close(&format!("{isa} {activation:?}"), &got, &want, Some(&scale), tol);
        });
    }
}
