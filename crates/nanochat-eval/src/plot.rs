//! PNG plots of a training run's `metrics.jsonl` (training loss and validation bpb against
//! the step), drawn with `plotters` and a bundled DejaVu Sans font (so that labels render on
//! machines without system fonts). Upstream logged these curves to wandb; the report embeds
//! these PNGs instead.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Reading the metrics failed.
    #[error(transparent)]
    Io(#[from] nanochat_core::fs::IoError),
    /// The metrics file has nothing to draw.
    #[error("{0}: no steps with a loss to plot")]
    Empty(String),
    /// Drawing failed.
    #[error("drawing {path}: {reason}")]
    Draw {
        /// The PNG being drawn.
        path: String,
        /// The backend's message.
        reason: String,
    },
}

/// The series a plot draws.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// `(step, smoothed training loss)`.
    pub loss: Vec<(f64, f64)>,
    /// `(step, validation bpb)`.
    pub val_bpb: Vec<(f64, f64)>,
}

/// Reads `metrics.jsonl` lines (`step`, `smooth_loss` or `loss`, optional `val_bpb`); lines
/// that do not parse are skipped.
pub fn read_curves(path: &Path) -> Result<Curves, PlotError> {
    let text = String::from_utf8_lossy(&nanochat_core::fs::read(path)?).into_owned();
    let mut c = Curves::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(step) = v.get("step").and_then(|s| s.as_f64()) else {
            continue;
        };
        if let Some(l) = v
            .get("smooth_loss")
            .or_else(|| v.get("loss"))
            .and_then(|l| l.as_f64())
            .filter(|l| l.is_finite())
        {
            c.loss.push((step, l));
        }
        if let Some(b) = v
            .get("val_bpb")
            .and_then(|b| b.as_f64())
            .filter(|b| b.is_finite())
        {
            c.val_bpb.push((step, b));
        }
    }
    Ok(c)
}

fn range(points: &[(f64, f64)]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    (x0..x1, (y0 - pad)..(y1 + pad))
}

/// Draws `curves` into `out` (PNG, 1200×450): loss on the left, validation bpb on the right.
/// Written to a temporary file and renamed, so a failed draw leaves no broken PNG.
pub fn plot_curves(curves: &Curves, title: &str, out: &Path) -> Result<(), PlotError> {
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    if curves.loss.is_empty() {
        return Err(PlotError::Empty(out.display().to_string()));
    }
    let tmp = out.with_extension("tmp.png");
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    {
        let root = BitMapBackend::new(&tmp, (1200, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| err(&e))?;
        let panels = root.split_evenly((1, 2));
        type Panel<'a> = (&'a str, &'a str, &'a [(f64, f64)], RGBColor);
        let series: [Panel; 2] = [
            ("training loss (EMA)", "loss", &curves.loss, BLUE),
            ("validation bits per byte", "bpb", &curves.val_bpb, RED),
        ];
        for (area, (caption, ylabel, pts, color)) in panels.iter().zip(series) {
            if pts.is_empty() {
                area.draw(&Text::new(
                    format!("{caption}: no data"),
                    (40, 40),
                    ("sans-serif", 16),
                ))
                .map_err(|e| err(&e))?;
                continue;
            }
            let (xr, yr) = range(pts);
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(xr, yr)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc("step")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_desc(ylabel)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(&e))?;
            if pts.len() < 60 {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        root.present().map_err(|e| err(&e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| nanochat_core::fs::IoError::new("rename", out, e))?;
    Ok(())
}

/// Reads `metrics` and draws it into `out`.
pub fn plot_metrics(metrics: &Path, title: &str, out: &Path) -> Result<(), PlotError> {
    plot_curves(&read_curves(metrics)?, title, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_from_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("metrics.jsonl");
        let mut lines = String::new();
        for s in 0..30 {
            let val = if s % 10 == 0 {
                format!(",\"val_bpb\":{}", 3.0 - s as f64 * 0.05)
            } else {
                String::new()
            };
            lines.push_str(&format!(
                "{{\"step\":{s},\"smooth_loss\":{}{val}}}\n",
                9.0 - s as f64 * 0.1
            ));
        }
        lines.push_str("garbage\n");
        std::fs::write(&m, lines).unwrap();
        let c = read_curves(&m).unwrap();
        assert_eq!((c.loss.len(), c.val_bpb.len()), (30, 3));
        let out = dir.path().join("loss.png");
        plot_metrics(&m, "test run", &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(!dir.path().join("loss.tmp.png").exists());
    }
}
