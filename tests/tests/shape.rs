//! The code's shape, checked: no product file over `FILE_LINES_MAX` lines and no
//! product function over `FUNCTION_LINES_MAX` lines. Product code is every `.rs` file
//! under a crate's `src/` except this test crate's, with `#[cfg(test)]` modules left
//! out; generated code is not in the tree (it is written to `OUT_DIR`).

use std::path::{Path, PathBuf};

/// Most lines of product code in one file.
const FILE_LINES_MAX: usize = 900;
/// Most lines of one function, signature to closing brace.
const FUNCTION_LINES_MAX: usize = 100;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is inside the workspace").to_path_buf()
}

fn product_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "tests" | ".git" | "fixtures" | "benches") {
                product_files(&path, found);
            }
        } else if name.ends_with(".rs") && path.components().any(|c| c.as_os_str() == "src") {
            found.push(path);
        }
    }
}

/// The source with string and char literals and comments blanked, so braces in them do
/// not count; line structure is kept.
fn code_only(source: &str) -> Vec<String> {
    let mut out = String::with_capacity(source.len());
    let chars: Vec<char> = source.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                out.push(if chars[i] == '\n' { '\n' } else { ' ' });
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&chars, i) {
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                if chars[j] == '\n' {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if chars.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 1;
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || (next == Some('\\'))) {
            // A char literal ('x' or '\n', '\u{..}'); a lifetime has no closing quote.
            let mut j = i + 1;
            if next == Some('\\') {
                j += 1;
            }
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            out.push_str("' '");
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out.lines().map(str::to_string).collect()
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Lines of product code (before a module-level `#[cfg(test)]`) and every function's
/// (name, first line, length).
fn measure(lines: &[String]) -> (usize, Vec<(String, usize, usize)>) {
    let product_end = lines.iter().position(|line| line.starts_with("#[cfg(test)]")).unwrap_or(lines.len());
    let mut functions = Vec::new();
    for (start, line) in lines[..product_end].iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(at) = trimmed.find("fn ") else { continue };
        let head = &trimmed[..at];
        let is_definition = head
            .split_whitespace()
            .all(|word| matches!(word, "pub" | "pub(crate)" | "pub(super)" | "async" | "const" | "unsafe" | "extern"));
        if !is_definition {
            continue;
        }
        let name: String = trimmed[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, body_line) in lines[start..product_end].iter().enumerate() {
            for c in body_line.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break,
                    _ => {}
                }
            }
            if !opened && body_line.trim_end().ends_with(';') {
                break; // a declaration without a body (in a trait)
            }
            if opened && depth <= 0 {
                functions.push((name.clone(), start + 1, offset + 1));
                break;
            }
        }
    }
    (product_end, functions)
}

#[test]
fn no_product_file_or_function_is_too_long() {
    let root = workspace_root();
    let mut files = Vec::new();
    for crate_dir in ["proto", "ledger-core", "projections", "api", "tools"] {
        product_files(&root.join(crate_dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} product files under {}", files.len(), root.display());
    let mut too_long = Vec::new();
    for path in files {
        let source = std::fs::read_to_string(&path).expect("read source");
        let (product_lines, functions) = measure(&code_only(&source));
        let shown = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
        if product_lines > FILE_LINES_MAX {
            too_long.push(format!("{shown}: {product_lines} lines (at most {FILE_LINES_MAX})"));
        }
        for (name, line, length) in functions {
            if length > FUNCTION_LINES_MAX {
                too_long.push(format!("{shown}:{line}: fn {name} is {length} lines (at most {FUNCTION_LINES_MAX})"));
            }
        }
    }
    assert!(too_long.is_empty(), "too long:\n{}", too_long.join("\n"));
}

#[test]
fn the_measure_sees_functions_and_ignores_braces_in_strings_and_tests() {
    let source = "fn short() {\n    let s = \"}}}\";\n    let c = '}';\n}\n\nfn long() {\n    a();\n    b();\n}\n\n#[cfg(test)]\nmod tests {\n    fn hidden() {}\n}\n";
    let (product_lines, functions) = measure(&code_only(source));
    assert_eq!(product_lines, 10);
    assert_eq!(functions, vec![("short".to_string(), 1, 4), ("long".to_string(), 6, 4)]);
}
