//! The C ABI rejects bad descriptors with the right status and a message naming the argument,
//! and computes the same results as the Rust API for good ones.

use flashkern::capi::*;
use std::ffi::{CStr, c_void};
use std::ptr::{null, null_mut};

fn tensor(data: &mut [f32], shape: &[i64]) -> fk_tensor {
    let mut t = fk_tensor {
        data: data.as_mut_ptr().cast::<c_void>(),
        dtype: fk_dtype::FK_F32,
        ndim: shape.len() as i32,
        shape: [0; 4],
        strides: [0; 4],
    };
    let mut step = 1;
    for d in (0..shape.len()).rev() {
        t.shape[d] = shape[d];
        t.strides[d] = step;
        step *= shape[d];
    }
    t
}

fn last_error() -> String {
    // SAFETY: fk_last_error returns a valid NUL-terminated thread-local string.
    unsafe { CStr::from_ptr(fk_last_error()) }.to_string_lossy().into_owned()
}

struct Attention {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
}

impl Attention {
    fn new() -> Self {
        let n = 2 * 3 * 5 * 4;
        let values = |seed: usize| (0..n).map(|i| ((i * 7 + seed * 13) % 17) as f32 / 8.0 - 1.0).collect();
        Attention { q: values(1), k: values(2), v: values(3), out: vec![f32::NAN; n] }
    }

    fn run(&mut self, edit: impl FnOnce(&mut [fk_tensor; 4], &mut fk_attention_params)) -> fk_status {
        let shape = [2, 3, 5, 4];
        let mut t = [
            tensor(&mut self.q, &shape),
            tensor(&mut self.k, &shape),
            tensor(&mut self.v, &shape),
            tensor(&mut self.out, &shape),
        ];
        let mut params = fk_attention_params {
            scale: 0.0,
            causal: fk_causal::FK_CAUSAL_NONE,
            key_lengths: null(),
            additive_mask: null(),
            window_left: -1,
            softcap: 0.0,
            lse: null_mut(),
        };
        edit(&mut t, &mut params);
        // SAFETY: every descriptor points into a live Vec large enough for what it describes,
        // unless a test deliberately breaks one in a way the ABI must detect before access.
        unsafe { fk_attention(&t[0], &t[1], &t[2], &mut t[3], &params) }
    }
}

#[test]
fn good_attention_call_succeeds() {
    let mut a = Attention::new();
    assert_eq!(a.run(|_, _| {}), fk_status::FK_OK, "{}", last_error());
    // The same call through the Rust API gives the same bits.
    use flashkern_kernels::attention::{AttentionParams, attention};
    use flashkern_kernels::{View, ViewMut};
    let shape = [2, 3, 5, 4];
    let (q, k, v) = (
        View::contiguous("q", &a.q, &shape).unwrap(),
        View::contiguous("k", &a.k, &shape).unwrap(),
        View::contiguous("v", &a.v, &shape).unwrap(),
    );
    let mut want = vec![f32::NAN; a.out.len()];
    let mut out = ViewMut::contiguous("out", &mut want, &shape).unwrap();
    attention(&q, &k, &v, &mut out, &AttentionParams::default(), None).unwrap();
    assert!(want.iter().all(|x| x.is_finite()));
    assert_eq!(
        a.out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn bad_descriptors_get_their_status_and_a_message() {
    type Edit = fn(&mut [fk_tensor; 4], &mut fk_attention_params);
    let cases: [(&str, Edit, fk_status, &str); 7] = [
        ("null data", |t, _| t[3].data = null_mut(), fk_status::FK_ERR_INVALID_ARGUMENT, "`out`: data is NULL"),
        ("ndim 5", |t, _| t[0].ndim = 5, fk_status::FK_ERR_SHAPE, "ndim must be 1 to 4"),
        ("negative stride", |t, _| t[1].strides[2] = -4, fk_status::FK_ERR_INVALID_ARGUMENT, "`k`: strides"),
        ("overlapping output", |t, _| t[3].strides[1] = 0, fk_status::FK_ERR_INVALID_ARGUMENT, "overlap"),
        (
            "output aliases input",
            |t, _| t[3].data = t[0].data,
            fk_status::FK_ERR_INVALID_ARGUMENT,
            "`out` overlaps `q`",
        ),
        ("shape mismatch", |t, _| t[2].shape[2] = 4, fk_status::FK_ERR_SHAPE, "`v`"),
        (
            "unknown dtype",
            |t, _| {
                // SAFETY: writes an out-of-range discriminant through a raw i32 view of the field,
                // exactly what a C caller can do; the ABI reads it back as an integer.
                unsafe { std::ptr::addr_of_mut!(t[0].dtype).cast::<i32>().write(9) }
            },
            fk_status::FK_ERR_DTYPE,
            "unknown dtype 9",
        ),
    ];
    for (name, edit, want, message) in cases {
        let mut a = Attention::new();
        let got = a.run(edit);
        assert_eq!(got, want, "{name}: {}", last_error());
        assert!(last_error().contains(message), "{name}: {:?}", last_error());
    }
}

#[test]
fn mask_with_wrong_broadcast_shape_and_non_f32_lse_are_rejected() {
    let mut mask = vec![0f32; 2 * 5 * 5];
    let mut lse = vec![0f32; 2 * 3 * 5];
    let mut a = Attention::new();
    let mask_t = tensor(&mut mask, &[2, 2, 5, 5]); // H must be 3 or 1
    let status = a.run(|_, p| p.additive_mask = &mask_t);
    assert_eq!(status, fk_status::FK_ERR_SHAPE, "{}", last_error());
    assert!(last_error().contains("additive_mask"));
    let mut lse_t = tensor(&mut lse, &[2, 3, 5]);
    lse_t.dtype = fk_dtype::FK_BF16;
    let status = a.run(|_, p| p.lse = &mut lse_t);
    assert_eq!(status, fk_status::FK_ERR_DTYPE, "{}", last_error());
}

#[test]
fn matmul_and_norm_through_the_abi() {
    let (m, k, n) = (3usize, 5usize, 2usize);
    let mut a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.1).collect();
    let mut b: Vec<f32> = (0..n * k).map(|i| 1.0 - i as f32 * 0.05).collect();
    let mut c = vec![f32::NAN; m * n];
    let (ta, tb, mut tc) = (
        tensor(&mut a, &[m as i64, k as i64]),
        tensor(&mut b, &[n as i64, k as i64]),
        tensor(&mut c, &[m as i64, n as i64]),
    );
    // SAFETY: descriptors describe live Vecs.
    assert_eq!(unsafe { fk_matmul(&ta, &tb, null(), 1.0, 0.0, &mut tc) }, fk_status::FK_OK);
    let want = |i: usize, j: usize| (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum::<f32>();
    for i in 0..m {
        for j in 0..n {
            assert!((c[i * n + j] - want(i, j)).abs() < 1e-5);
        }
    }
    let mut packed = null_mut();
    // SAFETY: as above; `packed` is freed once below.
    unsafe {
        assert_eq!(fk_pack_weights(&tb, &mut packed), fk_status::FK_OK);
        // `tc` points into `c`: clear it so the packed call must write every element again.
        std::ptr::write_bytes(tc.data.cast::<f32>(), 0xff, m * n);
        assert_eq!(fk_matmul_packed(&ta, packed, null(), 1.0, 0.0, &mut tc), fk_status::FK_OK);
        assert_eq!(fk_matmul_packed(&ta, null(), null(), 1.0, 0.0, &mut tc), fk_status::FK_ERR_INVALID_ARGUMENT);
        fk_packed_free(packed);
        fk_packed_free(null_mut());
    }
    for i in 0..m {
        for j in 0..n {
            assert!((c[i * n + j] - want(i, j)).abs() < 1e-5, "packed: c[{i},{j}] = {}", c[i * n + j]);
        }
    }

    let mut x = vec![1f32, 2., 3., 4.];
    let mut gamma = vec![1f32; 2];
    let mut out = vec![f32::NAN; 4];
    let (tx, tg, mut to) = (tensor(&mut x, &[2, 2]), tensor(&mut gamma, &[2]), tensor(&mut out, &[2, 2]));
    // SAFETY: descriptors describe live Vecs.
    let status = unsafe { fk_add_rms_norm(&tx, null(), &tg, 0.0, &mut to, null_mut()) };
    assert_eq!(status, fk_status::FK_OK, "{}", last_error());
    assert!((out[1] - 2.0 / (2.5f32).sqrt()).abs() < 1e-6);
    // SAFETY: as above; eps = NaN must be rejected before any access.
    let status = unsafe { fk_add_layer_norm(&tx, null(), null(), &tg, null(), f32::NAN, &mut to, null_mut()) };
    assert_eq!(status, fk_status::FK_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("eps"));
}

#[test]
fn version_isa_and_thread_controls() {
    // SAFETY: the returned strings are static and NUL-terminated.
    let version = unsafe { CStr::from_ptr(fk_version()) }.to_str().unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let isa = unsafe { CStr::from_ptr(fk_isa()) }.to_str().unwrap();
    assert!(["scalar", "avx2", "avx512", "avx512bf16"].contains(&isa));
    assert_eq!(fk_set_num_threads(-1), fk_status::FK_ERR_INVALID_ARGUMENT);
    assert_eq!(fk_set_num_threads(1), fk_status::FK_OK);
    // SAFETY: a valid NUL-terminated string.
    assert_eq!(unsafe { fk_set_max_isa(c"bogus".as_ptr()) }, fk_status::FK_ERR_INVALID_ARGUMENT);
    let status = unsafe { CStr::from_ptr(fk_status_string(fk_status::FK_ERR_SHAPE)) };
    assert_eq!(status.to_str().unwrap(), "shape mismatch");
}
