//! `chart`: an MCP tool server that draws bar, line and pie charts as standalone SVG documents
//! (`chart_svg`). The SVG is written by hand: a white background, a title, axes with "nice" tick
//! values and gridlines (bar and line), a legend (several series, and pie), tooltips (`<title>`)
//! on every bar, point and slice, and a fixed colour palette. Built for `wasm32-wasip1` and
//! embedded in `caxton-toolhost`; it also runs natively for debugging:
//! `echo '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' | cargo run -p chart`.

use std::f64::consts::{PI, TAU};
use std::fmt::{self, Write};

use mcp_guest::{Server, ToolResult, opt_str_arg, str_arg};
use serde_json::{Value, json};

/// Default and allowed canvas sizes, in pixels.
pub const DEFAULT_WIDTH: f64 = 640.0;
pub const DEFAULT_HEIGHT: f64 = 400.0;
pub const MIN_WIDTH: f64 = 240.0;
pub const MAX_WIDTH: f64 = 2000.0;
pub const MIN_HEIGHT: f64 = 180.0;
pub const MAX_HEIGHT: f64 = 1500.0;
/// Most data points in one chart (labels × series).
pub const MAX_POINTS: usize = 1000;
/// Series colours, in order (Tableau 10); a pie with more slices reuses them.
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// Approximate width of one character of 12 px sans-serif text.
const CHAR_W: f64 = 7.0;
/// Height of one legend line.
const LEGEND_LINE: f64 = 18.0;

/// The server's description: name, version and tools.
pub fn server() -> Server {
    Server::new("chart", env!("CARGO_PKG_VERSION")).tool(
        "chart_svg",
        "Draw a bar, line or pie chart and return it as a standalone SVG document (text starting with <?xml). \
         Give `labels` (the categories / x values) and either `values` (one series) or `series` \
         ([{\"name\", \"values\"}], several series on a bar or line chart, shown with a legend). Pie charts take \
         `values` only: non-negative, with a positive sum. At most 1000 points and 10 series.",
        json!({
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": ["bar", "line", "pie"]},
                "title": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string"}, "description": "category names, one per value (default 1, 2, 3, ...)"},
                "values": {"type": "array", "items": {"type": "number"}},
                "series": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "values": {"type": "array", "items": {"type": "number"}}},
                        "required": ["name", "values"]
                    }
                },
                "width": {"type": "number", "description": "pixels, 240 to 2000 (default 640)"},
                "height": {"type": "number", "description": "pixels, 180 to 1500 (default 400)"},
                "x_label": {"type": "string", "description": "caption under the x axis"},
                "y_label": {"type": "string", "description": "caption beside the y axis"}
            },
            "required": ["kind"]
        }),
    )
}

/// Runs one tool call.
pub fn call(tool: &str, args: &Value) -> ToolResult {
    match tool {
        "chart_svg" => Chart::from_args(args).map(|chart| chart.to_svg()),
        other => Err(format!("unknown tool `{other}`")),
    }
}

/// The kind of chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bar,
    Line,
    Pie,
}

/// One named list of values, one per label.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// A validated chart: every series has one finite value per label.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub kind: Kind,
    pub title: String,
    pub labels: Vec<String>,
    pub series: Vec<Series>,
    pub width: f64,
    pub height: f64,
    pub x_label: String,
    pub y_label: String,
}

impl Chart {
    /// Reads and checks `chart_svg`'s arguments.
    pub fn from_args(args: &Value) -> Result<Chart, String> {
        let kind = match str_arg(args, "kind")?.trim().to_ascii_lowercase().as_str() {
            "bar" => Kind::Bar,
            "line" => Kind::Line,
            "pie" => Kind::Pie,
            other => return Err(format!("unknown kind `{other}`; use bar, line or pie")),
        };
        let series = read_series(args, kind)?;
        let points = series[0].values.len();
        let labels = match args.get("labels") {
            None | Some(Value::Null) => (1..=points).map(|i| i.to_string()).collect(),
            Some(v) => read_labels(v)?,
        };
        check_shape(&labels, &series)?;
        if kind == Kind::Pie {
            check_pie(&labels, &series[0].values)?;
        }
        Ok(Chart {
            kind,
            title: opt_str_arg(args, "title")?.unwrap_or("").trim().to_string(),
            labels,
            series,
            width: dimension(args, "width", DEFAULT_WIDTH, MIN_WIDTH, MAX_WIDTH)?,
            height: dimension(args, "height", DEFAULT_HEIGHT, MIN_HEIGHT, MAX_HEIGHT)?,
            x_label: opt_str_arg(args, "x_label")?
                .unwrap_or("")
                .trim()
                .to_string(),
            y_label: opt_str_arg(args, "y_label")?
                .unwrap_or("")
                .trim()
                .to_string(),
        })
    }

    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_svg(&mut out);
        out
    }

    fn write_svg(&self, out: &mut String) -> fmt::Result {
        let (w, h) = (self.width, self.height);
        let label = if self.title.is_empty() {
            format!("{:?} chart", self.kind)
        } else {
            self.title.clone()
        };
        writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
        writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12" role="img" aria-label="{}">"#,
            escape(&label)
        )?;
        writeln!(out, "<title>{}</title>", escape(&label))?;
        writeln!(
            out,
            r##"<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>"##
        )?;
        if !self.title.is_empty() {
            let fit = fit_text(&self.title, (w - 20.0) / 10.0);
            writeln!(
                out,
                r##"<text x="{}" y="26" text-anchor="middle" font-size="16" font-weight="bold" fill="#222222">{}</text>"##,
                num(w / 2.0),
                escape(&fit)
            )?;
        }
        match self.kind {
            Kind::Bar | Kind::Line => self.write_xy(out)?,
            Kind::Pie => self.write_pie(out)?,
        }
        writeln!(out, "</svg>")
    }

    /// The top of the plotting area, below the title.
    fn top(&self) -> f64 {
        if self.title.is_empty() { 16.0 } else { 44.0 }
    }

    /// Bar and line charts: gridlines, axes, tick labels, the data and a legend for several series.
    fn write_xy(&self, out: &mut String) -> fmt::Result {
        let all = self.series.iter().flat_map(|s| s.values.iter().copied());
        let (min, max) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let scale = Scale::nice(min, max, self.kind == Kind::Bar);
        let ticks: Vec<String> = scale.ticks().iter().map(|&t| scale.label(t)).collect();
        let tick_w = ticks.iter().map(|t| t.chars().count()).max().unwrap_or(1) as f64 * CHAR_W;
        let legend_w = self.legend_width(
            self.series.len() > 1,
            self.series.iter().map(|s| s.name.as_str()),
        );

        let left = 10.0 + if self.y_label.is_empty() { 0.0 } else { 20.0 } + tick_w + 8.0;
        let right = self.width - 16.0 - legend_w;
        let top = self.top();
        let bottom = self.height - 26.0 - if self.x_label.is_empty() { 0.0 } else { 20.0 };
        let plot = Rect {
            left,
            top,
            right: right.max(left + 40.0),
            bottom: bottom.max(top + 40.0),
        };
        let y = |v: f64| plot.bottom - (v - scale.lo) / (scale.hi - scale.lo) * plot.height();

        for (t, text) in scale.ticks().into_iter().zip(&ticks) {
            let ty = num(y(t));
            writeln!(
                out,
                r##"<line x1="{}" y1="{ty}" x2="{}" y2="{ty}" stroke="#e5e5e5"/>"##,
                num(plot.left),
                num(plot.right)
            )?;
            writeln!(
                out,
                r##"<text x="{}" y="{ty}" dy="4" text-anchor="end" fill="#444444">{}</text>"##,
                num(plot.left - 6.0),
                escape(text)
            )?;
        }
        self.write_x_labels(out, &plot)?;
        match self.kind {
            Kind::Bar => self.write_bars(out, &plot, &y)?,
            _ => self.write_lines(out, &plot, &y)?,
        }
        // Axes last, over the data; the baseline is the zero line when zero is in range.
        let base = num(y(if scale.lo <= 0.0 && scale.hi >= 0.0 {
            0.0
        } else {
            scale.lo
        }));
        writeln!(
            out,
            r##"<line x1="{}" y1="{base}" x2="{}" y2="{base}" stroke="#333333"/>"##,
            num(plot.left),
            num(plot.right)
        )?;
        writeln!(
            out,
            r##"<line x1="{l}" y1="{}" x2="{l}" y2="{}" stroke="#333333"/>"##,
            num(plot.top),
            num(plot.bottom),
            l = num(plot.left)
        )?;
        self.write_axis_captions(out, &plot)?;
        if self.series.len() > 1 {
            let entries: Vec<String> = self.series.iter().map(|s| s.name.clone()).collect();
            write_legend(
                out,
                &entries,
                plot.right + 16.0,
                plot.top,
                legend_w,
                plot.bottom,
            )?;
        }
        Ok(())
    }

    /// Category labels under the x axis, thinned out so they do not overlap.
    fn write_x_labels(&self, out: &mut String, plot: &Rect) -> fmt::Result {
        const GAP: f64 = 14.0;
        let n = self.labels.len();
        let slot = plot.width() / n as f64;
        let longest = self
            .labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(1)
            .clamp(1, 20);
        let stride = ((longest as f64 * CHAR_W + GAP) / slot).ceil().max(1.0) as usize;
        let room = (slot * stride as f64 - GAP) / CHAR_W;
        for (i, text) in self.labels.iter().enumerate().step_by(stride) {
            let tick = plot.left + slot * (i as f64 + 0.5);
            let text = fit_middle(text, room);
            // Keep the label on the canvas: the first and last may be wider than their slot.
            let half = text.chars().count() as f64 * CHAR_W / 2.0;
            let x = tick.clamp(half + 2.0, (self.width - half - 2.0).max(half + 2.0));
            writeln!(
                out,
                r##"<line x1="{t}" y1="{}" x2="{t}" y2="{}" stroke="#333333"/>"##,
                num(plot.bottom),
                num(plot.bottom + 4.0),
                t = num(tick)
            )?;
            writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#444444">{}</text>"##,
                num(x),
                num(plot.bottom + 17.0),
                escape(&text)
            )?;
        }
        Ok(())
    }

    fn write_axis_captions(&self, out: &mut String, plot: &Rect) -> fmt::Result {
        if !self.x_label.is_empty() {
            writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#222222">{}</text>"##,
                num((plot.left + plot.right) / 2.0),
                num(self.height - 10.0),
                escape(&fit_text(&self.x_label, plot.width() / CHAR_W))
            )?;
        }
        if !self.y_label.is_empty() {
            writeln!(
                out,
                r##"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle" fill="#222222">{}</text>"##,
                num((plot.top + plot.bottom) / 2.0),
                escape(&fit_text(&self.y_label, plot.height() / CHAR_W))
            )?;
        }
        Ok(())
    }

    /// Grouped bars from the zero line (or the axis bottom when zero is out of range).
    fn write_bars(&self, out: &mut String, plot: &Rect, y: &impl Fn(f64) -> f64) -> fmt::Result {
        let slot = plot.width() / self.labels.len() as f64;
        let bar_w = slot * 0.8 / self.series.len() as f64;
        let zero = y(0.0).clamp(plot.top, plot.bottom);
        for (s, series) in self.series.iter().enumerate() {
            writeln!(out, r#"<g fill="{}">"#, PALETTE[s % PALETTE.len()])?;
            for (i, &v) in series.values.iter().enumerate() {
                let x = plot.left + slot * (i as f64 + 0.1) + bar_w * s as f64;
                let (y0, y1) = (zero.min(y(v)), zero.max(y(v)));
                writeln!(
                    out,
                    r#"<rect x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>"#,
                    num(x),
                    num(y0),
                    num(bar_w.max(0.5)),
                    num(y1 - y0),
                    escape(&self.tooltip(&series.name, i, v))
                )?;
            }
            writeln!(out, "</g>")?;
        }
        Ok(())
    }

    /// One polyline per series through the slot centres, with point markers when there is room.
    fn write_lines(&self, out: &mut String, plot: &Rect, y: &impl Fn(f64) -> f64) -> fmt::Result {
        let slot = plot.width() / self.labels.len() as f64;
        let markers = slot >= 6.0;
        for (s, series) in self.series.iter().enumerate() {
            let colour = PALETTE[s % PALETTE.len()];
            let points: Vec<(f64, f64)> = series
                .values
                .iter()
                .enumerate()
                .map(|(i, &v)| (plot.left + slot * (i as f64 + 0.5), y(v)))
                .collect();
            let path: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{},{}", num(x), num(y)))
                .collect();
            writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round"/>"#,
                path.join(" ")
            )?;
            if markers {
                writeln!(out, r##"<g fill="{colour}" stroke="#ffffff">"##)?;
                for (i, &(x, y)) in points.iter().enumerate() {
                    writeln!(
                        out,
                        r#"<circle cx="{}" cy="{}" r="3.5"><title>{}</title></circle>"#,
                        num(x),
                        num(y),
                        escape(&self.tooltip(&series.name, i, series.values[i]))
                    )?;
                }
                writeln!(out, "</g>")?;
            }
        }
        Ok(())
    }

    /// A pie from 12 o'clock, clockwise, with percentages on large slices and a legend.
    fn write_pie(&self, out: &mut String) -> fmt::Result {
        let values = &self.series[0].values;
        let total: f64 = values.iter().sum();
        let entries: Vec<String> = self
            .labels
            .iter()
            .zip(values)
            .map(|(l, v)| format!("{} ({})", fit_text(l, 24.0), percent(v / total)))
            .collect();
        let legend_w = self.legend_width(true, entries.iter().map(String::as_str));
        let top = self.top();
        let area = Rect {
            left: 10.0,
            top,
            right: self.width - 16.0 - legend_w,
            bottom: self.height - 10.0,
        };
        let r = (area.width().min(area.height()) / 2.0 - 4.0).max(10.0);
        let (cx, cy) = (
            (area.left + area.right) / 2.0,
            (area.top + area.bottom) / 2.0,
        );
        let mut start = -PI / 2.0;
        for (i, (&v, name)) in values.iter().zip(&self.labels).enumerate() {
            let sweep = v / total * TAU;
            let colour = PALETTE[i % PALETTE.len()];
            let tip = escape(&format!(
                "{name}: {} ({})",
                format_number(v),
                percent(v / total)
            ));
            if sweep >= TAU - 1e-9 {
                writeln!(
                    out,
                    r##"<circle cx="{}" cy="{}" r="{}" fill="{colour}"><title>{tip}</title></circle>"##,
                    num(cx),
                    num(cy),
                    num(r)
                )?;
            } else if sweep > 0.0 {
                let end = start + sweep;
                writeln!(
                    out,
                    r##"<path d="M{},{} L{},{} A{r},{r} 0 {} 1 {},{} Z" fill="{colour}" stroke="#ffffff"><title>{tip}</title></path>"##,
                    num(cx),
                    num(cy),
                    num(cx + r * start.cos()),
                    num(cy + r * start.sin()),
                    u8::from(sweep > PI),
                    num(cx + r * end.cos()),
                    num(cy + r * end.sin()),
                    r = num(r)
                )?;
            }
            if v / total >= 0.05 {
                let mid = start + sweep / 2.0;
                writeln!(
                    out,
                    r##"<text x="{}" y="{}" dy="4" text-anchor="middle" font-size="11" fill="#ffffff">{}</text>"##,
                    num(cx + 0.65 * r * mid.cos()),
                    num(cy + 0.65 * r * mid.sin()),
                    percent(v / total)
                )?;
            }
            start += sweep;
        }
        write_legend(
            out,
            &entries,
            area.right + 16.0,
            top,
            legend_w,
            self.height - 10.0,
        )
    }

    /// The width a legend of these entries takes (0 when there is none), at most 40% of the canvas.
    fn legend_width<'a>(&self, shown: bool, entries: impl Iterator<Item = &'a str>) -> f64 {
        if !shown {
            return 0.0;
        }
        let longest = entries.map(|e| e.chars().count()).max().unwrap_or(0) as f64;
        (longest * CHAR_W + 24.0).clamp(60.0, self.width * 0.4)
    }

    /// A bar's or point's tooltip: "label: value", with the series name when there are several.
    fn tooltip(&self, series: &str, i: usize, v: f64) -> String {
        if self.series.len() > 1 {
            format!("{series}, {}: {}", self.labels[i], format_number(v))
        } else {
            format!("{}: {}", self.labels[i], format_number(v))
        }
    }
}

/// Legend entries from (`x`, `top`), one line each, colour swatches from the palette; entries that
/// do not fit above `bottom` are summarised as "… N more".
fn write_legend(
    out: &mut String,
    entries: &[String],
    x: f64,
    top: f64,
    width: f64,
    bottom: f64,
) -> fmt::Result {
    let room = (((bottom - top) / LEGEND_LINE).floor() as usize).max(1);
    let shown = if entries.len() > room {
        room - 1
    } else {
        entries.len()
    };
    let chars = (width - 20.0) / CHAR_W;
    for (i, entry) in entries.iter().take(shown).enumerate() {
        let y = top + LEGEND_LINE * i as f64;
        writeln!(
            out,
            r##"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}" fill="#222222">{}</text>"##,
            num(x),
            num(y),
            PALETTE[i % PALETTE.len()],
            num(x + 18.0),
            num(y + 10.0),
            escape(&fit_text(entry, chars))
        )?;
    }
    if shown < entries.len() {
        writeln!(
            out,
            r##"<text x="{}" y="{}" fill="#666666">… {} more</text>"##,
            num(x),
            num(top + LEGEND_LINE * shown as f64 + 10.0),
            entries.len() - shown
        )?;
    }
    Ok(())
}

/// A rectangle in canvas coordinates (y grows downwards).
#[derive(Debug, Clone, Copy)]
struct Rect {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
}

impl Rect {
    fn width(&self) -> f64 {
        self.right - self.left
    }
    fn height(&self) -> f64 {
        self.bottom - self.top
    }
}

/// A value axis with round bounds and a round tick step (1, 2 or 5 times a power of ten).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
}

impl Scale {
    /// The scale covering `min..=max` with about five ticks; bars also include zero.
    pub fn nice(min: f64, max: f64, include_zero: bool) -> Scale {
        let (mut lo, mut hi) = if include_zero {
            (min.min(0.0), max.max(0.0))
        } else {
            (min, max)
        };
        if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()).max(1.0) {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            if include_zero && lo == 0.0 {
                hi = lo + 1.0;
            } else {
                lo -= pad;
                hi += pad;
            }
        }
        let step = nice_step((hi - lo) / 5.0);
        Scale {
            lo: (lo / step).floor() * step,
            hi: (hi / step).ceil() * step,
            step,
        }
    }

    /// The tick values from `lo` to `hi`.
    pub fn ticks(&self) -> Vec<f64> {
        let n = ((self.hi - self.lo) / self.step).round() as usize;
        (0..=n).map(|i| self.lo + self.step * i as f64).collect()
    }

    /// A tick's label: as many decimals as the step needs, large values with a k/M/B suffix.
    pub fn label(&self, v: f64) -> String {
        let largest = self.lo.abs().max(self.hi.abs());
        let (div, suffix) = match largest {
            l if l >= 1e9 => (1e9, "B"),
            l if l >= 1e6 => (1e6, "M"),
            l if l >= 1e4 => (1e3, "k"),
            _ => (1.0, ""),
        };
        let decimals = (-(self.step / div).log10().floor()).clamp(0.0, 10.0) as usize;
        let text = format!("{:.*}", decimals, v / div);
        if text.parse::<f64>().is_ok_and(|x| x == 0.0) {
            "0".into()
        } else {
            text + suffix
        }
    }
}

/// The smallest of 1, 2, 5 × 10^k that is at least `raw` (a positive step).
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

// ---------------------------------------------------------------------------------------------
// Reading and checking the arguments

/// The series: from `values` (one unnamed series) or `series` (named), exactly one of them.
fn read_series(args: &Value, kind: Kind) -> Result<Vec<Series>, String> {
    let present = |name: &str| args.get(name).is_some_and(|v| !v.is_null());
    let series = match (present("values"), present("series")) {
        (true, true) => {
            return Err("give either `values` (one series) or `series`, not both".into());
        }
        (false, false) => {
            return Err("missing data: give `values` (a list of numbers) or `series` ([{\"name\", \"values\"}])".into());
        }
        (true, false) => {
            vec![Series {
                name: String::new(),
                values: read_numbers(&args["values"], "values")?,
            }]
        }
        (false, true) => {
            let Some(items) = args["series"].as_array().filter(|a| !a.is_empty()) else {
                return Err("`series` must be a non-empty list like [{\"name\": \"2024\", \"values\": [1, 2]}]".into());
            };
            items
                .iter()
                .enumerate()
                .map(|(i, s)| read_one_series(s, i))
                .collect::<Result<_, _>>()?
        }
    };
    if series.len() > PALETTE.len() {
        return Err(format!(
            "at most {} series can be told apart; got {}",
            PALETTE.len(),
            series.len()
        ));
    }
    if kind == Kind::Pie && series.len() > 1 {
        return Err(
            "a pie chart shows one series: give `values` (or a single entry in `series`)".into(),
        );
    }
    Ok(series)
}

fn read_one_series(v: &Value, i: usize) -> Result<Series, String> {
    let name = match v.get("name") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(format!("series[{i}] needs a `name` (a string)")),
    };
    let values = v
        .get("values")
        .ok_or_else(|| format!("series[{i}] (`{name}`) needs `values`"))?;
    Ok(Series {
        values: read_numbers(values, &format!("series[{i}].values"))?,
        name,
    })
}

/// A list of finite numbers; numeric strings such as "12.5" are accepted too.
fn read_numbers(v: &Value, what: &str) -> Result<Vec<f64>, String> {
    let Some(items) = v.as_array() else {
        return Err(format!("`{what}` must be a list of numbers"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let number = match item {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            number
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("`{what}[{i}]` is {item}: values must be finite numbers"))
        })
        .collect()
}

/// The labels: strings, or numbers and booleans written as text.
fn read_labels(v: &Value) -> Result<Vec<String>, String> {
    let Some(items) = v.as_array() else {
        return Err("`labels` must be a list of strings".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.trim().to_string()),
            Value::Number(_) | Value::Bool(_) => Ok(item.to_string()),
            _ => Err(format!("`labels[{i}]` is {item}: labels must be strings")),
        })
        .collect()
}

/// Every series has one value per label; there is data, and not too much.
fn check_shape(labels: &[String], series: &[Series]) -> Result<(), String> {
    if labels.is_empty() {
        return Err("no data: `labels` and `values` are empty".into());
    }
    for s in series {
        if s.values.len() != labels.len() {
            let which = if s.name.is_empty() {
                "`values`".to_string()
            } else {
                format!("series `{}`", s.name)
            };
            return Err(format!(
                "{which} has {} values but there are {} labels; give one value per label",
                s.values.len(),
                labels.len()
            ));
        }
    }
    let points = labels.len() * series.len();
    if points > MAX_POINTS {
        return Err(format!(
            "{points} points is too many to draw legibly (at most {MAX_POINTS}); aggregate or sample the data first"
        ));
    }
    Ok(())
}

/// Pie values are shares: non-negative, with a positive sum.
fn check_pie(labels: &[String], values: &[f64]) -> Result<(), String> {
    if let Some(i) = values.iter().position(|&v| v < 0.0) {
        return Err(format!(
            "a pie cannot show negative values: `{}` is {}; use a bar chart instead",
            labels[i],
            format_number(values[i])
        ));
    }
    if values.iter().sum::<f64>() <= 0.0 {
        return Err("a pie needs a positive total, but all values are 0".into());
    }
    Ok(())
}

/// An optional size argument, clamped to `min..=max`.
fn dimension(args: &Value, name: &str, default: f64, min: f64, max: f64) -> Result<f64, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(|x| x.round().clamp(min, max))
            .ok_or_else(|| format!("`{name}` must be a number of pixels ({min} to {max})")),
    }
}

// ---------------------------------------------------------------------------------------------
// Text and numbers

/// Text made safe for XML content and attributes: markup characters escaped, and characters XML
/// 1.0 forbids (most control characters) replaced by spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to at most `max_chars` characters (at least 1), ending in `…` when cut.
fn fit_text(text: &str, max_chars: f64) -> String {
    let max = max_chars.floor().max(1.0) as usize;
    if text.chars().count() <= max {
        text.to_string()
    } else {
        text.chars().take(max - 1).chain(['…']).collect()
    }
}

/// `text` cut to at most `max_chars` characters by dropping its middle, so labels that share a
/// prefix ("Department 12", "Department 13") stay distinguishable.
fn fit_middle(text: &str, max_chars: f64) -> String {
    let max = max_chars.floor().max(1.0) as usize;
    let count = text.chars().count();
    if count <= max || max < 6 {
        return fit_text(text, max_chars);
    }
    let tail = (max - 1) / 2;
    let head = max - 1 - tail;
    let chars: Vec<char> = text.chars().collect();
    chars[..head]
        .iter()
        .chain(['…'].iter())
        .chain(&chars[count - tail..])
        .collect()
}

/// A coordinate with one decimal, without a trailing `.0`.
fn num(x: f64) -> String {
    let text = format!("{x:.1}");
    match text.strip_suffix(".0") {
        Some("-0") => "0".into(),
        Some(whole) => whole.to_string(),
        None => text,
    }
}

/// A data value for tooltips: integers plainly, others to 12 significant digits.
fn format_number(x: f64) -> String {
    let rounded: f64 = if x == 0.0 {
        0.0
    } else {
        format!("{x:.11e}").parse().unwrap_or(x)
    };
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded}")
    }
}

/// A share as a percentage with one decimal (`12.5%`).
fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svg(args: Value) -> String {
        call("chart_svg", &args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(args: Value) -> String {
        call("chart_svg", &args).expect_err("expected an error")
    }

    /// Parses the SVG as XML and checks the root; returns the document text for further checks.
    fn well_formed(text: &str) -> roxmltree::Document<'_> {
        let doc = roxmltree::Document::parse(text)
            .unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{text}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        doc
    }

    fn count(doc: &roxmltree::Document<'_>, tag: &str) -> usize {
        doc.descendants().filter(|n| n.has_tag_name(tag)).count()
    }

    fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(str::to_string))
            .collect()
    }

    /// Asserts that each of `expected` is the text of a `<text>` element of `doc`.
    #[track_caller]
    fn assert_texts(doc: &roxmltree::Document<'_>, expected: &[&str]) {
        let texts = texts(doc);
        for expected in expected {
            assert!(
                texts.iter().any(|t| t == expected),
                "missing text {expected} in {texts:?}"
            );
        }
    }

    #[test]
    fn lists_the_tool() {
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let v: Value = serde_json::from_str(&server().handle(line, &mut call).unwrap()).unwrap();
        assert_eq!(v["result"]["tools"][0]["name"], "chart_svg");
        assert!(
            call("nope", &json!({}))
                .unwrap_err()
                .contains("unknown tool")
        );
    }

    #[test]
    fn bar_chart_is_well_formed_with_axes_and_tooltips() {
        let out = svg(
            json!({"kind": "bar", "title": "Sales by region", "labels": ["North", "South", "East"],
            "values": [17, 16, 0.5], "x_label": "Region", "y_label": "Units"}),
        );
        assert!(out.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg "));
        let doc = well_formed(&out);
        let root = doc.root_element();
        assert_eq!(
            (root.attribute("width"), root.attribute("height")),
            (Some("640"), Some("400"))
        );
        assert_eq!(count(&doc, "rect"), 1 + 3, "background and three bars");
        assert_texts(
            &doc,
            &[
                "Sales by region",
                "North",
                "South",
                "East",
                "Region",
                "Units",
                "0",
                "20",
            ],
        );
        let tips: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("title"))
            .filter_map(|n| n.text())
            .collect();
        assert_eq!(
            tips,
            ["Sales by region", "North: 17", "South: 16", "East: 0.5"]
        );
        assert_eq!(count(&doc, "g"), 1);
    }

    #[test]
    fn multi_series_bar_and_line_have_a_legend() {
        for kind in ["bar", "line"] {
            let out = svg(json!({"kind": kind, "labels": ["Q1", "Q2", "Q3"],
                "series": [{"name": "2023", "values": [1, 2, 3]}, {"name": "2024", "values": [2, 3, -1]}]}));
            assert_texts(&well_formed(&out), &["2023", "2024"]);
            assert!(
                out.contains(PALETTE[0]) && out.contains(PALETTE[1]),
                "{kind}"
            );
            assert!(out.contains("<title>2024, Q3: -1</title>"), "{kind}");
        }
        let line = svg(
            json!({"kind": "line", "labels": ["a", "b"], "series": [{"name": "x", "values": [1, 2]}, {"name": "y", "values": [3, 4]}]}),
        );
        let doc = well_formed(&line);
        assert_eq!(count(&doc, "polyline"), 2);
        assert_eq!(count(&doc, "circle"), 4);
    }

    #[test]
    fn single_series_has_no_legend() {
        let out = svg(json!({"kind": "line", "labels": ["a", "b", "c"], "values": [3, 1, 2]}));
        let doc = well_formed(&out);
        // Background only: a legend would add swatches.
        assert_eq!(count(&doc, "rect"), 1);
        assert_eq!(count(&doc, "polyline"), 1);
    }

    #[test]
    fn negative_bars_hang_from_the_zero_line() {
        let out = svg(json!({"kind": "bar", "labels": ["a", "b"], "values": [5, -5]}));
        let doc = well_formed(&out);
        let bars: Vec<(f64, f64)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.children().any(|c| c.has_tag_name("title")))
            .map(|n| {
                (
                    n.attribute("y").unwrap().parse().unwrap(),
                    n.attribute("height").unwrap().parse().unwrap(),
                )
            })
            .collect();
        assert_eq!(bars.len(), 2);
        // The positive bar ends where the negative one starts: at zero.
        assert!((bars[0].0 + bars[0].1 - bars[1].0).abs() < 0.11, "{bars:?}");
        assert!((bars[0].1 - bars[1].1).abs() < 0.11, "{bars:?}");
        assert!(
            texts(&doc).iter().any(|t| t == "-6"),
            "ticks reach below zero"
        );
        assert!(out.contains("<title>b: -5</title>"));
    }

    #[test]
    fn pie_chart_slices_percentages_and_legend() {
        let out = svg(
            json!({"kind": "pie", "title": "Share", "labels": ["apple", "pear", "fig"], "values": [50, 25, 25]}),
        );
        let doc = well_formed(&out);
        assert_eq!(count(&doc, "path"), 3);
        assert_texts(
            &doc,
            &[
                "50.0%",
                "25.0%",
                "apple (50.0%)",
                "pear (25.0%)",
                "fig (25.0%)",
            ],
        );
        // The half-pie slice is drawn with the large-arc flag off; exactly half is not "large".
        assert!(out.contains(" 0 0 1 "));
    }

    #[test]
    fn pie_with_one_nonzero_slice_is_a_circle() {
        let out = svg(json!({"kind": "pie", "labels": ["all", "none"], "values": [3, 0]}));
        let doc = well_formed(&out);
        assert_eq!(count(&doc, "circle"), 1);
        assert_eq!(count(&doc, "path"), 0);
        assert!(texts(&doc).iter().any(|t| t == "none (0.0%)"));
    }

    #[test]
    fn pie_legend_is_cut_to_fit() {
        let labels: Vec<String> = (0..60).map(|i| format!("slice {i}")).collect();
        let out = svg(json!({"kind": "pie", "labels": labels, "values": vec![1; 60]}));
        let doc = well_formed(&out);
        assert!(
            texts(&doc)
                .iter()
                .any(|t| t.starts_with("… ") && t.ends_with(" more"))
        );
    }

    #[test]
    fn text_is_escaped() {
        let nasty = "<b>&\"quotes'\u{1}</b>";
        let out = svg(
            json!({"kind": "bar", "title": nasty, "labels": [nasty, "ok"], "values": [1, 2], "x_label": nasty, "y_label": "]]>"}),
        );
        let doc = well_formed(&out);
        assert!(!out.contains("<b>"));
        assert_texts(&doc, &["<b>&\"quotes' </b>", "]]>"]);
        let pie = svg(json!({"kind": "pie", "title": nasty, "labels": [nasty], "values": [1]}));
        well_formed(&pie);
    }

    #[test]
    fn many_points_and_long_labels_stay_readable() {
        let labels: Vec<String> = (0..1000)
            .map(|i| format!("a rather long category name {i}"))
            .collect();
        let values: Vec<f64> = (0..1000).map(|i| f64::from(i).sin() * 1e5).collect();
        for kind in ["bar", "line"] {
            let out = svg(json!({"kind": kind, "labels": labels, "values": values}));
            let doc = well_formed(&out);
            let shown = texts(&doc)
                .iter()
                .filter(|t| t.starts_with("a rather"))
                .count();
            assert!(shown > 3 && shown < 20, "{kind}: {shown} x labels");
            assert!(
                texts(&doc).iter().any(|t| t.ends_with('k')),
                "{kind}: k-suffixed ticks"
            );
            assert!(out.len() < 400_000, "{kind}: {} bytes", out.len());
        }
    }

    #[test]
    fn size_is_clamped_and_labels_default_to_positions() {
        let out = svg(json!({"kind": "line", "values": [1, 2, 3], "width": 99999, "height": 10}));
        let doc = well_formed(&out);
        let root = doc.root_element();
        assert_eq!(
            (root.attribute("width"), root.attribute("height")),
            (Some("2000"), Some("180"))
        );
        let texts = texts(&doc);
        assert!(["1", "2", "3"].iter().all(|l| texts.iter().any(|t| t == l)));
        assert!(
            err(json!({"kind": "line", "values": [1], "width": "wide"}))
                .contains("`width` must be a number")
        );
    }

    #[test]
    fn flat_and_single_values_get_a_usable_axis() {
        well_formed(&svg(json!({"kind": "line", "values": [5, 5, 5]})));
        well_formed(&svg(json!({"kind": "bar", "values": [0, 0]})));
        well_formed(&svg(
            json!({"kind": "line", "labels": ["only"], "values": [-3.5]}),
        ));
    }

    #[test]
    fn validation_errors_say_what_to_fix() {
        let e = err(json!({"kind": "bar", "labels": ["a", "b"], "values": [1]}));
        assert!(
            e.contains("`values` has 1 values but there are 2 labels"),
            "{e}"
        );
        let e = err(
            json!({"kind": "bar", "labels": ["a"], "series": [{"name": "s", "values": [1, 2]}]}),
        );
        assert!(
            e.contains("series `s` has 2 values but there are 1 labels"),
            "{e}"
        );
        let e = err(json!({"kind": "bar", "values": [1, "x"]}));
        assert!(
            e.contains("`values[1]` is \"x\": values must be finite numbers"),
            "{e}"
        );
        let e = err(json!({"kind": "bar", "values": [1, null]}));
        assert!(e.contains("`values[1]` is null"), "{e}");
        let e = err(json!({"kind": "bar", "values": [1, "1e999"]}));
        assert!(e.contains("finite"), "{e}");
        let e = err(json!({"kind": "bar", "values": []}));
        assert!(e.contains("no data"), "{e}");
        let e = err(json!({"kind": "bar"}));
        assert!(e.contains("missing data"), "{e}");
        let e =
            err(json!({"kind": "bar", "values": [1], "series": [{"name": "a", "values": [1]}]}));
        assert!(e.contains("not both"), "{e}");
        let e = err(json!({"kind": "scatter", "values": [1]}));
        assert!(
            e.contains("unknown kind `scatter`; use bar, line or pie"),
            "{e}"
        );
        let e = err(json!({"values": [1]}));
        assert!(e.contains("missing string argument `kind`"), "{e}");
        let e = err(json!({"kind": "pie", "labels": ["a", "b"], "values": [1, -2]}));
        assert!(e.contains("negative values: `b` is -2"), "{e}");
        let e = err(json!({"kind": "pie", "values": [0, 0]}));
        assert!(e.contains("positive total"), "{e}");
        let e = err(
            json!({"kind": "pie", "series": [{"name": "a", "values": [1]}, {"name": "b", "values": [1]}]}),
        );
        assert!(e.contains("one series"), "{e}");
        let e = err(json!({"kind": "bar", "values": vec![1; MAX_POINTS + 1]}));
        assert!(e.contains("1001 points is too many"), "{e}");
        let series: Vec<Value> = (0..11)
            .map(|i| json!({"name": i.to_string(), "values": [1]}))
            .collect();
        assert!(err(json!({"kind": "bar", "series": series})).contains("at most 10 series"));
        let e = err(json!({"kind": "bar", "series": [{"values": [1]}]}));
        assert!(e.contains("series[0] needs a `name`"), "{e}");
        let e = err(json!({"kind": "bar", "labels": [["x"]], "values": [1]}));
        assert!(e.contains("labels must be strings"), "{e}");
    }

    #[test]
    fn lenient_inputs() {
        let out = svg(json!({"kind": "BAR", "labels": [2023, 2024], "values": ["1.5", 2]}));
        let doc = well_formed(&out);
        assert!(texts(&doc).iter().any(|t| t == "2023"));
        assert!(out.contains("<title>2023: 1.5</title>"));
    }

    #[test]
    fn nice_scales() {
        assert_eq!(
            Scale::nice(0.5, 17.0, true),
            Scale {
                lo: 0.0,
                hi: 20.0,
                step: 5.0
            }
        );
        assert_eq!(
            Scale::nice(-5.0, 5.0, true),
            Scale {
                lo: -6.0,
                hi: 6.0,
                step: 2.0
            }
        );
        assert_eq!(
            Scale::nice(3.0, 9.0, false),
            Scale {
                lo: 2.0,
                hi: 10.0,
                step: 2.0
            }
        );
        assert_eq!(
            Scale::nice(0.0, 0.0, true),
            Scale {
                lo: 0.0,
                hi: 1.0,
                step: 0.2
            }
        );
        let flat = Scale::nice(5.0, 5.0, false);
        assert!(flat.lo < 5.0 && flat.hi > 5.0);
        let s = Scale::nice(0.0, 1.0, true);
        assert_eq!(
            s.ticks().iter().map(|&t| s.label(t)).collect::<Vec<_>>(),
            ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        let s = Scale::nice(0.0, 2_500_000.0, true);
        assert_eq!(
            s.ticks().iter().map(|&t| s.label(t)).collect::<Vec<_>>(),
            ["0", "0.5M", "1.0M", "1.5M", "2.0M", "2.5M"]
        );
        let s = Scale::nice(-0.3, 0.3, false);
        assert!(s.ticks().iter().map(|&t| s.label(t)).any(|l| l == "0"));
    }

    #[test]
    fn helpers() {
        assert_eq!(escape("a<b>&\"'\u{7}"), "a&lt;b&gt;&amp;&quot;&apos; ");
        assert_eq!(fit_text("abcdef", 4.0), "abc…");
        assert_eq!(fit_text("abc", 4.0), "abc");
        assert_eq!(fit_text("abc", 0.0), "…");
        assert_eq!(fit_middle("Department 12", 9.0), "Depa…t 12");
        assert_eq!(fit_middle("Department 12", 13.0), "Department 12");
        assert_eq!(fit_middle("abcdefgh", 3.0), "ab…");
        assert_eq!(
            (num(1.0), num(-0.04), num(2.26)),
            ("1".into(), "0".into(), "2.3".into())
        );
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(percent(1.0 / 3.0), "33.3%");
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(37.0), 50.0);
    }
}
