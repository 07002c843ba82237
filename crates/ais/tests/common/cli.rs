//! What the `ais` binary accepts, as it says itself: the flags and `AIS_*` variables of
//! each command from `ais COMMAND --help`, plus the variables read directly from the
//! environment (plain keys, the webhook secret). Deployment files are checked against
//! these, so a misspelt flag or variable fails a test instead of being ignored.

use std::collections::BTreeSet;
use std::process::Command;

/// The subcommands a deployment runs.
pub const COMMANDS: &[&str] = &["serve", "ingest", "stream", "query", "migrate", "loadgen"];

fn help(command: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ais"))
        .args([command, "--help"])
        .output()
        .expect("ais runs");
    assert!(output.status.success(), "ais {command} --help failed");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// `--flag` names `ais COMMAND` takes.
pub fn flags(command: &str) -> BTreeSet<String> {
    let text = help(command);
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| {
            word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect()
}

/// `AIS_*` variables `ais COMMAND` reads for its flags (`[env: NAME=]` in its help).
pub fn flag_variables(command: &str) -> BTreeSet<String> {
    let text = help(command);
    text.match_indices("[env: ")
        .filter_map(|(at, marker)| {
            let rest = &text[at + marker.len()..];
            rest.split(['=', ']']).next().map(str::to_string)
        })
        .collect()
}

/// `AIS_*` names the binary's sources read outside clap (string literals in
/// `crates/ais/src`): `AIS_API_KEYS`, `AIS_WEBHOOK_SECRET`.
pub fn source_variables() -> BTreeSet<String> {
    let dir = super::repository_root().join("crates/ais/src");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("crates/ais/src") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file");
        for (at, _) in text.match_indices("\"AIS_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

/// Every variable `ais COMMAND` reads: its flags' and those read directly.
pub fn variables(command: &str) -> BTreeSet<String> {
    let mut all = flag_variables(command);
    all.extend(source_variables());
    all
}
