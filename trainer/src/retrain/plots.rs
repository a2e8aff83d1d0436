//! The retrain report's PNG plots, drawn with plotters.
//!
//! The plots carry no text (plotters' font backends need system font libraries, which a
//! fresh machine does not have): `report.md` gives their axes, colours and values.

use std::path::Path;

use plotters::prelude::*;

use super::types::RetrainReport;
use crate::{Result, TrainerError};

const NEW: RGBColor = RGBColor(31, 119, 180);
const CURRENT: RGBColor = RGBColor(127, 127, 127);
const POPULAR: RGBColor = RGBColor(255, 127, 14);

fn plot_err(e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Plot(e.to_string())
}

/// Draws the plot area's frame and writes the file.
fn frame_and_save(root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()> {
    root.draw(&Rectangle::new(
        [(19, 19), (621, 381)],
        BLACK.stroke_width(1),
    ))
    .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// Draws `loss.png` (loss per epoch) and `metrics.png` (HR@10 and NDCG@10 of the new
/// model, the current generation and popularity); returns their file names.
pub(super) fn plots(out: &Path, r: &RetrainReport) -> Result<Vec<String>> {
    let mut files = Vec::new();
    if !r.epochs.is_empty() {
        let path = out.join("loss.png");
        let root = BitMapBackend::new(&path, (640, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let losses: Vec<f64> = r.epochs.iter().map(|e| e.loss).collect();
        let (lo, hi) = losses
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .build_cartesian_2d(0.5f64..r.epochs.len() as f64 + 0.5, (lo - pad)..(hi + pad))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(
                r.epochs.iter().map(|e| (e.epoch as f64, e.loss)),
                NEW.stroke_width(3),
            ))
            .map_err(plot_err)?;
        chart
            .draw_series(
                r.epochs
                    .iter()
                    .map(|e| Circle::new((e.epoch as f64, e.loss), 5, NEW.filled())),
            )
            .map_err(plot_err)?;
        frame_and_save(&root)?;
        files.push("loss.png".to_owned());
    }
    let path = out.join("metrics.png");
    let root = BitMapBackend::new(&path, (640, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let groups = [
        [
            Some(r.new.hr_at_10),
            r.current.map(|c| c.hr_at_10),
            Some(r.popularity.hr_at_10),
        ],
        [
            Some(r.new.ndcg_at_10),
            r.current.map(|c| c.ndcg_at_10),
            Some(r.popularity.ndcg_at_10),
        ],
    ];
    let top = groups
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f64, |a, &b| a.max(b))
        .max(1e-3)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .build_cartesian_2d(0.0f64..2.0, 0.0f64..top)
        .map_err(plot_err)?;
    for (g, values) in groups.iter().enumerate() {
        for (k, (v, colour)) in values.iter().zip([NEW, CURRENT, POPULAR]).enumerate() {
            let Some(v) = v else { continue };
            let x0 = g as f64 + 0.15 + k as f64 * 0.24;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + 0.2, *v)],
                    colour.filled(),
                )))
                .map_err(plot_err)?;
        }
    }
    frame_and_save(&root)?;
    files.push("metrics.png".to_owned());
    Ok(files)
}
