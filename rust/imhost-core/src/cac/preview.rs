//! `preview.png` of a calcium score: the axial slices that hold the most calcium (up to six),
//! mediastinal window, every lesion outlined in its artery's colour, with the totals, the
//! category and the research-use caveat above.

use super::CacScore;
use crate::preview::{Canvas, Rgb, colors};

/// Outline colours of region labels 1, 2, 3, 4 (LM, LAD, LCx, RCA on a phantom's or our model's
/// map) and of any other label.
const REGION_COLORS: [Rgb; 5] = [[255, 200, 60], [235, 80, 70], [80, 200, 230], [120, 230, 110], [230, 110, 230]];

fn color_of(label: u32) -> Rgb {
    REGION_COLORS[(label.clamp(1, 5) - 1) as usize]
}

/// Draw the preview. `lesions` holds the region label of every lesion pixel (0 elsewhere);
/// `header` lines are printed at the top, after the title.
pub fn render(hu: &[f32], dims: [usize; 3], lesions: &[u32], score: &CacScore, header: &[String]) -> Canvas {
    let [ni, nj, nk] = dims;
    let slab = ni * nj;
    // Slices ranked by their Agatston score.
    let mut per_slice = vec![0.0f64; nk];
    for l in &score.lesions {
        per_slice[l.slice] += l.agatston;
    }
    let mut slices: Vec<usize> = (0..nk).filter(|&k| per_slice[k] > 0.0).collect();
    slices.sort_by(|a, b| per_slice[*b].total_cmp(&per_slice[*a]).then(a.cmp(b)));
    slices.truncate(6);
    slices.sort_unstable();
    if slices.is_empty() {
        slices.push(nk / 2);
    }
    let factor = ni.max(nj).div_ceil(300).max(1);
    let (pw, ph) = (ni.div_ceil(factor), nj.div_ceil(factor));
    let cols = slices.len().min(3);
    let rows = slices.len().div_ceil(3);
    let margin = 10usize;
    let top = 30 + 14 * header.len() + 10;
    let width = (margin + cols * (pw + margin)).max(560);
    let height = top + rows * (ph + margin + 14) + 24;
    let mut canvas = Canvas::new(width, height, colors::BACKGROUND);
    canvas.text(margin as i64, 10, "CORONARY CALCIUM - RESEARCH USE ONLY, NOT FOR DIAGNOSIS", colors::YELLOW, 2);
    for (n, line) in header.iter().enumerate() {
        canvas.text(margin as i64, 34 + 14 * n as i64, line, colors::TEXT, 2);
    }
    for (n, &k) in slices.iter().enumerate() {
        let x0 = (margin + (n % 3) * (pw + margin)) as i64;
        let y0 = (top + (n / 3) * (ph + margin + 14)) as i64;
        let mut values = vec![f64::NEG_INFINITY; pw * ph];
        let mut mark = vec![0u32; pw * ph];
        for j in 0..nj {
            for i in 0..ni {
                let p = k * slab + i + j * ni;
                let q = i / factor + (j / factor) * pw;
                values[q] = values[q].max(f64::from(hu[p]));
                if lesions[p] != 0 {
                    mark[q] = lesions[p];
                }
            }
        }
        canvas.image(x0, y0, &values, pw, (-160.0, 240.0), 1);
        // Outline: marked pixels with an unmarked 4-neighbour, drawn one pixel outside.
        for y in 0..ph {
            for x in 0..pw {
                let l = mark[x + y * pw];
                if l == 0 {
                    continue;
                }
                for (dx, dy) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
                    let (xx, yy) = (x as i64 + dx, y as i64 + dy);
                    let outside = xx < 0 || yy < 0 || xx >= pw as i64 || yy >= ph as i64;
                    if outside || mark[xx as usize + yy as usize * pw] == 0 {
                        canvas.put(x0 + xx, y0 + yy, color_of(l));
                    }
                }
            }
        }
        let label = format!("SLICE {k}  AGATSTON {:.1}", per_slice[k]);
        canvas.text(x0, y0 + ph as i64 + 3, &label, colors::MUTED, 1);
    }
    canvas.text(
        margin as i64,
        height as i64 - 16,
        "OUTLINES: LM YELLOW, LAD RED, LCX CYAN, RCA GREEN, OTHER MAGENTA. WINDOW W400 L40.",
        colors::MUTED,
        1,
    );
    canvas
}
