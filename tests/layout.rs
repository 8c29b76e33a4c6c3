//! The crate's layout, as DESIGN §1 draws it: a pattern folder never uses
//! another pattern's folder, and the ground floor (classify, backoff, the
//! semaphore, the windows, the budget, replay, events, ...) uses no pattern
//! at all. A piece two patterns need lives on the ground floor. Only the
//! preset, which puts the patterns together, and the crate root name them
//! all. An integration module (`respond`) names only what it is allowed
//! (the error types). Comments and doc links are not uses.

use std::fs;
use std::path::{Path, PathBuf};

const PATTERNS: &[&str] = &[
    "circuit_breaker",
    "retry",
    "timeout",
    "bulkhead",
    "fallback",
    "chaos",
    "rate_limit",
    "keyed",
    "hedge",
    "adaptive",
];

/// Above the patterns: they may name any of them.
const ABOVE: &[&str] = &["preset", "config", "lib.rs"];

/// Where palisade meets a protocol's callers, and the only parts of the
/// crate each may name: `respond` turns the rejection types into statuses
/// and responses, and must not depend on how any layer makes them.
const INTEGRATION: &[(&str, &[&str])] = &[("respond", &["error"])];

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

/// The parts of the crate a file's code names through `crate::`: the
/// first segment after it, and each first segment inside `crate::{...}`.
fn crate_parts_used(text: &str) -> Vec<(usize, String)> {
    let mut used = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let names = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                None => vec![rest],
            };
            for name in names {
                let first: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !first.is_empty() {
                    used.push((n + 1, first));
                }
            }
        }
    }
    used
}

#[test]
fn integration_modules_use_only_what_they_may() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (module, allowed) in INTEGRATION {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        assert!(!files.is_empty(), "found src/{module}");
        for file in &files {
            let text = fs::read_to_string(file).unwrap();
            for (line, part) in crate_parts_used(&text) {
                if !allowed.contains(&part.as_str()) {
                    wrong.push(format!(
                        "{}:{line} ({module}) uses crate::{part}",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
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
    assert_eq!(
        crate_parts_used("use crate::error::BoxError;\nuse crate::{BoxError, classify::X};"),
        [
            (1, "error".to_string()),
            (2, "BoxError".to_string()),
            (2, "classify".to_string())
        ]
    );
}
