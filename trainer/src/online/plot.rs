//! Learning curves as PNG files: one line per series, a legend, axes and a grid.
//!
//! Text (title, axis labels, tick labels, legend names) needs a TrueType font, which is found
//! on the system at run time: `fc-match`'s sans-serif font, else one of the usual DejaVu and
//! Liberation paths. Without one the chart is still drawn, without its text: the legend then
//! shows the series' colour swatches in the order given, and [`plot_curves`] says so in its
//! return value.

use plotters::prelude::*;
use plotters::style::FontStyle;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Width of the image in pixels.
pub const WIDTH: u32 = 800;
/// Height of the image in pixels.
pub const HEIGHT: u32 = 500;

/// The family name the found font is registered under.
const FAMILY: &str = "seqrec-plot-sans";

/// Font files tried after `fc-match`, in order.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Series colours (the Tableau 10 palette), reused in turn past ten series.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// How the chart's text was drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlotText {
    /// With this font file.
    Font(PathBuf),
    /// Not at all: no usable font was found.
    Omitted,
}

impl fmt::Display for PlotText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlotText::Font(path) => write!(f, "text drawn with {}", path.display()),
            PlotText::Omitted => write!(
                f,
                "no TrueType font found (fc-match sans, DejaVu or Liberation Sans): the chart \
                 has no text, its legend lists the series' colours in order"
            ),
        }
    }
}

/// A chart that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct PlotError {
    /// The image file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The font file registered for the charts' text, found once per process.
fn font() -> Option<&'static Path> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| {
        let from_fontconfig = std::process::Command::new("fc-match")
            .args(["-f", "%{file}", "sans"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        from_fontconfig
            .into_iter()
            .chain(FONT_PATHS.iter().map(PathBuf::from))
            .find(|path| register(path))
    })
    .as_deref()
}

/// Registers the TrueType font at `path` under [`FAMILY`]; false when it is missing or not a
/// font plotters can read.
fn register(path: &Path) -> bool {
    let is_ttf = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ttf") || e.eq_ignore_ascii_case("otf"));
    if !is_ttf {
        return false;
    }
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // The font table keeps `'static` references: the bytes live for the rest of the process.
    // This runs at most once per candidate file, once per process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
}

/// Draws `series` (name and `(x, y)` points each) as lines, each in its own colour, with a
/// legend, into a PNG file of [`WIDTH`] × [`HEIGHT`] pixels at `path` (whose name must end in
/// `.png`).
///
/// Non-finite points are left out. The axes span the finite points, padded a little. A chart
/// without text is drawn when no font is found; the returned [`PlotText`] tells which.
///
/// Errors: a file name without `.png`, no finite point in any series, or the file could not be
/// written.
pub fn plot_curves(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<PlotText, PlotError> {
    let text = match font() {
        Some(font) => PlotText::Font(font.to_path_buf()),
        None => PlotText::Omitted,
    };
    let labels = matches!(text, PlotText::Font(_)).then_some((title, x_label, y_label));
    draw(path, labels, series)?;
    Ok(text)
}

/// The axis range spanning `values`, padded by 5% on each side (a unit around a single value).
fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return None;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.5
    };
    Some((lo - pad, hi + pad))
}

/// Draws the chart; `labels` (title, x label, y label) is `None` to draw no text at all.
fn draw(
    path: &Path,
    labels: Option<(&str, &str, &str)>,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), PlotError> {
    let fail = |message: String| PlotError {
        path: path.to_path_buf(),
        message,
    };
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        return Err(fail(
            "a chart is written as PNG: the file name must end in .png".into(),
        ));
    }
    let finite = || {
        series
            .iter()
            .flat_map(|(_, points)| points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (Some(x_range), Some(y_range)) = (
        span(finite().map(|&(x, _)| x)),
        span(finite().map(|&(_, y)| y)),
    ) else {
        return Err(fail("nothing to plot: no series has a finite point".into()));
    };
    let drawing = |e: &dyn fmt::Display| fail(format!("drawing the chart: {e}"));

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| drawing(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if let Some((title, _, _)) = labels {
        builder
            .caption(title, (FAMILY, 24))
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
        .map_err(|e| drawing(&e))?;

    match labels {
        Some((_, x_label, y_label)) => chart
            .configure_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(|e| drawing(&e))?,
        None => {
            // The mesh draws its grid at its tick labels: without text, a grid of tenths and
            // the two axes are drawn by hand.
            let (x0, x1, y0, y1) = (x_range.0, x_range.1, y_range.0, y_range.1);
            let grid = RGBColor(220, 220, 220);
            for k in 0..=10 {
                let x = x0 + (x1 - x0) * f64::from(k) / 10.0;
                let y = y0 + (y1 - y0) * f64::from(k) / 10.0;
                for line in [[(x, y0), (x, y1)], [(x0, y), (x1, y)]] {
                    chart
                        .draw_series(std::iter::once(PathElement::new(line, grid)))
                        .map_err(|e| drawing(&e))?;
                }
            }
            let axes = PathElement::new([(x0, y1), (x0, y0), (x1, y0)], BLACK.stroke_width(2));
            chart
                .draw_series(std::iter::once(axes))
                .map_err(|e| drawing(&e))?;
        }
    }

    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        // A non-finite point breaks the line: each finite run is its own segment.
        for (k, run) in points
            .split(|(x, y)| !(x.is_finite() && y.is_finite()))
            .filter(|run| !run.is_empty())
            .enumerate()
        {
            let line = LineSeries::new(run.iter().copied(), colour.stroke_width(2));
            let drawn = chart.draw_series(line).map_err(|e| drawing(&e))?;
            if k == 0 {
                drawn.label(name.as_str()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 16, y + 4)], colour.filled())
                });
            }
        }
    }
    if labels.is_some() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()
            .map_err(|e| drawing(&e))?;
    } else {
        // Without text, the legend is the column of swatches alone, in the series' order.
        let plot = chart.plotting_area().strip_coord_spec();
        for i in 0..series.len() {
            let (x, y) = (20, 15 + 16 * i as i32);
            let colour = COLOURS[i % COLOURS.len()];
            plot.draw(&Rectangle::new([(x, y), (x + 24, y + 8)], colour.filled()))
                .map_err(|e| drawing(&e))?;
        }
    }
    root.present().map_err(|e| drawing(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_png(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("seqrec-plot-{}-{name}.png", std::process::id()))
    }

    fn series() -> Vec<(String, Vec<(f64, f64)>)> {
        vec![
            (
                "A2C".to_string(),
                vec![(0.0, 0.2), (1.0, 1.5), (2.0, 2.1), (3.0, 3.8)],
            ),
            (
                "iALP".to_string(),
                vec![(0.0, 4.6), (1.0, f64::NAN), (2.0, 4.1), (3.0, 4.4)],
            ),
        ]
    }

    /// Checks that `path` is a PNG of [`WIDTH`] × [`HEIGHT`] pixels with at least
    /// `min_colours` distinct colours, then removes it.
    fn check_chart(path: &Path, min_colours: usize) {
        let bytes = std::fs::read(path).unwrap();
        let _ = std::fs::remove_file(path);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!((be(16), be(20)), (WIDTH, HEIGHT));
        let mut reader = png::Decoder::new(bytes.as_slice()).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let px = info.color_type.samples();
        let mut colours: Vec<&[u8]> = buf[..info.buffer_size()].chunks_exact(px).collect();
        colours.sort_unstable();
        colours.dedup();
        assert!(colours.len() >= min_colours, "{} colours", colours.len());
    }

    #[test]
    fn plots_two_series_into_a_png() {
        let path = temp_png("curves");
        let text =
            plot_curves(&path, "Return per episode", "episode", "return", &series()).unwrap();
        if text == PlotText::Omitted {
            eprintln!("plots_two_series_into_a_png: {text}");
        }
        // White, the grid, the axes and both series' colours at least.
        check_chart(&path, 5);
    }

    #[test]
    fn plots_without_text_when_no_font_is_found() {
        let path = temp_png("no-text");
        draw(&path, None, &series()).unwrap();
        check_chart(&path, 5);
    }

    #[test]
    fn bad_charts_are_errors() {
        let nothing = vec![("empty".to_string(), vec![(f64::NAN, 1.0)])];
        let e = plot_curves(&temp_png("nothing"), "t", "x", "y", &nothing).unwrap_err();
        assert!(e.to_string().contains("nothing to plot"), "{e}");
        let e = plot_curves(Path::new("/tmp/curves.jpg"), "t", "x", "y", &series()).unwrap_err();
        assert!(e.to_string().starts_with("/tmp/curves.jpg: ") && e.to_string().contains(".png"));
        let e = plot_curves(
            Path::new("/nonexistent/dir/c.png"),
            "t",
            "x",
            "y",
            &series(),
        );
        assert!(
            e.unwrap_err()
                .to_string()
                .starts_with("/nonexistent/dir/c.png: ")
        );
        // A single point still gets a non-empty range.
        let one = vec![("one".to_string(), vec![(3.0, 3.0)])];
        let path = temp_png("one");
        plot_curves(&path, "t", "x", "y", &one).unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
