//! `preview.png`: what a clinician glances at — map panels with colour bars and lesion outlines
//! (core red, hypoperfusion green) on the slice with the largest hypoperfusion, the AIF and VOF
//! curves, the volumes and criteria, QC flags, and the research-use-only line.

use std::path::Path;

use super::PerfusionResult;
use crate::error::Result;
use crate::preview::{Canvas, Rgb, Series, colors, line_plot};

/// A jet-like colour scale from 0 (dark blue) to 1 (dark red).
pub fn colormap(x: f64) -> Rgb {
    const STOPS: [(f64, [f64; 3]); 6] = [
        (0.0, [0.0, 0.0, 0.45]),
        (0.15, [0.0, 0.1, 1.0]),
        (0.4, [0.0, 0.9, 1.0]),
        (0.6, [1.0, 1.0, 0.0]),
        (0.85, [1.0, 0.1, 0.0]),
        (1.0, [0.5, 0.0, 0.0]),
    ];
    let x = if x.is_finite() { x.clamp(0.0, 1.0) } else { 0.0 };
    let n = STOPS.iter().position(|s| s.0 >= x).unwrap_or(5).max(1);
    let (a, b) = (STOPS[n - 1], STOPS[n]);
    let w = (x - a.0) / (b.0 - a.0);
    std::array::from_fn(|c| ((a.1[c] * (1.0 - w) + b.1[c] * w) * 255.0).round() as u8)
}

/// Render the preview of `result` to `path`.
pub fn render(result: &PerfusionResult, path: &Path) -> Result<()> {
    draw(result).save_png(path)
}

/// The preview of `result` as PNG bytes (what DICOM results store as a Secondary Capture).
pub fn png(result: &PerfusionResult) -> Result<Vec<u8>> {
    draw(result).png_bytes()
}

fn draw(result: &PerfusionResult) -> Canvas {
    let [ni, nj, nk, _] = result.maps.cbf.shape();
    let hyp = result.hypoperfusion.data();
    let k =
        (0..nk).max_by_key(|&k| (0..ni * nj).filter(|&n| hyp[[n % ni, n / ni, k, 0]] == 1).count()).unwrap_or(nk / 2);
    let k = if (0..ni * nj).any(|n| hyp[[n % ni, n / ni, k, 0]] == 1) { k } else { nk / 2 };
    let scale = (256 / ni.max(nj)).max(1) as i64;
    let (pw, ph) = (ni as i64 * scale, nj as i64 * scale);
    let report = &result.report;
    let mut panels: Vec<(&str, &crate::volume::Volume<f32>, (f64, f64))> = vec![
        ("CBF ML/100G/MIN", &result.maps.cbf, (0.0, 80.0)),
        ("CBV ML/100G", &result.maps.cbv, (0.0, 6.0)),
        ("MTT S", &result.maps.mtt, (0.0, 16.0)),
        ("TMAX S", &result.maps.tmax, (0.0, 14.0)),
        ("TTP S", &result.maps.ttp, (0.0, report.analysis_times_s.last().copied().unwrap_or(60.0))),
    ];
    if report.method == super::Method::Cnn {
        // The CNN gives no Tmax.
        panels.remove(3);
    }
    // Every text first, so that the canvas is sized to hold it (a small study's panels are
    // narrower than the title and the read-out).
    let title =
        format!("IMHOST CT PERFUSION ({}) - SLICE {k} - {}", report.method.name().to_uppercase(), super::DISCLAIMER);
    let cnn = report.method == super::Method::Cnn;
    let legend = if cnn {
        "READ-OUT (CORE MAGENTA, REL TTP>4.5S GREEN) - PHANTOM-TRAINED CNN"
    } else {
        "READ-OUT (CORE MAGENTA, TMAX>6S GREEN)"
    };
    let lines = readout_lines(report, cnn);
    let text_width = |t: &str, scale: i64| 6 * scale * t.chars().count() as i64;
    let tx = 620;
    let width = [
        20 + 5 * (pw + 30),
        20 + panels.len() as i64 * (pw + 30),
        20 + text_width(&title, 2) + 20,
        tx + text_width(legend, 1) + 20,
        tx + lines.iter().map(|(t, _)| text_width(t, 2)).max().unwrap_or(0) + 20,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let y1 = 60 + ph + 50;
    let height = y1 + (22 * lines.len() as i64 + 30).max(310);
    let mut c = Canvas::new(width as usize, height as usize, colors::BACKGROUND);
    c.text(20, 12, &title, colors::YELLOW, 2);
    let core = result.core.data();
    let brain = result.brain.data();
    for (p, (title, map, (lo, hi))) in panels.iter().enumerate() {
        let x0 = 20 + p as i64 * (pw + 30);
        let y0 = 44;
        c.text(x0, y0, title, colors::TEXT, 1);
        let data = map.data();
        for j in 0..nj {
            for i in 0..ni {
                let color = if brain[[i, j, k, 0]] == 0 {
                    [0, 0, 0]
                } else {
                    colormap((f64::from(data[[i, j, k, 0]]) - lo) / (hi - lo))
                };
                c.fill_rect(x0 + i as i64 * scale, y0 + 12 + j as i64 * scale, scale, scale, color);
            }
        }
        if p == 0 || p == 3 {
            for j in 0..nj {
                for i in 0..ni {
                    let edge = |m: &ndarray::Array4<u8>| {
                        m[[i, j, k, 0]] == 1
                            && [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)].iter().any(|(di, dj)| {
                                let (x, y) = (i as i64 + di, j as i64 + dj);
                                x < 0
                                    || y < 0
                                    || x >= ni as i64
                                    || y >= nj as i64
                                    || m[[x as usize, y as usize, k, 0]] == 0
                            })
                    };
                    let color = if edge(core) {
                        Some([255, 40, 200])
                    } else if edge(hyp) {
                        Some([40, 255, 80])
                    } else {
                        None
                    };
                    if let Some(color) = color {
                        c.fill_rect(x0 + i as i64 * scale, y0 + 12 + j as i64 * scale, scale, scale, color);
                    }
                }
            }
        }
        // Colour bar with its limits.
        let by = y0 + 16 + ph;
        for x in 0..pw {
            c.fill_rect(x0 + x, by, 1, 8, colormap(x as f64 / pw as f64));
        }
        c.text(x0, by + 12, &format!("{lo:.0}"), colors::MUTED, 1);
        let label = format!("{hi:.0}");
        c.text(x0 + pw - 6 * label.len() as i64, by + 12, &label, colors::MUTED, 1);
    }
    let times = &report.analysis_times_s;
    let aif: Vec<f64> =
        report.aif.as_ref().map(|a| a.curve_hu.iter().map(|&v| f64::from(v)).collect()).unwrap_or_default();
    let vof: Vec<f64> =
        report.vof.as_ref().map(|a| a.curve_hu.iter().map(|&v| f64::from(v)).collect()).unwrap_or_default();
    let mut series = vec![];
    if !aif.is_empty() {
        series.push(Series { label: "AIF", color: colors::RED, x: times, y: &aif });
    }
    if !vof.is_empty() {
        series.push(Series { label: "VOF", color: colors::BLUE, x: times, y: &vof });
    }
    line_plot(&mut c, (20, y1, 560, 280), "ARTERIAL INPUT / VENOUS OUTPUT", "S", "DELTA HU", &series);
    c.text(tx, y1 - 16, legend, colors::MUTED, 1);
    for (n, (text, color)) in lines.iter().enumerate() {
        c.text(tx, y1 + 22 * n as i64, text, *color, 2);
    }
    c
}

/// The read-out beside the curves: volumes (or why they are withheld), criteria, QC flags.
fn readout_lines(report: &super::Report, cnn: bool) -> Vec<(String, Rgb)> {
    let mut lines = Vec::new();
    match &report.readout.volumes {
        Some(v) => {
            lines.push((format!("CORE (RCBF<30%): {:.1} ML", v.core_ml), colors::TEXT));
            let rule = if cnn { "REL TTP>4.5S" } else { "TMAX>6S" };
            lines.push((format!("{rule}: {:.1} ML", v.hypoperfusion_ml), colors::TEXT));
            lines.push((
                format!(
                    "MISMATCH: {:.1} ML, RATIO {}",
                    v.mismatch_ml,
                    v.mismatch_ratio.map_or("-".into(), |r| format!("{r:.1}"))
                ),
                colors::TEXT,
            ));
            if let Some(severe) = v.severe_hypoperfusion_ml {
                lines.push((
                    format!(
                        "TMAX>10S: {severe:.1} ML, HIR {}",
                        v.hypoperfusion_intensity_ratio.map_or("-".into(), |r| format!("{r:.2}"))
                    ),
                    colors::TEXT,
                ));
            }
        }
        None => lines.push(("VOLUMES WITHHELD (QC)".into(), colors::RED)),
    }
    if let Some(cr) = &report.readout.criteria {
        let verdict = |m: Option<bool>| match m {
            Some(true) => "MET",
            Some(false) => "NOT MET",
            None => "NOT EVALUATED",
        };
        lines.push((format!("DEFUSE-3 IMAGING: {}", verdict(cr.defuse3.met)), colors::TEXT));
        lines.push((format!("DAWN: {}", verdict(cr.dawn.met)), colors::TEXT));
    }
    if report.qc_flags.is_empty() {
        lines.push(("QC: NO FLAGS".into(), colors::CYAN));
    }
    for f in &report.qc_flags {
        lines.push((format!("QC: {}", f.flag.to_uppercase()), colors::RED));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunControl;
    use crate::phantom::ctp::{self, PhantomKind, PhantomOptions};

    /// Columns at the right edge hold nothing but background: no text was cut off there.
    fn right_margin_clear(c: &Canvas, columns: usize) -> bool {
        (c.width() - columns..c.width()).all(|x| (0..c.height()).all(|y| c.pixel(x, y) == colors::BACKGROUND))
    }

    #[test]
    fn a_small_study_preview_holds_its_title_and_read_out() {
        // 96×96 slices: the panels are narrower than the title, and with the CNN's four panels
        // narrower than its read-out legend too.
        let mut options = PhantomOptions::new(PhantomKind::Anatomical);
        options.shape = Some([96, 96, 2]);
        let phantom = ctp::generate(&options).unwrap();
        let input = crate::AnyVolume::from(phantom.ctp);
        let mut result =
            super::super::run(&input.view(), &super::super::PerfusionOptions::default(), None, &RunControl::none())
                .unwrap();
        let c = draw(&result);
        assert!(right_margin_clear(&c, 12), "text reaches the right edge of a {}×{} preview", c.width(), c.height());
        result.report.method = super::super::Method::Cnn;
        let c = draw(&result);
        assert!(
            right_margin_clear(&c, 12),
            "text reaches the right edge of the CNN's {}×{} preview",
            c.width(),
            c.height()
        );
        // The PNG bytes decode to the canvas.
        let png = png(&result).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
