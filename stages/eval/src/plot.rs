//! `RUN_DIR/eval.png`: first-try and second-try held-out accuracy per round with their 95%
//! Wilson intervals, drawn with plotters into memory and encoded as PNG. The font is embedded
//! (DejaVu Sans, see `assets/DejaVuSans.LICENSE`), so no system font library is needed.

use std::path::{Path, PathBuf};

use flywheel_store::EvalRow;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 540);

/// An accuracy of a row: (interval low, value, interval high).
type Pick = fn(&EvalRow) -> (f64, f64, f64);

/// Why the plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Nothing to draw.
    #[error("{path}: no evaluated round to plot")]
    Empty {
        /// The file that was to be written.
        path: PathBuf,
    },
    /// plotters failed.
    #[error("{path}: drawing failed: {detail}")]
    Draw {
        /// The file.
        path: PathBuf,
        /// plotters' message.
        detail: String,
    },
    /// The PNG could not be encoded.
    #[error("{path}: PNG encoding failed: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: png::EncodingError,
    },
    /// The file could not be replaced.
    #[error(transparent)]
    Write(#[from] flywheel_model::atomic::AtomicDirError),
}

/// Draws the `all` rows of `rows` (one per round) to `path` as a PNG, replacing it atomically.
pub fn draw(path: &Path, rows: &[EvalRow]) -> Result<(), PlotError> {
    let mut all: Vec<&EvalRow> = rows.iter().filter(|r| r.level == "all").collect();
    all.sort_by_key(|r| r.round);
    let (Some(first), Some(last)) = (all.first(), all.last()) else {
        return Err(PlotError::Empty {
            path: path.to_owned(),
        });
    };
    let draw_err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    // Registering twice is harmless; the font is parsed from static bytes.
    register_font(FAMILY, FontStyle::Normal, FONT).map_err(|_| PlotError::Draw {
        path: path.to_owned(),
        detail: "the embedded font could not be parsed".into(),
    })?;
    let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        let top = all
            .iter()
            .map(|r| r.first_high.max(r.second_high))
            .fold(0.0f64, f64::max);
        let y_max = (100.0 * top / 10.0).ceil().max(1.0) * 10.0;
        let x_range = (first.round as f64 - 0.5)..(last.round as f64 + 0.5);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "held-out accuracy per round ({} samples, 95% Wilson intervals)",
                    first.samples
                ),
                (FAMILY, 22),
            )
            .margin(16)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(x_range, 0.0..y_max.min(100.0))
            .map_err(|e| draw_err(&e))?;
        let rounds = last.round - first.round + 1;
        chart
            .configure_mesh()
            .x_desc("round")
            .y_desc("accuracy (%)")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_labels(rounds.min(20) as usize + 1)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            })
            .label_style((FAMILY, 15))
            .draw()
            .map_err(|e| draw_err(&e))?;
        let series: [(&str, RGBColor, f64, Pick); 2] = [
            ("first try", RGBColor(31, 119, 180), -0.06, |r| {
                (r.first_low, r.first, r.first_high)
            }),
            ("second try", RGBColor(214, 39, 40), 0.06, |r| {
                (r.second_low, r.second, r.second_high)
            }),
        ];
        for (name, color, dx, pick) in series {
            let pts: Vec<(f64, (f64, f64, f64))> = all
                .iter()
                .map(|r| {
                    let (lo, v, hi) = pick(r);
                    (r.round as f64 + dx, (100.0 * lo, 100.0 * v, 100.0 * hi))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|(x, (_, v, _))| (*x, *v)),
                    color.stroke_width(2),
                ))
                .map_err(|e| draw_err(&e))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|(x, (lo, v, hi))| {
                    ErrorBar::new_vertical(*x, *lo, *v, *hi, color.filled(), 8)
                }))
                .map_err(|e| draw_err(&e))?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|(x, (_, v, _))| Circle::new((*x, *v), 4, color.filled())),
                )
                .map_err(|e| draw_err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 15))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, SIZE.0, SIZE.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let encode = |source| PlotError::Encode {
            path: path.to_owned(),
            source,
        };
        let mut w = enc.write_header().map_err(encode)?;
        w.write_image_data(&pixels).map_err(encode)?;
    }
    flywheel_model::atomic::write_file(path, &png_bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_ink_of_both_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.png");
        let row = |round, first, second| EvalRow {
            round,
            level: "all".into(),
            samples: 20,
            first,
            first_low: first - 0.1,
            first_high: first + 0.1,
            second,
            second_low: second - 0.1,
            second_high: second + 0.1,
            ..Default::default()
        };
        assert!(matches!(draw(&path, &[]), Err(PlotError::Empty { .. })));
        draw(&path, &[row(0, 0.2, 0.3), row(1, 0.25, 0.4)]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), SIZE);
        // Both series' colours are on the canvas (the lines were drawn, not just the axes).
        let has = |c: [u8; 3]| buf.chunks(3).any(|p| p == c);
        assert!(has([31, 119, 180]) && has([214, 39, 40]));
    }
}
