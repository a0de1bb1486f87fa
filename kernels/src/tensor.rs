//! Checked, borrowed, strided views of rank 1 to 4: the only place that turns
//! (shape, strides) into offsets.
//!
//! Strides are in elements and non-negative; a stride of 0 broadcasts (inputs only). Every
//! view is validated at construction: no overflow, every addressable element inside the
//! buffer, and, for outputs, no two indices addressing the same element. Kernels can then
//! index without further checks on the layout (slicing still bounds-checks).
//!
//! Views are dtype-erased ([`Data`] tags the slice) so one compiled kernel body serves every
//! dtype combination: 16-bit data is widened to f32 a row or tile at a time.

use crate::dtype::{DType, Element, bf16, f16};
use crate::error::{Error, Result};
use crate::isa::Isa;
use crate::simd::convert;
use std::marker::PhantomData;

/// The highest rank a view may have.
pub const MAX_RANK: usize = 4;

/// Shape and strides (in elements) of a view, validated against a buffer length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    rank: usize,
    shape: [usize; MAX_RANK],
    strides: [usize; MAX_RANK],
}

impl Layout {
    /// Validates `shape`/`strides` for a buffer of `len` elements. `arg` names the argument in
    /// errors. With `exclusive`, also rejects layouts where two indices share an element
    /// (required of outputs).
    pub fn new(arg: &'static str, len: usize, shape: &[usize], strides: &[usize], exclusive: bool) -> Result<Layout> {
        if shape.is_empty() || shape.len() > MAX_RANK {
            return Err(Error::view(
                arg,
                format!("rank must be 1 to {MAX_RANK}, got {} (shape {shape:?})", shape.len()),
            ));
        }
        if strides.len() != shape.len() {
            return Err(Error::view(
                arg,
                format!("shape {shape:?} has rank {} but strides {strides:?} have {}", shape.len(), strides.len()),
            ));
        }
        let mut layout = Layout { rank: shape.len(), shape: [1; MAX_RANK], strides: [0; MAX_RANK] };
        layout.shape[..shape.len()].copy_from_slice(shape);
        layout.strides[..shape.len()].copy_from_slice(strides);
        if layout.numel_checked().is_none() {
            return Err(Error::view(arg, format!("shape {shape:?} has more elements than fit in usize")));
        }
        match layout.max_offset() {
            None if layout.is_empty() => {}
            None => {
                return Err(Error::view(
                    arg,
                    format!("shape {shape:?} with strides {strides:?} overflows usize offsets"),
                ));
            }
            Some(max) if max >= len => {
                return Err(Error::view(
                    arg,
                    format!(
                        "shape {shape:?} with strides {strides:?} addresses element {max}, but the buffer holds {len} elements"
                    ),
                ));
            }
            Some(_) => {}
        }
        if exclusive && !layout.is_empty() && !layout.is_non_overlapping() {
            return Err(Error::view(
                arg,
                format!(
                    "shape {shape:?} with strides {strides:?} makes distinct indices overlap; outputs need disjoint elements"
                ),
            ));
        }
        Ok(layout)
    }

    /// Row-major strides for `shape`, or `None` when the element count overflows.
    pub fn contiguous_strides(shape: &[usize]) -> Option<Vec<usize>> {
        let mut strides = vec![0; shape.len()];
        let mut step = 1usize;
        for (stride, &dim) in strides.iter_mut().zip(shape).rev() {
            *stride = step;
            step = step.checked_mul(dim)?;
        }
        Some(strides)
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The extent of each dimension.
    pub fn shape(&self) -> &[usize] {
        &self.shape[..self.rank]
    }

    /// The stride of each dimension, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides[..self.rank]
    }

    /// The total number of elements (the product of the shape).
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// True when some dimension is 0.
    pub fn is_empty(&self) -> bool {
        self.shape().contains(&0)
    }

    /// The element offset of a full index (`idx.len() == rank`); indices are not checked
    /// against the shape beyond a debug assertion, the layout itself was.
    #[inline]
    pub fn offset(&self, idx: &[usize]) -> usize {
        debug_assert_eq!(idx.len(), self.rank);
        debug_assert!(idx.iter().zip(self.shape()).all(|(i, d)| i < d), "index {idx:?} outside {:?}", self.shape());
        idx.iter().zip(self.strides()).map(|(i, s)| i * s).sum()
    }

    /// Fails unless the innermost dimension is contiguous (stride 1, or extent ≤ 1).
    pub fn require_inner_contiguous(&self, arg: &'static str) -> Result<()> {
        let last = self.rank - 1;
        if self.shape[last] > 1 && self.strides[last] != 1 {
            return Err(Error::view(
                arg,
                format!("the innermost dimension must be contiguous (stride 1), strides are {:?}", self.strides()),
            ));
        }
        Ok(())
    }

    /// Fails unless the view has exactly `rank` dimensions.
    pub fn require_rank(&self, arg: &'static str, rank: usize) -> Result<()> {
        if self.rank != rank {
            return Err(Error::shape(arg, format!("rank {rank}"), self.shape()));
        }
        Ok(())
    }

    fn numel_checked(&self) -> Option<usize> {
        self.shape().iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    fn max_offset(&self) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        self.shape()
            .iter()
            .zip(self.strides())
            .try_fold(0usize, |acc, (&d, &s)| acc.checked_add((d - 1).checked_mul(s)?))
    }

    /// Sufficient test for injectivity: sorted by stride, each dimension steps over everything
    /// the smaller-stride dimensions can reach.
    fn is_non_overlapping(&self) -> bool {
        let mut dims: Vec<(usize, usize)> =
            self.shape().iter().zip(self.strides()).filter(|(d, _)| **d > 1).map(|(&d, &s)| (s, d)).collect();
        dims.sort_unstable();
        let mut reach = 0usize; // the largest offset the dims so far can form
        for (stride, dim) in dims {
            if stride <= reach || stride == 0 {
                return false;
            }
            reach += (dim - 1) * stride;
        }
        true
    }
}

/// A dtype-tagged borrowed slice.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// f16 elements.
    F16(&'a [f16]),
    /// bf16 elements.
    BF16(&'a [bf16]),
}

/// A dtype-tagged mutable borrowed slice.
#[derive(Debug)]
pub enum DataMut<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// f16 elements.
    F16(&'a mut [f16]),
    /// bf16 elements.
    BF16(&'a mut [bf16]),
}

impl Data<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(s) => s.len(),
            Data::F16(s) => s.len(),
            Data::BF16(s) => s.len(),
        }
    }

    /// True when the slice holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Widens `dst.len()` consecutive elements starting at `offset` into `dst`.
    #[inline]
    pub fn widen(&self, offset: usize, dst: &mut [f32], isa: Isa) {
        let range = offset..offset + dst.len();
        match self {
            Data::F32(s) => dst.copy_from_slice(&s[range]),
            Data::F16(s) => convert::f16_to_f32_with(isa, &s[range], dst),
            Data::BF16(s) => convert::bf16_to_f32_with(isa, &s[range], dst),
        }
    }

    /// The element at `offset`, widened.
    #[inline]
    pub fn get_f32(&self, offset: usize) -> f32 {
        match self {
            Data::F32(s) => s[offset],
            Data::F16(s) => s[offset].to_f32(),
            Data::BF16(s) => s[offset].to_f32(),
        }
    }

    /// The f32 run at `offset..offset + len` without copying, when the data is f32.
    #[inline]
    pub fn f32_run(&self, offset: usize, len: usize) -> Option<&[f32]> {
        match self {
            Data::F32(s) => Some(&s[offset..offset + len]),
            _ => None,
        }
    }
}

impl DataMut<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.as_data().dtype()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.as_data().len()
    }

    /// True when the slice holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A shared reborrow.
    pub fn as_data(&self) -> Data<'_> {
        match self {
            DataMut::F32(s) => Data::F32(s),
            DataMut::F16(s) => Data::F16(s),
            DataMut::BF16(s) => Data::BF16(s),
        }
    }

    /// Rounds `src` into the elements at `offset..offset + src.len()`.
    #[inline]
    pub fn store(&mut self, offset: usize, src: &[f32], isa: Isa) {
        let range = offset..offset + src.len();
        match self {
            DataMut::F32(s) => s[range].copy_from_slice(src),
            DataMut::F16(s) => convert::f32_to_f16_with(isa, src, &mut s[range]),
            DataMut::BF16(s) => convert::f32_to_bf16_with(isa, src, &mut s[range]),
        }
    }
}

/// A validated read-only view.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    data: Data<'a>,
    layout: Layout,
}

impl<'a> View<'a> {
    /// A view of `data` with the given shape and strides (in elements). `arg` names the view
    /// in errors.
    pub fn new<T: Element>(arg: &'static str, data: &'a [T], shape: &[usize], strides: &[usize]) -> Result<Self> {
        Self::from_data(arg, T::wrap(data), shape, strides)
    }

    /// A row-major (C-contiguous) view of `data`.
    pub fn contiguous<T: Element>(arg: &'static str, data: &'a [T], shape: &[usize]) -> Result<Self> {
        let strides = Layout::contiguous_strides(shape)
            .ok_or_else(|| Error::view(arg, format!("shape {shape:?} has more elements than fit in usize")))?;
        Self::new(arg, data, shape, &strides)
    }

    /// A view over already-tagged data.
    pub fn from_data(arg: &'static str, data: Data<'a>, shape: &[usize], strides: &[usize]) -> Result<Self> {
        let layout = Layout::new(arg, data.len(), shape, strides, false)?;
        Ok(View { data, layout })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The validated layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The extent of each dimension.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// The stride of each dimension, in elements.
    pub fn strides(&self) -> &[usize] {
        self.layout.strides()
    }

    /// The underlying tagged slice.
    pub fn data(&self) -> Data<'a> {
        self.data
    }

    /// The element at a full index, widened to f32.
    #[inline]
    pub fn get_f32(&self, idx: &[usize]) -> f32 {
        self.data.get_f32(self.layout.offset(idx))
    }

    /// A view of the same data with another layout (validated).
    pub fn restride(&self, arg: &'static str, shape: &[usize], strides: &[usize]) -> Result<Self> {
        Self::from_data(arg, self.data, shape, strides)
    }
}

/// A validated mutable view whose indices address disjoint elements.
#[derive(Debug)]
pub struct ViewMut<'a> {
    data: DataMut<'a>,
    layout: Layout,
}

impl<'a> ViewMut<'a> {
    /// A mutable view of `data` with the given shape and strides (in elements).
    pub fn new<T: Element>(arg: &'static str, data: &'a mut [T], shape: &[usize], strides: &[usize]) -> Result<Self> {
        Self::from_data(arg, T::wrap_mut(data), shape, strides)
    }

    /// A row-major (C-contiguous) mutable view of `data`.
    pub fn contiguous<T: Element>(arg: &'static str, data: &'a mut [T], shape: &[usize]) -> Result<Self> {
        let strides = Layout::contiguous_strides(shape)
            .ok_or_else(|| Error::view(arg, format!("shape {shape:?} has more elements than fit in usize")))?;
        Self::new(arg, data, shape, &strides)
    }

    /// A mutable view over already-tagged data.
    pub fn from_data(arg: &'static str, data: DataMut<'a>, shape: &[usize], strides: &[usize]) -> Result<Self> {
        let layout = Layout::new(arg, data.len(), shape, strides, true)?;
        Ok(ViewMut { data, layout })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The validated layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The extent of each dimension.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// The stride of each dimension, in elements.
    pub fn strides(&self) -> &[usize] {
        self.layout.strides()
    }

    /// A read-only view of the same elements.
    pub fn as_view(&self) -> View<'_> {
        View { data: self.data.as_data(), layout: self.layout }
    }

    /// The element at a full index, widened to f32.
    #[inline]
    pub fn get_f32(&self, idx: &[usize]) -> f32 {
        self.data.as_data().get_f32(self.layout.offset(idx))
    }

    /// Rounds `value` into the element at a full index.
    #[inline]
    pub fn set_f32(&mut self, idx: &[usize], value: f32) {
        let offset = self.layout.offset(idx);
        match &mut self.data {
            DataMut::F32(s) => s[offset] = value,
            DataMut::F16(s) => s[offset] = f16::from_f32(value),
            DataMut::BF16(s) => s[offset] = bf16::from_f32(value),
        }
    }

    /// A shorter-lived mutable reborrow.
    pub fn reborrow(&mut self) -> ViewMut<'_> {
        let data = match &mut self.data {
            DataMut::F32(s) => DataMut::F32(s),
            DataMut::F16(s) => DataMut::F16(s),
            DataMut::BF16(s) => DataMut::BF16(s),
        };
        ViewMut { data, layout: self.layout }
    }

    /// The underlying tagged slice.
    pub fn data_mut(&mut self) -> &mut DataMut<'a> {
        &mut self.data
    }

    /// A handle through which parallel tasks write disjoint runs of this view.
    pub fn shared(&mut self) -> SharedOut<'_> {
        let (ptr, len, dtype) = match &mut self.data {
            DataMut::F32(s) => (s.as_mut_ptr().cast::<u8>(), s.len(), DType::F32),
            DataMut::F16(s) => (s.as_mut_ptr().cast::<u8>(), s.len(), DType::F16),
            DataMut::BF16(s) => (s.as_mut_ptr().cast::<u8>(), s.len(), DType::BF16),
        };
        SharedOut { ptr, len, dtype, layout: self.layout, _borrow: PhantomData }
    }
}

/// Shared access to an output view for parallel tasks that each own disjoint element runs
/// (rows, tiles). Holding it borrows the view mutably, so nothing else touches the buffer.
pub struct SharedOut<'a> {
    ptr: *mut u8,
    len: usize,
    dtype: DType,
    layout: Layout,
    _borrow: PhantomData<&'a mut [u8]>,
}

// SAFETY: SharedOut is a `&mut` borrow split across tasks; every access goes through the
// unsafe methods below, whose callers promise that concurrent runs are disjoint.
unsafe impl Send for SharedOut<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedOut<'_> {}

impl SharedOut<'_> {
    /// The validated layout of the view.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The address of element `offset` and the byte length of `len` elements from there, for
    /// cache hints (nothing is accessed). Panics when the run is out of bounds.
    pub fn run_bytes(&self, offset: usize, len: usize) -> (*const u8, usize) {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "run outside the output view");
        let size = self.dtype.size();
        (self.ptr.cast_const().wrapping_add(offset * size), len * size)
    }

    /// The run `offset..offset + len` as a temporary [`DataMut`]. Panics when out of bounds.
    ///
    /// # Safety
    /// No other task may access any element of this run while the returned value lives.
    #[inline]
    pub unsafe fn run(&self, offset: usize, len: usize) -> DataMut<'_> {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "run outside the output view");
        // SAFETY: the run lies inside the borrowed buffer (asserted above), the pointer is
        // aligned for the tagged type (it came from a slice of it), and the caller guarantees
        // exclusive access to the run for the lifetime of the result.
        unsafe {
            match self.dtype {
                DType::F32 => DataMut::F32(std::slice::from_raw_parts_mut(self.ptr.cast::<f32>().add(offset), len)),
                DType::F16 => DataMut::F16(std::slice::from_raw_parts_mut(self.ptr.cast::<f16>().add(offset), len)),
                DType::BF16 => DataMut::BF16(std::slice::from_raw_parts_mut(self.ptr.cast::<bf16>().add(offset), len)),
            }
        }
    }
}

/// An owned buffer of one dtype: weights converted at load, and the storage tests, benches
/// and fuzzers build views over.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    /// f32 storage.
    F32(Vec<f32>),
    /// f16 storage.
    F16(Vec<f16>),
    /// bf16 storage.
    BF16(Vec<bf16>),
}

impl Buffer {
    /// `values` rounded to `dtype`.
    pub fn from_f32(dtype: DType, values: &[f32]) -> Buffer {
        match dtype {
            DType::F32 => Buffer::F32(values.to_vec()),
            DType::F16 => Buffer::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            DType::BF16 => Buffer::BF16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
        }
    }

    /// `n` NaNs (for outputs, so unwritten elements fail comparisons).
    pub fn nan(dtype: DType, n: usize) -> Buffer {
        Buffer::from_f32(dtype, &vec![f32::NAN; n])
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data().dtype()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tagged slice.
    pub fn data(&self) -> Data<'_> {
        match self {
            Buffer::F32(v) => Data::F32(v),
            Buffer::F16(v) => Data::F16(v),
            Buffer::BF16(v) => Data::BF16(v),
        }
    }

    /// The tagged mutable slice.
    pub fn data_mut(&mut self) -> DataMut<'_> {
        match self {
            Buffer::F32(v) => DataMut::F32(v),
            Buffer::F16(v) => DataMut::F16(v),
            Buffer::BF16(v) => DataMut::BF16(v),
        }
    }

    /// Sets element `i` to `value` rounded to the dtype.
    pub fn set(&mut self, i: usize, value: f32) {
        match self {
            Buffer::F32(v) => v[i] = value,
            Buffer::F16(v) => v[i] = f16::from_f32(value),
            Buffer::BF16(v) => v[i] = bf16::from_f32(value),
        }
    }

    /// Every element widened to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let data = self.data();
        (0..data.len()).map(|i| data.get_f32(i)).collect()
    }

    /// Every element's bit pattern (for bit-identity checks).
    pub fn bits(&self) -> Vec<u32> {
        match self {
            Buffer::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            Buffer::F16(v) => v.iter().map(|x| u32::from(x.to_bits())).collect(),
            Buffer::BF16(v) => v.iter().map(|x| u32::from(x.to_bits())).collect(),
        }
    }

    /// A view with the given shape and strides.
    pub fn view(&self, arg: &'static str, shape: &[usize], strides: &[usize]) -> Result<View<'_>> {
        View::from_data(arg, self.data(), shape, strides)
    }

    /// A row-major view.
    pub fn contiguous(&self, arg: &'static str, shape: &[usize]) -> Result<View<'_>> {
        self.view(arg, shape, &Layout::contiguous_strides(shape).unwrap_or_default())
    }

    /// A row-major mutable view.
    pub fn contiguous_mut(&mut self, arg: &'static str, shape: &[usize]) -> Result<ViewMut<'_>> {
        self.view_mut(arg, shape, &Layout::contiguous_strides(shape).unwrap_or_default())
    }

    /// A mutable view with the given shape and strides.
    pub fn view_mut(&mut self, arg: &'static str, shape: &[usize], strides: &[usize]) -> Result<ViewMut<'_>> {
        ViewMut::from_data(arg, self.data_mut(), shape, strides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_and_strided_views_validate() {
        let data = vec![0f32; 24];
        let v = View::contiguous("x", &data, &[2, 3, 4]).unwrap();
        assert_eq!(v.strides(), &[12, 4, 1]);
        // [B,N,H,D] memory seen as [B,H,N,D] through strides.
        let v = View::new("q", &data, &[1, 2, 3, 4], &[24, 4, 8, 1]).unwrap();
        assert_eq!(v.layout().offset(&[0, 1, 2, 3]), 4 + 16 + 3);
    }

    #[test]
    fn out_of_bounds_view_names_argument_and_sizes() {
        let data = vec![0f32; 10];
        let err = View::contiguous("k", &data, &[3, 4]).unwrap_err().to_string();
        assert!(err.contains("`k`") && err.contains("[3, 4]") && err.contains("10"), "{err}");
    }

    #[test]
    fn overflowing_shapes_and_strides_are_errors() {
        let data = vec![0f32; 10];
        assert!(View::new("x", &data, &[usize::MAX, 2], &[1, 1]).is_err());
        assert!(View::new("x", &data, &[2, 2], &[usize::MAX, 1]).is_err());
        assert!(View::new("x", &data, &[1, 2, 3, 4, 5], &[0; 5]).is_err());
        assert!(View::new("x", &data, &[2, 2], &[1]).is_err());
    }

    #[test]
    fn empty_views_are_fine_and_broadcast_inputs_allowed() {
        let empty: Vec<f32> = vec![];
        assert!(View::contiguous("x", &empty, &[0, 5]).is_ok());
        let data = vec![0f32; 4];
        assert!(View::new("mask", &data, &[3, 4], &[0, 1]).is_ok());
    }

    #[test]
    fn overlapping_outputs_are_rejected() {
        let mut data = vec![0f32; 16];
        assert!(ViewMut::new("out", &mut data, &[3, 4], &[0, 1]).is_err());
        assert!(ViewMut::new("out", &mut data, &[3, 4], &[2, 1]).is_err());
        assert!(ViewMut::new("out", &mut data, &[4, 4], &[1, 4]).is_ok());
        assert!(ViewMut::new("out", &mut data, &[2, 2, 2], &[8, 1, 2]).is_ok());
        assert!(ViewMut::new("out", &mut data, &[2, 2, 2], &[8, 1, 1]).is_err());
    }
}
