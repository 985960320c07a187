//! One header type for NIfTI-1 and NIfTI-2, and everything derived from it before any voxel is
//! read: data layout, byte count (checked for overflow), geometry and frame timing.
//!
//! NIfTI-1 headers are parsed by the `nifti` crate. The crate has no NIfTI-2 support, so the
//! 540-byte NIfTI-2 header (layout from `nifti2.h`) is parsed and written here.

#![allow(clippy::needless_range_loop)]

use crate::error::{Error, Result};
use crate::geometry::{Geometry, Mat3, Mat4, det3, inverse3};

/// Size of a NIfTI-1 header.
pub const NIFTI1_HEADER_SIZE: usize = 348;
/// Size of a NIfTI-2 header.
pub const NIFTI2_HEADER_SIZE: usize = 540;
/// Magic of a single-file NIfTI-2 (`.nii`).
pub const NIFTI2_MAGIC: [u8; 8] = *b"n+2\0\r\n\x1a\n";

/// NIfTI `xyzt_units` codes used here.
pub mod units {
    /// Space in millimetres.
    pub const MM: u8 = 2;
    /// Space in metres.
    pub const METER: u8 = 1;
    /// Space in micrometres.
    pub const MICRON: u8 = 3;
    /// Time in seconds.
    pub const SEC: u8 = 8;
    /// Time in milliseconds.
    pub const MSEC: u8 = 16;
    /// Time in microseconds.
    pub const USEC: u8 = 24;
}

/// NIfTI `NIFTI_XFORM_SCANNER_ANAT`: coordinates in the scanner's frame.
pub const XFORM_SCANNER_ANAT: i32 = 1;

/// Byte order of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Least significant byte first (x86, ARM).
    Little,
    /// Most significant byte first.
    Big,
}

impl Endian {
    /// The byte order of this machine.
    pub fn native() -> Self {
        if cfg!(target_endian = "little") { Endian::Little } else { Endian::Big }
    }
}

/// Which NIfTI version a header is (or is to be written as).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NiftiVersion {
    /// 348-byte header, 16-bit dimensions.
    Nifti1,
    /// 540-byte header, 64-bit dimensions and double-precision fields.
    Nifti2,
}

/// The fields of a NIfTI-1 or NIfTI-2 header that imhost uses, widened to the NIfTI-2 types.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// NIfTI-1 or NIfTI-2.
    pub version: NiftiVersion,
    /// Byte order of header and voxel data.
    pub endian: Endian,
    /// `dim[0]` = number of dimensions, `dim[1..=7]` = lengths.
    pub dim: [i64; 8],
    /// NIfTI datatype code.
    pub datatype: i16,
    /// Bits per voxel.
    pub bitpix: i16,
    /// `pixdim[0]` = qfac, `pixdim[1..=3]` = spacing, `pixdim[4]` = time step.
    pub pixdim: [f64; 8],
    /// Byte offset of the voxel data in the file.
    pub vox_offset: f64,
    /// Scaling slope (0 or NaN = no scaling).
    pub scl_slope: f64,
    /// Scaling intercept.
    pub scl_inter: f64,
    /// Time of the first frame, in the time unit.
    pub toffset: f64,
    /// Space and time unit codes.
    pub xyzt_units: u8,
    /// qform code (0 = absent).
    pub qform_code: i32,
    /// sform code (0 = absent).
    pub sform_code: i32,
    /// Quaternion b, c, d.
    pub quatern: [f64; 3],
    /// qform offset x, y, z.
    pub qoffset: [f64; 3],
    /// sform rows.
    pub srow: [[f64; 4]; 3],
    /// Free text (80 bytes on disk).
    pub descrip: String,
    /// Whether this is a single-file `.nii` (magic `n+1`/`n+2`) rather than a `.hdr` pair.
    pub single_file: bool,
}

impl Header {
    /// The on-disk size of the header itself.
    pub fn header_size(&self) -> usize {
        match self.version {
            NiftiVersion::Nifti1 => NIFTI1_HEADER_SIZE,
            NiftiVersion::Nifti2 => NIFTI2_HEADER_SIZE,
        }
    }
}

/// Detect the version and byte order from the first four bytes (`sizeof_hdr`).
pub fn detect(first4: [u8; 4]) -> Result<(NiftiVersion, Endian)> {
    let le = i32::from_le_bytes(first4);
    let be = i32::from_be_bytes(first4);
    let found = [(NIFTI1_HEADER_SIZE, NiftiVersion::Nifti1), (NIFTI2_HEADER_SIZE, NiftiVersion::Nifti2)]
        .into_iter()
        .find_map(|(size, version)| {
            if le == size as i32 {
                Some((version, Endian::Little))
            } else if be == size as i32 {
                Some((version, Endian::Big))
            } else {
                None
            }
        });
    found.ok_or_else(|| Error::format("not a NIfTI file (the header size field is neither 348 nor 540)"))
}

/// Parse a NIfTI-1 header (all 348 bytes) with the `nifti` crate.
pub fn parse_nifti1(bytes: &[u8]) -> Result<Header> {
    let h = nifti::NiftiHeader::from_reader(bytes).map_err(|e| match e {
        nifti::NiftiError::InvalidFormat => Error::format("not a NIfTI-1 file (bad magic)"),
        other => Error::format(format!("unreadable NIfTI-1 header: {other}")),
    })?;
    let endian = match h.endianness {
        nifti::Endianness::Little => Endian::Little,
        nifti::Endianness::Big => Endian::Big,
    };
    Ok(Header {
        version: NiftiVersion::Nifti1,
        endian,
        // NIfTI-1 dims are signed shorts; the crate reads them unsigned.
        dim: h.dim.map(|d| d as i16 as i64),
        datatype: h.datatype,
        bitpix: h.bitpix,
        pixdim: h.pixdim.map(f64::from),
        vox_offset: h.vox_offset as f64,
        scl_slope: h.scl_slope as f64,
        scl_inter: h.scl_inter as f64,
        toffset: h.toffset as f64,
        xyzt_units: h.xyzt_units,
        qform_code: h.qform_code as i32,
        sform_code: h.sform_code as i32,
        quatern: [h.quatern_b, h.quatern_c, h.quatern_d].map(f64::from),
        qoffset: [h.quatern_x, h.quatern_y, h.quatern_z].map(f64::from),
        srow: [h.srow_x.map(f64::from), h.srow_y.map(f64::from), h.srow_z.map(f64::from)],
        descrip: c_string(&h.descrip),
        single_file: &h.magic == nifti::header::MAGIC_CODE_NIP1,
    })
}

/// Parse a NIfTI-2 header (all 540 bytes).
pub fn parse_nifti2(bytes: &[u8], endian: Endian) -> Result<Header> {
    if bytes.len() < NIFTI2_HEADER_SIZE {
        return Err(Error::format("NIfTI-2 header is truncated"));
    }
    let r = Fields { bytes, endian };
    let magic = &bytes[4..12];
    let single_file = match magic {
        m if m == NIFTI2_MAGIC => true,
        m if &m[..4] == b"ni2\0" => false,
        _ => return Err(Error::format("not a NIfTI-2 file (bad magic)")),
    };
    Ok(Header {
        version: NiftiVersion::Nifti2,
        endian,
        datatype: r.i16(12),
        bitpix: r.i16(14),
        dim: std::array::from_fn(|i| r.i64(16 + 8 * i)),
        pixdim: std::array::from_fn(|i| r.f64(104 + 8 * i)),
        vox_offset: r.i64(168) as f64,
        scl_slope: r.f64(176),
        scl_inter: r.f64(184),
        toffset: r.f64(216),
        descrip: c_string(&bytes[240..320]),
        qform_code: r.i32(344),
        sform_code: r.i32(348),
        quatern: std::array::from_fn(|i| r.f64(352 + 8 * i)),
        qoffset: std::array::from_fn(|i| r.f64(376 + 8 * i)),
        srow: std::array::from_fn(|row| std::array::from_fn(|c| r.f64(400 + 32 * row + 8 * c))),
        xyzt_units: r.i32(500) as u8,
        single_file,
    })
}

/// Serialise a header as NIfTI-2 (540 bytes; the 4-byte extension flag is written separately).
pub fn serialize_nifti2(h: &Header) -> Vec<u8> {
    let mut w = FieldWriter { bytes: vec![0u8; NIFTI2_HEADER_SIZE], endian: h.endian };
    w.i32(0, NIFTI2_HEADER_SIZE as i32);
    w.bytes[4..12].copy_from_slice(&NIFTI2_MAGIC);
    w.i16(12, h.datatype);
    w.i16(14, h.bitpix);
    for (i, d) in h.dim.iter().enumerate() {
        w.i64(16 + 8 * i, *d);
    }
    for (i, p) in h.pixdim.iter().enumerate() {
        w.f64(104 + 8 * i, *p);
    }
    w.i64(168, h.vox_offset as i64);
    w.f64(176, h.scl_slope);
    w.f64(184, h.scl_inter);
    w.f64(216, h.toffset);
    let descrip = h.descrip.as_bytes();
    let n = descrip.len().min(79);
    w.bytes[240..240 + n].copy_from_slice(&descrip[..n]);
    w.i32(344, h.qform_code);
    w.i32(348, h.sform_code);
    for i in 0..3 {
        w.f64(352 + 8 * i, h.quatern[i]);
        w.f64(376 + 8 * i, h.qoffset[i]);
    }
    for (row, values) in h.srow.iter().enumerate() {
        for (c, v) in values.iter().enumerate() {
            w.f64(400 + 32 * row + 8 * c, *v);
        }
    }
    w.i32(500, h.xyzt_units as i32);
    w.bytes
}

/// The 348 bytes of a NIfTI-1 single-file (`n+1`) header for `h`, in `h.endian` byte order. The
/// fields the format has and imhost does not use (intent, slice timing, display range, `aux_file`)
/// are zero, as nibabel writes them.
pub fn serialize_nifti1(h: &Header) -> Vec<u8> {
    let mut w = FieldWriter { bytes: vec![0u8; NIFTI1_HEADER_SIZE], endian: h.endian };
    w.i32(0, NIFTI1_HEADER_SIZE as i32);
    for (i, d) in h.dim.iter().enumerate() {
        w.i16(40 + 2 * i, *d as i16);
    }
    w.i16(70, h.datatype);
    w.i16(72, h.bitpix);
    for (i, p) in h.pixdim.iter().enumerate() {
        w.f32(76 + 4 * i, *p as f32);
    }
    w.f32(108, h.vox_offset as f32);
    w.f32(112, h.scl_slope as f32);
    w.f32(116, h.scl_inter as f32);
    w.bytes[123] = h.xyzt_units;
    w.f32(136, h.toffset as f32);
    let descrip = h.descrip.as_bytes();
    let n = descrip.len().min(79);
    w.bytes[148..148 + n].copy_from_slice(&descrip[..n]);
    w.i16(252, h.qform_code as i16);
    w.i16(254, h.sform_code as i16);
    for i in 0..3 {
        w.f32(256 + 4 * i, h.quatern[i] as f32);
        w.f32(268 + 4 * i, h.qoffset[i] as f32);
    }
    for (row, values) in h.srow.iter().enumerate() {
        for (c, v) in values.iter().enumerate() {
            w.f32(280 + 16 * row + 4 * c, *v as f32);
        }
    }
    w.bytes[344..348].copy_from_slice(b"n+1\0");
    w.bytes
}

struct Fields<'a> {
    bytes: &'a [u8],
    endian: Endian,
}

macro_rules! field_reader {
    ($name:ident, $t:ty, $n:expr) => {
        fn $name(&self, at: usize) -> $t {
            let raw: [u8; $n] = self.bytes[at..at + $n].try_into().expect("length checked by caller");
            match self.endian {
                Endian::Little => <$t>::from_le_bytes(raw),
                Endian::Big => <$t>::from_be_bytes(raw),
            }
        }
    };
}

impl Fields<'_> {
    field_reader!(i16, i16, 2);
    field_reader!(i32, i32, 4);
    field_reader!(i64, i64, 8);
    field_reader!(f64, f64, 8);
}

struct FieldWriter {
    bytes: Vec<u8>,
    endian: Endian,
}

macro_rules! field_writer {
    ($name:ident, $t:ty, $n:expr) => {
        fn $name(&mut self, at: usize, v: $t) {
            let raw = match self.endian {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            };
            self.bytes[at..at + $n].copy_from_slice(&raw);
        }
    };
}

impl FieldWriter {
    field_writer!(i16, i16, 2);
    field_writer!(i32, i32, 4);
    field_writer!(i64, i64, 8);
    field_writer!(f32, f32, 4);
    field_writer!(f64, f64, 8);
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim_end().to_owned()
}

/// How the stored voxels are laid out, validated against every way a header can lie.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// `[ni, nj, nk, nt]`.
    pub shape: [usize; 4],
    /// Whether the file has a time axis (`dim[0] >= 4`).
    pub is_4d: bool,
    /// Number of voxels.
    pub voxel_count: usize,
    /// Bytes per stored voxel.
    pub bytes_per_voxel: usize,
    /// Total bytes of voxel data (checked for overflow).
    pub data_bytes: u64,
    /// Where the voxel data starts.
    pub data_offset: u64,
}

/// Check dimensions, data type and offset, and compute the byte count with overflow checks.
pub fn layout(h: &Header) -> Result<Layout> {
    let ndim = h.dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(Error::format(format!("dim[0] = {ndim}; a NIfTI image has 1 to 7 dimensions")));
    }
    let ndim = ndim as usize;
    for axis in 1..=ndim {
        let n = h.dim[axis];
        if n <= 0 {
            return Err(Error::shape(format!("dim[{axis}] = {n}: every axis must have at least one voxel")));
        }
    }
    if let Some(axis) = (5..=ndim).find(|&a| h.dim[a] > 1) {
        return Err(Error::unsupported(format!(
            "{ndim}-D image with dim[{axis}] = {}: only 3-D and 4-D images (no vector or tensor components) are supported",
            h.dim[axis]
        )));
    }
    let len = |axis: usize| if axis <= ndim { h.dim[axis] as u64 } else { 1 };
    let shape_u64 = [len(1), len(2), len(3), len(4)];
    let voxel_count = shape_u64
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n))
        .filter(|&n| n <= isize::MAX as u64)
        .ok_or_else(|| Error::too_large(format!("header claims {:?} voxels, which overflows", shape_u64)))?;
    let bytes_per_voxel = stored_type(h.datatype)?.size;
    if h.bitpix as usize != bytes_per_voxel * 8 {
        return Err(Error::format(format!(
            "bitpix {} does not match datatype {} ({} bits)",
            h.bitpix,
            h.datatype,
            bytes_per_voxel * 8
        )));
    }
    let data_bytes = voxel_count
        .checked_mul(bytes_per_voxel as u64)
        .ok_or_else(|| Error::too_large("voxel data size overflows 64 bits"))?;
    if !h.single_file {
        return Err(Error::unsupported(
            "this is the header of a .hdr/.img pair; only single-file .nii and .nii.gz are supported",
        ));
    }
    let off = h.vox_offset;
    if !off.is_finite() || off.fract() != 0.0 || off < h.header_size() as f64 || off > (1u64 << 40) as f64 {
        return Err(Error::format(format!(
            "vox_offset {off} is invalid: it must be a whole number of bytes at or after the {}-byte header",
            h.header_size()
        )));
    }
    Ok(Layout {
        shape: shape_u64.map(|n| n as usize),
        is_4d: ndim >= 4,
        voxel_count: voxel_count as usize,
        bytes_per_voxel,
        data_bytes,
        data_offset: off as u64,
    })
}

/// A NIfTI datatype imhost can read, and how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredType {
    /// The NIfTI datatype code.
    pub code: i16,
    /// Bytes per voxel.
    pub size: usize,
    /// Name for messages.
    pub name: &'static str,
}

/// NIfTI datatype codes.
pub mod datatype {
    #![allow(missing_docs)]
    pub const UINT8: i16 = 2;
    pub const INT16: i16 = 4;
    pub const INT32: i16 = 8;
    pub const FLOAT32: i16 = 16;
    pub const FLOAT64: i16 = 64;
    pub const INT8: i16 = 256;
    pub const UINT16: i16 = 512;
    pub const UINT32: i16 = 768;
    pub const INT64: i16 = 1024;
    pub const UINT64: i16 = 1280;
}

/// The stored type of a datatype code, or an error naming the code.
pub fn stored_type(code: i16) -> Result<StoredType> {
    use datatype::*;
    let (size, name) = match code {
        UINT8 => (1, "uint8"),
        INT8 => (1, "int8"),
        INT16 => (2, "int16"),
        UINT16 => (2, "uint16"),
        INT32 => (4, "int32"),
        UINT32 => (4, "uint32"),
        FLOAT32 => (4, "float32"),
        INT64 => (8, "int64"),
        UINT64 => (8, "uint64"),
        FLOAT64 => (8, "float64"),
        32 | 1792 | 2048 => {
            return Err(Error::unsupported(format!("complex NIfTI data (datatype {code}) is not supported")));
        }
        128 | 2304 => return Err(Error::unsupported(format!("RGB NIfTI data (datatype {code}) is not supported"))),
        1536 => return Err(Error::unsupported("float128 NIfTI data is not supported")),
        other => return Err(Error::format(format!("unknown NIfTI datatype code {other}"))),
    };
    Ok(StoredType { code, size, name })
}

/// The scaling to apply, if any: `(slope, intercept)`. A slope of 0 or NaN means "not scaled"
/// (the NIfTI rule, as nibabel reads it); slope 1 with intercept 0 is the identity.
pub fn scaling(h: &Header) -> Result<Option<(f64, f64)>> {
    let (slope, inter) = (h.scl_slope, h.scl_inter);
    if slope == 0.0 || slope.is_nan() {
        return Ok(None);
    }
    if !slope.is_finite() || !inter.is_finite() {
        return Err(Error::format(format!("scl_slope {slope} / scl_inter {inter} are not finite")));
    }
    if slope == 1.0 && inter == 0.0 { Ok(None) } else { Ok(Some((slope, inter))) }
}

/// Which affine the geometry came from, in the order it is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    /// `sform_code > 0`: the sform rows.
    Sform,
    /// `qform_code > 0`: quaternion, pixdim and qfac.
    Qform,
    /// Neither: the NIfTI "method 1" scaling `x = pixdim[1]·i` etc.
    Pixdim,
}

/// The RAS affine of a header and where it came from. Precedence: sform, then qform, then
/// pixdim — the order nibabel's `get_best_affine` uses for the first two. With neither, the NIfTI
/// standard's method 1 is used (nibabel instead centres the grid; ITK differs again).
pub fn ras_affine(h: &Header) -> Result<(Mat4, AffineSource)> {
    let ndim = h.dim[0].clamp(1, 7) as usize;
    // Axes the image does not have (a 2-D image's k) get a unit spacing when pixdim is unset.
    let pixdim = |axis: usize| {
        let p = h.pixdim[axis];
        if axis > ndim && !(p.is_finite() && p > 0.0) { 1.0 } else { p }
    };
    let check_spacing = |axis: usize| -> Result<f64> {
        let p = pixdim(axis);
        if p.is_finite() && p > 0.0 {
            Ok(p)
        } else {
            Err(Error::geometry(format!("pixdim[{axis}] = {p}: voxel spacing must be a finite number > 0")))
        }
    };
    if h.sform_code > 0 {
        let mut m = [[0.0; 4]; 4];
        m[..3].copy_from_slice(&h.srow);
        m[3] = [0.0, 0.0, 0.0, 1.0];
        return Ok((m, AffineSource::Sform));
    }
    let spacing = [check_spacing(1)?, check_spacing(2)?, check_spacing(3)?];
    if h.qform_code > 0 {
        if h.quatern.iter().chain(&h.qoffset).any(|v| !v.is_finite()) {
            return Err(Error::geometry("qform quaternion or offset is not finite"));
        }
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let r = quaternion_to_rotation(h.quatern);
        let mut m = [[0.0; 4]; 4];
        let scale = [spacing[0], spacing[1], spacing[2] * qfac];
        for row in 0..3 {
            for c in 0..3 {
                m[row][c] = r[row][c] * scale[c];
            }
            m[row][3] = h.qoffset[row];
        }
        m[3][3] = 1.0;
        return Ok((m, AffineSource::Qform));
    }
    let mut m = [[0.0; 4]; 4];
    for axis in 0..3 {
        m[axis][axis] = spacing[axis];
    }
    m[3][3] = 1.0;
    Ok((m, AffineSource::Pixdim))
}

/// Geometry (LPS) of a header.
pub fn geometry(h: &Header) -> Result<(Geometry, AffineSource)> {
    let (m, source) = ras_affine(h)?;
    let g = Geometry::from_ijk_to_ras(&m).map_err(|e| {
        let which = match source {
            AffineSource::Sform => "sform",
            AffineSource::Qform => "qform",
            AffineSource::Pixdim => "pixdim",
        };
        e.context(format_args!("invalid {which} geometry"))
    })?;
    Ok((g, source))
}

/// Rotation matrix of a NIfTI quaternion (b, c, d), as `nifti_quatern_to_mat44` computes it.
pub fn quaternion_to_rotation([b, c, d]: [f64; 3]) -> Mat3 {
    let mut a = 1.0 - (b * b + c * c + d * d);
    let (b, c, d) = if a < 1e-7 {
        // Numerically a 180° rotation: renormalise (b, c, d) and take a = 0.
        let s = 1.0 / (b * b + c * c + d * d).sqrt();
        a = 0.0;
        (b * s, c * s, d * s)
    } else {
        a = a.sqrt();
        (b, c, d)
    };
    [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ]
}

/// The qform of a RAS direction matrix: quaternion (b, c, d) and qfac, as
/// `nifti_mat44_to_quatern` computes them. A non-orthogonal matrix (a sheared sform) is first
/// replaced by its nearest rotation (polar decomposition), since a qform cannot hold shear.
pub fn rotation_to_quaternion(direction: &Mat3) -> ([f64; 3], f64) {
    let mut r = nearest_orthogonal(direction);
    let qfac = if det3(&r) < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let trace = r11 + r22 + r33 + 1.0;
    let (mut a, mut b, mut c, mut d);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r32 - r23) / a;
        c = 0.25 * (r13 - r31) / a;
        d = 0.25 * (r21 - r12) / a;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r12 + r21) / b;
            d = 0.25 * (r13 + r31) / b;
            a = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r12 + r21) / c;
            d = 0.25 * (r23 + r32) / c;
            a = 0.25 * (r13 - r31) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r13 + r31) / d;
            c = 0.25 * (r23 + r32) / d;
            a = 0.25 * (r21 - r12) / d;
        }
        if a < 0.0 {
            b = -b;
            c = -c;
            d = -d;
            a = -a;
        }
    }
    let _ = a;
    ([b, c, d], qfac)
}

/// Nearest orthogonal matrix (the orthogonal factor of the polar decomposition), by Newton's
/// iteration `R ← (R + R⁻ᵀ)/2`, which converges quadratically for the near-orthogonal input
/// that direction cosines are.
fn nearest_orthogonal(m: &Mat3) -> Mat3 {
    let mut r = *m;
    for _ in 0..20 {
        let Some(inv) = inverse3(&r) else { return r };
        let next: Mat3 = std::array::from_fn(|i| std::array::from_fn(|j| 0.5 * (r[i][j] + inv[j][i])));
        let delta: f64 =
            (0..3).flat_map(|i| (0..3).map(move |j| (i, j))).map(|(i, j)| (next[i][j] - r[i][j]).abs()).sum();
        r = next;
        if delta < 1e-15 {
            break;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rot_z(deg: f64) -> Mat3 {
        let (s, c) = deg.to_radians().sin_cos();
        [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    }

    #[test]
    fn quaternion_round_trip_including_reflection_and_half_turns() {
        let (s, c) = 20f64.to_radians().sin_cos();
        let rx = [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]];
        let rz = rot_z(35.0);
        let combined: Mat3 =
            std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| rz[i][k] * rx[k][j]).sum()));
        let mirrored: Mat3 = std::array::from_fn(|i| [combined[i][0], combined[i][1], -combined[i][2]]);
        let cases = [combined, mirrored, rot_z(180.0), [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]];
        for m in cases {
            let (q, qfac) = rotation_to_quaternion(&m);
            let r = quaternion_to_rotation(q);
            for i in 0..3 {
                for j in 0..3 {
                    let expect = m[i][j];
                    let got = r[i][j] * if j == 2 { qfac } else { 1.0 };
                    assert!((expect - got).abs() < 1e-9, "{m:?} -> {q:?},{qfac} -> {r:?}");
                }
            }
        }
    }

    #[test]
    fn identity_quaternion_is_zero() {
        let (q, qfac) = rotation_to_quaternion(&crate::geometry::IDENTITY3);
        assert_eq!(q, [0.0, 0.0, 0.0]);
        assert_eq!(qfac, 1.0);
    }

    #[test]
    fn sheared_directions_give_the_nearest_rotation() {
        // 1° of shear on the j axis: the qform must still be a proper rotation close to identity.
        let mut m = crate::geometry::IDENTITY3;
        m[0][1] = 1f64.to_radians().sin();
        m[1][1] = 1f64.to_radians().cos();
        let r = nearest_orthogonal(&m);
        let rtr: Mat3 = std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| r[k][i] * r[k][j]).sum()));
        for i in 0..3 {
            for j in 0..3 {
                assert!((rtr[i][j] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn nifti2_header_round_trips_in_both_byte_orders() {
        for endian in [Endian::Little, Endian::Big] {
            let h = Header {
                version: NiftiVersion::Nifti2,
                endian,
                dim: [4, 70000, 3, 2, 5, 1, 1, 1],
                datatype: datatype::INT16,
                bitpix: 16,
                pixdim: [-1.0, 0.5, 0.75, 2.0, 1.5, 0.0, 0.0, 0.0],
                vox_offset: 544.0,
                scl_slope: 2.0,
                scl_inter: -1024.0,
                toffset: 3.0,
                xyzt_units: units::MM | units::SEC,
                qform_code: 1,
                sform_code: 2,
                quatern: [0.1, 0.2, 0.3],
                qoffset: [1.0, 2.0, 3.0],
                srow: [[1.0, 0.0, 0.0, 4.0], [0.0, 2.0, 0.0, 5.0], [0.0, 0.0, 3.0, 6.0]],
                descrip: "imhost test".into(),
                single_file: true,
            };
            let bytes = serialize_nifti2(&h);
            assert_eq!(bytes.len(), 540);
            let mut first4 = [0u8; 4];
            first4.copy_from_slice(&bytes[..4]);
            assert_eq!(detect(first4).unwrap(), (NiftiVersion::Nifti2, endian));
            assert_eq!(parse_nifti2(&bytes, endian).unwrap(), h);
        }
    }

    #[test]
    fn detect_rejects_other_files() {
        assert!(detect(*b"\x1f\x8b\x08\x00").is_err());
        assert!(detect(*b"DICM").is_err());
    }
}
