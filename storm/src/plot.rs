//! The PNG of a storm bench: time to registered (p50/p99, and to kernel loaded for every
//! server) and the box's RSS against N, drawn with `plotters` on its bitmap backend from
//! the bench's results file (one [`crate::storm::Report::json`] line per run).
//!
//! Text needs a font: `plotters` is built with `ab_glyph` (pure Rust, no fontconfig or
//! freetype) and the first TrueType file found among [`FONTS`] is registered. Without one
//! the chart is drawn all the same, without captions and tick labels (the bench prints the
//! numbers beside it), so drawing never fails for want of a system font.

use std::path::Path;

use plotters::prelude::*;

/// Where a sans-serif TrueType font is looked for (Debian's `fonts-dejavu-core` first).
pub const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// One run of the bench, as the plot reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub server: String,
    pub clients: f64,
    pub kernel_p50: Option<f64>,
    pub kernel_p99: Option<f64>,
    pub registered_p50: Option<f64>,
    pub registered_p99: Option<f64>,
    /// Peak RSS (VmHWM) in MiB.
    pub rss_mib: Option<f64>,
    /// Peak anonymous RSS in MiB.
    pub anon_mib: Option<f64>,
}

/// Reads the bench's results file (JSON lines); lines that do not parse are skipped.
pub fn read_results(text: &str) -> Vec<Point> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let f = |k: &str| v[k].as_f64();
            Some(Point {
                server: v["server"].as_str()?.to_string(),
                clients: f("clients")?,
                kernel_p50: f("kernel_p50_s"),
                kernel_p99: f("kernel_p99_s"),
                registered_p50: f("registered_p50_s"),
                registered_p99: f("registered_p99_s"),
                rss_mib: f("box_peak_rss_kib").map(|k| k / 1024.0),
                anon_mib: f("box_peak_anon_kib").map(|k| k / 1024.0),
            })
        })
        .collect()
}

/// Why the plot was not drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("no results to plot")]
    Empty,
    #[error("drawing {path}: {message}")]
    Draw { path: String, message: String },
}

/// Whether a font was registered for the chart's text (once per process).
fn font() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        FONTS.iter().any(|p| {
            let Ok(bytes) = std::fs::read(p) else {
                return false;
            };
            // plotters keeps the font for the process's life.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

type Series = (String, Vec<(f64, f64)>, RGBColor);
/// A named value read from each run.
type Getter<'a> = (&'a str, &'a dyn Fn(&Point) -> Option<f64>);

/// Draws `points` into `out` (PNG, 1200×500): time against N on the left, the box's RSS
/// against N on the right. `with_text: false` draws no text (no font needed).
pub fn draw(points: &[Point], out: &Path, with_text: bool) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(PlotError::Empty);
    }
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: out.display().to_string(),
        message: e.to_string(),
    };
    let text = with_text && font();
    let mut servers: Vec<&str> = points.iter().map(|p| p.server.as_str()).collect();
    servers.dedup();
    servers.sort_unstable();
    servers.dedup();
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
    ];
    let series = |get: &dyn Fn(&Point) -> Option<f64>, server: &str| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.server == server)
            .filter_map(|p| Some((p.clients, get(p)?)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let mut time: Vec<Series> = Vec::new();
    let mut memory: Vec<Series> = Vec::new();
    let mut c = 0;
    for s in &servers {
        let getters: [Getter; 4] = [
            ("registered p50", &|p| p.registered_p50),
            ("registered p99", &|p| p.registered_p99),
            ("kernel p50", &|p| p.kernel_p50),
            ("kernel p99", &|p| p.kernel_p99),
        ];
        for (name, get) in getters {
            let v = series(get, s);
            if !v.is_empty() {
                time.push((format!("{s} {name}"), v, palette[c % palette.len()]));
                c += 1;
            }
        }
    }
    for s in &servers {
        let getters: [Getter; 2] = [
            ("peak RSS", &|p| p.rss_mib),
            ("peak anon RSS", &|p| p.anon_mib),
        ];
        for (name, get) in getters {
            let v = series(get, s);
            if !v.is_empty() {
                memory.push((format!("{s} {name}"), v, palette[c % palette.len()]));
                c += 1;
            }
        }
    }
    let root = BitMapBackend::new(out, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(600);
    let max_n = points.iter().map(|p| p.clients).fold(1.0, f64::max) * 1.05;
    for (area, data, caption, unit) in [
        (&left, &time, "time from power-on against N", "s"),
        (&right, &memory, "box memory against N", "MiB"),
    ] {
        let max_y = data
            .iter()
            .flat_map(|(_, v, _)| v.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.1;
        let mut b = ChartBuilder::on(area);
        b.margin(15);
        if text {
            b.caption(caption, ("sans-serif", 20))
                .x_label_area_size(35)
                .y_label_area_size(50);
        } else {
            b.x_label_area_size(5).y_label_area_size(5);
        }
        let mut chart = b
            .build_cartesian_2d(0f64..max_n, 0f64..max_y)
            .map_err(|e| err(&e))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("N (machines)").y_desc(unit);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| err(&e))?;
        for (name, v, color) in data.iter() {
            let color = *color;
            let line = chart
                .draw_series(LineSeries::new(v.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(&e))?;
            if text {
                line.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
            chart
                .draw_series(v.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| err(&e))?;
        }
        if text && !data.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULTS: &str = r#"{"server":"appliance","clients":1000,"completed":1000,"failed":0,"kernel_p50_s":8.3,"kernel_p99_s":20.5,"registered_p50_s":11.7,"registered_p99_s":30.7,"box_peak_rss_kib":189000,"box_peak_anon_kib":150000}
not json
{"server":"dnsmasq+nginx","clients":1000,"kernel_p50_s":28.3,"kernel_p99_s":38.8,"registered_p50_s":null,"box_peak_rss_kib":5120}
{"server":"appliance","clients":5000,"kernel_p50_s":30.1,"kernel_p99_s":60.2,"registered_p50_s":35.0,"registered_p99_s":70.0,"box_peak_rss_kib":199000,"box_peak_anon_kib":160000}
"#;

    /// The PNG's width and height from its IHDR chunk, after checking the signature.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    #[test]
    fn results_are_read_per_run_and_bad_lines_skipped() {
        let p = read_results(RESULTS);
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].server, "dnsmasq+nginx");
        assert_eq!((p[1].registered_p50, p[1].rss_mib), (None, Some(5.0)));
        assert_eq!(p[2].clients, 5000.0);
    }

    #[test]
    fn the_chart_is_drawn_without_any_font_and_with_one_when_present() {
        let dir = tempfile::tempdir().unwrap();
        // As CI would run it on a host without fonts: no text at all, still a chart.
        let bare = dir.path().join("bare.png");
        draw(&read_results(RESULTS), &bare, false).unwrap();
        let bytes = std::fs::read(&bare).unwrap();
        assert_eq!(png_size(&bytes), (1200, 500));
        // With text: a registered font when this host has one, else the same bare chart.
        let labelled = dir.path().join("labelled.png");
        draw(&read_results(RESULTS), &labelled, true).unwrap();
        assert_eq!(png_size(&std::fs::read(&labelled).unwrap()), (1200, 500));
        // Nothing to draw is an error, not an empty picture.
        assert!(matches!(
            draw(&[], &dir.path().join("none.png"), true),
            Err(PlotError::Empty)
        ));
    }
}
