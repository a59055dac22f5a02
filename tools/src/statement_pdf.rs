//! A statement as a PDF a person can open, print or file: A4 landscape pages with the
//! balance chart, the movements as a table (continued over as many pages as needed)
//! and the totals. Written by hand in PDF 1.4 with the standard Helvetica fonts (no
//! font files, no images), so the file is plain ASCII and small.

use std::fmt::Write as _;

use super::{cell, fx_text, Shown};
use crate::present;

/// A4 landscape, in points.
const PAGE_WIDTH: f64 = 842.0;
const PAGE_HEIGHT: f64 = 595.0;
const MARGIN: f64 = 36.0;
const FONT_SIZE: f64 = 7.5;
const ROW_HEIGHT: f64 = 11.0;
const CHART_HEIGHT: f64 = 120.0;

/// Columns: heading, width in points, right-aligned.
const COLUMNS: [(&str, f64, bool); 10] = [
    ("Time", 96.0, false),
    ("Payment", 166.0, false),
    ("Kind", 66.0, false),
    ("Counterparty", 80.0, false),
    ("Note", 80.0, false),
    ("In", 56.0, true),
    ("Out", 56.0, true),
    ("Fee", 48.0, true),
    ("Balance", 64.0, true),
    ("FX", 56.0, false),
];

/// Text as a PDF string literal in WinAnsi: Latin-1 letters kept (as octal escapes),
/// anything else replaced by `?`, delimiters escaped.
fn literal(text: &str) -> String {
    let mut out = String::from("(");
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            '\u{a0}'..='\u{ff}' => {
                let _ = write!(out, "\\{:03o}", c as u32);
            }
            '\u{2014}' | '\u{2013}' => out.push('-'),
            '\u{2022}' => out.push('*'),
            _ => out.push('?'),
        }
    }
    out.push(')');
    out
}

/// Cut to what fits `width` points at `FONT_SIZE` (Helvetica averages about half an em).
fn fit(text: &str, width: f64) -> String {
    let max = ((width - 4.0) / (FONT_SIZE * 0.52)).max(1.0) as usize;
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('~');
    cut
}

/// The width of `text` in points, near enough to right-align figures (digits, the
/// separator and the currency code are 0.56-0.72 em in Helvetica).
fn width_of(text: &str) -> f64 {
    text.chars().map(|c| if c.is_ascii_uppercase() { 0.67 } else { 0.556 }).sum::<f64>() * FONT_SIZE
}

/// One page's content stream being drawn, top to bottom.
struct Page {
    ops: String,
    y: f64,
}

impl Page {
    fn new() -> Page {
        Page { ops: String::new(), y: PAGE_HEIGHT - MARGIN }
    }

    fn text(&mut self, x: f64, font: &str, size: f64, text: &str) {
        let _ = writeln!(self.ops, "BT /{font} {size} Tf {x:.1} {:.1} Td {} Tj ET", self.y, literal(text));
    }

    fn line(&mut self, size: f64, font: &str, text: &str) {
        self.y -= size + 4.0;
        self.text(MARGIN, font, size, text);
    }

    fn row(&mut self, cells: &[String], font: &str) {
        self.y -= ROW_HEIGHT;
        let mut x = MARGIN;
        for ((_, width, right), text) in COLUMNS.iter().zip(cells) {
            let shown = fit(text, *width);
            let at = if *right { x + width - 2.0 - width_of(&shown) } else { x };
            self.text(at, font, FONT_SIZE, &shown);
            x += width;
        }
    }

    fn rule(&mut self) {
        let _ = writeln!(
            self.ops,
            "0.8 G 0.5 w {MARGIN} {:.1} m {:.1} {:.1} l S 0 G",
            self.y - 3.0,
            PAGE_WIDTH - MARGIN,
            self.y - 3.0
        );
    }

    fn full(&self) -> bool {
        self.y < MARGIN + 3.0 * ROW_HEIGHT
    }
}

/// The balance over the month as a step line in a box `CHART_HEIGHT` high.
fn chart(page: &mut Page, shown: &Shown<'_>) {
    let s = shown.s;
    let (points, low, high) = shown.balance_points();
    let (top, bottom) = (page.y - 6.0, page.y - 6.0 - CHART_HEIGHT);
    let span = s.to_ns.saturating_sub(s.from_ns).max(1) as f64;
    let x = |at: u64| MARGIN + at.saturating_sub(s.from_ns) as f64 / span * (PAGE_WIDTH - 2.0 * MARGIN);
    let y = |v: i128| bottom + (v - low) as f64 / (high - low) as f64 * (top - bottom);
    let _ = writeln!(page.ops, "0.7 G 0.5 w {MARGIN} {:.1} m {:.1} {:.1} l S", y(0), PAGE_WIDTH - MARGIN, y(0));
    let _ = write!(page.ops, "0.12 0.37 0.66 RG 1.5 w {:.1} {:.1} m", x(points[0].0), y(points[0].1));
    for pair in points.windows(2) {
        let (_, before) = pair[0];
        let (at, value) = pair[1];
        let _ = write!(page.ops, " {:.1} {:.1} l {:.1} {:.1} l", x(at), y(before), x(at), y(value));
    }
    let _ = writeln!(page.ops, " S 0 G 0 g");
    page.y = bottom - 4.0;
    let scale = format!("{} to {}", shown.money(low), shown.money(high));
    page.line(FONT_SIZE, "F1", &format!("Balance over the month (scale {scale})"));
}

/// The pages of one statement (a new page for each wallet's statement).
fn statement_pages(shown: &Shown<'_>, pages: &mut Vec<Page>) {
    let (s, offset) = (shown.s, shown.s.utc_offset_minutes);
    let mut page = Page::new();
    page.line(14.0, "F2", &format!("Statement {} - {} wallet", s.month, s.currency));
    page.line(9.0, "F1", &format!("{} (user {}), account {}", s.holder_name, s.user_id, s.account_id));
    let period = format!("From {} to {}", present::time_text(s.from_ns, offset), present::time_text(s.to_ns, offset));
    page.line(9.0, "F1", &period);
    chart(&mut page, shown);
    let headings: Vec<String> = COLUMNS.iter().map(|c| c.0.to_string()).collect();
    page.y -= 6.0;
    page.row(&headings, "F2");
    page.rule();
    let mut opening = vec![String::new(); COLUMNS.len()];
    opening[0] = "Opening balance".into();
    opening[8] = shown.money(shown.opening);
    page.row(&opening, "F2");
    for line in &shown.lines {
        if page.full() {
            pages.push(std::mem::replace(&mut page, Page::new()));
            page.line(9.0, "F1", &format!("Statement {} - {} wallet (continued)", s.month, s.currency));
            page.row(&headings, "F2");
            page.rule();
        }
        let l = line.l;
        let party = if l.counterparty_name.is_empty() { "-" } else { &l.counterparty_name };
        page.row(
            &[
                present::time_text(l.at_ns, offset),
                l.payment_id.clone(),
                l.kind.clone(),
                party.to_string(),
                l.note.clone(),
                cell(shown, line.amount_in),
                cell(shown, line.amount_out),
                cell(shown, line.fee),
                shown.money(line.balance),
                fx_text(line),
            ],
            "F1",
        );
    }
    page.rule();
    let mut totals = vec![String::new(); COLUMNS.len()];
    totals[0] = "Totals".into();
    (totals[5], totals[6], totals[7]) =
        (shown.money(shown.money_in), shown.money(shown.money_out), shown.money(shown.fees));
    page.row(&totals, "F2");
    let mut closing = vec![String::new(); COLUMNS.len()];
    closing[0] = "Closing balance".into();
    closing[8] = shown.money(shown.closing);
    page.row(&closing, "F2");
    pages.push(page);
}

/// The whole document: catalog, page tree, two fonts, then a page and its content
/// stream per page, the cross-reference table and the trailer.
pub fn pdf(statements: &[Shown<'_>]) -> String {
    let mut pages = Vec::new();
    for shown in statements {
        statement_pages(shown, &mut pages);
    }
    if pages.is_empty() {
        let mut page = Page::new();
        page.line(12.0, "F1", "No wallet: no statement.");
        pages.push(page);
    }
    let kids: Vec<String> = (0..pages.len()).map(|i| format!("{} 0 R", 5 + 2 * i)).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    for (i, page) in pages.iter().enumerate() {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] \
             /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
            6 + 2 * i
        ));
        objects.push(format!("<< /Length {} >>\nstream\n{}endstream", page.ops.len(), page.ops));
    }
    let mut out = String::from("%PDF-1.4\n");
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        let _ = write!(out, "{} 0 obj\n{object}\nendobj\n", i + 1);
    }
    let xref = out.len();
    let _ = write!(out, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for offset in offsets {
        let _ = writeln!(out, "{offset:010} 00000 n ");
    }
    let _ = write!(out, "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_cut_to_its_column() {
        assert_eq!(literal("a (b) \\ c"), "(a \\(b\\) \\\\ c)");
        assert_eq!(literal("Zoë • 中"), "(Zo\\353 * ?)");
        assert_eq!(fit("short", 100.0), "short");
        let cut = fit(&"x".repeat(200), 50.0);
        assert!(cut.ends_with('~') && cut.chars().count() < 20, "{cut}");
    }

    #[test]
    fn an_empty_document_has_a_valid_cross_reference_table() {
        let document = pdf(&[]);
        assert!(document.starts_with("%PDF-1.4\n") && document.ends_with("%%EOF\n"));
        let start: usize = document
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|n| n.parse().ok())
            .expect("startxref");
        assert!(document[start..].starts_with("xref\n0 7\n"), "startxref points at the table");
        for (i, line) in document[start..].lines().skip(3).take(6).enumerate() {
            let offset: usize = line[..10].parse().expect("an offset");
            assert!(document[offset..].starts_with(&format!("{} 0 obj\n", i + 1)), "object {} at {offset}", i + 1);
        }
    }
}
