//! `imhost score seg PRED TRUTH` and `imhost score table CSV`: the scoring module
//! (`imhost_core::score`, conventions in docs/SCORING.md) on files.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use imhost_core::io::read_volume;
use imhost_core::score::{self, SegmentationScores, stats};
use imhost_core::{Error, Result};
use serde_json::{Map, Value, json};

#[derive(Subcommand)]
pub enum ScoreCommand {
    /// Overlap and surface distances of a predicted segmentation against the truth: two label
    /// maps (NIfTI or DICOM folders) on the same grid. Conventions: docs/SCORING.md.
    Seg(SegArgs),
    /// Agreement, classification or ranking scores of two columns of a CSV table (a header row
    /// names the columns).
    Table(TableArgs),
}

#[derive(Args)]
pub struct SegArgs {
    /// Predicted label map.
    pub pred: PathBuf,
    /// Reference (truth) label map on the same grid.
    pub truth: PathBuf,
    /// Comma-separated metrics: dice, jaccard, precision, recall (sensitivity), specificity,
    /// accuracy, f1, volume (predicted, true and their difference in ml),
    /// relative_volume_error, hd, hd95, hd95_pooled, assd, masd, nsd; or the groups overlap,
    /// surface and all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub metrics: Vec<String>,
    /// NSD tolerance τ in mm (surface voxels within τ of the other surface count).
    #[arg(long, default_value_t = 1.0)]
    pub tolerance_mm: f64,
    /// Score the voxels equal to this label (repeatable). Default: every non-zero voxel.
    #[arg(long)]
    pub label: Vec<f64>,
    /// Score every label found in either map, one after the other.
    #[arg(long, conflicts_with = "label")]
    pub each_label: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the two columns hold.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Numbers measured twice (a volume, a score): correlation, ICC, Bland–Altman, errors.
    Continuous,
    /// Ordered categories (risk classes): accuracy, weighted κ, confusion matrix, C-index.
    Category,
    /// Truth 0/1 (or yes/no, true/false), prediction a score: ROC AUC and the operating point.
    Binary,
    /// Truth a survival time with --event, prediction a risk: Harrell's C-index.
    Survival,
}

#[derive(Args)]
pub struct TableArgs {
    /// CSV file with a header row (comma, semicolon or tab separated; "quoted" fields allowed).
    pub csv: PathBuf,
    /// Column of the truth.
    #[arg(long)]
    pub truth: String,
    /// Column of the prediction.
    #[arg(long)]
    pub pred: String,
    /// What the columns hold.
    #[arg(long, value_enum, default_value = "continuous")]
    pub kind: Kind,
    /// binary: a prediction ≥ this is positive.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// category: the categories in order, comma-separated (default: numeric order when every
    /// value is a number, else sorted as text).
    #[arg(long, value_delimiter = ',')]
    pub order: Vec<String>,
    /// survival: the event column (1 event, 0 censored).
    #[arg(long)]
    pub event: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: &ScoreCommand) -> Result<()> {
    match command {
        ScoreCommand::Seg(args) => seg(args),
        ScoreCommand::Table(args) => table(args),
    }
}

/// One metric: its name, whether it needs the surfaces, its unit and the convention it follows.
struct Metric {
    name: &'static str,
    surface: bool,
    unit: &'static str,
    convention: &'static str,
}

const fn m(name: &'static str, surface: bool, unit: &'static str, convention: &'static str) -> Metric {
    Metric { name, surface, unit, convention }
}

const METRICS: &[Metric] = &[
    m("dice", false, "", "2TP / (2TP + FP + FN)"),
    m("jaccard", false, "", "TP / (TP + FP + FN)"),
    m("precision", false, "", "TP / (TP + FP)"),
    m("recall", false, "", "sensitivity, TP / (TP + FN)"),
    m("specificity", false, "", "TN / (TN + FP)"),
    m("accuracy", false, "", "(TP + TN) / voxels"),
    m("f1", false, "", "harmonic mean of precision and recall"),
    m("volume_prediction_ml", false, "ml", "predicted volume"),
    m("volume_truth_ml", false, "ml", "true volume"),
    m("volume_difference_ml", false, "ml", "predicted − true"),
    m("relative_volume_error", false, "", "(predicted − true) / true"),
    m("hd", true, "mm", "Hausdorff: the larger directed maximum"),
    m("hd95", true, "mm", "larger of the two directed 95th percentiles (MONAI, Metrics Reloaded)"),
    m("hd95_pooled", true, "mm", "95th percentile of both directions pooled (MedPy hd95)"),
    m("assd", true, "mm", "mean of both directions pooled (MONAI symmetric, MedPy assd)"),
    m("masd", true, "mm", "mean of the two directed means (Metrics Reloaded masd)"),
    m("nsd", true, "", "share of surface voxels within τ of the other surface (MONAI surface Dice)"),
];

/// The metrics asked for, in the table's order, without repeats.
fn select(names: &[String]) -> Result<Vec<&'static Metric>> {
    let mut want = vec![false; METRICS.len()];
    for raw in names {
        let name = raw.trim().to_ascii_lowercase().replace('-', "_");
        let pick = |f: &dyn Fn(&Metric) -> bool, want: &mut Vec<bool>| {
            for (w, m) in want.iter_mut().zip(METRICS) {
                *w |= f(m);
            }
        };
        match name.as_str() {
            "all" => pick(&|_| true, &mut want),
            "overlap" => pick(&|m| !m.surface, &mut want),
            "surface" => pick(&|m| m.surface, &mut want),
            "volume" => pick(&|m| m.name.starts_with("volume_"), &mut want),
            "sensitivity" => pick(&|m| m.name == "recall", &mut want),
            n => {
                if !METRICS.iter().any(|m| m.name == n) {
                    let known: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
                    return Err(Error::invalid_argument(format!(
                        "unknown metric '{raw}'; known: {}, sensitivity, volume, overlap, surface, all",
                        known.join(", ")
                    )));
                }
                pick(&|m| m.name == n, &mut want);
            }
        }
    }
    Ok(METRICS.iter().zip(want).filter(|(_, w)| *w).map(|(m, _)| m).collect())
}

fn value(s: &SegmentationScores, name: &str) -> f64 {
    let o = &s.overlap;
    let surface = |f: fn(&score::SurfaceScores) -> f64| s.surface.as_ref().map_or(f64::NAN, f);
    match name {
        "dice" => o.dice,
        "jaccard" => o.jaccard,
        "precision" => o.precision,
        "recall" => o.recall,
        "specificity" => o.specificity,
        "accuracy" => o.accuracy,
        "f1" => o.f1,
        "volume_prediction_ml" => o.volume_prediction_ml,
        "volume_truth_ml" => o.volume_truth_ml,
        "volume_difference_ml" => o.volume_difference_ml,
        "relative_volume_error" => o.relative_volume_error,
        "hd" => surface(|x| x.hd),
        "hd95" => surface(|x| x.hd95),
        "hd95_pooled" => surface(|x| x.hd95_pooled),
        "assd" => surface(|x| x.assd),
        "masd" => surface(|x| x.masd),
        "nsd" => surface(|x| x.nsd),
        _ => f64::NAN,
    }
}

/// Why a value is not a number, in words.
fn undefined(s: &SegmentationScores, x: f64) -> String {
    use score::Empty;
    let which = match s.overlap.empty {
        Empty::Both => "both masks are empty",
        Empty::Prediction => "the prediction is empty",
        Empty::Truth => "the truth is empty",
        Empty::Neither => "the truth fills the grid",
    };
    if x.is_infinite() { format!("∞ ({which})") } else { format!("undefined ({which})") }
}

fn seg(args: &SegArgs) -> Result<()> {
    let metrics = select(&args.metrics)?;
    if !(args.tolerance_mm.is_finite() && args.tolerance_mm >= 0.0) {
        return Err(Error::invalid_argument(format!(
            "--tolerance-mm {} must be a distance ≥ 0 in mm",
            args.tolerance_mm
        )));
    }
    let read = |path: &Path, what: &str| read_volume(path).map_err(|e| e.in_file(path).context(what));
    let pred = read(&args.pred, "prediction")?;
    let truth = read(&args.truth, "truth")?;
    let (pv, tv) = (pred.view(), truth.view());
    let mut present = std::collections::BTreeSet::new();
    for v in [&pv, &tv] {
        for l in score::labels_present(v)? {
            present.insert(l as i64);
        }
    }
    let labels: Vec<Option<f64>> = if args.each_label {
        if present.is_empty() {
            return Err(Error::invalid_argument("--each-label: both maps are empty (no non-zero voxel)"));
        }
        present.iter().map(|&l| Some(l as f64)).collect()
    } else if args.label.is_empty() {
        vec![None]
    } else {
        args.label.iter().map(|&l| Some(l)).collect()
    };
    let tolerance = metrics.iter().any(|m| m.surface).then_some(args.tolerance_mm);
    let mut results = Vec::new();
    for &label in &labels {
        let scores = score::label_volumes(&pv, &tv, label, tolerance)?;
        results.push((label, scores));
    }
    let shape = truth.shape();
    let spacing = truth.geometry().spacing;
    if args.json {
        let mut out = Map::new();
        out.insert("research_use_only".into(), json!(true));
        out.insert("prediction".into(), json!(args.pred.display().to_string()));
        out.insert("truth".into(), json!(args.truth.display().to_string()));
        out.insert("dims".into(), json!(&shape[..3]));
        out.insert("spacing_mm".into(), json!(spacing));
        if let Some(t) = tolerance {
            out.insert("nsd_tolerance_mm".into(), json!(t));
        }
        let conventions: Map<String, Value> =
            metrics.iter().map(|m| (m.name.to_string(), json!(m.convention))).collect();
        out.insert("conventions".into(), Value::Object(conventions));
        let per_label: Vec<Value> = results
            .iter()
            .map(|(label, s)| {
                let mut o = Map::new();
                o.insert("label".into(), label.map_or(json!("non-zero"), |l| json!(l as i64)));
                o.insert("empty".into(), json!(s.overlap.empty));
                let c = s.overlap.counts;
                o.insert("counts".into(), json!({"tp": c.tp, "fp": c.fp, "fn": c.fn_, "tn": c.tn}));
                if let Some(sf) = &s.surface {
                    o.insert(
                        "surface_voxels".into(),
                        json!({"prediction": sf.surface_voxels_prediction, "truth": sf.surface_voxels_truth}),
                    );
                }
                for m in &metrics {
                    // Not finite (undefined, or infinite next to an empty mask): null, with
                    // "empty" saying why.
                    o.insert(m.name.into(), json!(value(s, m.name)));
                }
                Value::Object(o)
            })
            .collect();
        out.insert("labels".into(), Value::Array(per_label));
        println!("{}", serde_json::to_string_pretty(&Value::Object(out)).map_err(|e| Error::internal(e.to_string()))?);
        return Ok(());
    }
    println!("imhost score seg (research use only)");
    println!("  prediction {}", args.pred.display());
    println!("  truth      {}", args.truth.display());
    println!(
        "  grid {}×{}×{}, spacing {:.3}×{:.3}×{:.3} mm{}",
        shape[0],
        shape[1],
        shape[2],
        spacing[0],
        spacing[1],
        spacing[2],
        tolerance.map_or(String::new(), |t| format!(", NSD τ = {t} mm"))
    );
    for (label, s) in &results {
        let name = label.map_or("non-zero voxels".to_string(), |l| format!("label {l}"));
        println!("{name}:");
        for m in &metrics {
            let x = value(s, m.name);
            let shown = if x.is_finite() {
                let digits = if m.unit.is_empty() { 4 } else { 2 };
                format!("{x:.digits$}{}{}", if m.unit.is_empty() { "" } else { " " }, m.unit)
            } else {
                undefined(s, x)
            };
            println!("  {:<22} {:<14} {}", m.name, shown, m.convention);
        }
    }
    Ok(())
}

/// A CSV table: column names and rows of fields.
struct Table {
    names: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

/// Split one CSV line on `sep`, with "quoted" fields ("" inside quotes is a quote).
fn split_line(line: &str, sep: char) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            c if c == sep && !quoted => fields.push(std::mem::take(&mut field).trim().to_string()),
            c => field.push(c),
        }
    }
    fields.push(field.trim().to_string());
    fields
}

fn read_table(path: &Path) -> Result<Table> {
    let bytes = std::fs::read(path).map_err(|e| Error::from(e).in_file(path))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::format(format!("'{}' is not UTF-8 text (a CSV table?)", path.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((_, header)) = lines.next() else {
        return Err(Error::format(format!("'{}' holds no rows", path.display())));
    };
    let sep = [',', ';', '\t'].into_iter().max_by_key(|&c| header.matches(c).count()).unwrap_or(',');
    let names = split_line(header, sep);
    let mut rows = Vec::new();
    for (at, line) in lines {
        let fields = split_line(line, sep);
        if fields.len() != names.len() {
            return Err(Error::format(format!(
                "'{}' line {}: {} fields, the header has {}",
                path.display(),
                at + 1,
                fields.len(),
                names.len()
            )));
        }
        rows.push((at + 1, fields));
    }
    if rows.is_empty() {
        return Err(Error::format(format!("'{}' has a header but no rows", path.display())));
    }
    Ok(Table { names, rows })
}

impl Table {
    fn column(&self, name: &str) -> Result<(usize, Vec<(usize, &str)>)> {
        let c = self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::invalid_argument(format!("no column '{name}'; the columns are {}", self.names.join(", ")))
        })?;
        let values: Vec<(usize, &str)> = self.rows.iter().map(|(at, f)| (*at, f[c].as_str())).collect();
        if let Some((at, _)) = values.iter().find(|(_, v)| v.is_empty()) {
            return Err(Error::invalid_argument(format!(
                "line {at}: column '{name}' is empty; remove the rows without a value first"
            )));
        }
        Ok((c, values))
    }

    fn numbers(&self, name: &str) -> Result<Vec<f64>> {
        let (_, values) = self.column(name)?;
        values
            .iter()
            .map(|(at, v)| match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => Err(Error::invalid_argument(format!("line {at}: column '{name}' holds {v:?}, not a number"))),
            })
            .collect()
    }

    fn flags(&self, name: &str) -> Result<Vec<bool>> {
        let (_, values) = self.column(name)?;
        values
            .iter()
            .map(|(at, v)| match v.to_ascii_lowercase().as_str() {
                "1" | "1.0" | "true" | "yes" | "positive" | "y" => Ok(true),
                "0" | "0.0" | "false" | "no" | "negative" | "n" => Ok(false),
                _ => Err(Error::invalid_argument(format!(
                    "line {at}: column '{name}' holds {v:?}; expected 0/1, true/false, yes/no or positive/negative"
                ))),
            })
            .collect()
    }
}

fn table(args: &TableArgs) -> Result<()> {
    let t = read_table(&args.csv)?;
    let mut out = Map::new();
    out.insert("research_use_only".into(), json!(true));
    out.insert("table".into(), json!(args.csv.display().to_string()));
    out.insert("truth".into(), json!(args.truth));
    out.insert("prediction".into(), json!(args.pred));
    out.insert("n".into(), json!(t.rows.len()));
    let mut lines: Vec<String> = Vec::new();
    let mut line = |name: &str, x: f64, what: &str| {
        let shown = if x.is_finite() { format!("{x:.4}") } else { "undefined".to_string() };
        lines.push(format!("  {name:<22} {shown:<10} {what}"));
    };
    match args.kind {
        Kind::Continuous => {
            let (truth, pred) = (t.numbers(&args.truth)?, t.numbers(&args.pred)?);
            let r = stats::pearson(&truth, &pred)?;
            let rho = stats::spearman(&truth, &pred)?;
            let icc = stats::icc(&truth, &pred)?;
            let ba = stats::bland_altman(&truth, &pred)?;
            let n = truth.len() as f64;
            let mae = truth.iter().zip(&pred).map(|(a, b)| (b - a).abs()).sum::<f64>() / n;
            let rmse = (truth.iter().zip(&pred).map(|(a, b)| (b - a).powi(2)).sum::<f64>() / n).sqrt();
            line("pearson_r", r, "Pearson's r");
            line("spearman_rho", rho, "Spearman's ρ (average ranks for ties)");
            line("icc2_1", icc.icc2_1, "ICC(2,1): absolute agreement, two-way random");
            line("icc3_1", icc.icc3_1, "ICC(3,1): consistency, two-way mixed");
            line("bias", ba.bias, "Bland–Altman mean of prediction − truth");
            line("lower_limit", ba.lower_limit, "bias − 1.96 sd");
            line("upper_limit", ba.upper_limit, "bias + 1.96 sd");
            line("mae", mae, "mean absolute error");
            line("rmse", rmse, "root mean squared error");
            out.insert("pearson_r".into(), json!(r));
            out.insert("spearman_rho".into(), json!(rho));
            out.insert("icc".into(), json!(icc));
            out.insert("bland_altman".into(), json!(ba));
            out.insert("mae".into(), json!(mae));
            out.insert("rmse".into(), json!(rmse));
        }
        Kind::Category => {
            let (_, tv) = t.column(&args.truth)?;
            let (_, pv) = t.column(&args.pred)?;
            let order: Vec<String> = if args.order.is_empty() {
                let mut all: Vec<String> = tv.iter().chain(&pv).map(|(_, v)| v.to_string()).collect();
                all.sort();
                all.dedup();
                if all.iter().all(|v| v.parse::<f64>().is_ok_and(f64::is_finite)) {
                    all.sort_by(|a, b| a.parse::<f64>().unwrap_or(0.0).total_cmp(&b.parse::<f64>().unwrap_or(0.0)));
                }
                all
            } else {
                args.order.iter().map(|s| s.trim().to_string()).collect()
            };
            if order.len() > 64 {
                return Err(Error::invalid_argument(format!(
                    "{} categories: are the columns numbers? Use --kind continuous, or --order to list the categories",
                    order.len()
                )));
            }
            let code = |name: &str, values: &[(usize, &str)]| -> Result<Vec<i64>> {
                values
                    .iter()
                    .map(|(at, v)| {
                        order.iter().position(|o| o == v).map(|p| p as i64).ok_or_else(|| {
                            Error::invalid_argument(format!(
                                "line {at}: column '{name}' holds {v:?}, not one of the categories {}",
                                order.join(", ")
                            ))
                        })
                    })
                    .collect()
            };
            let (a, b) = (code(&args.truth, &tv)?, code(&args.pred, &pv)?);
            let labels: Vec<i64> = (0..order.len() as i64).collect();
            let accuracy = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
            let kappa = |w| stats::cohen_kappa(&a, &b, &labels, w);
            let (k0, k1, k2) = (
                kappa(stats::KappaWeights::None)?,
                kappa(stats::KappaWeights::Linear)?,
                kappa(stats::KappaWeights::Quadratic)?,
            );
            let (af, bf): (Vec<f64>, Vec<f64>) =
                (a.iter().map(|&x| x as f64).collect(), b.iter().map(|&x| x as f64).collect());
            let c = stats::c_index_ordinal(&af, &bf)?;
            let k = order.len();
            let mut matrix = vec![vec![0u64; k]; k];
            for (&x, &y) in a.iter().zip(&b) {
                matrix[x as usize][y as usize] += 1;
            }
            line("accuracy", accuracy, "share of rows in the true category");
            line("kappa", k0, "Cohen's κ, unweighted");
            line("kappa_linear", k1, "Cohen's κ, linear weights");
            line("kappa_quadratic", k2, "Cohen's κ, quadratic weights");
            line("c_index", c, "pairs of different true category ordered alike, ties ½");
            lines.push(format!("  confusion (rows truth, columns prediction; {}):", order.join(" ")));
            for (name, row) in order.iter().zip(&matrix) {
                let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
                lines.push(format!("    {name:>8} {}", cells.join("")));
            }
            out.insert("categories".into(), json!(order));
            out.insert("accuracy".into(), json!(accuracy));
            out.insert("kappa".into(), json!(k0));
            out.insert("kappa_linear".into(), json!(k1));
            out.insert("kappa_quadratic".into(), json!(k2));
            out.insert("c_index".into(), json!(c));
            out.insert("confusion".into(), json!(matrix));
        }
        Kind::Binary => {
            let (positive, score) = (t.flags(&args.truth)?, t.numbers(&args.pred)?);
            let auc = stats::roc_auc(&positive, &score)?;
            let op = stats::operating_point(&positive, &score, args.threshold)?;
            let positives = positive.iter().filter(|&&p| p).count();
            line("roc_auc", auc, "area under the ROC curve (ties ½)");
            let at = format!("at prediction ≥ {}", args.threshold);
            line("sensitivity", op.sensitivity, &at);
            line("specificity", op.specificity, &at);
            line("ppv", op.ppv, &at);
            line("npv", op.npv, &at);
            line("accuracy", op.accuracy, &at);
            out.insert("positives".into(), json!(positives));
            out.insert("roc_auc".into(), json!(auc));
            out.insert("operating_point".into(), json!(op));
        }
        Kind::Survival => {
            let Some(event) = &args.event else {
                return Err(Error::invalid_argument("--kind survival needs --event COLUMN (1 event, 0 censored)"));
            };
            let (time, risk, events) = (t.numbers(&args.truth)?, t.numbers(&args.pred)?, t.flags(event)?);
            let c = stats::harrell_c(&time, &events, &risk)?;
            line("c_index", c, "Harrell's C (higher risk, shorter time); tied risks ½");
            out.insert("events".into(), json!(events.iter().filter(|&&e| e).count()));
            out.insert("c_index".into(), json!(c));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Value::Object(out)).map_err(|e| Error::internal(e.to_string()))?);
    } else {
        println!("imhost score table (research use only): {} rows of {}", t.rows.len(), args.csv.display());
        println!("  truth '{}', prediction '{}'", args.truth, args.pred);
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_split() {
        assert_eq!(split_line(r#"a, "b, c" ,"d""e""#, ','), vec!["a", "b, c", "d\"e"]);
        assert_eq!(split_line("1;2", ';'), vec!["1", "2"]);
    }

    #[test]
    fn metric_groups_expand_in_order() {
        let names = |v: &[&str]| -> Vec<&str> {
            select(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap().iter().map(|m| m.name).collect()
        };
        assert_eq!(names(&["hd95", "dice", "dice"]), vec!["dice", "hd95"]);
        assert_eq!(names(&["volume"]).len(), 3);
        assert_eq!(names(&["surface"]), vec!["hd", "hd95", "hd95_pooled", "assd", "masd", "nsd"]);
        assert_eq!(names(&["sensitivity"]), vec!["recall"]);
        assert!(select(&["dise".to_string()]).is_err());
    }
}
