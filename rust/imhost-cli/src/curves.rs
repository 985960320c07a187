//! `imhost perfusion-curves`: CBF, CBV, MTT, Tmax and delay of tissue curves against one
//! arterial input, read from CSV or JSON (`imhost_core::perfusion::curves`).

use std::path::{Path, PathBuf};

use clap::Args;
use imhost_core::perfusion::Method;
use imhost_core::perfusion::curves::{CurveOptions, CurvePerfusion, analyse};
use imhost_core::{Error, Result};

#[derive(Args)]
pub struct CurveArgs {
    /// The arterial input: CSV (one value per line) or JSON (an array of numbers).
    #[arg(long)]
    aif: PathBuf,
    /// The tissue curves: CSV (one curve per column, one sample per row, an optional header row
    /// of names) or JSON (an array of arrays, or an object of named arrays).
    #[arg(long)]
    tissue: PathBuf,
    /// Sample times in seconds: CSV (one per line) or JSON (an array).
    #[arg(long, conflicts_with = "interval", required_unless_present = "interval")]
    times: Option<PathBuf>,
    /// Seconds between samples (uniform sampling from 0 s).
    #[arg(long)]
    interval: Option<f64>,
    /// ssvd, bsvd, osvd, tikhonov or nlr.
    #[arg(long, default_value = "osvd")]
    method: String,
    /// Leave out the hematocrit and density constants k_H/ρ (CBF in ml/100 ml/min, CBV in
    /// ml/100 ml), as conventions that omit them do.
    #[arg(long)]
    no_constants: bool,
    /// Subtract the mean of the first N samples from every curve (curves in HU); 0: the curves
    /// are concentrations or ΔHU already.
    #[arg(long, default_value_t = 0)]
    baseline_frames: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &CurveArgs) -> Result<()> {
    let method = Method::from_name(&args.method)?;
    let aif = one_curve(&args.aif)?;
    let (names, tissue) = curves(&args.tissue)?;
    let times = match (&args.times, args.interval) {
        (Some(path), _) => one_curve(path)?,
        (None, Some(dt)) if dt.is_finite() && dt > 0.0 => (0..aif.len()).map(|m| m as f64 * dt).collect(),
        (None, Some(dt)) => {
            return Err(Error::invalid_argument(format!("--interval {dt}: give a positive number of seconds")));
        }
        (None, None) => return Err(Error::invalid_argument("give --times FILE or --interval SECONDS")),
    };
    let mut options = CurveOptions::default();
    options.method = method;
    options.constants = !args.no_constants;
    options.baseline_frames = args.baseline_frames;
    let results = analyse(&aif, &tissue, &times, &options)?;
    let (flow, volume) = if args.no_constants { ("ml/100 ml/min", "ml/100 ml") } else { ("ml/100 g/min", "ml/100 g") };
    if args.json {
        let curves: Vec<serde_json::Value> = names
            .iter()
            .zip(&results)
            .map(|(name, r)| {
                let num = |v: f64| if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null };
                serde_json::json!({"name": name, "cbf": num(r.cbf), "cbv": num(r.cbv), "mtt": num(r.mtt),
                                   "tmax": num(r.tmax), "delay": num(r.delay)})
            })
            .collect();
        let report = serde_json::json!({
            "schema": "imhost-perfusion-curves/1",
            "research_use_only": true,
            "method": method.name(),
            "constants": if args.no_constants { serde_json::Value::Null } else {
                serde_json::json!({"k_h": imhost_core::perfusion::constants::K_H, "rho_g_per_ml": imhost_core::perfusion::constants::RHO})
            },
            "baseline_frames": args.baseline_frames,
            "units": {"cbf": flow, "cbv": volume, "mtt": "s", "tmax": "s", "delay": "s"},
            "curves": curves,
        });
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{} of {} curve(s), {} samples: research use only{}",
        method.name(),
        results.len(),
        times.len(),
        if args.no_constants { " (without k_H/ρ)" } else { "" }
    );
    println!(
        "  {:<16} {:>12} {:>10} {:>8} {:>8} {:>8}",
        "curve",
        format!("CBF {flow}"),
        format!("CBV {volume}"),
        "MTT s",
        "Tmax s",
        "delay s"
    );
    for (name, r) in names.iter().zip(&results) {
        let CurvePerfusion { cbf, cbv, mtt, tmax, delay } = *r;
        println!("  {name:<16} {cbf:>18.2} {cbv:>14.3} {mtt:>8.2} {tmax:>8.2} {delay:>8.2}");
    }
    Ok(())
}

/// One curve: a JSON array, or CSV with one value per line (a first line that is not a number is
/// taken as a header).
fn one_curve(path: &Path) -> Result<Vec<f64>> {
    let (_, mut columns) = curves(path)?;
    if columns.len() != 1 {
        return Err(
            Error::invalid_argument(format!("{} columns: this file must hold one curve", columns.len())).in_file(path)
        );
    }
    Ok(columns.remove(0))
}

/// Named curves from CSV (columns) or JSON (arrays).
fn curves(path: &Path) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::from(e).in_file(path))?;
    let parsed = if text.trim_start().starts_with(['[', '{']) { from_json(&text) } else { from_csv(&text) };
    parsed.map_err(|e| e.in_file(path))
}

fn from_json(text: &str) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let bad = |m: &str| Error::invalid_argument(format!("JSON: {m}"));
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let numbers = |v: &serde_json::Value, what: &str| -> Result<Vec<f64>> {
        v.as_array()
            .ok_or_else(|| bad(&format!("{what} is not an array")))?
            .iter()
            .enumerate()
            .map(|(n, x)| x.as_f64().ok_or_else(|| bad(&format!("{what}, sample {}: not a number", n + 1))))
            .collect()
    };
    match &value {
        serde_json::Value::Array(items) if items.iter().all(|i| i.is_number()) => {
            Ok((vec!["1".into()], vec![numbers(&value, "the array")?]))
        }
        serde_json::Value::Array(items) => {
            let curves = items
                .iter()
                .enumerate()
                .map(|(n, c)| numbers(c, &format!("curve {}", n + 1)))
                .collect::<Result<Vec<_>>>()?;
            Ok(((1..=curves.len()).map(|n| n.to_string()).collect(), curves))
        }
        serde_json::Value::Object(map) => {
            let mut names = Vec::new();
            let mut curves = Vec::new();
            for (name, c) in map {
                curves.push(numbers(c, &format!("curve {name:?}"))?);
                names.push(name.clone());
            }
            Ok((names, curves))
        }
        _ => Err(bad("expected an array of numbers, an array of arrays or an object of arrays")),
    }
}

fn from_csv(text: &str) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let split = |line: &str| -> Vec<String> {
        line.split([',', ';', '\t']).map(|f| f.trim().trim_matches('"').to_string()).collect()
    };
    let mut rows = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((first_at, first)) = rows.next() else {
        return Err(Error::invalid_argument("CSV: no values"));
    };
    let first = split(first);
    let header = first.iter().any(|f| f.parse::<f64>().is_err());
    let width = first.len();
    let names: Vec<String> = if header { first.clone() } else { (1..=width).map(|n| n.to_string()).collect() };
    let mut curves = vec![Vec::new(); width];
    let mut push = |at: usize, fields: Vec<String>| -> Result<()> {
        if fields.len() != width {
            return Err(Error::invalid_argument(format!(
                "CSV line {}: {} fields, the first line has {width}",
                at + 1,
                fields.len()
            )));
        }
        for (c, f) in fields.iter().enumerate() {
            let v = f.parse::<f64>().map_err(|_| {
                Error::invalid_argument(format!("CSV line {}, field {}: {f:?} is not a number", at + 1, c + 1))
            })?;
            curves[c].push(v);
        }
        Ok(())
    };
    if !header {
        push(first_at, first)?;
    }
    for (at, line) in rows {
        push(at, split(line))?;
    }
    Ok((names, curves))
}
