//! A line chart described as data (panels, axes, series) and drawn with plotters onto any
//! backend, so one description yields both the SVG and the PNG.
//!
//! Invariant: a [`LineChart`] holds only finite values inside its axes' ranges (checked by
//! [`LineChart::validate`] before drawing), and log axes hold only positive values; ticks are
//! computed here, not by plotters, so every axis label is a round number in data units.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::style;

/// How an axis maps data to position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Powers of two get ticks (transfer sizes).
    Log2,
    /// Powers of ten get ticks.
    Log10,
}

impl Scale {
    pub fn to_pos(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log2 => v.log2(),
            Scale::Log10 => v.log10(),
        }
    }
}

/// How tick labels are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickFormat {
    /// `0.25`, `12`, `1000`.
    Number,
    /// Byte counts: `1`, `512`, `1K`, `4K`, `1M`.
    Bytes,
}

impl TickFormat {
    pub fn format(self, v: f64) -> String {
        match self {
            TickFormat::Number => format_number(v),
            TickFormat::Bytes => {
                let v = v.round() as u64;
                match v {
                    v if v >= 1 << 20 && v % (1 << 20) == 0 => format!("{}M", v >> 20),
                    v if v >= 1 << 10 && v % (1 << 10) == 0 => format!("{}K", v >> 10),
                    v => v.to_string(),
                }
            }
        }
    }
}

/// `0.0001`, `0.25`, `3`, `1000` — shortest exact form of a round tick value.
fn format_number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let s = format!("{:.6}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[derive(Clone, Debug)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
    /// Shown range in data units (`min < max`; both positive for log scales).
    pub min: f64,
    pub max: f64,
    pub format: TickFormat,
}

impl Axis {
    /// Tick values in data units: powers of the base for log scales, 1-2-5 steps for linear.
    pub fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Log2 | Scale::Log10 => {
                let base: f64 = if self.scale == Scale::Log2 { 2.0 } else { 10.0 };
                let (lo, hi) = (
                    self.scale.to_pos(self.min).ceil() as i32,
                    self.scale.to_pos(self.max).floor() as i32,
                );
                (lo..=hi).map(|e| base.powi(e)).collect()
            }
            Scale::Linear => {
                let step = nice_step((self.max - self.min) / 6.0);
                let first = (self.min / step).ceil() as i64;
                let last = (self.max / step).floor() as i64;
                (first..=last).map(|k| k as f64 * step).collect()
            }
        }
    }
}

/// The 1-2-5 × 10^k step nearest above `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Rounds `v` up to the next 1-2-5 multiple of its magnitude (for axis maxima).
pub fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let step = nice_step(v / 5.0);
    (v / step).ceil() * step
}

/// Rounds `v` down to a multiple of the 1-2-5 step that [`nice_ceil`] uses for `v` (for axis
/// minima).
pub fn nice_floor(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 0.0;
    }
    let step = nice_step(v / 5.0);
    (v / step).floor() * step
}

/// `[lo, hi]` widened by `frac` of its log2 span on each side, so markers at the ends of a log
/// axis are drawn whole.
pub fn log_padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    let pad = 2f64.powf(((hi / lo).log2() * frac).max(0.1));
    (lo / pad, hi * pad)
}

/// The least and greatest x, and the least and greatest y, of every point of `series`.
pub fn data_bounds(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    (
        (xs.clone().fold(f64::INFINITY, f64::min), xs.fold(0.0, f64::max)),
        (ys.clone().fold(f64::INFINITY, f64::min), ys.fold(0.0, f64::max)),
    )
}

/// A log-log panel of `series`, both axes on whole decades around the data, legend upper left.
pub fn log_log_panel(title: &str, x_label: &str, y_label: &str, series: Vec<Series>) -> Panel {
    let ((x0, x1), (y0, y1)) = data_bounds(&series);
    let (xmin, xmax) = decade_bounds(x0, x1, 10.0);
    let (ymin, ymax) = decade_bounds(y0, y1, 10.0);
    Panel {
        title: title.into(),
        x: Axis { label: x_label.into(), scale: Scale::Log10, min: xmin, max: xmax, format: TickFormat::Number },
        y: Axis { label: y_label.into(), scale: Scale::Log10, min: ymin, max: ymax, format: TickFormat::Number },
        series,
        legend: Some(LegendAt::UpperLeft),
    }
}

/// The smallest power of `base` ≤ `v` and the largest ≥ `w` (for log axes).
pub fn decade_bounds(v: f64, w: f64, base: f64) -> (f64, f64) {
    let lo = base.powf((v.ln() / base.ln()).floor());
    let hi = base.powf((w.ln() / base.ln()).ceil());
    (lo, if hi > lo { hi } else { lo * base })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Triangle,
}

#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub dashed: bool,
    /// Draw as a right-continuous step function (empirical CDFs).
    pub step: bool,
    pub marker: Option<Marker>,
    pub points: Vec<(f64, f64)>,
}

/// Where a panel's legend goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegendAt {
    UpperLeft,
    LowerLeft,
    LowerRight,
}

#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    /// `None`: no legend (e.g. a panel repeating its neighbour's series).
    pub legend: Option<LegendAt>,
}

/// One figure: panels side by side under a title.
#[derive(Clone, Debug)]
pub struct LineChart {
    pub title: String,
    pub panels: Vec<Panel>,
    /// Rows the panels are laid out in (filled left to right, top to bottom).
    pub rows: usize,
    pub size: (u32, u32),
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("panel {panel:?}: {reason}")]
    Invalid { panel: String, reason: String },
    #[error("drawing: {0}")]
    Draw(String),
}

/// A drawing error as a [`ChartError`] (every chart's one conversion).
pub(crate) fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> ChartError {
    ChartError::Draw(e.to_string())
}

impl LineChart {
    /// Checks that every point can be drawn where it belongs.
    pub fn validate(&self) -> Result<(), ChartError> {
        if self.panels.is_empty() {
            return Err(ChartError::Invalid {
                panel: self.title.clone(),
                reason: "no panels".into(),
            });
        }
        for p in &self.panels {
            let bad = |reason: String| {
                Err(ChartError::Invalid {
                    panel: p.title.clone(),
                    reason,
                })
            };
            for (name, a) in [("x", &p.x), ("y", &p.y)] {
                if !(a.min.is_finite() && a.max.is_finite() && a.min < a.max) {
                    return bad(format!("{name} axis range {}..{} is empty", a.min, a.max));
                }
                if a.scale != Scale::Linear && a.min <= 0.0 {
                    return bad(format!("{name} axis is logarithmic but starts at {}", a.min));
                }
            }
            for s in &p.series {
                for &(x, y) in &s.points {
                    let inside = |a: &Axis, v: f64| v.is_finite() && v >= a.min && v <= a.max;
                    if !inside(&p.x, x) || !inside(&p.y, y) {
                        return bad(format!("series {:?}: point ({x}, {y}) outside the axes", s.label));
                    }
                }
            }
        }
        Ok(())
    }

    /// Draws the chart onto `root` (already sized).
    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ChartError>
    where
        DB::ErrorType: 'static,
    {
        self.validate()?;
        let body = style::titled(root, &self.title).map_err(draw_err)?;
        let rows = self.rows.clamp(1, self.panels.len());
        let areas = body.split_evenly((rows, self.panels.len().div_ceil(rows)));
        for (panel, area) in self.panels.iter().zip(&areas) {
            draw_panel(panel, area)?;
        }
        root.present().map_err(draw_err)
    }
}

fn draw_panel<DB: DrawingBackend>(p: &Panel, area: &DrawingArea<DB, Shift>) -> Result<(), ChartError>
where
    DB::ErrorType: 'static,
{
    let (xs, ys) = (p.x.scale, p.y.scale);
    let xr = Ticked::new(&p.x);
    let yr = Ticked::new(&p.y);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, style::panel_font())
        .margin(style::PANEL_MARGIN)
        .x_label_area_size(style::X_LABEL_AREA)
        .y_label_area_size(style::Y_LABEL_AREA)
        .build_cartesian_2d(xr, yr)
        .map_err(draw_err)?;

    let unpos = |s: Scale, v: f64| match s {
        Scale::Linear => v,
        Scale::Log2 => 2f64.powf(v),
        Scale::Log10 => 10f64.powf(v),
    };
    let xfmt = |v: &f64| p.x.format.format(unpos(xs, *v));
    let yfmt = |v: &f64| p.y.format.format(unpos(ys, *v));
    chart
        .configure_mesh()
        .x_desc(&p.x.label)
        .y_desc(&p.y.label)
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .label_style(style::tick_font())
        .axis_desc_style(style::axis_font())
        .bold_line_style(style::GRID)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(draw_err)?;

    for s in &p.series {
        let line = ShapeStyle {
            color: s.color.to_rgba(),
            filled: false,
            stroke_width: style::LINE_WIDTH,
        };
        let mut pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (xs.to_pos(x), ys.to_pos(y))).collect();
        if s.step {
            pts = step_path(&pts);
        }
        let anno = if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 10, 6, line))
                .map_err(draw_err)?
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), line))
                .map_err(draw_err)?
        };
        let dashed = s.dashed;
        anno.label(&s.label).legend(move |(x, y)| {
            if dashed {
                DashedPathElement::new(vec![(x, y), (x + 24, y)], 7, 4, line).into_dyn()
            } else {
                PathElement::new(vec![(x, y), (x + 24, y)], line).into_dyn()
            }
        });
        match s.marker {
            Some(Marker::Circle) => {
                chart
                    .draw_series(
                        s.points.iter().map(|&(x, y)| {
                            Circle::new((xs.to_pos(x), ys.to_pos(y)), style::MARKER_SIZE, line.filled())
                        }),
                    )
                    .map_err(draw_err)?;
            }
            Some(Marker::Triangle) => {
                chart
                    .draw_series(s.points.iter().map(|&(x, y)| {
                        TriangleMarker::new((xs.to_pos(x), ys.to_pos(y)), style::MARKER_SIZE + 2, line.filled())
                    }))
                    .map_err(draw_err)?;
            }
            None => {}
        }
    }
    let Some(legend) = p.legend else {
        return Ok(());
    };
    chart
        .configure_series_labels()
        .position(match legend {
            LegendAt::UpperLeft => SeriesLabelPosition::UpperLeft,
            LegendAt::LowerLeft => SeriesLabelPosition::LowerLeft,
            LegendAt::LowerRight => SeriesLabelPosition::LowerRight,
        })
        .margin(style::LEGEND_MARGIN)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .label_font(style::legend_font())
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// A plotters coordinate in axis positions (data after the scale's transform) whose tick marks
/// are exactly [`Axis::ticks`].
pub(crate) struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ticked {
    pub(crate) fn new(a: &Axis) -> Ticked {
        let pos = |v| a.scale.to_pos(v);
        Ticked {
            lo: pos(a.min),
            hi: pos(a.max),
            ticks: a.ticks().into_iter().map(pos).collect(),
        }
    }
}

impl Ranged for Ticked {
    type ValueType = f64;
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let frac = (v - self.lo) / (self.hi - self.lo);
        limit.0 + ((limit.1 - limit.0) as f64 * frac).round() as i32
    }
    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Bold points only: the light-line pass gets none.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// The outline of a right-continuous step function through `pts` (sorted by x): each value
/// holds until the next x, where the line rises vertically.
pub fn step_path(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len() * 2);
    for (i, &(x, y)) in pts.iter().enumerate() {
        if i > 0 {
            out.push((x, pts[i - 1].1));
        }
        out.push((x, y));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks() {
        let a = |scale, min, max| Axis {
            label: String::new(),
            scale,
            min,
            max,
            format: TickFormat::Number,
        };
        assert_eq!(a(Scale::Log2, 1.0, 1024.0).ticks().len(), 11);
        assert_eq!(
            a(Scale::Log10, 1e-4, 10.0).ticks(),
            vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
        );
        assert_eq!(
            a(Scale::Linear, 0.0, 1.0).ticks(),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(
            a(Scale::Linear, 0.0, 50.0).ticks(),
            vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
        );
    }

    #[test]
    fn labels() {
        assert_eq!(TickFormat::Bytes.format(1024.0), "1K");
        assert_eq!(TickFormat::Bytes.format(512.0), "512");
        assert_eq!(TickFormat::Number.format(0.6000000000000001), "0.6");
        assert_eq!(TickFormat::Number.format(1e-4), "0.0001");
        assert_eq!(TickFormat::Number.format(1000.0), "1000");
    }

    #[test]
    fn points_outside_the_axes_are_rejected() {
        let axis = |scale, min, max| Axis {
            label: "a".into(),
            scale,
            min,
            max,
            format: TickFormat::Number,
        };
        let chart = |x: Axis, pts: Vec<(f64, f64)>| LineChart {
            title: "t".into(),
            rows: 1,
            size: (100, 100),
            panels: vec![Panel {
                title: "p".into(),
                x,
                y: axis(Scale::Linear, 0.0, 1.0),
                legend: None,
                series: vec![Series {
                    label: "s".into(),
                    color: BLACK,
                    dashed: false,
                    step: false,
                    marker: None,
                    points: pts,
                }],
            }],
        };
        assert!(chart(axis(Scale::Linear, 0.0, 10.0), vec![(5.0, 0.5)])
            .validate()
            .is_ok());
        assert!(chart(axis(Scale::Linear, 0.0, 10.0), vec![(11.0, 0.5)])
            .validate()
            .is_err());
        assert!(chart(axis(Scale::Linear, 0.0, 10.0), vec![(f64::NAN, 0.5)])
            .validate()
            .is_err());
        assert!(chart(axis(Scale::Log2, 0.0, 10.0), vec![]).validate().is_err());
        assert!(chart(axis(Scale::Linear, 3.0, 3.0), vec![]).validate().is_err());
    }

    #[test]
    fn steps() {
        assert_eq!(
            step_path(&[(1.0, 0.2), (2.0, 1.0)]),
            vec![(1.0, 0.2), (2.0, 0.2), (2.0, 1.0)]
        );
        assert_eq!(nice_ceil(48.0), 50.0);
        assert_eq!(nice_floor(11.0), 10.0);
        assert_eq!(nice_floor(3.2), 3.0);
        assert_eq!(decade_bounds(0.00064, 3.6, 10.0), (0.0001, 10.0));
    }
}
