//! Every provider fixture is read by some test: one no test names is a sample nobody
//! checks. A directory a test reads by listing it (`GLOBBED`) counts as read whole.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Fixture directories whose tests list the directory instead of naming files.
const GLOBBED: &[&str] = &["anthropic"];

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_fixture_is_read_by_a_test() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = core.join("tests/fixtures");
    let sources: String = [core.join("src"), core.join("tests")]
        .iter()
        .flat_map(|d| files_under(d))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| std::fs::read_to_string(p).expect("source"))
        .collect();
    let mut unread = Vec::new();
    for file in files_under(&fixtures) {
        let name = file.strip_prefix(&fixtures).expect("under fixtures");
        let Some(dir) = name.parent().filter(|d| !d.as_os_str().is_empty()) else {
            continue; // README.md
        };
        let named = name.to_string_lossy().replace('\\', "/");
        if !GLOBBED.contains(&dir.to_string_lossy().as_ref()) && !sources.contains(&named) {
            unread.push(named);
        }
    }
    assert!(unread.is_empty(), "fixtures no test reads: {unread:?}");
}
