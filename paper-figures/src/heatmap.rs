//! A heatmap described as data — panels of labelled rows × columns, each cell a value on one
//! shared colour scale (or a marked absence) with its text — and drawn with plotters, with a
//! colour bar.
//!
//! Invariant: every value lies inside the scale `[min, max]` and every panel has exactly
//! `rows × cols` cells ([`Heatmap::validate`], checked before drawing); the text colour is
//! chosen from the cell's luminance so it stays readable on any fill.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::chart::{draw_err, ChartError, TickFormat};
use crate::style;

/// One cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// A value on the colour scale, with the text written in the cell.
    Value { value: f64, text: String },
    /// No value (e.g. a method whose prerequisite is absent): a neutral fill and a text.
    Absent { text: String },
    /// A run that failed: a warning fill and a text.
    Failed { text: String },
}

#[derive(Clone, Debug)]
pub struct HeatmapPanel {
    pub title: String,
    /// Row labels, top to bottom.
    pub rows: Vec<String>,
    /// Column labels, left to right.
    pub cols: Vec<String>,
    /// `cells[row][col]`.
    pub cells: Vec<Vec<Cell>>,
}

#[derive(Clone, Debug)]
pub struct Heatmap {
    pub title: String,
    pub panels: Vec<HeatmapPanel>,
    pub x_label: String,
    pub y_label: String,
    /// The colour bar's label, e.g. "recall".
    pub scale_label: String,
    pub min: f64,
    pub max: f64,
    pub format: TickFormat,
    /// Explained under the colour bar: what the neutral and the warning fills mean.
    pub absent_note: String,
    pub failed_note: String,
    pub size: (u32, u32),
}

pub const ABSENT_FILL: RGBColor = RGBColor(232, 232, 232);
pub const FAILED_FILL: RGBColor = RGBColor(0xE6, 0x9F, 0x00);

impl Heatmap {
    pub fn validate(&self) -> Result<(), ChartError> {
        let bad = |panel: &str, reason: String| Err(ChartError::Invalid { panel: panel.into(), reason });
        if self.panels.is_empty() {
            return bad(&self.title, "no panels".into());
        }
        if !(self.min.is_finite() && self.max.is_finite() && self.min < self.max) {
            return bad(&self.title, format!("colour scale {}..{} is empty", self.min, self.max));
        }
        for p in &self.panels {
            if p.rows.is_empty() || p.cols.is_empty() {
                return bad(&p.title, "no rows or no columns".into());
            }
            if p.cells.len() != p.rows.len() || p.cells.iter().any(|r| r.len() != p.cols.len()) {
                return bad(&p.title, format!("cells are not {} x {}", p.rows.len(), p.cols.len()));
            }
            for (i, row) in p.cells.iter().enumerate() {
                for (j, c) in row.iter().enumerate() {
                    if let Cell::Value { value, .. } = c {
                        if !(value.is_finite() && *value >= self.min && *value <= self.max) {
                            return bad(&p.title, format!("cell ({}, {}) = {value} outside the scale", p.rows[i], p.cols[j]));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Pixels for the row labels of the first panel (and its axis description).
    fn label_width(&self) -> u32 {
        let longest = self.panels.first().map_or(0, |p| longest(&p.rows));
        longest as u32 * 11 + 40
    }

    /// The fill of a value.
    pub fn colour(&self, v: f64) -> RGBColor {
        style::sequential((v - self.min) / (self.max - self.min))
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ChartError>
    where
        DB::ErrorType: 'static,
    {
        self.validate()?;
        let body = style::titled(root, &self.title).map_err(draw_err)?;
        let (w, _) = body.dim_in_pixel();
        let (grid, bar) = body.split_horizontally(w.saturating_sub(260));
        // The first panel also holds the row labels: it gets their width on top of its share.
        let label_w = self.label_width();
        let (gw, _) = grid.dim_in_pixel();
        let share = gw.saturating_sub(label_w) / self.panels.len() as u32;
        let mut rest = grid;
        for (i, p) in self.panels.iter().enumerate() {
            if i + 1 == self.panels.len() {
                self.draw_panel(p, &rest, i == 0)?;
                break;
            }
            let (left, right) = rest.split_horizontally(share + if i == 0 { label_w } else { 0 });
            self.draw_panel(p, &left, i == 0)?;
            rest = right;
        }
        self.draw_scale(&bar)?;
        root.present().map_err(draw_err)
    }

    fn draw_panel<DB: DrawingBackend>(&self, p: &HeatmapPanel, area: &DrawingArea<DB, Shift>, first: bool) -> Result<(), ChartError>
    where
        DB::ErrorType: 'static,
    {
        let nr = p.rows.len();
        let y_area = if first { self.label_width() } else { 12 };
        let mut chart = ChartBuilder::on(area)
            .caption(&p.title, style::panel_font())
            .margin(style::PANEL_MARGIN)
            .x_label_area_size(style::X_LABEL_AREA)
            .y_label_area_size(y_area as u32)
            .build_cartesian_2d(Categories::new(p.cols.clone()), Categories::new(p.rows.iter().rev().cloned().collect()))
            .map_err(draw_err)?;
        let rows_rev: Vec<String> = p.rows.iter().rev().cloned().collect();
        let xl = |v: &f64| label_at(&p.cols, *v);
        let yl = |v: &f64| if first { label_at(&rows_rev, *v) } else { String::new() };
        let mut mesh = chart.configure_mesh();
        mesh.disable_mesh()
            .x_desc(&self.x_label)
            .x_label_formatter(&xl)
            .y_label_formatter(&yl)
            .label_style(style::tick_font())
            .axis_desc_style(style::axis_font());
        if first {
            mesh.y_desc(&self.y_label);
        }
        mesh.draw().map_err(draw_err)?;
        for (i, row) in p.cells.iter().enumerate() {
            let y = (nr - 1 - i) as f64;
            for (j, cell) in row.iter().enumerate() {
                let x = j as f64;
                let (fill, text) = match cell {
                    Cell::Value { value, text } => (self.colour(*value), text),
                    Cell::Absent { text } => (ABSENT_FILL, text),
                    Cell::Failed { text } => (FAILED_FILL, text),
                };
                chart
                    .draw_series(std::iter::once(Rectangle::new([(x + 0.03, y + 0.05), (x + 0.97, y + 0.95)], fill.filled())))
                    .map_err(draw_err)?;
                let lum = 0.299 * fill.0 as f64 + 0.587 * fill.1 as f64 + 0.114 * fill.2 as f64;
                let ink = if lum < 128.0 { WHITE } else { BLACK };
                let font = style::legend_font().color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(text.clone(), (x + 0.5, y + 0.5), font)))
                    .map_err(draw_err)?;
            }
        }
        Ok(())
    }

    fn draw_scale<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), ChartError>
    where
        DB::ErrorType: 'static,
    {
        let (_, h) = area.dim_in_pixel();
        let h = h as i32;
        let (x0, x1) = (30, 70);
        let (top, bottom) = (90, h - 260);
        if bottom <= top + 20 {
            return Ok(());
        }
        area.draw(&Text::new(self.scale_label.clone(), (x0 - 10, top - 45), style::axis_font())).map_err(draw_err)?;
        let steps = (bottom - top).max(1);
        for k in 0..steps {
            let t = 1.0 - k as f64 / steps as f64;
            let c = self.colour(self.min + t * (self.max - self.min));
            area.draw(&Rectangle::new([(x0, top + k), (x1, top + k + 1)], c.filled())).map_err(draw_err)?;
        }
        area.draw(&Rectangle::new([(x0, top), (x1, bottom)], BLACK.stroke_width(1))).map_err(draw_err)?;
        for k in 0..=4 {
            let t = k as f64 / 4.0;
            let y = bottom - ((bottom - top) as f64 * t).round() as i32;
            let v = self.min + t * (self.max - self.min);
            area.draw(&PathElement::new(vec![(x1, y), (x1 + 8, y)], BLACK)).map_err(draw_err)?;
            let font = style::tick_font().pos(Pos::new(HPos::Left, VPos::Center));
            area.draw(&Text::new(self.format.format(v), (x1 + 14, y), font)).map_err(draw_err)?;
        }
        let mut y = bottom + 40;
        for (fill, note) in [(ABSENT_FILL, &self.absent_note), (FAILED_FILL, &self.failed_note)] {
            if note.is_empty() {
                continue;
            }
            area.draw(&Rectangle::new([(x0, y), (x0 + 28, y + 28)], fill.filled())).map_err(draw_err)?;
            area.draw(&Rectangle::new([(x0, y), (x0 + 28, y + 28)], BLACK.stroke_width(1))).map_err(draw_err)?;
            for (i, line) in note.lines().enumerate() {
                let font = style::legend_font().pos(Pos::new(HPos::Left, VPos::Top));
                area.draw(&Text::new(line.to_string(), (x0 + 38, y + 4 + 24 * i as i32), font)).map_err(draw_err)?;
            }
            y += 40 + 24 * note.lines().count().saturating_sub(1) as i32 + 12;
        }
        Ok(())
    }
}

fn longest(labels: &[String]) -> usize {
    labels.iter().map(|l| l.chars().count()).max().unwrap_or(0)
}

/// The label of the category whose centre is `v` (`""` between categories).
pub fn label_at(labels: &[String], v: f64) -> String {
    let i = (v - 0.5).round();
    if (v - (i + 0.5)).abs() < 1e-6 && i >= 0.0 {
        labels.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// A category axis: positions `0..n`, one tick at each category's centre `i + 0.5`.
pub struct Categories {
    labels: Vec<String>,
}

impl Categories {
    pub fn new(labels: Vec<String>) -> Self {
        Categories { labels }
    }
}

impl Ranged for Categories {
    type ValueType = f64;
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let n = self.labels.len().max(1) as f64;
        limit.0 + ((limit.1 - limit.0) as f64 * (v / n)).round() as i32
    }
    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.labels.len()).map(|i| i as f64 + 0.5).collect()
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.labels.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(cells: Vec<Vec<Cell>>) -> Heatmap {
        Heatmap {
            title: "t".into(),
            panels: vec![HeatmapPanel { title: "p".into(), rows: vec!["a".into()], cols: vec!["x".into(), "y".into()], cells }],
            x_label: "x".into(),
            y_label: "y".into(),
            scale_label: "s".into(),
            min: 0.0,
            max: 1.0,
            format: TickFormat::Number,
            absent_note: String::new(),
            failed_note: String::new(),
            size: (800, 600),
        }
    }

    #[test]
    fn shape_and_range_are_checked() {
        let v = |value: f64| Cell::Value { value, text: String::new() };
        assert!(map(vec![vec![v(0.0), Cell::Absent { text: "n/a".into() }]]).validate().is_ok());
        assert!(map(vec![vec![v(0.0)]]).validate().is_err());
        assert!(map(vec![vec![v(0.0), v(1.5)]]).validate().is_err());
        assert!(map(vec![vec![v(f64::NAN), v(0.5)]]).validate().is_err());
    }

    #[test]
    fn category_labels_at_centres_only() {
        let l = vec!["a".to_string(), "b".to_string()];
        assert_eq!(label_at(&l, 0.5), "a");
        assert_eq!(label_at(&l, 1.5), "b");
        assert_eq!(label_at(&l, 1.0), "");
        assert_eq!(label_at(&l, 2.5), "");
    }
}
