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
pub fn font() -> bool {
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

/// A grouped bar chart into `path` (PNG): one group per `groups` entry (e.g. a task), one
/// bar per series (e.g. a model variant) with its value in `0..=1` per group.
pub fn write_bars(
    path: &Path,
    title: &str,
    groups: &[&str],
    series: &[(String, Vec<f64>)],
) -> Result<(), TrainError> {
    let err = |e: String| TrainError::Output {
        path: path.to_owned(),
        message: format!("plot: {e}"),
    };
    const COLOURS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    let tmp = path.with_extension("tmp.png");
    let text = font();
    {
        let root = BitMapBackend::new(&tmp, (1100, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut b = ChartBuilder::on(&root);
        b.margin(15);
        if text {
            b.caption(title, ("sans-serif", 22))
                .x_label_area_size(35)
                .y_label_area_size(50);
        }
        let n = groups.len().max(1) as f64;
        let mut chart = b
            .build_cartesian_2d(0f64..n, 0f64..1.0)
            .map_err(|e| e.to_string())
            .map_err(err)?;
        if text {
            let names: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(groups.len() * 2 + 1)
                .x_label_formatter(&|x| {
                    let i = x.floor() as usize;
                    if (x - i as f64 - 0.5).abs() < 0.26 {
                        names.get(i).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .y_desc("accuracy")
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }
        let k = series.len().max(1) as f64;
        let w = 0.8 / k;
        for (si, (name, values)) in series.iter().enumerate() {
            let c = COLOURS[si % COLOURS.len()];
            let s = chart
                .draw_series(values.iter().enumerate().map(|(gi, v)| {
                    let x0 = gi as f64 + 0.1 + si as f64 * w;
                    Rectangle::new([(x0, 0.0), (x0 + w * 0.95, v.clamp(0.0, 1.0))], c.filled())
                }))
                .map_err(|e| err(e.to_string()))?;
            if text {
                s.label(name.clone()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled())
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}
