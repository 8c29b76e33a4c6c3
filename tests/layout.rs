//! The crate's layout, as DESIGN §1 draws it: a pattern folder never uses
//! another pattern's folder, and the ground floor (classify, backoff, the
//! semaphore, the windows, the budget, replay, events, ...) uses no pattern
//! at all. A piece two patterns need lives on the ground floor. Only the
//! preset, which puts the patterns together, and the crate root name them
//! all. Comments and doc links are not uses.

use std::fs;
use std::path::{Path, PathBuf};

const PATTERNS: &[&str] = &[
    "circuit_breaker",
    "retry",
    "timeout",
    "bulkhead",
    "fallback",
    "chaos",
];

/// Above the patterns: they may name any of them.
const ABOVE: &[&str] = &["preset", "lib.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first path component under `src/`: a folder's name, or a file's
/// (`lib.rs`, `budget.rs`).
fn home(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    rel.components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned()
}

/// The patterns a file's code (not its comments) names through `crate::`.
fn patterns_used(text: &str) -> Vec<(usize, &'static str)> {
    let mut used = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for pattern in PATTERNS {
            if code.contains(&format!("crate::{pattern}::"))
                || code.contains(&format!("crate::{pattern};"))
                || code.contains(&format!("crate::{pattern}}}"))
                || code.contains(&format!("crate::{{{pattern}"))
            {
                used.push((n + 1, *pattern));
            }
        }
    }
    used
}

#[test]
fn no_pattern_uses_another_and_the_ground_floor_uses_none() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 30, "found the sources");
    let mut wrong = Vec::new();
    for file in &files {
        let home = home(&src, file);
        if ABOVE.contains(&home.as_str()) {
            continue;
        }
        let text = fs::read_to_string(file).unwrap();
        for (line, pattern) in patterns_used(&text) {
            if pattern != home.trim_end_matches(".rs") {
                wrong.push(format!(
                    "{}:{line} ({home}) uses {pattern}",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_a_use() {
    assert_eq!(
        patterns_used("use crate::circuit_breaker::CircuitState;\n// crate::retry::X"),
        [(1, "circuit_breaker")]
    );
    assert_eq!(patterns_used("use crate::{retry, event};"), [(1, "retry")]);
}
