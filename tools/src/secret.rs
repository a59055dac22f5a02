//! Secrets (passwords, card number and CVV, bank account number) are never flags: flags
//! show in process lists and shell history. On a terminal they are read with a hidden
//! prompt; otherwise one line each from standard input, so scripts can pipe them.

use std::io::{BufRead, IsTerminal};

pub struct Secrets {
    terminal: bool,
    lines: std::io::Lines<std::io::StdinLock<'static>>,
}

impl Secrets {
    pub fn new() -> Secrets {
        let stdin = std::io::stdin();
        Secrets { terminal: stdin.is_terminal(), lines: stdin.lock().lines() }
    }

    /// The next secret: a hidden prompt naming `what`, or the next line of standard input.
    pub fn read(&mut self, what: &str) -> Result<String, String> {
        if self.terminal {
            return rpassword::prompt_password(format!("{what}: ")).map_err(|e| format!("reading the {what}: {e}"));
        }
        match self.lines.next() {
            Some(Ok(line)) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
            Some(Err(e)) => Err(format!("reading the {what} from standard input: {e}")),
            None => Err(format!("the {what} is read from standard input (or a prompt on a terminal); none was given")),
        }
    }

    /// A secret being chosen (a new password): on a terminal it is typed twice, so a
    /// typing mistake nobody saw does not lock its owner out.
    pub fn read_new(&mut self, what: &str) -> Result<String, String> {
        let secret = self.read(what)?;
        if self.terminal && self.read(&format!("{what} again"))? != secret {
            return Err(format!("the two {what}s differ; nothing was changed"));
        }
        Ok(secret)
    }
}
