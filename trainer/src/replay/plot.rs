//! NDCG@10 per shard of the stream for each arm, as a PNG: frozen grey, online blue,
//! online from scratch green, popularity orange; shards left to right, NDCG@10 from 0
//! at the bottom to 1.15 × the largest value at the top.

use std::path::Path;

use plotters::prelude::*;

use super::tally::ArmReport;
use crate::{Result, TrainerError};

fn plot_err(e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Plot(e.to_string())
}

/// `arms`: frozen, online, online from scratch, popularity.
pub(super) fn shards(path: &Path, arms: [&ArmReport; 4]) -> Result<()> {
    let colours = [
        RGBColor(127, 127, 127),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
    ];
    let arms: Vec<(&ArmReport, RGBColor)> = arms.into_iter().zip(colours).collect();
    let shards = arms[1].0.shards.len().max(1);
    let top = arms
        .iter()
        .flat_map(|(a, _)| a.shards.iter().map(|s| s.ndcg_at_10))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let root = BitMapBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .build_cartesian_2d(-0.5f64..shards as f64 - 0.5, 0.0f64..top)
        .map_err(plot_err)?;
    for &(arm, colour) in &arms {
        let points: Vec<(f64, f64)> = arm
            .shards
            .iter()
            .enumerate()
            .map(|(k, s)| (k as f64, s.ndcg_at_10))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(3)))
            .map_err(plot_err)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(plot_err)?;
    }
    root.draw(&Rectangle::new(
        [(19, 19), (781, 431)],
        BLACK.stroke_width(1),
    ))
    .map_err(plot_err)?;
    root.present().map_err(plot_err)
}
