//! `ledgerctl statement` of the real binary: the month's statement as JSON (figures in
//! major units and `*_minor` integers), CSV, a table, and a self-contained HTML page
//! that a browser renders (headless chromium when installed; the page is checked for
//! well-formedness, its chart and its closing figure either way).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ledgerctl_as, InProcessServer};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The month it is now at `offset_secs` east of UTC (on the last day of a month, a
/// statement in +05:30 is already of the next one from 18:30 UTC).
fn this_month(offset_secs: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() + offset_secs;
    let (year, month, _) = ledger_core::calendar::civil_from_days((now / 86_400) as i64);
    format!("{year:04}-{month:02}")
}

fn signup(addr: std::net::SocketAddr, name: &str, email: &str) -> String {
    let password = "violet-quartz-lantern-58";
    let (ok, out, err) =
        ledgerctl_as(addr, "", &["signup", "--name", name, "--email", email], &format!("{password}\n"));
    assert!(ok, "{out}{err}");
    let (ok, token, err) = ledgerctl_as(addr, "", &["login", "--email", email], &format!("{password}\n"));
    assert!(ok, "{token}{err}");
    token.trim().to_string()
}

fn settle(addr: std::net::SocketAddr, token: &str, out: &str) {
    let id = json(out)["payment_id"].as_str().expect("payment_id").to_string();
    let started = Instant::now();
    loop {
        let (ok, out, err) = ledgerctl_as(addr, token, &["--json", "payments", &id], "");
        assert!(ok, "{out}{err}");
        if json(&out)["status"] == "completed" {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20) && json(&out)["status"] != "failed", "{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks that every element opened is closed in order (the page is written as
/// well-formed markup); void elements are written self-closed.
fn assert_well_formed(html: &str) {
    let body = html.strip_prefix("<!DOCTYPE html>").expect("a doctype");
    let mut open: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("a tag ends") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.ends_with('/') {
            continue;
        }
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if tag.starts_with('/') {
            assert_eq!(open.pop().as_deref(), Some(name.as_str()), "</{name}> closes the element opened last");
        } else {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
}

fn browser() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"].into_iter().map(str::to_string).find(|name| {
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success())
    })
}

fn render_in_browser(page: &Path, dir: &Path) {
    let Some(browser) = browser() else {
        println!("skipped: chromium not installed (the HTML was checked structurally)");
        return;
    };
    let shot = dir.join("statement.png");
    let output = Command::new(&browser)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,900")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run the browser");
    assert!(output.status.success(), "{browser}: {}", String::from_utf8_lossy(&output.stderr));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.len() > 1_000 && png.starts_with(b"\x89PNG"), "{browser} rendered the page");
}

/// The PDF's structure: header, trailer, every cross-reference offset at its object;
/// rendered with poppler's `pdftoppm` where it is installed.
fn check_pdf(pdf: &Path, dir: &Path) {
    let document = std::fs::read_to_string(pdf).expect("the PDF (plain ASCII)");
    assert!(document.starts_with("%PDF-1.4\n") && document.ends_with("%%EOF\n"), "header and trailer");
    let start: usize = document
        .rsplit("startxref\n")
        .next()
        .and_then(|tail| tail.lines().next())
        .and_then(|n| n.parse().ok())
        .expect("startxref");
    let table = &document[start..];
    let count: usize =
        table.lines().nth(1).and_then(|l| l.split(' ').nth(1)).and_then(|n| n.parse().ok()).expect("count");
    for (i, line) in table.lines().skip(3).take(count - 1).enumerate() {
        let offset: usize = line[..10].parse().expect("an offset");
        assert!(document[offset..].starts_with(&format!("{} 0 obj\n", i + 1)), "object {} at {offset}", i + 1);
    }
    assert!(
        document.contains("(41.75 USD) Tj") && document.contains("(Alan Kay) Tj"),
        "the closing and the counterparty"
    );
    let found = Command::new("sh").args(["-c", "command -v pdftoppm"]).output().is_ok_and(|o| o.status.success());
    if !found {
        println!("skipped: pdftoppm not installed (the PDF was checked structurally)");
        return;
    }
    let output =
        Command::new("pdftoppm").args(["-png", "-r", "50"]).arg(pdf).arg(dir.join("page")).output().expect("pdftoppm");
    assert!(output.status.success(), "pdftoppm: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_statement_prints_as_json_csv_a_table_and_a_page_a_browser_renders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = InProcessServer::start(dir.path());
    let addr = server.listen;
    let token = signup(addr, "Grace Hopper", "grace@example.com");
    signup(addr, "Alan Kay", "alan@example.com");
    let (ok, out, err) = ledgerctl_as(
        addr,
        &token,
        &["--json", "instruments", "add-card", "--exp-month", "8", "--exp-year", "2031"],
        "4242424242424242\n123\n",
    );
    assert!(ok, "{out}{err}");
    let card = json(&out)["instruments"][0]["instrument_id"].as_str().expect("card").to_string();
    let topup = ["--json", "topup", "--key", "t1", "--amount", "50.00", "--currency", "USD", "--instrument", &card];
    let (ok, out, err) = ledgerctl_as(addr, &token, &topup, "");
    assert!(ok, "{out}{err}");
    settle(addr, &token, &out);
    let pay = ["--json", "pay", "--key", "p1", "--to-email", "alan@example.com", "--amount", "8.25"];
    let (ok, out, err) = ledgerctl_as(
        addr,
        &token,
        &[&pay[..], &["--currency", "USD", "--note", "<b>books</b> & \"tea\""]].concat(),
        "",
    );
    assert!(ok, "{out}{err}");
    settle(addr, &token, &out);
    let (ok, out, err) = ledgerctl_as(addr, &token, &["payments"], "");
    assert!(ok && out.contains("Alan Kay") && out.contains("Grace Hopper") && out.contains("books"), "{out}{err}");

    let month = this_month(0);
    let (ok, out, err) = ledgerctl_as(addr, &token, &["statement", "--month", &month, "--format", "json"], "");
    assert!(ok, "{out}{err}");
    let statement = &json(&out)["statements"][0];
    assert_eq!((statement["closing"].as_str(), statement["closing_minor"].as_i64()), (Some("41.75 USD"), Some(4_175)));
    assert_eq!(statement["holder_name"], "Grace Hopper");
    let lines = statement["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 2, "{statement}");
    assert_eq!(
        (lines[1]["counterparty"].as_str(), lines[1]["amount_out_minor"].as_i64()),
        (Some("Alan Kay"), Some(825))
    );
    assert!(lines[1]["time"].as_str().is_some_and(|t| t.starts_with(&month) && t.ends_with('Z')), "{}", lines[1]);

    let (ok, out, err) = ledgerctl_as(addr, &token, &["statement", "--month", &month, "--format", "csv"], "");
    assert!(ok, "{out}{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 5, "a header, the opening, two lines, the closing: {out}");
    assert!(rows[3].contains("\"<b>books</b> & \"\"tea\"\"\"") && rows[3].contains("8.25 USD"), "{out}");
    assert!(rows[4].contains("closing_balance") && rows[4].ends_with("41.75 USD,,"), "{out}");

    let month_east = this_month(5 * 3_600 + 30 * 60);
    let (ok, out, err) =
        ledgerctl_as(addr, &token, &["statement", "--month", &month_east, "--utc-offset", "+05:30"], "");
    assert!(ok && out.contains("Closing balance 41.75 USD") && out.contains("+05:30"), "{out}{err}");

    let page = dir.path().join("statement.html");
    let page_arg = page.display().to_string();
    let (ok, out, err) =
        ledgerctl_as(addr, &token, &["statement", "--month", &month, "--format", "html", "--out", &page_arg], "");
    assert!(ok, "{out}{err}");
    let html = std::fs::read_to_string(&page).expect("the page");
    assert_well_formed(&html);
    assert!(html.contains("<svg") && html.contains("<path d=\"M"), "an inline chart");
    assert!(html.contains("41.75 USD") && html.contains("Alan Kay"), "the closing figure and the counterparty");
    assert!(html.contains("&lt;b&gt;books&lt;/b&gt; &amp; &quot;tea&quot;") && !html.contains("<b>books"), "escaped");
    assert!(!html.contains("<script"), "no script");
    assert!(!html.contains("src=") && !html.contains("href=") && !html.contains("url("), "no external assets");
    assert_eq!(html.matches("http").count(), html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count());
    render_in_browser(&page, dir.path());

    let pdf = dir.path().join("statement.pdf");
    let pdf_arg = pdf.display().to_string();
    let (ok, out, err) =
        ledgerctl_as(addr, &token, &["statement", "--month", &month, "--format", "pdf", "--out", &pdf_arg], "");
    assert!(ok, "{out}{err}");
    check_pdf(&pdf, dir.path());

    let (ok, _, err) = ledgerctl_as(addr, &token, &["statement", "--month", "2026-13"], "");
    assert!(!ok && err.contains("month"), "{err}");
    server.stop();
}
