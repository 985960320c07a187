//! 8-bit PNG images: decoded to RGB (grey, grey+alpha, RGB and RGBA; 16-bit stripped to 8, the
//! palette expanded), checked against a size bound and the memory limit before the pixels are
//! allocated; written as 8-bit RGB or grey.

use std::path::Path;

use crate::error::{Error, Result};

/// Largest side decoded, pixels.
pub const MAX_SIDE: u32 = 8192;

/// Decode `bytes` into `(width, height, rgb)` (interleaved, row-major, x fastest).
pub fn decode_rgb(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>)> {
    let bad = |e: &dyn std::fmt::Display| Error::format(format!("PNG: {e}"));
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| bad(&e))?;
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(bad(&format!("{width}×{height} pixels (1 to {MAX_SIDE} a side)")));
    }
    let size = reader.output_buffer_size().ok_or_else(|| bad(&"too large"))?;
    // The image may come from anyone (a model worker, a user's file): its pixels count against
    // the memory limit before they are allocated.
    crate::memory::check(crate::memory::bytes_of(&[size], 2), "the PNG's pixels")?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| bad(&e))?;
    let channels = match frame.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        other => return Err(bad(&format!("colour type {other:?}"))),
    };
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for px in buf[..frame.buffer_size()].chunks_exact(channels) {
        if channels >= 3 {
            rgb.extend_from_slice(&px[..3]);
        } else {
            rgb.extend_from_slice(&[px[0], px[0], px[0]]);
        }
    }
    Ok((width as usize, height as usize, rgb))
}

/// Read a PNG file (at most 256 MiB) as [`decode_rgb`] does.
pub fn read_rgb(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    use std::io::Read;
    let max: u64 = 256 << 20;
    let file = std::fs::File::open(path).map_err(|e| Error::from(e).in_file(path))?;
    let meta = file.metadata().map_err(|e| Error::from(e).in_file(path))?;
    if !meta.is_file() {
        return Err(Error::invalid_argument("is not a regular file").in_file(path));
    }
    if meta.len() > max {
        return Err(Error::too_large(format!("is over {max} bytes")).in_file(path));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max).read_to_end(&mut bytes).map_err(|e| Error::from(e).in_file(path))?;
    decode_rgb(&bytes).map_err(|e| e.in_file(path))
}

fn encode(w: usize, h: usize, pixels: &[u8], color: png::ColorType) -> Result<Vec<u8>> {
    let png_error = |e: png::EncodingError| Error::new(crate::ErrorKind::Io, e.to_string());
    let mut out = Vec::with_capacity(pixels.len() / 4 + 1024);
    let mut encoder = png::Encoder::new(&mut out, w as u32, h as u32);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(pixels).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    Ok(out)
}

/// Write 8-bit grey pixels (x fastest) as a PNG file, atomically.
pub fn write_grey(path: &Path, w: usize, h: usize, grey: &[u8]) -> Result<()> {
    if grey.len() != w * h {
        return Err(Error::shape("the grey image does not fill its size"));
    }
    let bytes = encode(w, h, grey, png::ColorType::Grayscale)?;
    crate::io::output::write_atomically(path, |out| out.write_all(&bytes).map_err(Error::from))
}

/// Write 8-bit RGB pixels (interleaved, x fastest) as a PNG file, atomically.
pub fn write_rgb(path: &Path, w: usize, h: usize, rgb: &[u8]) -> Result<()> {
    if rgb.len() != 3 * w * h {
        return Err(Error::shape("the RGB image does not fill its size"));
    }
    let bytes = encode(w, h, rgb, png::ColorType::Rgb)?;
    crate::io::output::write_atomically(path, |out| out.write_all(&bytes).map_err(Error::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_and_rgb_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        write_grey(&p, 3, 2, &[0, 10, 20, 30, 40, 255]).unwrap();
        let (w, h, rgb) = read_rgb(&p).unwrap();
        assert_eq!((w, h), (3, 2));
        assert_eq!(&rgb[..6], &[0, 0, 0, 10, 10, 10]);
        let q = dir.path().join("c.png");
        let px: Vec<u8> = (0..18).collect();
        write_rgb(&q, 3, 2, &px).unwrap();
        assert_eq!(read_rgb(&q).unwrap().2, px);
        std::fs::write(&q, b"\x89PNG\r\n\x1a\nnot a png").unwrap();
        assert!(read_rgb(&q).unwrap_err().message().contains("PNG"));
    }
}
