//! `train_curves.png` beside the checkpoints: training loss per step and validation accuracy
//! per evaluation (plotters, bitmap backend), rewritten atomically at every evaluation.
//! Axis labels use DejaVu Sans when the system has it (Debian's fonts-dejavu-core, installed
//! by `make deps`); without a font the curves are drawn without text.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::TrainError;

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system font for plotters' text once; false when none is available.
fn font() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws the two curves into `path` (PNG).
pub fn write_curves(
    path: &Path,
    loss: &[(u64, f64)],
    accuracy: &[(u64, f64)],
) -> Result<(), TrainError> {
    let err = |e: String| TrainError::Output {
        path: path.to_owned(),
        message: format!("plot: {e}"),
    };
    let tmp = path.with_extension("tmp.png");
    let text = font();
    {
        let root = BitMapBackend::new(&tmp, (1000, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let (left, right) = root.split_horizontally(500);
        let last = loss.iter().map(|p| p.0).max().unwrap_or(1).max(1);
        let top = loss
            .iter()
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .fold(0f64, f64::max)
            .max(1e-6);
        let panel = |area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
                     title: &str,
                     ymax: f64,
                     pts: &[(u64, f64)],
                     colour: RGBColor|
         -> Result<(), String> {
            let mut b = ChartBuilder::on(area);
            b.margin(15);
            if text {
                b.caption(title, ("sans-serif", 20))
                    .x_label_area_size(30)
                    .y_label_area_size(50);
            }
            let mut chart = b
                .build_cartesian_2d(0f64..last as f64, 0f64..ymax)
                .map_err(|e| e.to_string())?;
            if text {
                chart
                    .configure_mesh()
                    .x_desc("step")
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|(s, v)| (*s as f64, *v)),
                    colour.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
            Ok(())
        };
        panel(&left, "training loss", top * 1.05, loss, BLUE).map_err(err)?;
        panel(&right, "validation accuracy", 1.0, accuracy, RED).map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}
