//! Charts of a run as PNG files: learning curves, the objective's terms, active units and the
//! KL of each latent dimension, drawn with `plotters` on an RGB bitmap.
//!
//! Text is drawn from an embedded font (DejaVu Sans, `assets/fonts/`), so that charts come out
//! the same on machines without any installed font. Every file is written atomically.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, RGBColor, register_font};

use crate::error::{Error, Result};

/// Chart size in pixels.
pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 540;
/// Height of each panel of a chart with several stacked panels.
pub const PANEL_HEIGHT: u32 = 400;

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

const TITLE_PX: f64 = 22.0;
const DESC_PX: f64 = 17.0;
const TICK_PX: f64 = 14.0;
const LEGEND_PX: f64 = 15.0;
/// Left area for the y tick labels and the y axis description, bottom area for the x ones.
const Y_AREA: u32 = 78;
const X_AREA: u32 = 52;
const MARGIN: u32 = 16;
/// Series of at most this many points are drawn with a marker at each point.
const MARKERS_UP_TO: usize = 30;

/// Tableau-like palette: distinct on white and for most colour-blind readers.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// An error about `path`, phrased as `path: detail`.
fn file_error(path: &Path, detail: impl Into<String>) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, detail.into()),
    )
}

/// Registers the embedded font with `plotters` once per process.
fn ensure_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "the embedded chart font could not be parsed".to_string())
        })
        .clone()
}

/// Draws on a white `WIDTH`×`height` canvas with `draw`, encodes it as PNG and writes it to
/// `path` atomically.
fn render_png<F>(path: &Path, height: u32, draw: F) -> Result<()>
where
    F: FnOnce(&Area<'_>) -> std::result::Result<(), String>,
{
    ensure_font().map_err(|e| file_error(path, e))?;
    let mut rgb = vec![0u8; WIDTH as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|e| file_error(path, format!("drawing the chart failed: {e}")))?;
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(Cursor::new(&mut bytes), WIDTH, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let encode = |e: png::EncodingError| file_error(path, format!("PNG encoding failed: {e}"));
        let mut writer = enc.write_header().map_err(encode)?;
        writer.write_image_data(&rgb).map_err(encode)?;
        writer.finish().map_err(encode)?;
    }
    crate::fsio::write_atomic(path, &bytes)
}

fn font(px: f64) -> FontDesc<'static> {
    (FAMILY, px).into_font()
}

/// A tick label on an axis whose ticks are `step` apart: as many decimals as the step needs
/// (none for integer steps), scientific notation for very small or very large steps, and a
/// plain `0` for zero.
fn tick(v: f64, step: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if v.abs() < step.abs() * 1e-9 || v == 0.0 {
        return "0".into();
    }
    if step.is_finite() && step > 0.0 && !(1e-4..1e6).contains(&step) {
        return format!("{v:.1e}");
    }
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        0
    };
    format!("{v:.decimals$}")
}

/// `lo..hi` widened so that it is never empty and has a little room on both sides.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

/// The step between "nice" ticks (1, 2 or 5 times a power of ten) that gives at most `max`
/// ticks over `span`.
fn nice_step(span: f64, max: usize) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / max.max(1) as f64;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// Tick positions: multiples of a nice step inside `lo..=hi` (none where the range is too
/// wide or too far from zero for its width to be ticked in `f64`).
fn ticks(lo: f64, hi: f64, max: usize) -> (Vec<f64>, f64) {
    let step = nice_step(hi - lo, max);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    if last.saturating_sub(first) > 4 * max as i64 + 4 {
        return (Vec::new(), step);
    }
    let pts = (first..=last).map(|i| i as f64 * step).collect();
    (pts, step)
}

/// A linear axis over `lo..hi` whose ticks are exactly `keys`.
struct Axis {
    lo: f64,
    hi: f64,
    keys: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
        let px = f64::from(limit.0) + f64::from(limit.1 - limit.0) * t;
        // Far outside values (clipped anyway) stay within i32.
        px.clamp(-1e6, 1e6).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match hint.weight() {
            plotters::coord::ranged1d::KeyPointWeight::Bold => self.keys.clone(),
            plotters::coord::ranged1d::KeyPointWeight::Any => Vec::new(),
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Vertical bars, one per label, on a value axis from 0 (or the smallest value, if negative)
/// to the largest. Non-finite values leave their slot empty.
pub fn bar_chart_png(
    path: &Path,
    title: &str,
    labels: &[String],
    values: &[f64],
    y_label: &str,
) -> Result<()> {
    bar_chart(path, title, "", labels, values, y_label)
}

/// [`bar_chart_png`] with a description of the x axis (none if empty).
fn bar_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    labels: &[String],
    values: &[f64],
    y_label: &str,
) -> Result<()> {
    if labels.len() != values.len() {
        return Err(file_error(
            path,
            format!(
                "bar chart `{title}`: {} labels for {} values",
                labels.len(),
                values.len()
            ),
        ));
    }
    if values.is_empty() {
        return Err(file_error(path, format!("bar chart `{title}`: no bars")));
    }
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(0.0f64, f64::min);
    let hi = finite.fold(0.0f64, f64::max);
    let (lo, hi) = if hi > lo {
        let pad = (hi - lo) * 0.06;
        (
            if lo < 0.0 { lo - pad } else { 0.0 },
            if hi > 0.0 { hi + pad } else { 0.0 },
        )
    } else {
        (0.0, 1.0)
    };
    let (y_ticks, y_step) = ticks(lo, hi, 8);
    let n = values.len();
    // Label every k-th bar so that the labels do not touch.
    ensure_font().map_err(|e| file_error(path, e))?;
    let widest = labels
        .iter()
        .map(|l| font(TICK_PX).box_size(l).map(|(w, _)| w).unwrap_or(0))
        .max()
        .unwrap_or(0);
    let plot_w = f64::from(WIDTH - Y_AREA - 2 * MARGIN);
    let fits = ((plot_w / (f64::from(widest) + 18.0)).floor() as usize).max(1);
    let every = if n <= fits {
        1
    } else {
        nice_step(n as f64, fits).ceil().max(1.0) as usize
    };
    let x_keys: Vec<f64> = (0..n).step_by(every).map(|i| i as f64).collect();

    render_png(path, HEIGHT, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(TITLE_PX))
            .margin(MARGIN)
            .x_label_area_size(X_AREA)
            .y_label_area_size(Y_AREA)
            .build_cartesian_2d(
                Axis {
                    lo: -0.5,
                    hi: n as f64 - 0.5,
                    keys: x_keys,
                },
                Axis {
                    lo,
                    hi,
                    keys: y_ticks,
                },
            )
            .map_err(|e| e.to_string())?;
        let mut mesh = chart.configure_mesh();
        if !x_label.is_empty() {
            mesh.x_desc(x_label);
        }
        mesh.disable_x_mesh()
            .y_desc(y_label)
            .axis_desc_style(font(DESC_PX))
            .label_style(font(TICK_PX))
            .x_label_formatter(&|v| {
                let i = v.round();
                if i >= 0.0 && (i as usize) < labels.len() {
                    labels[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| tick(*v, y_step))
            .light_line_style(WHITE)
            .bold_line_style(BLACK.mix(0.12))
            .draw()
            .map_err(|e| e.to_string())?;
        // Bars a few pixels wide touch; wider ones keep a gap.
        let half = if plot_w / (n as f64) < 8.0 { 0.5 } else { 0.38 };
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, v)| {
                        let x = i as f64;
                        let color = if *v < 0.0 { PALETTE[3] } else { PALETTE[0] };
                        Rectangle::new([(x - half, 0.0), (x + half, *v)], color.filled())
                    }),
            )
            .map_err(|e| e.to_string())?;
        if lo < 0.0 {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(-0.5, 0.0), (n as f64 - 0.5, 0.0)],
                    BLACK.stroke_width(1),
                )))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// One panel of line charts: named series against a shared x axis, with a legend.
struct Lines<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: &'a [(String, Vec<(f64, f64)>)],
    /// The value axis starts at zero (counts).
    y_from_zero: bool,
    /// Integer x ticks only (epochs).
    x_integers: bool,
}

type Area<'b> = DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>;

fn finite_point(p: &(f64, f64)) -> bool {
    p.0.is_finite() && p.1.is_finite()
}

impl Lines<'_> {
    /// Whether any series has a point to draw.
    fn has_points(&self) -> bool {
        self.series
            .iter()
            .any(|(_, pts)| pts.iter().any(finite_point))
    }

    /// Draws the panel on `area`.
    fn draw(&self, area: &Area<'_>) -> std::result::Result<(), String> {
        let all: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|(_, pts)| pts.iter().filter(|p| finite_point(p)).copied())
            .collect();
        if all.is_empty() {
            return Err(format!("`{}`: no finite points to draw", self.title));
        }
        let fold = |f: fn(&(f64, f64)) -> f64| {
            all.iter()
                .map(f)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                })
        };
        let (x_min, x_max) = fold(|p| p.0);
        let (y_min, y_max) = fold(|p| p.1);
        // The x axis spans the points (an integer range at least one wide), with a sliver of
        // room so that the end markers are not cut by the axes.
        let (x_min, x_max) = if x_max > x_min {
            (x_min, x_max)
        } else {
            (x_min - 1.0, x_max + 1.0)
        };
        let x_pad = (x_max - x_min) * 0.02;
        let (x_lo, x_hi) = (x_min - x_pad, x_max + x_pad);
        let (mut y_lo, mut y_hi) = padded(y_min, y_max);
        if self.y_from_zero && y_min >= 0.0 {
            // Zero just above the axis, so that markers at zero show whole.
            y_hi = y_hi.max(1.0);
            y_lo = -0.03 * y_hi;
        }
        // Headroom for the legend (upper right), so that it does not hide the lines.
        let shown = self
            .series
            .iter()
            .filter(|(_, p)| p.iter().any(finite_point))
            .count();
        let (_, area_h) = area.dim_in_pixel();
        let plot_h = f64::from(area_h) - f64::from(X_AREA + 2 * MARGIN) - TITLE_PX * 1.8;
        let legend_h = shown as f64 * (LEGEND_PX + 6.0) + 20.0;
        y_hi += (y_hi - y_lo) * legend_h / (plot_h - legend_h).max(plot_h * 0.25).max(1.0);

        let max_y_ticks = ((plot_h / 45.0) as usize).clamp(3, 10);
        let (mut x_keys, mut x_step) = ticks(x_min, x_max, 12);
        if self.x_integers && x_step < 1.0 {
            x_keys.retain(|x| x.fract() == 0.0);
            x_step = 1.0;
        }
        let (mut y_keys, mut y_step) = ticks(y_lo, y_hi, max_y_ticks);
        if self.y_from_zero && y_step < 1.0 {
            y_keys.retain(|y| y.fract() == 0.0);
            y_step = 1.0;
        }

        let mut chart = ChartBuilder::on(area)
            .caption(self.title, font(TITLE_PX))
            .margin(MARGIN)
            .x_label_area_size(X_AREA)
            .y_label_area_size(Y_AREA)
            .build_cartesian_2d(
                Axis {
                    lo: x_lo,
                    hi: x_hi,
                    keys: x_keys,
                },
                Axis {
                    lo: y_lo,
                    hi: y_hi,
                    keys: y_keys,
                },
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .axis_desc_style(font(DESC_PX))
            .label_style(font(TICK_PX))
            .x_label_formatter(&|v| tick(*v, x_step))
            .y_label_formatter(&|v| tick(*v, y_step))
            .light_line_style(WHITE)
            .bold_line_style(BLACK.mix(0.12))
            .draw()
            .map_err(|e| e.to_string())?;
        for (k, (name, pts)) in self.series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let style = color.stroke_width(2);
            // Points that are not finite are left out; the line joins the others (an
            // evaluation made every few epochs reads as one line).
            let kept: Vec<(f64, f64)> = pts.iter().filter(|p| finite_point(p)).copied().collect();
            if kept.is_empty() {
                continue;
            }
            // Markers where there are few points, so that a lone point still shows.
            let size = if kept.len() <= MARKERS_UP_TO { 3 } else { 0 };
            chart
                .draw_series(LineSeries::new(kept, style).point_size(size))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(font(LEGEND_PX))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .margin(8)
            .draw()
            .map_err(|e| e.to_string())
    }
}

/// Several named series against a shared x axis, with a legend. Points whose x or y is not
/// finite are left out, and the line joins the points on either side.
pub fn line_chart_png(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y_label: &str,
) -> Result<()> {
    let lines = Lines {
        title,
        x_label,
        y_label,
        series,
        y_from_zero: false,
        x_integers: false,
    };
    panels_png(path, &[lines])
}

/// One panel of [`scatter_panels_png`]: points, and curves drawn over them.
#[derive(Clone, Debug, Default)]
pub struct Scatter {
    pub title: String,
    pub points: Vec<(f64, f64)>,
    pub curves: Vec<Vec<(f64, f64)>>,
}

/// Height of a row of [`scatter_panels_png`]'s panels.
const SCATTER_ROW: u32 = 440;

/// Panels of scattered points (blue) with curves over them (red), two to a row, under one
/// title. Every panel has the same axes, x and y over the same span (so that circles look
/// round), fitted to every finite point and curve. Non-finite points are left out.
pub fn scatter_panels_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    panels: &[Scatter],
) -> Result<()> {
    if panels.is_empty() {
        return Err(file_error(
            path,
            format!("scatter chart `{title}`: no panels"),
        ));
    }
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = panels
        .iter()
        .flat_map(|p| p.points.iter().chain(p.curves.iter().flatten()))
        .filter(finite)
        .copied()
        .collect();
    if all.is_empty() {
        return Err(file_error(
            path,
            format!("scatter chart `{title}`: no finite point"),
        ));
    }
    let span = |f: fn(&(f64, f64)) -> f64| {
        let lo = all.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = all.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let ((x0, x1), (y0, y1)) = (span(|p| p.0), span(|p| p.1));
    let half = ((x1 - x0).max(y1 - y0) * 0.5).max(1e-9) * 1.08;
    let (cx, cy) = ((x0 + x1) * 0.5, (y0 + y1) * 0.5);
    let ((xlo, xhi), (ylo, yhi)) = ((cx - half, cx + half), (cy - half, cy + half));
    let (x_keys, x_step) = ticks(xlo, xhi, 5);
    let (y_keys, y_step) = ticks(ylo, yhi, 5);
    let rows = panels.len().div_ceil(2);
    let height = SCATTER_ROW
        .saturating_mul(u32::try_from(rows).unwrap_or(u32::MAX))
        .saturating_add(40);
    render_png(path, height, |root| {
        let body = root
            .titled(title, font(TITLE_PX))
            .map_err(|e| e.to_string())?;
        let cells = body.split_evenly((rows, 2));
        for (panel, cell) in panels.iter().zip(&cells) {
            let mut chart = ChartBuilder::on(cell)
                .caption(&panel.title, font(DESC_PX))
                .margin(MARGIN)
                .x_label_area_size(X_AREA - 10)
                .y_label_area_size(Y_AREA - 10)
                .build_cartesian_2d(
                    Axis {
                        lo: xlo,
                        hi: xhi,
                        keys: x_keys.clone(),
                    },
                    Axis {
                        lo: ylo,
                        hi: yhi,
                        keys: y_keys.clone(),
                    },
                )
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .axis_desc_style(font(DESC_PX))
                .label_style(font(TICK_PX))
                .x_label_formatter(&|v| tick(*v, x_step))
                .y_label_formatter(&|v| tick(*v, y_step))
                .light_line_style(WHITE)
                .bold_line_style(BLACK.mix(0.12))
                .draw()
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(
                    panel
                        .points
                        .iter()
                        .filter(finite)
                        .map(|&p| Circle::new(p, 2, PALETTE[0].mix(0.45).filled())),
                )
                .map_err(|e| e.to_string())?;
            for curve in &panel.curves {
                let pts: Vec<(f64, f64)> = curve.iter().filter(finite).copied().collect();
                chart
                    .draw_series(LineSeries::new(pts, PALETTE[3].stroke_width(2)))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

/// The height of a chart of `n` stacked panels: [`HEIGHT`] for one, [`PANEL_HEIGHT`] each for
/// more.
pub fn panels_height(n: usize) -> u32 {
    if n <= 1 {
        HEIGHT
    } else {
        PANEL_HEIGHT.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// Panels stacked top to bottom in one chart; panels without any point are left out.
fn panels_png(path: &Path, panels: &[Lines<'_>]) -> Result<()> {
    let shown: Vec<&Lines<'_>> = panels.iter().filter(|p| p.has_points()).collect();
    if shown.is_empty() {
        let titles: Vec<&str> = panels.iter().map(|p| p.title).collect();
        return Err(file_error(
            path,
            format!(
                "line chart `{}`: no finite points to draw",
                titles.join("`, `")
            ),
        ));
    }
    let panels = shown;
    render_png(path, panels_height(panels.len()), |root| {
        let areas = root.split_evenly((panels.len(), 1));
        for (panel, area) in panels.iter().zip(&areas) {
            panel.draw(area)?;
        }
        Ok(())
    })
}

/// One epoch's line of `metrics.jsonl`: the numeric fields (null becomes NaN) and the KL per
/// dimension.
struct EpochLine {
    epoch: f64,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl EpochLine {
    fn num(&self, key: &str) -> f64 {
        self.fields
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    }
}

/// Reads `metrics.jsonl`: one JSON object per line (blank lines skipped), each with a numeric
/// `epoch`; numeric fields may be null.
fn read_metrics(path: &Path) -> Result<Vec<EpochLine>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(
                e.kind(),
                format!("cannot read the run's metrics ({e}); is this a run directory?"),
            ),
        )
    })?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| file_error(path, format!("line {no} is not JSON: {e}")))?;
        let serde_json::Value::Object(fields) = value else {
            return Err(file_error(path, format!("line {no} is not a JSON object")));
        };
        for (key, v) in &fields {
            let numeric = key == "epoch"
                || key == "active_units"
                || key.starts_with("train_")
                || (key.starts_with("test_") && key != "test_kl_per_dim");
            if numeric && !(v.is_number() || v.is_null()) {
                return Err(file_error(
                    path,
                    format!("line {no}: field `{key}` is {v}, not a number"),
                ));
            }
        }
        if let Some(v) = fields.get("test_kl_per_dim")
            && !v
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x.is_number() || x.is_null()))
        {
            return Err(file_error(
                path,
                format!("line {no}: field `test_kl_per_dim` is not an array of numbers"),
            ));
        }
        let epoch = fields
            .get("epoch")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| {
                file_error(path, format!("line {no}: field `epoch` is missing or null"))
            })?;
        lines.push(EpochLine { epoch, fields });
    }
    if lines.is_empty() {
        return Err(file_error(path, "no epochs (the file is empty)"));
    }
    Ok(lines)
}

/// The series `(epoch, field)` over all epochs; `None` if the field has no finite value.
fn series_of(lines: &[EpochLine], key: &str, name: &str) -> Option<(String, Vec<(f64, f64)>)> {
    let pts: Vec<(f64, f64)> = lines.iter().map(|l| (l.epoch, l.num(key))).collect();
    pts.iter()
        .any(|p| p.1.is_finite())
        .then(|| (name.to_string(), pts))
}

/// How an objective term's name reads in a legend.
fn term_name(term: &str) -> String {
    match term {
        "kl" => "KL".into(),
        "mi" => "MI".into(),
        "tc" => "TC".into(),
        "dim_kl" => "dimension-wise KL".into(),
        other => other.replace('_', " "),
    }
}

/// Charts of the run in `dir` from its `metrics.jsonl`, written next to it:
///
/// - `curves.png`: train loss, test −ELBO (and test −IWAE where evaluated) per epoch;
/// - `terms.png`: the objective's train terms (`train_<term>`) with the test reconstruction
///   and KL, in two panels (reconstruction; the other terms);
/// - `active_units.png`: active latent units per epoch;
/// - `kl_per_dim.png`: the last epoch's test KL of each latent dimension (when recorded).
///
/// Returns the files written.
pub fn run_charts(dir: &Path) -> Result<Vec<PathBuf>> {
    let metrics = dir.join("metrics.jsonl");
    let lines = read_metrics(&metrics)?;
    let mut written = Vec::new();
    let panel = |title, y_label, series| Lines {
        title,
        x_label: "epoch",
        y_label,
        series,
        y_from_zero: false,
        x_integers: true,
    };

    let curves: Vec<_> = [
        series_of(&lines, "train_loss", "train loss"),
        series_of(&lines, "test_neg_elbo", "test −ELBO"),
        series_of(&lines, "test_neg_iwae", "test −IWAE"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !curves.is_empty() {
        let path = dir.join("curves.png");
        panels_png(
            &path,
            &[panel("Learning curves", "nats per sample", &curves)],
        )?;
        written.push(path);
    }

    let mut term_keys: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.fields.keys())
        .filter_map(|k| k.strip_prefix("train_"))
        .filter(|k| *k != "loss" && *k != "seconds")
        .collect();
    // The KL first, then the other known terms in the order the objectives list them, then
    // any others by name.
    let rank = |k: &str| {
        ["recon", "kl", "capacity", "mi", "tc", "dim_kl"]
            .iter()
            .position(|t| *t == k)
            .unwrap_or(usize::MAX)
    };
    term_keys.sort_unstable_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    term_keys.dedup();
    let (mut recon, mut others) = (Vec::new(), Vec::new());
    for k in term_keys {
        let s = series_of(
            &lines,
            &format!("train_{k}"),
            &format!("train {}", term_name(k)),
        );
        if k == "recon" {
            recon.extend(s);
        } else {
            others.extend(s);
            if k == "kl" {
                others.extend(series_of(&lines, "test_kl", "test KL"));
            }
        }
    }
    recon.extend(series_of(&lines, "test_recon", "test recon"));
    if !others.iter().any(|(name, _)| name == "test KL") {
        others.extend(series_of(&lines, "test_kl", "test KL"));
    }
    if !recon.is_empty() || !others.is_empty() {
        let path = dir.join("terms.png");
        panels_png(
            &path,
            &[
                panel("Reconstruction", "nats per sample", &recon),
                panel("KL and the other terms", "nats per sample", &others),
            ],
        )?;
        written.push(path);
    }

    if let Some(au) = series_of(&lines, "active_units", "active units") {
        let path = dir.join("active_units.png");
        let au = [au];
        let mut p = panel("Active latent units (test)", "units", &au);
        p.y_from_zero = true;
        panels_png(&path, &[p])?;
        written.push(path);
    }

    if let Some(last) = lines.last()
        && let Some(kl) = last
            .fields
            .get("test_kl_per_dim")
            .and_then(serde_json::Value::as_array)
        && !kl.is_empty()
    {
        let values: Vec<f64> = kl.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect();
        let labels: Vec<String> = (0..values.len()).map(|i| format!("z{i}")).collect();
        let path = dir.join("kl_per_dim.png");
        bar_chart(
            &path,
            &format!(
                "Test KL per latent dimension (epoch {})",
                tick(last.epoch, 1.0)
            ),
            "latent dimension",
            &labels,
            &values,
            "KL (nats)",
        )?;
        written.push(path);
    }
    Ok(written)
}
