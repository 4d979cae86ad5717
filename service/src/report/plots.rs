//! PNG plots drawn with plotters into an RGB buffer and encoded with `image`.

use crate::learner::metrics::ConfusionMatrix;
use crate::learner::LrFindResult;
use crate::train::run_dir::MetricsLine;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: Once = Once::new();

/// DejaVu Sans (see assets/DejaVuSans.LICENSE), compiled in so plots render anywhere.
fn ensure_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// A plot that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing a plot failed: {0}")]
    Draw(String),
    #[error("encoding a PNG failed: {0}")]
    Encode(String),
    #[error("{path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// plotters' errors carry the backend's error type: keep their message.
fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

type PlotResult = Result<(), PlotError>;

fn render(
    path: &Path,
    w: u32,
    h: u32,
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> PlotResult,
) -> PlotResult {
    ensure_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(root.clone())?;
        root.present().map_err(draw_err)?;
    }
    let png = encode_png_rgb(&buf, w, h)?;
    let tmp = path.with_extension("png.tmp");
    let write_err = |source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, png).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)
}

pub fn encode_png_rgb(buf: &[u8], w: u32, h: u32) -> Result<Vec<u8>, PlotError> {
    let img = image::RgbImage::from_raw(w, h, buf.to_vec())
        .ok_or_else(|| PlotError::Encode("bad buffer size".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

fn range(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = v
        .clone()
        .filter(|x| x.is_finite())
        .fold(f64::INFINITY, f64::min);
    let hi = v
        .filter(|x| x.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        (0.0, 1.0)
    } else if (hi - lo).abs() < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi + (hi - lo) * 0.05)
    }
}

/// Smoothed loss against learning rate (log scale), with the suggestions marked.
pub fn lr_find_png(r: &LrFindResult, path: &Path) -> PlotResult {
    render(path, 800, 500, |root| {
        let n = r.lrs.len().saturating_sub(5).max(1.min(r.lrs.len()));
        let (lrs, losses) = (&r.lrs[..n], &r.losses[..n]);
        let (lo, hi) = range(losses.iter().copied());
        let x0 = lrs.first().copied().unwrap_or(1e-7);
        let x1 = lrs.last().copied().unwrap_or(10.0).max(x0 * 10.0);
        let mut c = ChartBuilder::on(&root)
            .caption("lr_find", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x0..x1).log_scale(), lo..hi)
            .map_err(draw_err)?;
        c.configure_mesh()
            .x_desc("learning rate")
            .y_desc("loss (smoothed)")
            .draw()
            .map_err(draw_err)?;
        c.draw_series(LineSeries::new(
            lrs.iter().copied().zip(losses.iter().copied()),
            &BLUE,
        ))
        .map_err(draw_err)?;
        if let Some(s) = r.suggestions {
            for (lr, color, label) in [
                (s.valley, RED, "valley"),
                (s.steep, GREEN, "steep"),
                (s.minimum, MAGENTA, "min/10"),
            ] {
                let y = lrs
                    .iter()
                    .zip(losses)
                    .min_by(|a, b| {
                        (a.0.ln() - lr.ln())
                            .abs()
                            .total_cmp(&(b.0.ln() - lr.ln()).abs())
                    })
                    .map(|p| *p.1)
                    .unwrap_or(lo);
                c.draw_series(std::iter::once(Circle::new((lr, y), 6, color.filled())))
                    .map_err(draw_err)?
                    .label(format!("{label} {lr:.1e}"))
                    .legend(move |(x, y)| Circle::new((x, y), 5, color.filled()));
            }
            c.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(draw_err)?;
        }
        Ok(())
    })
}

/// Train loss per batch and validation loss per epoch (last stage's batches).
pub fn losses_png(batch_losses: &[f64], metrics: &[MetricsLine], path: &Path) -> PlotResult {
    render(path, 800, 500, |root| {
        let n = batch_losses.len().max(1) as f64;
        let valid: Vec<f64> = metrics.iter().map(|m| m.metrics.valid_loss).collect();
        let (lo, hi) = range(batch_losses.iter().copied().chain(valid.iter().copied()));
        let mut c = ChartBuilder::on(&root)
            .caption("losses", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n, lo.min(0.0)..hi)
            .map_err(draw_err)?;
        c.configure_mesh()
            .x_desc("batch (last stage)")
            .y_desc("loss")
            .draw()
            .map_err(draw_err)?;
        c.draw_series(LineSeries::new(
            batch_losses.iter().enumerate().map(|(i, &l)| (i as f64, l)),
            &BLUE,
        ))
        .map_err(draw_err)?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        let last_stage = metrics.last().map(|m| m.stage);
        let stage_valid: Vec<f64> = metrics
            .iter()
            .filter(|m| Some(m.stage) == last_stage)
            .map(|m| m.metrics.valid_loss)
            .collect();
        if !stage_valid.is_empty() {
            let per = n / stage_valid.len() as f64;
            c.draw_series(LineSeries::new(
                stage_valid
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| ((i + 1) as f64 * per, l)),
                RED.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label("valid")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        Ok(())
    })
}

/// The confusion matrix as a coloured grid with counts.
pub fn confusion_png(cm: &ConfusionMatrix, path: &Path) -> PlotResult {
    let k = cm.labels.len().max(1);
    render(path, 560, 560, |root| {
        let max = cm
            .matrix
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let root = root
            .titled("Confusion matrix", ("sans-serif", 24))
            .map_err(draw_err)?;
        let (w, h) = root.dim_in_pixel();
        let (left, top) = (140i32, 30i32);
        let cell = ((w as i32 - left - 20).min(h as i32 - top - 80) / k as i32).max(10);
        for (i, row) in cm.matrix.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let t = v as f64 / max;
                let color = RGBColor((255.0 - 200.0 * t) as u8, (255.0 - 140.0 * t) as u8, 255);
                let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    color.filled(),
                ))
                .map_err(draw_err)?;
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], BLACK))
                    .map_err(draw_err)?;
                let text_color = if t > 0.6 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    v.to_string(),
                    (x + cell / 2 - 12, y + cell / 2 - 12),
                    ("sans-serif", 28).into_font().color(&text_color),
                ))
                .map_err(draw_err)?;
            }
        }
        for (i, l) in cm.labels.iter().enumerate() {
            root.draw(&Text::new(
                l.clone(),
                (5, top + i as i32 * cell + cell / 2),
                ("sans-serif", 16),
            ))
            .map_err(draw_err)?;
            root.draw(&Text::new(
                l.clone(),
                (left + i as i32 * cell + 10, top + k as i32 * cell + 10),
                ("sans-serif", 16),
            ))
            .map_err(draw_err)?;
        }
        root.draw(&Text::new(
            "actual ↓   predicted →",
            (left, top + k as i32 * cell + 40),
            ("sans-serif", 16),
        ))
        .map_err(draw_err)?;
        Ok(())
    })
}
