//! Pixel types a [`Volume`](crate::Volume) can hold, and the [`Voxel`] trait that generic
//! operations are written against.

use std::fmt;

/// The pixel type of a volume, as a runtime value.
///
/// The numbering is shared with the C ABI's `imh_dtype` and must never change; 0 is reserved
/// as "invalid" so that a zero-initialised C struct is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// Unsigned 8-bit integer (masks, label maps).
    U8 = 1,
    /// Signed 16-bit integer (CT in HU, the usual CTP storage).
    I16 = 2,
    /// Unsigned 16-bit integer.
    U16 = 3,
    /// Signed 32-bit integer.
    I32 = 4,
    /// 32-bit float (maps, scaled data).
    F32 = 5,
    /// 64-bit float.
    F64 = 6,
}

impl DType {
    /// All pixel types, in numbering order.
    pub const ALL: [DType; 6] = [DType::U8, DType::I16, DType::U16, DType::I32, DType::F32, DType::F64];

    /// Size of one voxel in bytes.
    pub fn size_of(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::F64 => 8,
        }
    }

    /// The stable number used across the C ABI.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The pixel type with a given stable number, if any.
    pub fn from_code(code: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Lower-case name, e.g. `"i16"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::I32 => "i32",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// The pixel type called `name` (as [`DType::name`] spells it), if any.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether the type is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A scalar pixel type: implemented for `u8, i16, u16, i32, f32, f64` and nothing else.
pub trait Voxel:
    sealed::Sealed + Copy + Default + PartialOrd + Send + Sync + fmt::Debug + bytemuck::Pod + 'static
{
    /// The runtime tag of this type.
    const DTYPE: DType;

    /// The larger of two values. For floats a NaN loses against any number, so a NaN voxel in
    /// one frame does not hide the others; only all-NaN input gives NaN.
    fn max_ignoring_nan(self, other: Self) -> Self;

    /// Reverse the byte order (for files written on the other endianness).
    fn swap_bytes(self) -> Self;

    /// Lossless for every type but large `i32` beyond 2^53 (impossible) — exact in practice.
    fn to_f64(self) -> f64;

    /// Convert from `f64`, rounding to nearest and saturating at the type's range (NaN → 0 for
    /// integer types).
    fn from_f64_saturating(value: f64) -> Self;
}

macro_rules! impl_int_voxel {
    ($t:ty, $d:expr) => {
        impl sealed::Sealed for $t {}
        impl Voxel for $t {
            const DTYPE: DType = $d;
            #[inline(always)]
            fn max_ignoring_nan(self, other: Self) -> Self {
                if other > self { other } else { self }
            }
            #[inline(always)]
            fn swap_bytes(self) -> Self {
                <$t>::swap_bytes(self)
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64_saturating(value: f64) -> Self {
                // `as` saturates and maps NaN to 0.
                value.round() as $t
            }
        }
    };
}

macro_rules! impl_float_voxel {
    ($t:ty, $d:expr) => {
        impl sealed::Sealed for $t {}
        impl Voxel for $t {
            const DTYPE: DType = $d;
            #[inline(always)]
            fn max_ignoring_nan(self, other: Self) -> Self {
                // `f32::max` returns the non-NaN operand, which is exactly the rule wanted.
                self.max(other)
            }
            #[inline(always)]
            fn swap_bytes(self) -> Self {
                <$t>::from_bits(self.to_bits().swap_bytes())
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64_saturating(value: f64) -> Self {
                value as $t
            }
        }
    };
}

impl_int_voxel!(u8, DType::U8);
impl_int_voxel!(i16, DType::I16);
impl_int_voxel!(u16, DType::U16);
impl_int_voxel!(i32, DType::I32);
impl_float_voxel!(f32, DType::F32);
impl_float_voxel!(f64, DType::F64);

/// The bytes of a slice of voxels (native endianness).
pub fn as_bytes<T: Voxel>(s: &[T]) -> &[u8] {
    bytemuck::cast_slice(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        // These numbers are part of the C ABI: changing one breaks every caller.
        let expected =
            [(DType::U8, 1), (DType::I16, 2), (DType::U16, 3), (DType::I32, 4), (DType::F32, 5), (DType::F64, 6)];
        for (d, code) in expected {
            assert_eq!(d.code(), code);
            assert_eq!(DType::from_code(code), Some(d));
        }
        assert_eq!(DType::from_code(0), None);
        assert_eq!(DType::from_code(7), None);
    }

    #[test]
    fn nan_loses_in_max() {
        assert_eq!(f32::NAN.max_ignoring_nan(3.0), 3.0);
        assert_eq!(3.0f32.max_ignoring_nan(f32::NAN), 3.0);
        assert!(f64::NAN.max_ignoring_nan(f64::NAN).is_nan());
        assert_eq!((-5i16).max_ignoring_nan(-7), -5);
    }

    #[test]
    fn byte_swap_is_an_involution_and_matches_big_endian_bytes() {
        assert_eq!(0x1234i16.swap_bytes(), 0x3412);
        let x = 1.5f32;
        let be = f32::from_ne_bytes(x.to_be_bytes());
        assert_eq!(Voxel::swap_bytes(be), if cfg!(target_endian = "little") { x } else { be });
        assert_eq!(Voxel::swap_bytes(Voxel::swap_bytes(x)), x);
    }

    #[test]
    fn saturating_conversion() {
        assert_eq!(i16::from_f64_saturating(40000.0), i16::MAX);
        assert_eq!(u8::from_f64_saturating(-3.0), 0);
        assert_eq!(i16::from_f64_saturating(2.5), 3);
        assert_eq!(i32::from_f64_saturating(f64::NAN), 0);
    }
}
