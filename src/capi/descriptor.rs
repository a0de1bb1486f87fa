//! Turning C descriptors into validated views: the only place raw C pointers become slices.
//!
//! A descriptor is read through a mirror struct with plain integers, so an out-of-range enum
//! value from C is an error, not undefined behaviour. Its extent (the elements it addresses)
//! is computed with checked arithmetic before any slice exists; outputs must not overlap any
//! other argument, since Rust may not alias a `&mut` slice.

use super::{fk_attention_params, fk_status, fk_tensor};
use flashkern_kernels::dtype::{DType, bf16, f16};
use flashkern_kernels::{Error, View, ViewMut};
use std::ffi::c_void;
use std::ops::Range;

/// A failed call: the status to return and the message for `fk_last_error`.
pub(super) struct Failure {
    pub status: fk_status,
    pub message: String,
}

impl Failure {
    pub fn new(status: fk_status, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(fk_status::FK_ERR_INVALID_ARGUMENT, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(fk_status::FK_ERR_INTERNAL, message)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let status = match &error {
            Error::ShapeMismatch { .. } => fk_status::FK_ERR_SHAPE,
            Error::Unsupported { .. } => fk_status::FK_ERR_UNSUPPORTED,
            _ => fk_status::FK_ERR_INVALID_ARGUMENT,
        };
        Failure::new(status, error.to_string())
    }
}

/// `fk_tensor` with the enum as a plain integer (same layout: a C enum is an `int`).
#[repr(C)]
struct RawTensor {
    data: *mut c_void,
    dtype: i32,
    ndim: i32,
    shape: [i64; 4],
    strides: [i64; 4],
}
const _: () = assert!(size_of::<RawTensor>() == size_of::<fk_tensor>());
const _: () = assert!(align_of::<RawTensor>() == align_of::<fk_tensor>());

/// `fk_attention_params` with the enum as a plain integer.
#[repr(C)]
pub(super) struct RawParams {
    pub scale: f32,
    pub causal: i32,
    pub key_lengths: *const i32,
    pub additive_mask: *const fk_tensor,
    pub window_left: i32,
    pub softcap: f32,
    pub lse: *mut fk_tensor,
}
const _: () = assert!(size_of::<RawParams>() == size_of::<fk_attention_params>());

/// Reads attention params; NULL gives the defaults.
///
/// # Safety
/// `params` is NULL or points to a readable `fk_attention_params`.
pub(super) unsafe fn read_params(params: *const fk_attention_params) -> Result<RawParams, Failure> {
    if params.is_null() {
        return Ok(RawParams {
            scale: 0.0,
            causal: 0,
            key_lengths: std::ptr::null(),
            additive_mask: std::ptr::null(),
            window_left: -1,
            softcap: 0.0,
            lse: std::ptr::null_mut(),
        });
    }
    // SAFETY: non-NULL and readable (caller's contract); RawParams has the same layout and
    // every bit pattern of it is valid.
    Ok(unsafe { params.cast::<RawParams>().read() })
}

/// A checked descriptor: where its elements lie, before any slice is made.
struct Described {
    arg: &'static str,
    data: *mut u8,
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<usize>,
    /// Number of elements from `data` to the last addressed one (0 when empty).
    extent: usize,
}

impl Described {
    fn bytes(&self) -> Range<usize> {
        let start = self.data as usize;
        start..start + self.extent * self.dtype.size()
    }
}

/// The descriptors of one call, inputs and outputs, in the order they were added.
#[derive(Default)]
pub(super) struct Arguments {
    inputs: Vec<Described>,
    outputs: Vec<Described>,
}

/// The views of one call, in the order their descriptors were added.
pub(super) struct Bound<'a> {
    pub inputs: Vec<View<'a>>,
    pub outputs: Vec<ViewMut<'a>>,
}

impl Arguments {
    /// Adds a required input; returns its index in [`Bound::inputs`].
    ///
    /// # Safety
    /// `t` is NULL or a readable descriptor whose data holds every element it addresses and
    /// stays valid (and, for inputs, unmodified) for the rest of the call.
    pub unsafe fn input(&mut self, arg: &'static str, t: *const fk_tensor) -> Result<usize, Failure> {
        // SAFETY: forwarded caller's contract.
        self.inputs.push(unsafe { describe(arg, t) }?);
        Ok(self.inputs.len() - 1)
    }

    /// Adds an input that may be NULL.
    ///
    /// # Safety
    /// As for [`Arguments::input`].
    pub unsafe fn optional_input(&mut self, arg: &'static str, t: *const fk_tensor) -> Result<Option<usize>, Failure> {
        // SAFETY: forwarded caller's contract.
        if t.is_null() { Ok(None) } else { unsafe { self.input(arg, t) }.map(Some) }
    }

    /// Adds a required output; returns its index in [`Bound::outputs`].
    ///
    /// # Safety
    /// As for [`Arguments::input`], and the elements are writable.
    pub unsafe fn output(&mut self, arg: &'static str, t: *const fk_tensor) -> Result<usize, Failure> {
        // SAFETY: forwarded caller's contract.
        self.outputs.push(unsafe { describe(arg, t) }?);
        Ok(self.outputs.len() - 1)
    }

    /// Adds an output that may be NULL.
    ///
    /// # Safety
    /// As for [`Arguments::output`].
    pub unsafe fn optional_output(&mut self, arg: &'static str, t: *const fk_tensor) -> Result<Option<usize>, Failure> {
        // SAFETY: forwarded caller's contract.
        if t.is_null() { Ok(None) } else { unsafe { self.output(arg, t) }.map(Some) }
    }

    /// The shape of input `i`.
    pub fn shape(&self, i: usize) -> &[usize] {
        &self.inputs[i].shape
    }

    /// Fails with `FK_ERR_DTYPE` unless the named argument (when present) is f32.
    pub fn check_f32(&self, arg: &'static str, present: Option<usize>) -> Result<(), Failure> {
        let mut all = self.inputs.iter().chain(&self.outputs);
        match all.find(|d| d.arg == arg) {
            Some(d) if present.is_some() && d.dtype != DType::F32 => {
                Err(Failure::new(fk_status::FK_ERR_DTYPE, format!("`{arg}` must be f32, got {}", d.dtype)))
            }
            _ => Ok(()),
        }
    }

    /// Checks that no output overlaps another argument, then makes the views.
    pub fn bind<'a>(self) -> Result<Bound<'a>, Failure> {
        for (i, out) in self.outputs.iter().enumerate() {
            let others = self.inputs.iter().chain(self.outputs.iter().skip(i + 1));
            for other in others {
                let (a, b) = (out.bytes(), other.bytes());
                if !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end {
                    return Err(Failure::invalid(format!(
                        "`{}` overlaps `{}` in memory; outputs must not alias other arguments",
                        out.arg, other.arg
                    )));
                }
            }
        }
        let mut bound = Bound { inputs: Vec::new(), outputs: Vec::new() };
        for d in &self.inputs {
            // SAFETY: `describe` checked the extent and alignment; the callers of `input`
            // vouched that the memory holds it, unmodified, for the call (which outlives 'a's uses).
            let data = unsafe { input_data(d) };
            bound.inputs.push(View::from_data(d.arg, data, &d.shape, &d.strides)?);
        }
        for d in &self.outputs {
            // SAFETY: as above, and no other argument overlaps an output (checked above).
            let data = unsafe { output_data(d) };
            bound.outputs.push(ViewMut::from_data(d.arg, data, &d.shape, &d.strides)?);
        }
        Ok(bound)
    }
}

/// Validates a descriptor without dereferencing its data.
///
/// # Safety
/// `t` is NULL or points to a readable `fk_tensor`.
unsafe fn describe(arg: &'static str, t: *const fk_tensor) -> Result<Described, Failure> {
    if t.is_null() {
        return Err(Failure::invalid(format!("`{arg}` is NULL")));
    }
    // SAFETY: non-NULL and readable (caller's contract); every bit pattern of RawTensor is valid.
    let raw = unsafe { t.cast::<RawTensor>().read() };
    let dtype = match raw.dtype {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::BF16,
        other => return Err(Failure::new(fk_status::FK_ERR_DTYPE, format!("`{arg}`: unknown dtype {other}"))),
    };
    let ndim = usize::try_from(raw.ndim).ok().filter(|n| (1..=4).contains(n)).ok_or_else(|| {
        Failure::new(fk_status::FK_ERR_SHAPE, format!("`{arg}`: ndim must be 1 to 4, got {}", raw.ndim))
    })?;
    let to_usize = |values: &[i64], what: &str, status| -> Result<Vec<usize>, Failure> {
        values
            .iter()
            .map(|&v| usize::try_from(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Failure::new(status, format!("`{arg}`: {what} must be >= 0, got {values:?}")))
    };
    let shape = to_usize(&raw.shape[..ndim], "shape", fk_status::FK_ERR_SHAPE)?;
    let strides = to_usize(&raw.strides[..ndim], "strides", fk_status::FK_ERR_INVALID_ARGUMENT)?;
    let too_big = || Failure::invalid(format!("`{arg}`: shape {shape:?} with strides {strides:?} overflows"));
    let extent = if shape.contains(&0) {
        0
    } else {
        let last =
            shape.iter().zip(&strides).try_fold(0usize, |acc, (&d, &s)| acc.checked_add((d - 1).checked_mul(s)?));
        last.and_then(|l| l.checked_add(1)).ok_or_else(too_big)?
    };
    let bytes = extent.checked_mul(dtype.size()).filter(|&b| b <= isize::MAX as usize).ok_or_else(too_big)?;
    let data = raw.data.cast::<u8>();
    if extent > 0 {
        if data.is_null() {
            return Err(Failure::invalid(format!("`{arg}`: data is NULL but the tensor has elements")));
        }
        if !(data as usize).is_multiple_of(dtype.size()) {
            return Err(Failure::invalid(format!(
                "`{arg}`: data is not aligned to its {}-byte elements",
                dtype.size()
            )));
        }
        if (data as usize).checked_add(bytes).is_none() {
            return Err(too_big());
        }
    }
    Ok(Described { arg, data, dtype, shape, strides, extent })
}

/// # Safety
/// `d` came from [`describe`] and its memory holds `d.extent` readable elements for `'a`.
unsafe fn input_data<'a>(d: &Described) -> flashkern_kernels::Data<'a> {
    use flashkern_kernels::Data;
    if d.extent == 0 {
        return match d.dtype {
            DType::F32 => Data::F32(&[]),
            DType::F16 => Data::F16(&[]),
            DType::BF16 => Data::BF16(&[]),
        };
    }
    // SAFETY: non-NULL, aligned, `extent` elements readable (caller's contract).
    unsafe {
        match d.dtype {
            DType::F32 => Data::F32(std::slice::from_raw_parts(d.data.cast::<f32>(), d.extent)),
            DType::F16 => Data::F16(std::slice::from_raw_parts(d.data.cast::<f16>(), d.extent)),
            DType::BF16 => Data::BF16(std::slice::from_raw_parts(d.data.cast::<bf16>(), d.extent)),
        }
    }
}

/// # Safety
/// As for [`input_data`], and the elements are writable and aliased by nothing else for `'a`.
unsafe fn output_data<'a>(d: &Described) -> flashkern_kernels::DataMut<'a> {
    use flashkern_kernels::DataMut;
    if d.extent == 0 {
        return match d.dtype {
            DType::F32 => DataMut::F32(&mut []),
            DType::F16 => DataMut::F16(&mut []),
            DType::BF16 => DataMut::BF16(&mut []),
        };
    }
    // SAFETY: non-NULL, aligned, `extent` writable elements, unaliased (caller's contract).
    unsafe {
        match d.dtype {
            DType::F32 => DataMut::F32(std::slice::from_raw_parts_mut(d.data.cast::<f32>(), d.extent)),
            DType::F16 => DataMut::F16(std::slice::from_raw_parts_mut(d.data.cast::<f16>(), d.extent)),
            DType::BF16 => DataMut::BF16(std::slice::from_raw_parts_mut(d.data.cast::<bf16>(), d.extent)),
        }
    }
}
