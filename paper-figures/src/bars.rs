//! Horizontal stacked bars described as data — panels of labelled rows, each row a stack of
//! coloured segments and an optional note — drawn with plotters. Horizontal, so long row labels
//! (kernel · method) stay readable.
//!
//! Invariant: segments are non-negative, each stack ends inside the value axis, and a log
//! value axis is never used for stacks ([`BarChart::validate`], checked before drawing).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::chart::{draw_err, Axis, ChartError, Scale, Ticked};
use crate::heatmap::{label_at, Categories};
use crate::style;

#[derive(Clone, Debug)]
pub struct Segment {
    pub value: f64,
    pub color: RGBColor,
}

#[derive(Clone, Debug)]
pub struct BarRow {
    pub label: String,
    /// Stacked left to right from 0.
    pub segments: Vec<Segment>,
    /// Written just right of the stack (e.g. "no answer in 60 s"), or inside its end in white
    /// when the stack leaves no room.
    pub note: Option<String>,
}

#[derive(Clone, Debug)]
pub struct BarPanel {
    pub title: String,
    /// The value axis (horizontal), linear.
    pub x: Axis,
    /// Top to bottom.
    pub rows: Vec<BarRow>,
    /// Show the row labels (the first panel of a figure whose panels share rows).
    pub row_labels: bool,
}

#[derive(Clone, Debug)]
pub struct BarChart {
    pub title: String,
    pub panels: Vec<BarPanel>,
    /// Colour keys (label, colour), in one line under the panels; empty = none.
    pub legend: Vec<(String, RGBColor)>,
    pub size: (u32, u32),
}

impl BarChart {
    pub fn validate(&self) -> Result<(), ChartError> {
        if self.panels.is_empty() {
            return Err(ChartError::Invalid { panel: self.title.clone(), reason: "no panels".into() });
        }
        for p in &self.panels {
            let bad = |reason: String| Err(ChartError::Invalid { panel: p.title.clone(), reason });
            if p.x.scale != Scale::Linear {
                return bad("stacked bars need a linear value axis".into());
            }
            if !(p.x.min.is_finite() && p.x.max.is_finite() && p.x.min < p.x.max) {
                return bad(format!("value axis {}..{} is empty", p.x.min, p.x.max));
            }
            if p.rows.is_empty() {
                return bad("no rows".into());
            }
            for r in &p.rows {
                if r.segments.iter().any(|s| !(s.value.is_finite() && s.value >= 0.0)) {
                    return bad(format!("row {:?}: a segment is negative or not finite", r.label));
                }
                let end: f64 = r.segments.iter().map(|s| s.value).sum();
                if end > p.x.max + 1e-9 {
                    return bad(format!("row {:?}: stack ends at {end}, past the axis ({})", r.label, p.x.max));
                }
            }
        }
        Ok(())
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ChartError>
    where
        DB::ErrorType: 'static,
    {
        self.validate()?;
        let body = style::titled(root, &self.title).map_err(draw_err)?;
        let body = if self.legend.is_empty() {
            body
        } else {
            let (_, h) = body.dim_in_pixel();
            let (top, bottom) = body.split_vertically(h.saturating_sub(56));
            draw_legend(&self.legend, &bottom)?;
            top
        };
        // Panels with row labels get the width those labels take.
        let weights: Vec<u32> = self
            .panels
            .iter()
            .map(|p| 700 + if p.row_labels { longest(&p.rows) as u32 * 11 } else { 0 })
            .collect();
        let total: u32 = weights.iter().sum();
        let (w, _) = body.dim_in_pixel();
        let mut rest = body;
        for (i, p) in self.panels.iter().enumerate() {
            if i + 1 == self.panels.len() {
                draw_panel(p, &rest)?;
                break;
            }
            let take = (w as u64 * weights[i] as u64 / total as u64) as u32;
            let (left, right) = rest.split_horizontally(take);
            draw_panel(p, &left)?;
            rest = right;
        }
        root.present().map_err(draw_err)
    }
}

fn longest(rows: &[BarRow]) -> usize {
    rows.iter().map(|r| r.label.chars().count()).max().unwrap_or(0)
}

fn draw_panel<DB: DrawingBackend>(p: &BarPanel, area: &DrawingArea<DB, Shift>) -> Result<(), ChartError>
where
    DB::ErrorType: 'static,
{
    let labels: Vec<String> = p.rows.iter().rev().map(|r| r.label.clone()).collect();
    let n = labels.len();
    let y_area = if p.row_labels { longest(&p.rows) * 11 + 30 } else { 10 };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, style::panel_font())
        .margin(style::PANEL_MARGIN)
        .x_label_area_size(style::X_LABEL_AREA)
        .y_label_area_size(y_area as u32)
        .build_cartesian_2d(Ticked::new(&p.x), Categories::new(labels.clone()))
        .map_err(draw_err)?;
    let xfmt = |v: &f64| p.x.format.format(*v);
    let yfmt = |v: &f64| if p.row_labels { label_at(&labels, *v) } else { String::new() };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(&p.x.label)
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .label_style(style::tick_font())
        .axis_desc_style(style::axis_font())
        .bold_line_style(style::GRID)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(draw_err)?;
    for (i, row) in p.rows.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let mut x = 0.0f64.max(p.x.min);
        for s in &row.segments {
            if s.value > 0.0 {
                chart
                    .draw_series(std::iter::once(Rectangle::new([(x, y + 0.18), (x + s.value, y + 0.82)], s.color.filled())))
                    .map_err(draw_err)?;
            }
            x += s.value;
        }
        if let Some(note) = &row.note {
            // Past the stack if there is room, else inside its end in white.
            let span = p.x.max - p.x.min;
            let pad = span * 0.01;
            let room = (p.x.max - x) / span;
            let needed = (note.chars().count() as f64 * 10.5 + 16.0) / area.dim_in_pixel().0.max(1) as f64 * 1.25;
            let (at, font) = if room > needed {
                (x + pad, style::legend_font().pos(Pos::new(HPos::Left, VPos::Center)))
            } else {
                (x - pad, style::legend_font().color(&WHITE).pos(Pos::new(HPos::Right, VPos::Center)))
            };
            chart.draw_series(std::iter::once(Text::new(note.clone(), (at, y + 0.5), font))).map_err(draw_err)?;
        }
    }
    Ok(())
}

/// Colour keys in one centred line.
fn draw_legend<DB: DrawingBackend>(legend: &[(String, RGBColor)], area: &DrawingArea<DB, Shift>) -> Result<(), ChartError>
where
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    let widths: Vec<i32> = legend.iter().map(|(l, _)| 34 + l.chars().count() as i32 * 11 + 30).collect();
    let mut x = (w as i32 - widths.iter().sum::<i32>()).max(0) / 2;
    let y = h as i32 / 2;
    for ((label, colour), width) in legend.iter().zip(widths) {
        area.draw(&Rectangle::new([(x, y - 10), (x + 24, y + 10)], colour.filled())).map_err(draw_err)?;
        let font = style::legend_font().pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(label.clone(), (x + 34, y), font)).map_err(draw_err)?;
        x += width;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::TickFormat;

    fn chart(values: &[f64], max: f64) -> BarChart {
        BarChart {
            title: "t".into(),
            size: (800, 600),
            panels: vec![BarPanel {
                title: "p".into(),
                x: Axis { label: "ms".into(), scale: Scale::Linear, min: 0.0, max, format: TickFormat::Number },
                rows: vec![BarRow {
                    label: "a".into(),
                    segments: values.iter().map(|&value| Segment { value, color: BLACK }).collect(),
                    note: None,
                }],
                row_labels: true,
            }],
            legend: vec![],
        }
    }

    #[test]
    fn stacks_must_fit() {
        assert!(chart(&[1.0, 2.0], 3.0).validate().is_ok());
        assert!(chart(&[1.0, 2.5], 3.0).validate().is_err());
        assert!(chart(&[-1.0], 3.0).validate().is_err());
        assert!(chart(&[f64::NAN], 3.0).validate().is_err());
    }
}
