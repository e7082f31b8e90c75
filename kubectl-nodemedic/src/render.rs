//! Plain-text rendering: aligned tables, ages, and colour only where a
//! person reads it (a terminal, without NO_COLOR).

use std::io::IsTerminal;

use k8s_openapi::jiff::Timestamp;

use crate::cli::ColorChoice;

/// Whether to colour standard output.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal()
        }
    }
}

/// Colours for table cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
    Dim,
}

/// A cell: text and tone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl Cell {
    pub fn new(text: impl Into<String>, tone: Tone) -> Self {
        Self {
            text: text.into(),
            tone,
        }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Self {
        Cell::new(text, Tone::Plain)
    }
}

/// An aligned table (kubectl style: upper-case headers, two spaces).
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self, color: bool) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.text.chars().count());
                }
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<Cell>, out: &mut String| {
            let last = cells.len().saturating_sub(1);
            for (i, c) in cells.into_iter().enumerate() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(c.text.chars().count());
                out.push_str(&paint(&c.text, c.tone, color));
                if i != last {
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push('\n');
        };
        line(
            self.headers.iter().map(|h| Cell::from(*h)).collect(),
            &mut out,
        );
        for r in &self.rows {
            line(r.clone(), &mut out);
        }
        out
    }
}

/// `text` in `tone` (ANSI) when `color`.
pub fn paint(text: &str, tone: Tone, color: bool) -> String {
    let code = match tone {
        Tone::Plain => return text.to_owned(),
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
        Tone::Dim => "2",
    };
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// A short age like kubectl's: 45s, 3m10s, 2h5m, 3d4h.
pub fn age(then: Timestamp, now: Timestamp) -> String {
    short((now.as_second() - then.as_second()).max(0))
}

/// "in 4m" or "now" (for a time not after `now`).
pub fn until(then: Timestamp, now: Timestamp) -> String {
    let s = then.as_second() - now.as_second();
    if s <= 0 {
        "now".into()
    } else {
        format!("in {}", short(s))
    }
}

/// Seconds as 45s, 3m10s, 2h5m, 3d4h.
pub fn short(s: i64) -> String {
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) if sec == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{sec}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// "+4m" relative to `origin` (for timelines).
pub fn offset(t: Timestamp, origin: Timestamp) -> String {
    let s = t.as_second() - origin.as_second();
    if s < 0 {
        format!("-{}", short(-s))
    } else {
        format!("+{}", short(s))
    }
}

/// RFC 3339, seconds.
pub fn stamp(t: Timestamp) -> String {
    nodemedic_operator::plan::truncate(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(short(45), "45s");
        assert_eq!(short(190), "3m10s");
        assert_eq!(short(240), "4m");
        assert_eq!(short(7500), "2h5m");
        assert_eq!(short(3 * 86_400 + 4 * 3600 + 59), "3d4h");
    }

    #[test]
    fn colour_only_when_asked() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec![Cell::new("x", Tone::Bad), "yy".into()]);
        assert_eq!(t.render(false), "A  B\nx  yy\n");
        assert!(t.render(true).contains("\x1b[31mx\x1b[0m"));
    }
}
