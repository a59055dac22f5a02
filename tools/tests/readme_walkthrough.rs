//! The README's walk-through, run as a new user would run it: every command of its
//! `sh` blocks (between the `walkthrough` markers) in order, in one shell, against a
//! `ledgerd` on the defaults the README's set-up command gives (an empty `data/`
//! directory with a generated `data/admin.token`), with `ledgerctl` on PATH. A line
//! that ends in `# → TEXT` must print TEXT. The README and this test cannot drift
//! apart: the test reads the README itself.

mod common;

use std::path::Path;
use std::process::Command;

/// The commands of the README's walk-through, with the text each must print.
fn walkthrough() -> Vec<(String, Option<String>)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
    let start = readme.find("<!-- walkthrough -->").expect("README has a <!-- walkthrough --> marker");
    let end = readme.find("<!-- /walkthrough -->").expect("README has a <!-- /walkthrough --> marker");
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = trimmed == "```sh" && !in_block;
            continue;
        }
        // The set-up commands (`cargo install`, `cargo run --bin ledgerd`) are what this
        // test does itself: ledgerctl on PATH and the server in process.
        if !in_block || trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("cargo ") {
            continue;
        }
        let (command, expected) = match trimmed.split_once("# →") {
            Some((command, expected)) => (command.trim().to_string(), Some(expected.trim().to_string())),
            None => (trimmed.to_string(), None),
        };
        lines.push((command, expected));
    }
    lines
}

/// The exit status a `# →` text names with a leading `(exit N)`, and the rest of it.
fn expected_exit(expected: Option<&str>) -> (i32, Option<&str>) {
    let Some(text) = expected else { return (0, None) };
    let Some(rest) = text.strip_prefix("(exit ") else { return (0, Some(text)) };
    let Some((code, rest)) = rest.split_once(')') else { return (0, Some(text)) };
    let code = code.parse().unwrap_or_else(|_| panic!("README: `(exit N)` needs a number: {text}"));
    let rest = rest.trim();
    (code, (!rest.is_empty()).then_some(rest))
}

/// A bash script that runs each command, echoes it, and stops at the first unexpected
/// exit status or missing text, with the command's own output.
fn script(commands: &[(String, Option<String>)]) -> String {
    let mut script = String::from("set -u\n");
    for (command, expected) in commands {
        let quoted = command.replace('\'', r"'\''");
        let (code, text) = expected_exit(expected.as_deref());
        // Assignments (`export X=$(…)`, `X=$(…)`) run in this shell so later lines see them.
        let assignment = command.starts_with("export ")
            || command.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            });
        script.push_str(&format!("echo '$ {quoted}'\n"));
        if assignment {
            // `export X=$(…)` hides the status of `…`: assign first, then export.
            let bare = command.strip_prefix("export ").unwrap_or(command);
            let name = bare.split_once('=').map_or(bare, |(name, _)| name);
            script.push_str(&format!("{bare}\nstatus=$?\nexport {name}\nout=\"${name}\"\n"));
        } else {
            script.push_str(&format!("out=$( {command} 2>&1 )\nstatus=$?\necho \"$out\"\n"));
        }
        script.push_str(&format!(
            "[ $status -eq {code} ] || {{ echo \"$out\"; echo \"EXIT $status (expected {code})\"': {quoted}'; exit 1; }}\n"
        ));
        if let Some(text) = text {
            let text = text.replace('\'', r"'\''");
            script.push_str(&format!(
                "grep -qF -- '{text}' <<<\"$out\" || {{ echo 'MISSING \"{text}\" in the output of: {quoted}'; exit 1; }}\n"
            ));
        }
    }
    script
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let commands = walkthrough();
    assert!(commands.len() >= 20, "the walk-through has its commands: {commands:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::InProcessServer::start_like_readme(dir.path());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ledgerctl")).parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .arg("-c")
        .arg(script(&commands))
        .current_dir(dir.path())
        .env("PATH", path)
        .env("LEDGER_ADDR", format!("http://{}", server.listen))
        .env_remove("LEDGER_TOKEN")
        .env_remove("LEDGER_TOKEN_FILE")
        .output()
        .expect("run bash");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the walk-through stopped:\n{text}");
    server.stop();
}
