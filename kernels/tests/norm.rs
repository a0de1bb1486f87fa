//! The fused residual + LayerNorm / RMSNorm kernel against its f64 reference twin, on every
//! ISA level, every dtype for every argument, padded row strides and awkward hidden sizes; the
//! in-place variants against the out-of-place kernel; edge cases; threading; errors.
//!
//! Tolerance (see `out_scale`): the kernel forms `h` in f32 (one or two roundings of
//! `x + r + b`, ≤ 2u·A with `A = max_j |x_j| + |r_j| + |b_j|` over the row), so each normalised
//! value carries an error ≈ 2u·A/σ from `h` alone, plus the f32 statistics (≲ 5√n·u relative
//! on the variance: one pass around a shift within 2σ of the mean, else two passes; half of it
//! on `t = (h − μ)/σ`), then `·γ + β` and one rounding to the output dtype.
//! The per-element scale is `|γ|·(A/σ + |t| + 1) + |β|` with `Tolerance::accumulation(hidden,
//! out)`: `(8 + 4√n)·u` times that scale plus `2·u_out·|want|`. A wrong term (one missing
//! element, a wrong mean) errs by ≈ |γ|·A/(nσ)·n·u⁻¹ ≫ this and fails.

use flashkern_kernels::norm::{
    self, NormInputs, NormKind, NormParams, NormWeights, add_norm, add_norm_in_place, add_norm_update_residual,
};
use flashkern_kernels::testing::{AWKWARD_SIZES, Buffer as Buf, Rng, Tolerance, assert_close, on_every_isa};
use flashkern_kernels::{DType, Element, Error, Isa, View, ViewMut, bf16, f16, reference};
use proptest::prelude::*;

/// A `[rows, hidden]` matrix in a buffer with row stride `hidden + pad`.
#[derive(Clone, Debug)]
struct Matrix {
    buf: Buf,
    rows: usize,
    hidden: usize,
    stride: usize,
}

impl Matrix {
    fn len(rows: usize, hidden: usize, stride: usize) -> usize {
        if rows == 0 { 0 } else { (rows - 1) * stride + hidden }
    }

    fn new(dtype: DType, rows: usize, hidden: usize, pad: usize, values: impl FnMut(usize, usize) -> f32) -> Matrix {
        let stride = hidden + pad;
        let mut values = values;
        let mut data = vec![f32::NAN; Self::len(rows, hidden, stride)];
        for r in 0..rows {
            for c in 0..hidden {
                data[r * stride + c] = values(r, c);
            }
        }
        Matrix { buf: Buf::from_f32(dtype, &data), rows, hidden, stride }
    }

    fn nan(dtype: DType, rows: usize, hidden: usize, pad: usize) -> Matrix {
        let stride = hidden + pad;
        Matrix { buf: Buf::nan(dtype, Self::len(rows, hidden, stride)), rows, hidden, stride }
    }

    fn view(&self, arg: &'static str) -> View<'_> {
        self.buf.view(arg, &[self.rows, self.hidden], &[self.stride, 1]).unwrap()
    }

    fn view_mut(&mut self, arg: &'static str) -> ViewMut<'_> {
        let (shape, strides) = ([self.rows, self.hidden], [self.stride, 1]);
        self.buf.view_mut(arg, &shape, &strides).unwrap()
    }

    /// The logical elements, row-major, widened.
    fn values(&self) -> Vec<f32> {
        let all = self.buf.to_f32();
        (0..self.rows).flat_map(|r| all[r * self.stride..r * self.stride + self.hidden].to_vec()).collect()
    }

    /// The padding elements (between rows), widened.
    fn padding(&self) -> Vec<f32> {
        let all = self.buf.to_f32();
        (0..self.rows.saturating_sub(1))
            .flat_map(|r| all[r * self.stride + self.hidden..(r + 1) * self.stride].to_vec())
            .collect()
    }
}

/// One random problem.
#[derive(Clone, Debug)]
struct Case {
    rows: usize,
    hidden: usize,
    kind: NormKind,
    eps: f32,
    /// dtypes of x, residual, out, sum_out, gamma, beta/bias.
    dtypes: [DType; 6],
    /// row padding of x, residual, out, sum_out.
    pads: [usize; 4],
    residual: bool,
    bias: bool,
    beta: bool,
    sum_out: bool,
    /// Offset added to x (large-mean rows).
    offset: f32,
    seed: u64,
}

struct Problem {
    x: Matrix,
    residual: Option<Matrix>,
    bias: Option<Buf>,
    gamma: Buf,
    beta: Option<Buf>,
}

impl Case {
    fn params(&self) -> NormParams {
        NormParams { kind: self.kind, eps: self.eps }
    }

    fn problem(&self) -> Problem {
        let mut rng = Rng::new(self.seed);
        let (rows, hidden) = (self.rows, self.hidden);
        let offset = self.offset;
        let x = Matrix::new(self.dtypes[0], rows, hidden, self.pads[0], |_, _| offset + rng.uniform(-2.0, 2.0));
        let residual = self
            .residual
            .then(|| Matrix::new(self.dtypes[1], rows, hidden, self.pads[1], |_, _| rng.uniform(-1.0, 1.0)));
        let mut vector = |lo: f32, hi: f32, dtype: DType| Buf::from_f32(dtype, &rng.vec::<f32>(hidden, lo, hi));
        let gamma = vector(-1.5, 1.5, self.dtypes[4]);
        let bias = self.bias.then(|| vector(-0.5, 0.5, self.dtypes[5]));
        let beta = self.beta.then(|| vector(-1.0, 1.0, self.dtypes[5]));
        Problem { x, residual, bias, gamma, beta }
    }
}

impl Problem {
    fn inputs(&self) -> NormInputs<'_> {
        let hidden = self.x.hidden;
        fn vector<'b>(arg: &'static str, buf: &'b Option<Buf>, hidden: usize) -> Option<View<'b>> {
            buf.as_ref().map(|v| v.view(arg, &[hidden], &[1]).unwrap())
        }
        NormInputs {
            x: self.x.view("x"),
            residual: self.residual.as_ref().map(|r| r.view("residual")),
            bias: vector("bias", &self.bias, hidden),
            gamma: self.gamma.view("gamma", &[hidden], &[1]).unwrap(),
            beta: vector("beta", &self.beta, hidden),
        }
    }

    /// The per-element error scale of `out` (see the module docs), from the f64 statistics.
    fn out_scale(&self, kind: NormKind, eps: f32) -> Vec<f64> {
        let (rows, hidden) = (self.x.rows, self.x.hidden);
        let x = self.x.values();
        let r = self.residual.as_ref().map(Matrix::values);
        let b = self.bias.as_ref().map(Buf::to_f32);
        let g = self.gamma.to_f32();
        let beta = self.beta.as_ref().map(Buf::to_f32);
        let mut scale = Vec::with_capacity(rows * hidden);
        for row in 0..rows {
            let at = |c: usize| row * hidden + c;
            let term = |c: usize| {
                let mut h = f64::from(x[at(c)]);
                let mut a = h.abs();
                if let Some(r) = &r {
                    h += f64::from(r[at(c)]);
                    a += f64::from(r[at(c)]).abs();
                }
                if let Some(b) = &b {
                    h += f64::from(b[c]);
                    a += f64::from(b[c]).abs();
                }
                (h, a)
            };
            let n = hidden as f64;
            let mean = match kind {
                NormKind::LayerNorm => (0..hidden).map(|c| term(c).0).sum::<f64>() / n,
                NormKind::RmsNorm => 0.0,
            };
            let var = (0..hidden).map(|c| (term(c).0 - mean).powi(2)).sum::<f64>() / n;
            let sigma = (var + f64::from(eps)).sqrt();
            let big_a = (0..hidden).map(|c| term(c).1).fold(0.0, f64::max);
            for c in 0..hidden {
                let t = ((term(c).0 - mean) / sigma).abs();
                let shift = beta.as_ref().map_or(0.0, |b| f64::from(b[c]).abs());
                let s = f64::from(g[c]).abs() * (big_a / sigma + t + 1.0) + shift;
                // Rows with ∞ have no error model; their finite outputs (β) must be exact.
                scale.push(if s.is_finite() { s } else { 0.0 });
            }
        }
        scale
    }

    /// `|x| + |r| + |b|` per element: the scale of the rounding errors of `h`.
    fn sum_scale(&self) -> Vec<f64> {
        let hidden = self.x.hidden;
        let x = self.x.values();
        let r = self.residual.as_ref().map(Matrix::values);
        let b = self.bias.as_ref().map(Buf::to_f32);
        (0..x.len())
            .map(|i| {
                f64::from(x[i]).abs()
                    + r.as_ref().map_or(0.0, |r| f64::from(r[i]).abs())
                    + b.as_ref().map_or(0.0, |b| f64::from(b[i % hidden]).abs())
            })
            .collect()
    }
}

/// Runs `kernel` (the fast one or the reference) on a case, returning (out, sum_out).
fn run_with(
    case: &Case,
    problem: &Problem,
    kernel: impl Fn(&NormInputs, &NormParams, &mut ViewMut, Option<&mut ViewMut>) -> flashkern_kernels::Result<()>,
) -> (Matrix, Option<Matrix>) {
    let (rows, hidden) = (case.rows, case.hidden);
    let mut out = Matrix::nan(case.dtypes[2], rows, hidden, case.pads[2]);
    let mut sum = case.sum_out.then(|| Matrix::nan(case.dtypes[3], rows, hidden, case.pads[3]));
    {
        let mut out_view = out.view_mut("out");
        let mut sum_view = sum.as_mut().map(|s| s.view_mut("sum_out"));
        kernel(&problem.inputs(), &case.params(), &mut out_view, sum_view.as_mut()).unwrap();
    }
    (out, sum)
}

fn check_case(case: &Case) {
    check_problem(case, &problem_checked(case));
}

/// [`check_case`] on a given problem of the case's shape and dtypes.
fn check_problem(case: &Case, problem: &Problem) {
    let (want_out, want_sum) = run_with(case, problem, reference::add_norm);
    let out_tol = Tolerance::accumulation(case.hidden, case.dtypes[2]);
    let out_scale = problem.out_scale(case.kind, case.eps);
    let u32 = f64::from(f32::EPSILON) / 2.0;
    on_every_isa(Isa::Avx512, |isa| {
        let (out, sum) = run_with(case, problem, add_norm);
        assert_close(&format!("out at {isa}, {case:?}"), &out.values(), &want_out.values(), Some(&out_scale), out_tol);
        assert!(out.padding().iter().all(|v| v.is_nan()), "out padding written at {isa}");
        if let (Some(sum), Some(want)) = (&sum, &want_sum) {
            let tol = Tolerance { abs: 4.0 * u32, rel: 2.0 * case.dtypes[3].unit_roundoff() };
            assert_close(&format!("sum_out at {isa}"), &sum.values(), &want.values(), Some(&problem.sum_scale()), tol);
            assert!(sum.padding().iter().all(|v| v.is_nan()), "sum_out padding written at {isa}");
        }
    });
}

fn problem_checked(case: &Case) -> Problem {
    let problem = case.problem();
    assert_eq!(problem.x.values().len(), case.rows * case.hidden);
    problem
}

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::ALL.to_vec())
}

fn hidden_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(AWKWARD_SIZES.to_vec()),
        1usize..1100,
        prop::sample::select(vec![384usize, 511, 513, 768, 1000, 1025, 2047, 4096, 8192]),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..6, hidden_size(), prop::bool::ANY, prop::sample::select(vec![1e-5f32, 1e-12, 0.0, 0.5])),
        ([dtype(), dtype(), dtype(), dtype(), dtype(), dtype()], [0usize..4, 0usize..4, 0usize..4, 0usize..4]),
        ([prop::bool::ANY; 4], prop::sample::select(vec![0f32, 0f32, 3.0, 100.0]), any::<u64>()),
    )
        .prop_map(|((rows, hidden, rms, eps), (dtypes, pads), (flags, offset, seed))| Case {
            // Keep the reference's work small: at most ~16 Ki elements.
            rows: rows.min((16384 / hidden).max(1)),
            hidden,
            kind: if rms { NormKind::RmsNorm } else { NormKind::LayerNorm },
            eps,
            dtypes,
            pads,
            residual: flags[0],
            bias: flags[1],
            beta: flags[2],
            sum_out: flags[3],
            offset,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference_on_every_isa(case in case()) {
        check_case(&case);
    }

    #[test]
    fn in_place_variants_equal_out_of_place(case in case()) {
        in_place_matches(&case);
    }
}

/// Both in-place variants (and both operand orders) equal `add_norm` bit for bit.
fn in_place_matches(case: &Case) {
    let problem = case.problem();
    let (rows, hidden) = (case.rows, case.hidden);
    let params = case.params();
    fn weights(p: &Problem) -> (Option<View<'_>>, View<'_>, Option<View<'_>>) {
        let inputs = p.inputs();
        (inputs.bias, inputs.gamma, inputs.beta)
    }
    on_every_isa(Isa::Avx512, |_| {
        // Post-norm: the output overwrites x (dtype of x), and, swapped, overwrites the residual.
        let mut case_x = case.clone();
        case_x.dtypes[2] = case.dtypes[0];
        case_x.sum_out = false;
        let (want, _) = run_with(&case_x, &problem, add_norm);
        let (bias, gamma, beta) = weights(&problem);
        let nw = NormWeights { bias, gamma, beta };
        let mut inout = problem.x.clone();
        let other = problem.residual.as_ref().map(|r| r.view("residual"));
        add_norm_in_place(&mut inout.view_mut("x"), other.as_ref(), &nw, &params).unwrap();
        assert_eq!(inout.values().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), bits(&want.values()));
        if let Some(residual) = &problem.residual {
            let mut case_r = case_x.clone();
            case_r.dtypes[2] = case.dtypes[1];
            let (want, _) = run_with(&case_r, &problem, add_norm);
            let mut inout = residual.clone();
            let x = problem.x.view("x");
            add_norm_in_place(&mut inout.view_mut("residual"), Some(&x), &nw, &params).unwrap();
            assert_eq!(bits(&inout.values()), bits(&want.values()), "output over the residual");
        }
        // Pre-norm: the residual buffer becomes h, out is separate.
        let mut case_pre = case.clone();
        case_pre.residual = true;
        let problem_pre = case_pre.problem();
        case_pre.sum_out = true;
        case_pre.dtypes[3] = case_pre.dtypes[1];
        case_pre.pads[3] = case_pre.pads[1];
        let (want_out, want_sum) = run_with(&case_pre, &problem_pre, add_norm);
        let mut stream = problem_pre.residual.clone().expect("pre-norm has a residual");
        let mut out = Matrix::nan(case.dtypes[2], rows, hidden, case.pads[2]);
        let (bias, gamma, beta) = weights(&problem_pre);
        add_norm_update_residual(
            &problem_pre.x.view("x"),
            &mut stream.view_mut("residual"),
            &NormWeights { bias, gamma, beta },
            &params,
            &mut out.view_mut("out"),
        )
        .unwrap();
        assert_eq!(bits(&out.values()), bits(&want_out.values()), "pre-norm out");
        assert_eq!(bits(&stream.values()), bits(&want_sum.expect("sum").values()), "pre-norm stream");
    });
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn base_case(rows: usize, hidden: usize) -> Case {
    Case {
        rows,
        hidden,
        kind: NormKind::LayerNorm,
        eps: 1e-5,
        dtypes: [DType::F32; 6],
        pads: [0; 4],
        residual: true,
        bias: true,
        beta: true,
        sum_out: true,
        offset: 0.0,
        seed: 42,
    }
}

#[test]
fn every_dtype_of_every_argument_at_awkward_sizes() {
    for (i, &hidden) in AWKWARD_SIZES.iter().enumerate() {
        for (j, dtype) in DType::ALL.into_iter().enumerate() {
            let mut case = base_case(3, hidden);
            case.dtypes =
                [DType::ALL[(i + j) % 3], dtype, DType::ALL[(i + 2 * j) % 3], dtype, dtype, DType::ALL[i % 3]];
            case.pads = [i % 3, j, (i + j) % 4, 1];
            case.kind = if (i + j) % 2 == 0 { NormKind::LayerNorm } else { NormKind::RmsNorm };
            case.seed = (i * 3 + j) as u64;
            check_case(&case);
        }
    }
}

#[test]
fn large_mean_rows_are_accurate() {
    // mean 1e4, std ~1: E[h²] − mean² would lose everything (1e8 · 2⁻²⁴ ≈ 6 ≫ var).
    for hidden in [768, 4096, 8191] {
        for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
            let mut case = base_case(2, hidden);
            case.kind = kind;
            case.offset = 1e4;
            case.bias = false;
            check_case(&case);
            // Absolute: h itself is rounded in f32 (ulp(1e4)/2 ≈ 4.9e-4), so |error| ≲ 1e-3·|γ|/σ.
            let problem = case.problem();
            let (got, _) = run_with(&case, &problem, add_norm);
            let (want, _) = run_with(&case, &problem, reference::add_norm);
            let worst = got.values().iter().zip(want.values()).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
            let limit = if kind == NormKind::LayerNorm { 5e-3 } else { 1e-6 };
            assert!(worst < limit, "{kind:?} hidden {hidden}: worst error {worst}");
        }
    }
}

#[test]
fn rows_whose_first_vector_is_an_outlier_are_accurate() {
    // The one-pass LayerNorm variance is taken around the mean of the row's first vector. Here
    // that vector sits at 1e4 and the rest of the row near 0, so one pass would cancel away
    // ~z²/var ≈ n/16 times its usual precision: such rows must take the centred second pass.
    for hidden in [17, 40, 768, 8191] {
        for dtype in [DType::F32, DType::BF16] {
            let mut case = base_case(3, hidden);
            case.dtypes = [dtype, dtype, DType::F32, DType::F32, DType::F32, DType::F32];
            let mut problem = case.problem();
            let x = problem.x.values();
            problem.x =
                Matrix::new(dtype, 3, hidden, 0, |r, c| if c < 16 { 1e4 + c as f32 } else { x[r * hidden + c] });
            check_problem(&case, &problem);
        }
    }
}

#[test]
fn a_nan_in_one_row_affects_only_that_row() {
    for dtype in DType::ALL {
        for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
            let (rows, hidden) = (5, 300);
            let mut case = base_case(rows, hidden);
            case.kind = kind;
            case.dtypes = [dtype; 6];
            let mut problem = case.problem();
            let poisoned = [(1usize, 17usize, f32::NAN), (3, 299, f32::INFINITY)];
            let mut x = problem.x.values();
            for (r, c, v) in poisoned {
                x[r * hidden + c] = v;
            }
            problem.x = Matrix::new(dtype, rows, hidden, 0, |r, c| x[r * hidden + c]);
            let (want, want_sum) = run_with(&case, &problem, reference::add_norm);
            on_every_isa(Isa::Avx512, |isa| {
                let (out, sum) = run_with(&case, &problem, add_norm);
                let out = out.values();
                for r in 0..rows {
                    let row = &out[r * hidden..(r + 1) * hidden];
                    // The NaN row is all NaN; the ∞ row is NaN (LayerNorm) or NaN/0·γ+β
                    // (RMSNorm: 1/rms = 0), as the reference; every other row is untouched.
                    if r == 1 {
                        assert!(row.iter().all(|v| v.is_nan()), "row {r} at {isa}, {kind:?} {dtype}");
                    } else if r != 3 {
                        assert!(row.iter().all(|v| v.is_finite()), "row {r} at {isa}, {kind:?} {dtype}");
                    }
                }
                let u32 = f64::from(f32::EPSILON) / 2.0;
                let tol = Tolerance { abs: 4.0 * u32, rel: 2.0 * dtype.unit_roundoff() };
                let (sum, want_sum) = (sum.unwrap().values(), want_sum.as_ref().unwrap().values());
                assert_close("nan rows sum", &sum, &want_sum, Some(&problem.sum_scale()), tol);
                let scale = problem.out_scale(case.kind, case.eps);
                assert_close("nan rows", &out, &want.values(), Some(&scale), Tolerance::accumulation(hidden, dtype));
            });
        }
    }
}

#[test]
fn zero_variance_rows_follow_the_reference() {
    // Constant rows (LayerNorm) and zero rows (RMSNorm): with eps = 0 the result is 0·(1/√0) =
    // NaN, exactly as the reference; with eps > 0 it is β exactly.
    for hidden in [1, 7, 16, 100, 768, 4097] {
        for dtype in DType::ALL {
            for (kind, value) in [(NormKind::LayerNorm, 0.1f32), (NormKind::LayerNorm, -3.7), (NormKind::RmsNorm, 0.0)]
            {
                for eps in [0.0f32, 1e-5] {
                    let mut case = base_case(2, hidden);
                    case.kind = kind;
                    case.eps = eps;
                    case.dtypes = [dtype; 6];
                    case.residual = false;
                    case.bias = false;
                    let mut problem = case.problem();
                    problem.x = Matrix::new(dtype, 2, hidden, 0, |_, _| value);
                    let (want, _) = run_with(&case, &problem, reference::add_norm);
                    let beta = problem.beta.as_ref().unwrap().to_f32();
                    on_every_isa(Isa::Avx512, |isa| {
                        let (out, _) = run_with(&case, &problem, add_norm);
                        let (got, want) = (out.values(), want.values());
                        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                            if eps == 0.0 {
                                assert!(g.is_nan() && w.is_nan(), "{kind:?} {value} {dtype} at {isa}: {g} vs {w}");
                            } else {
                                let b = Buf::from_f32(dtype, &[beta[i % hidden]]).to_f32()[0];
                                assert_eq!(g, b, "{kind:?} {value} {dtype} hidden {hidden} at {isa}");
                            }
                        }
                    });
                }
            }
        }
    }
}

#[test]
fn one_and_two_threads_are_bit_identical() {
    for (rows, hidden) in [(300, 768), (64, 4096), (4000, 33)] {
        for dtype in [DType::F32, DType::BF16] {
            let mut case = base_case(rows, hidden);
            case.dtypes = [dtype; 6];
            case.pads = [1, 0, 3, 2];
            let problem = case.problem();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| run_with(&case, &problem, add_norm))
            };
            let (one, one_sum) = run(1);
            let (two, two_sum) = run(2);
            assert_eq!(bits(&one.values()), bits(&two.values()), "{rows}x{hidden} {dtype}");
            assert_eq!(bits(&one_sum.unwrap().values()), bits(&two_sum.unwrap().values()));
        }
    }
}

/// Outputs of at least 16 MiB in rows of at least 8 KiB are written with streaming stores at the
/// AVX-512 level, their unaligned row ends with ordinary ones. Such a call must store exactly
/// what two calls on its halves (8 MiB each, not streamed) store, at every row alignment (the
/// padded row stride walks the row starts through every 4-byte offset of a line), leaving the
/// padding untouched.
#[test]
fn streamed_outputs_equal_ordinary_stores() {
    fn check<E: Element>() {
        let hidden = 4096;
        let rows = (16 << 20) / (hidden * size_of::<E>()) + 2;
        let (stride, half) = (hidden + 3, rows / 2);
        let mut rng = Rng::new(7);
        let x = rng.vec::<f32>(rows * hidden, -2.0, 2.0);
        let r = rng.vec::<f32>(rows * hidden, -1.0, 1.0);
        let gamma = rng.vec::<f32>(hidden, -1.5, 1.5);
        let beta = rng.vec::<f32>(hidden, -1.0, 1.0);
        let params = NormParams { kind: NormKind::LayerNorm, eps: 1e-5 };
        let run = |rows: std::ops::Range<usize>, out: &mut [E]| {
            let n = rows.len();
            let inputs = NormInputs {
                x: View::contiguous("x", &x[rows.start * hidden..rows.end * hidden], &[n, hidden]).unwrap(),
                residual: Some(
                    View::contiguous("r", &r[rows.start * hidden..rows.end * hidden], &[n, hidden]).unwrap(),
                ),
                bias: None,
                gamma: View::contiguous("gamma", &gamma, &[hidden]).unwrap(),
                beta: Some(View::contiguous("beta", &beta, &[hidden]).unwrap()),
            };
            let mut view = ViewMut::new("out", &mut out[rows.start * stride..], &[n, hidden], &[stride, 1]).unwrap();
            add_norm(&inputs, &params, &mut view, None).unwrap();
        };
        let bits = |out: &[E]| out.iter().map(|v| v.to_f32().to_bits()).collect::<Vec<u32>>();
        let len = (rows - 1) * stride + hidden;
        on_every_isa(Isa::Avx512, |isa| {
            let mut whole = vec![E::from_f32(f32::NAN); len];
            run(0..rows, &mut whole);
            let mut halves = vec![E::from_f32(f32::NAN); len];
            run(0..half, &mut halves);
            run(half..rows, &mut halves);
            assert!(bits(&whole) == bits(&halves), "{} out at {isa}", E::DTYPE);
        });
    }
    check::<f32>();
    check::<bf16>();
    check::<f16>();
}

#[test]
fn big_problems_match_the_reference_when_threaded() {
    // Crosses the parallel threshold with padded strides and 16-bit data.
    let mut case = base_case(96, 1100);
    case.dtypes = [DType::BF16, DType::F16, DType::F32, DType::BF16, DType::F16, DType::F32];
    case.pads = [3, 1, 2, 5];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| check_case(&case));
}

#[test]
fn empty_problems_are_fine() {
    for (rows, hidden) in [(0, 8), (3, 0), (0, 0)] {
        let case = base_case(rows, hidden);
        let problem = case.problem();
        let (out, _) = run_with(&case, &problem, add_norm);
        assert!(out.values().is_empty());
    }
}

#[test]
fn argument_errors_name_the_argument() {
    let data = vec![0f32; 64];
    let mut out_data = vec![0f32; 64];
    let mut sum_data = vec![0f32; 64];
    let x = View::contiguous("x", &data, &[4, 8]).unwrap();
    let gamma = View::contiguous("gamma", &data, &[8]).unwrap();
    let short = View::contiguous("v", &data, &[7]).unwrap();
    let wrong = View::contiguous("m", &data, &[4, 7]).unwrap();
    let strided = View::new("m", &data, &[4, 8], &[16, 2]).unwrap();
    let params = NormParams { kind: NormKind::LayerNorm, eps: 1e-5 };
    let good = NormInputs { x, residual: Some(x), bias: Some(gamma), gamma, beta: Some(gamma) };
    let arg_of = |e: Error| match e {
        Error::ShapeMismatch { arg, .. } | Error::InvalidView { arg, .. } | Error::InvalidArgument { arg, .. } => arg,
        other => panic!("unexpected error {other:?}"),
    };
    let mut out = ViewMut::contiguous("out", &mut out_data, &[4, 8]).unwrap();
    let bad_inputs = [
        ("x", NormInputs { x: View::contiguous("x", &data, &[32]).unwrap(), ..good }),
        ("residual", NormInputs { residual: Some(wrong), ..good }),
        ("residual", NormInputs { residual: Some(strided), ..good }),
        ("bias", NormInputs { bias: Some(short), ..good }),
        ("gamma", NormInputs { gamma: short, ..good }),
        ("beta", NormInputs { beta: Some(short), ..good }),
    ];
    for (arg, inputs) in bad_inputs {
        assert_eq!(arg_of(add_norm(&inputs, &params, &mut out, None).unwrap_err()), arg);
    }
    for eps in [-1.0, f32::NAN, f32::INFINITY] {
        let bad = NormParams { eps, ..params };
        assert_eq!(arg_of(add_norm(&good, &bad, &mut out, None).unwrap_err()), "eps");
    }
    let mut small = vec![0f32; 28];
    let mut small_out = ViewMut::contiguous("out", &mut small, &[4, 7]).unwrap();
    assert_eq!(arg_of(add_norm(&good, &params, &mut small_out, None).unwrap_err()), "out");
    let mut sum_small = ViewMut::contiguous("sum_out", &mut sum_data[..28], &[4, 7]).unwrap();
    assert_eq!(arg_of(add_norm(&good, &params, &mut out, Some(&mut sum_small)).unwrap_err()), "sum_out");
    // The in-place variants check the same way.
    let weights = NormWeights { bias: None, gamma: short, beta: None };
    assert_eq!(arg_of(add_norm_in_place(&mut out, Some(&x), &weights, &params).unwrap_err()), "gamma");
    let weights = NormWeights { bias: None, gamma, beta: None };
    assert_eq!(arg_of(add_norm_in_place(&mut out, Some(&wrong), &weights, &params).unwrap_err()), "residual");
    let mut stream = ViewMut::contiguous("residual", &mut sum_data[..28], &[4, 7]).unwrap();
    assert_eq!(arg_of(add_norm_update_residual(&x, &mut stream, &weights, &params, &mut out).unwrap_err()), "residual");
    // And the checker itself reports the dimensions.
    let dims = norm::check_args(&good, &params, &out, None).unwrap();
    assert_eq!((dims.rows, dims.hidden), (4, 8));
}
