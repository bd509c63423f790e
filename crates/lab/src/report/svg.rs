//! Hand-written SVG charts: stacked horizontal bars, horizontal box plots
//! and line charts. Every text that reaches the SVG goes through [`esc`].

use std::fmt::Write as _;

use crate::metrics::percentile_sorted;

/// Chart width, px.
const W: f64 = 760.0;
/// Left margin for row labels, px.
const LEFT: f64 = 190.0;
/// Right margin, px.
const RIGHT: f64 = 30.0;
/// Height of one row, px.
const ROW: f64 = 30.0;
/// Top margin (title), px.
const TOP: f64 = 34.0;
/// Bottom margin (axis), px.
const BOTTOM: f64 = 40.0;

/// Colours for series, in order.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for HTML and SVG (element content and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A short number: no more than three significant decimals.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    s
}

/// About `n` round tick values covering `lo..=hi`.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    (0..=(n * 3))
        .map(|i| start + step * i as f64)
        .take_while(|t| *t <= hi + step * 1e-9)
        .filter(|t| *t >= lo - step * 1e-9)
        .collect()
}

fn header(out: &mut String, title: &str, h: f64) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{t}"><title>{t}</title><text x="10" y="20" class="title">{t}</text>"#,
        t = esc(title)
    );
}

struct Axis {
    lo: f64,
    hi: f64,
}

impl Axis {
    fn new(lo: f64, hi: f64) -> Axis {
        let hi = if hi <= lo { lo + 1.0 } else { hi };
        Axis { lo, hi }
    }

    fn x(&self, v: f64) -> f64 {
        LEFT + (v - self.lo) / (self.hi - self.lo) * (W - LEFT - RIGHT)
    }

    fn draw_x(&self, out: &mut String, y0: f64, y1: f64, unit: &str) {
        self.draw_x_ticks(out, y0, y1, unit, false);
    }

    fn draw_x_ticks(&self, out: &mut String, y0: f64, y1: f64, unit: &str, integers: bool) {
        for t in ticks(self.lo, self.hi, 6)
            .into_iter()
            .filter(|t| !integers || t.fract() == 0.0)
        {
            let x = self.x(t);
            let _ = write!(
                out,
                r#"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" class="grid"/><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
                y1 + 14.0,
                esc(&num(t))
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text>"#,
            LEFT + (W - LEFT - RIGHT) / 2.0,
            y1 + 30.0,
            esc(unit)
        );
    }
}

fn row_label(out: &mut String, y: f64, label: &str) {
    let shown: String = label.chars().take(28).collect();
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" class="label" text-anchor="end">{}</text>"#,
        LEFT - 8.0,
        y + 4.0,
        esc(&shown)
    );
}

/// One segment of a stacked bar.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Legend name.
    pub name: String,
    /// Count.
    pub value: usize,
    /// Fill colour (a constant of the report, not user input).
    pub color: &'static str,
}

/// Horizontal stacked bars, one row per label.
pub fn stacked_bars(title: &str, unit: &str, rows: &[(String, Vec<Segment>)]) -> String {
    let max = rows
        .iter()
        .map(|(_, s)| s.iter().map(|x| x.value).sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let names: Vec<(&str, &str)> = rows
        .first()
        .map(|(_, s)| s.iter().map(|x| (x.name.as_str(), x.color)).collect())
        .unwrap_or_default();
    let h = TOP + ROW * rows.len() as f64 + BOTTOM + 6.0 + LEGEND_ROW * legend_rows(&names) as f64;
    let mut out = String::new();
    header(&mut out, title, h);
    let axis = Axis::new(0.0, max as f64);
    axis.draw_x_ticks(&mut out, TOP, TOP + ROW * rows.len() as f64, unit, true);
    for (i, (label, segs)) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64 + ROW / 2.0;
        row_label(&mut out, y, label);
        let mut acc = 0usize;
        for s in segs.iter().filter(|s| s.value > 0) {
            let (x0, x1) = (axis.x(acc as f64), axis.x((acc + s.value) as f64));
            let _ = write!(
                out,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                y - ROW * 0.35,
                (x1 - x0).max(0.5),
                ROW * 0.7,
                s.color,
                esc(&s.name),
                s.value
            );
            acc += s.value;
        }
    }
    let legend_top = TOP + ROW * rows.len() as f64 + BOTTOM + 6.0;
    legend(&mut out, legend_top, &names);
    out.push_str("</svg>");
    out
}

/// Height of one legend line, px.
const LEGEND_ROW: f64 = 16.0;

fn legend_width(name: &str) -> f64 {
    24.0 + 6.5 * name.chars().take(28).count() as f64
}

/// Lines the legend needs.
fn legend_rows(items: &[(&str, &str)]) -> usize {
    let mut rows = usize::from(!items.is_empty());
    let mut x = LEFT;
    for (name, _) in items {
        let w = legend_width(name);
        if x + w > W - RIGHT && x > LEFT {
            rows += 1;
            x = LEFT;
        }
        x += w;
    }
    rows
}

/// The legend, wrapped, its first line's top at `top`.
fn legend(out: &mut String, top: f64, items: &[(&str, &str)]) {
    let mut x = LEFT;
    let mut y = top + 10.0;
    for (name, color) in items {
        let w = legend_width(name);
        if x + w > W - RIGHT && x > LEFT {
            x = LEFT;
            y += LEGEND_ROW;
        }
        let shown: String = name.chars().take(28).collect();
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{y:.1}" class="tick">{}</text>"#,
            y - 9.0,
            x + 14.0,
            esc(&shown)
        );
        x += w;
    }
}

/// Horizontal box plots, one row per label: box from the 25th to the 75th
/// percentile, a line at the median, whiskers from minimum to maximum.
/// `threshold` draws a dashed reference line with its caption.
pub fn box_plots(
    title: &str,
    unit: &str,
    rows: &[(String, Vec<f64>)],
    threshold: Option<(f64, &str)>,
) -> String {
    let mut all: Vec<f64> = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    if let Some((t, _)) = threshold {
        all.push(t);
    }
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let axis = Axis::new(
        if lo.is_finite() { lo } else { 0.0 },
        if hi.is_finite() { hi * 1.05 } else { 1.0 },
    );
    let h = TOP + ROW * rows.len() as f64 + BOTTOM;
    let mut out = String::new();
    header(&mut out, title, h);
    let bottom = TOP + ROW * rows.len() as f64;
    axis.draw_x(&mut out, TOP, bottom, unit);
    for (i, (label, values)) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64 + ROW / 2.0;
        row_label(&mut out, y, label);
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" class="tick">no successful calls</text>"#,
                LEFT + 4.0,
                y + 4.0
            );
            continue;
        }
        v.sort_by(f64::total_cmp);
        let q = |p| axis.x(percentile_sorted(&v, p));
        let (min, q1, med, q3, max) = (q(0.0), q(25.0), q(50.0), q(75.0), q(100.0));
        let bh = ROW * 0.6;
        let _ = write!(
            out,
            r##"<g><title>{l}: n={n}, min {a}, median {m}, max {b}</title><line x1="{min:.1}" y1="{y:.1}" x2="{max:.1}" y2="{y:.1}" class="whisker"/><line x1="{min:.1}" y1="{:.1}" x2="{min:.1}" y2="{:.1}" class="whisker"/><line x1="{max:.1}" y1="{:.1}" x2="{max:.1}" y2="{:.1}" class="whisker"/><rect x="{q1:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" class="box"/><line x1="{med:.1}" y1="{:.1}" x2="{med:.1}" y2="{:.1}" class="median"/></g>"##,
            y - bh / 4.0,
            y + bh / 4.0,
            y - bh / 4.0,
            y + bh / 4.0,
            y - bh / 2.0,
            (q3 - q1).max(1.0),
            y - bh / 2.0,
            y + bh / 2.0,
            l = esc(label),
            n = v.len(),
            a = esc(&num(v[0])),
            m = esc(&num(percentile_sorted(&v, 50.0))),
            b = esc(&num(v[v.len() - 1])),
        );
    }
    if let Some((t, caption)) = threshold {
        let x = axis.x(t);
        // Captions near the right edge go to the left of the line.
        let (tx, anchor) = if x > W - RIGHT - 130.0 {
            (x - 3.0, "end")
        } else {
            (x + 3.0, "start")
        };
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{TOP:.1}" x2="{x:.1}" y2="{bottom:.1}" class="threshold"/><text x="{tx:.1}" y="{:.1}" class="threshold-label" text-anchor="{anchor}">{}</text>"#,
            TOP + 10.0,
            esc(caption)
        );
    }
    out.push_str("</svg>");
    out
}

/// A line chart of several series of (x, y) points.
pub fn line_chart(
    title: &str,
    x_unit: &str,
    y_unit: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y_range: (f64, f64),
) -> String {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .filter(|x| x.is_finite())
        .collect();
    let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let x_hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (x_lo, x_hi) = if x_lo.is_finite() {
        (x_lo.min(0.0), x_hi)
    } else {
        (0.0, 1.0)
    };
    let xa = Axis::new(x_lo, x_hi);
    let plot_h = 220.0;
    let names: Vec<(&str, &str)> = series
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), PALETTE[i % PALETTE.len()]))
        .collect();
    let h = TOP + plot_h + BOTTOM + 6.0 + LEGEND_ROW * legend_rows(&names) as f64;
    let (y_lo, y_hi) = (y_range.0, y_range.1.max(y_range.0 + 1e-9));
    let y = |v: f64| TOP + plot_h - (v - y_lo) / (y_hi - y_lo) * plot_h;
    let mut out = String::new();
    header(&mut out, title, h);
    xa.draw_x(&mut out, TOP, TOP + plot_h, x_unit);
    for t in ticks(y_lo, y_hi, 5) {
        let _ = write!(
            out,
            r#"<line x1="{LEFT:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y(t) + 4.0,
            esc(&num(t)),
            yy = y(t)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="end">{}</text>"#,
        LEFT - 40.0,
        TOP + plot_h / 2.0,
        esc(y_unit)
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<String> = points
            .iter()
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| format!("{:.1},{:.1}", xa.x(*a), y(*b)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"><title>{}</title></polyline>"#,
            pts.join(" "),
            esc(name)
        );
        for p in &pts {
            if let Some((a, b)) = p.split_once(',') {
                let _ = write!(out, r#"<circle cx="{a}" cy="{b}" r="2.5" fill="{color}"/>"#);
            }
        }
    }
    legend(&mut out, TOP + plot_h + BOTTOM + 6.0, &names);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            ticks(0.0, 100.0, 5),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(ticks(5.0, 5.0, 5), vec![5.0]);
    }

    #[test]
    fn charts_escape_labels() {
        let rows = vec![("<script>".to_owned(), vec![1.0, 2.0, 3.0])];
        let s = box_plots("t", "ms", &rows, Some((2.0, "limit")));
        assert!(!s.contains("<script>"));
        assert!(s.contains("&lt;script&gt;"));
    }
}
