//! The look shared by every figure: fonts, sizes, colours.
//!
//! Invariant: [`load_fonts`] has succeeded before anything is drawn; text is measured (SVG) and
//! rasterised (PNG) with DejaVu Sans from Debian's `fonts-dejavu-core`, so figures look the same
//! on every machine set up by `scripts/setup`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle, RGBColor};

/// DejaVu Sans as installed by `fonts-dejavu-core`.
pub const FONT_DIR: &str = "/usr/share/fonts/truetype/dejavu";
/// The family name figures ask for.
pub const FAMILY: &str = "sans-serif";

#[derive(Clone, Debug, thiserror::Error)]
pub enum FontError {
    #[error("{}: {reason}; install the Debian package fonts-dejavu-core (`bash scripts/setup`)", path.display())]
    Missing { path: PathBuf, reason: String },
    #[error("{}: not a font plotters can use", path.display())]
    Invalid { path: PathBuf },
}

/// Registers DejaVu Sans (regular and bold) as [`FAMILY`]; idempotent.
pub fn load_fonts() -> Result<(), FontError> {
    static LOADED: OnceLock<Result<(), FontError>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            for (file, style) in [
                ("DejaVuSans.ttf", FontStyle::Normal),
                ("DejaVuSans-Bold.ttf", FontStyle::Bold),
            ] {
                let path = Path::new(FONT_DIR).join(file);
                let bytes = std::fs::read(&path).map_err(|e| FontError::Missing {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                // plotters keeps fonts for the life of the program.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                register_font(FAMILY, style, bytes).map_err(|_| FontError::Invalid { path })?;
            }
            Ok(())
        })
        .clone()
}

pub fn title_font() -> TextStyle<'static> {
    (FAMILY, 30).into_font().style(FontStyle::Bold).into()
}
pub fn panel_font() -> TextStyle<'static> {
    (FAMILY, 24).into_font().into()
}
pub fn axis_font() -> TextStyle<'static> {
    (FAMILY, 22).into_font().into()
}
pub fn tick_font() -> TextStyle<'static> {
    (FAMILY, 19).into_font().into()
}
pub fn legend_font() -> TextStyle<'static> {
    (FAMILY, 18).into_font().into()
}

/// Space above a figure's title, so no renderer clips its ascenders.
pub const TITLE_TOP: u32 = 14;

/// A figure's page: `root` filled white, the figure title `title` drawn centred [`TITLE_TOP`]
/// pixels below the top; the area under the title.
pub fn titled<DB: plotters::prelude::DrawingBackend>(
    root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
) -> Result<plotters::prelude::DrawingArea<DB, plotters::coord::Shift>, plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    root.margin(TITLE_TOP, 0, 0, 0).titled(title, title_font())
}

pub const PANEL_MARGIN: u32 = 18;
pub const X_LABEL_AREA: u32 = 70;
pub const Y_LABEL_AREA: u32 = 95;
pub const LEGEND_MARGIN: u32 = 14;
pub const LINE_WIDTH: u32 = 3;
pub const MARKER_SIZE: u32 = 6;
pub const GRID: RGBColor = RGBColor(225, 225, 225);

/// Okabe–Ito colours (distinguishable with colour-vision deficiencies), for categories.
pub const CATEGORICAL: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0x00, 0x00, 0x00), // black
];

/// A colour for position `t` in 0..=1 of an ordered quantity (viridis without its pale end).
pub fn sequential(t: f64) -> RGBColor {
    use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
    ViridisRGB.get_color_normalized(t.clamp(0.0, 1.0) * 0.85, 0.0, 1.0)
}
