//! PNG previews: image panels with a grey window, line plots with axes, and labels in a built-in
//! 5×7 bitmap font — what a user glances at instead of reading numbers. Pure Rust, no fonts or
//! system libraries.

use std::path::Path;

use crate::error::{Error, Result};

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Colours used by previews.
pub mod colors {
    use super::Rgb;
    /// Background.
    pub const BACKGROUND: Rgb = [18, 18, 24];
    /// Text and axes.
    pub const TEXT: Rgb = [230, 230, 230];
    /// Grid and muted text.
    pub const MUTED: Rgb = [110, 110, 120];
    /// First data series (arteries, AIF).
    pub const RED: Rgb = [235, 80, 70];
    /// Second data series (tissue).
    pub const CYAN: Rgb = [80, 200, 230];
    /// Third data series (veins, VOF).
    pub const BLUE: Rgb = [90, 120, 240];
    /// Markers.
    pub const YELLOW: Rgb = [245, 210, 70];
}

/// An RGB raster that previews are drawn on.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `background`.
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        let pixels = background.iter().copied().cycle().take(width * height * 3).collect();
        Canvas { width, height, pixels }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The colour at `(x, y)`.
    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        let at = 3 * (y * self.width + x);
        [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
    }

    /// Set one pixel; coordinates outside the canvas are ignored.
    pub fn put(&mut self, x: i64, y: i64, color: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let at = 3 * (y as usize * self.width + x as usize);
            self.pixels[at..at + 3].copy_from_slice(&color);
        }
    }

    /// Fill a rectangle.
    pub fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, color);
            }
        }
    }

    /// A straight line (Bresenham).
    pub fn line(&mut self, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.put(x0, y0, color);
            if x0 == x1 && y0 == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x0 += sx;
            }
            if e2 <= dx {
                err += dx;
                y0 += sy;
            }
        }
    }

    /// Text in the built-in 5×7 font (upper case, digits and common punctuation; lower case is
    /// drawn as upper case, other characters as a box), each glyph pixel `scale`×`scale`.
    /// Returns the width drawn.
    pub fn text(&mut self, x: i64, y: i64, text: &str, color: Rgb, scale: i64) -> i64 {
        let mut cx = x;
        for ch in text.chars() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for c in 0..5 {
                    if bits & (0b10000 >> c) != 0 {
                        self.fill_rect(cx + c * scale, y + r as i64 * scale, scale, scale, color);
                    }
                }
            }
            cx += 6 * scale;
        }
        cx - x
    }

    /// Draw a 2-D grey image: `values[row * width + col]`, linearly mapped from `window`
    /// (`lo` → black, `hi` → white), each value `scale`×`scale` pixels. NaN is drawn dark red.
    pub fn image(&mut self, x: i64, y: i64, values: &[f64], width: usize, window: (f64, f64), scale: i64) {
        let (lo, hi) = window;
        let span = if hi > lo { hi - lo } else { 1.0 };
        for (n, v) in values.iter().enumerate() {
            let (col, row) = ((n % width) as i64, (n / width) as i64);
            let color = if v.is_nan() {
                [90, 0, 0]
            } else {
                let g = (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
                [g, g, g]
            };
            self.fill_rect(x + col * scale, y + row * scale, scale, scale, color);
        }
    }

    /// Encode as PNG and write to `path` (atomically: a full disk leaves no 0-byte preview).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        crate::io::output::write_atomically(path, |w| self.encode_png(w))
    }

    /// Encode as PNG in memory (8-bit RGB).
    pub fn png_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.pixels.len() / 4 + 1024);
        self.encode_png(&mut out)?;
        Ok(out)
    }

    fn encode_png<W: std::io::Write>(&self, w: W) -> Result<()> {
        let png_error = |e: png::EncodingError| Error::new(crate::ErrorKind::Io, e.to_string());
        let mut encoder = png::Encoder::new(w, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(png_error)?;
        writer.write_image_data(&self.pixels).map_err(png_error)?;
        writer.finish().map_err(png_error)
    }
}

/// The `lo`..`hi` percentiles (0–100) of the finite values: a robust display window.
pub fn percentile_window(values: &[f64], lo: f64, hi: f64) -> (f64, f64) {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (0.0, 1.0);
    }
    finite.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| finite[((p / 100.0) * (finite.len() - 1) as f64).round() as usize];
    (at(lo), at(hi))
}

/// One line of a [`line_plot`].
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Colour.
    pub color: Rgb,
    /// x values (e.g. seconds).
    pub x: &'a [f64],
    /// y values.
    pub y: &'a [f64],
}

/// A line plot with axes, tick labels, a title and a legend, drawn into a `w`×`h` box at
/// `(x, y)`. Points are marked, so that non-uniform sampling is visible.
pub fn line_plot(
    canvas: &mut Canvas,
    (x, y, w, h): (i64, i64, i64, i64),
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) {
    use colors::*;
    canvas.text(x, y, title, TEXT, 2);
    let (left, top, right, bottom) = (x + 56, y + 28, x + w - 8, y + h - 30);
    let finite = |v: &&f64| v.is_finite();
    let xs = series.iter().flat_map(|s| s.x.iter()).filter(finite);
    let ys = series.iter().flat_map(|s| s.y.iter()).filter(finite);
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if !x0.is_finite() || !y0.is_finite() {
        return;
    }
    let (x1, y1) = (if x1 > x0 { x1 } else { x0 + 1.0 }, if y1 > y0 { y1 } else { y0 + 1.0 });
    let pad = 0.05 * (y1 - y0);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |v: f64| left + ((v - x0) / (x1 - x0) * (right - left) as f64).round() as i64;
    let py = |v: f64| bottom - ((v - y0) / (y1 - y0) * (bottom - top) as f64).round() as i64;
    for tick in nice_ticks(y0, y1, 5) {
        canvas.line((left, py(tick)), (right, py(tick)), [40, 40, 50]);
        let label = format_tick(tick);
        canvas.text(left - 6 - 6 * label.len() as i64, py(tick) - 3, &label, MUTED, 1);
    }
    for tick in nice_ticks(x0, x1, 6) {
        let label = format_tick(tick);
        canvas.line((px(tick), bottom), (px(tick), bottom + 3), MUTED);
        canvas.text(px(tick) - 3 * label.len() as i64, bottom + 6, &label, MUTED, 1);
    }
    canvas.line((left, top), (left, bottom), MUTED);
    canvas.line((left, bottom), (right, bottom), MUTED);
    canvas.text(right - 6 * x_label.len() as i64, bottom + 18, x_label, MUTED, 1);
    canvas.text(x, top - 10, y_label, MUTED, 1);
    for (n, s) in series.iter().enumerate() {
        let points: Vec<(i64, i64)> =
            s.x.iter()
                .zip(s.y)
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .map(|(&a, &b)| (px(a), py(b)))
                .collect();
        for pair in points.windows(2) {
            canvas.line(pair[0], pair[1], s.color);
        }
        for &(a, b) in &points {
            canvas.fill_rect(a - 1, b - 1, 3, 3, s.color);
        }
        let ly = top + 4 + 12 * n as i64;
        canvas.fill_rect(right - 100, ly + 2, 10, 3, s.color);
        canvas.text(right - 86, ly, s.label, s.color, 1);
    }
}

fn nice_ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    let raw = (hi - lo) / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let mut ticks = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + 1e-9 * step && ticks.len() < 50 {
        ticks.push(if t.abs() < 1e-9 * step { 0.0 } else { t });
        t += step;
    }
    ticks
}

fn format_tick(v: f64) -> String {
    if v.fract().abs() < 1e-9 { format!("{}", v as i64) } else { format!("{v:.1}") }
}

/// The 5×7 glyph of a character: 7 rows, 5 bits each (MSB left).
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_uppercase() {
        ' ' => [0, 0, 0, 0, 0, 0, 0],
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 17, 10, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        '/' => [1, 1, 2, 4, 8, 16, 16],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '<' => [2, 4, 8, 16, 8, 4, 2],
        '>' => [8, 4, 2, 1, 2, 4, 8],
        '×' => [0, 17, 10, 4, 10, 17, 0],
        '–' | '—' => [0, 0, 0, 31, 0, 0, 0],
        _ => [31, 17, 17, 17, 17, 17, 31],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_window_maps_ends_to_black_and_white() {
        let mut c = Canvas::new(3, 1, [0, 0, 0]);
        c.image(0, 0, &[-100.0, 50.0, 1000.0], 3, (-100.0, 200.0), 1);
        assert_eq!(c.pixel(0, 0), [0, 0, 0]);
        assert_eq!(c.pixel(1, 0), [128, 128, 128]); // (50+100)/300 = 0.5 → 127.5 → 128
        assert_eq!(c.pixel(2, 0), [255, 255, 255]);
    }

    #[test]
    fn lines_reach_both_ends_and_text_draws_glyphs() {
        let mut c = Canvas::new(20, 20, [0, 0, 0]);
        c.line((1, 1), (18, 7), [255, 0, 0]);
        assert_eq!(c.pixel(1, 1), [255, 0, 0]);
        assert_eq!(c.pixel(18, 7), [255, 0, 0]);
        let w = c.text(0, 10, "I1", [0, 255, 0], 1);
        assert_eq!(w, 12);
        assert_eq!(c.pixel(2, 10), [0, 255, 0], "top of the I's stem");
    }

    #[test]
    fn percentiles_and_ticks() {
        let v: Vec<f64> = (0..=100).map(f64::from).chain([f64::NAN]).collect();
        assert_eq!(percentile_window(&v, 1.0, 99.0), (1.0, 99.0));
        assert_eq!(nice_ticks(0.0, 50.0, 5), vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(nice_ticks(-1000.0, 1000.0, 4), vec![-1000.0, -500.0, 0.0, 500.0, 1000.0]);
    }

    #[test]
    fn png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let mut c = Canvas::new(4, 2, [1, 2, 3]);
        c.put(3, 1, [200, 100, 50]);
        c.save_png(&path).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (4, 2));
        assert_eq!(&buf[..3], &[1, 2, 3]);
        assert_eq!(&buf[21..24], &[200, 100, 50]);
    }
}
