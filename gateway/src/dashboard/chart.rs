//! Bar charts as inline SVG, drawn on the server: no JavaScript, no library,
//! readable by screen readers (a title, and each bar's value as its tooltip).

use maud::{html, Markup};

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
/// Room under the bars for the first and last labels.
const AXIS: f64 = 18.0;

/// One bar: its label (a day) and its value in the chart's unit.
pub struct Bar {
    pub label: String,
    pub value: i64,
}

/// A bar chart of `bars`, each bar's tooltip `label: shown(value)`; the
/// largest bar fills the height. An empty series draws an empty frame.
pub fn bars(title: &str, bars: &[Bar], shown: impl Fn(i64) -> String) -> Markup {
    let highest = bars.iter().map(|b| b.value).max().unwrap_or(0);
    let max = highest.max(1) as f64;
    let slot = WIDTH / bars.len().max(1) as f64;
    let summary = match (bars.first(), bars.last()) {
        (Some(first), Some(last)) => {
            format!("{title}: {} bars from {} to {}, highest {}", bars.len(), first.label, last.label, shown(highest))
        }
        _ => format!("{title}: no data"),
    };
    html! {
        figure.chart {
            figcaption { (title) @if highest > 0 { span.peak { "highest " (shown(highest)) } } }
            svg viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + AXIS)) role="img" aria-label=(summary)
                xmlns="http://www.w3.org/2000/svg" {
                line.axis x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
                @for (i, bar) in bars.iter().enumerate() {
                    @let h = (bar.value.max(0) as f64 / max * (HEIGHT - 4.0)).max(if bar.value > 0 { 1.0 } else { 0.0 });
                    rect x=(fmt(i as f64 * slot + slot * 0.1)) y=(fmt(HEIGHT - h)) width=(fmt(slot * 0.8))
                        height=(fmt(h)) {
                        title { (bar.label) ": " (shown(bar.value)) }
                    }
                }
                @if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
                    text x="0" y=(HEIGHT + AXIS - 4.0) { (first.label) }
                    text x=(WIDTH) y=(HEIGHT + AXIS - 4.0) text-anchor="end" { (last.label) }
                }
            }
        }
    }
}

/// Coordinates with one decimal: short markup, and stable for tests.
fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[i64]) -> Vec<Bar> {
        values.iter().enumerate().map(|(i, v)| Bar { label: format!("d{i}"), value: *v }).collect()
    }

    #[test]
    fn the_largest_bar_fills_the_height_and_each_bar_says_its_value() {
        let svg = bars("Volume", &series(&[0, 50, 100]), |v| format!("{v} USD")).into_string();
        assert!(svg.contains(r#"height="156.0""#), "{svg}");
        assert!(svg.contains(r#"height="78.0""#), "{svg}");
        assert!(svg.contains(r#"height="0.0""#), "a zero day draws no bar: {svg}");
        assert!(svg.contains("<title>d1: 50 USD</title>"), "{svg}");
        assert!(svg.contains(r#"aria-label="Volume: 3 bars from d0 to d2, highest 100 USD""#), "{svg}");
        assert!(svg.contains(r#"<span class="peak">highest 100 USD</span>"#), "the scale is said: {svg}");
    }

    #[test]
    fn a_tiny_bar_stays_visible_and_labels_are_escaped() {
        let mut s = series(&[1, 1_000_000]);
        s[0].label = "<b>".into();
        let svg = bars("T", &s, |v| v.to_string()).into_string();
        assert!(svg.contains(r#"height="1.0""#), "{svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
    }

    #[test]
    fn no_data_is_an_empty_frame() {
        let svg = bars("Refunds", &[], |v| v.to_string()).into_string();
        assert!(svg.contains("Refunds: no data") && !svg.contains("<rect"), "{svg}");
    }
}
