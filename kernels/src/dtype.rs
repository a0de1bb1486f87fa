//! The element types: `f32`, and the 16-bit `half::f16` / `half::bf16` used for weights,
//! activations and KV caches. Arithmetic is always f32; 16-bit values are widened on load.

pub use half::{bf16, f16};

/// An element type's tag, for dtype-erased views and the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16 (`half::f16`).
    F16,
    /// bfloat16 (`half::bf16`): f32's exponent, 8-bit significand.
    BF16,
}

impl DType {
    /// Every dtype.
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Lower-case name: `f32`, `f16`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Unit roundoff of the type (half an ulp at 1.0): the relative error of rounding one
    /// f32 value into it. The tolerance model is built from this.
    pub fn unit_roundoff(self) -> f64 {
        match self {
            DType::F32 => f64::from(f32::EPSILON) / 2.0,
            DType::F16 => 2f64.powi(-11),
            DType::BF16 => 2f64.powi(-8),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// The element types a view can hold. Sealed: exactly `f32`, `f16` and `bf16`.
pub trait Element: sealed::Sealed + Copy + Default + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    /// This type's tag.
    const DTYPE: DType;
    /// Widens (exactly) to f32.
    fn to_f32(self) -> f32;
    /// Rounds an f32 to nearest-even into this type.
    fn from_f32(value: f32) -> Self;
    /// Tags a slice of this type.
    fn wrap(slice: &[Self]) -> crate::tensor::Data<'_>;
    /// Tags a mutable slice of this type.
    fn wrap_mut(slice: &mut [Self]) -> crate::tensor::DataMut<'_>;
    /// The slice itself when this type is f32 (for kernels' f32-only fast paths), else `None`.
    fn as_f32(slice: &[Self]) -> Option<&[f32]>;
}

macro_rules! impl_element {
    ($t:ty, $tag:ident, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$tag;
            #[inline(always)]
            fn to_f32(self) -> f32 {
                $to(self)
            }
            #[inline(always)]
            fn from_f32(value: f32) -> Self {
                $from(value)
            }
            fn wrap(slice: &[Self]) -> crate::tensor::Data<'_> {
                crate::tensor::Data::$tag(slice)
            }
            fn wrap_mut(slice: &mut [Self]) -> crate::tensor::DataMut<'_> {
                crate::tensor::DataMut::$tag(slice)
            }
            fn as_f32(slice: &[Self]) -> Option<&[f32]> {
                match Self::wrap(slice) {
                    crate::tensor::Data::F32(s) => Some(s),
                    _ => None,
                }
            }
        }
    };
}

impl_element!(f32, F32, |x: f32| x, |x: f32| x);
impl_element!(f16, F16, f16::to_f32, f16::from_f32);
impl_element!(bf16, BF16, bf16::to_f32, bf16::from_f32);
