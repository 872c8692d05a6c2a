//! The SQLSTATE registry (`payments_core::sqlstate`) against everything that
//! repeats its codes: the SQL files that raise them, the money error enum, and
//! the book's table (docs/src/errors.md). A code raised but not registered, registered but never
//! raised, or documented differently fails here.

use std::collections::BTreeSet;
use std::path::Path;

use payments_core::error::Error;
use payments_core::sqlstate::{lookup, INTERNAL, REGISTRY, UNAVAILABLE_CLASSES};

fn repo_path(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Every `ERRCODE = 'PM…'` in the hand-written SQL (sql/code/*.sql; released scripts are frozen history).
fn codes_raised_in_sql() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for entry in std::fs::read_dir(repo_path("sql/code")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, _) in text.match_indices("ERRCODE = 'PM") {
            codes.insert(text[i + "ERRCODE = '".len()..][..5].to_string());
        }
    }
    assert!(codes.len() > 5, "the scan finds the SQL files");
    codes
}

fn codes_of_the_money_enum() -> BTreeSet<String> {
    Error::one_of_each().iter().map(|e| e.sqlstate().to_string()).collect()
}

#[test]
fn every_code_the_sql_raises_is_registered_and_every_registered_pm_code_is_raised() {
    let raised: BTreeSet<String> = codes_raised_in_sql().union(&codes_of_the_money_enum()).cloned().collect();
    for code in &raised {
        assert_ne!(lookup(code), &INTERNAL, "{code} is raised but not in the registry");
    }
    for c in REGISTRY.iter().filter(|c| c.sqlstate.starts_with("PM")) {
        assert!(raised.contains(c.sqlstate), "{} is registered but nothing raises it", c.sqlstate);
    }
}

/// The book's error table (docs/src/errors.md): `| `CODE` | meaning | HTTP |` rows.
fn book_error_rows() -> Vec<(String, String, u16)> {
    let section = std::fs::read_to_string(repo_path("docs/src/errors.md")).unwrap();
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 3, "a row of three cells: {l}");
            let status = cells[2].parse().unwrap_or_else(|_| panic!("an HTTP status in {l}"));
            (cells[0].to_string(), cells[1].to_string(), status)
        })
        .collect()
}

#[test]
fn the_readme_table_is_the_registry() {
    let rows = book_error_rows();
    for c in REGISTRY {
        let code = format!("`{}`", c.sqlstate);
        let row = rows.iter().find(|(k, _, _)| *k == code).unwrap_or_else(|| panic!("docs/src/errors.md lacks {code}"));
        assert_eq!((row.1.as_str(), row.2), (c.meaning, c.http_status), "docs/src/errors.md's row for {code}");
    }
    let classes = UNAVAILABLE_CLASSES.iter().map(|c| format!("`{c}…`")).collect::<Vec<_>>().join(", ");
    let row = rows
        .iter()
        .find(|(k, _, _)| *k == classes)
        .unwrap_or_else(|| panic!("docs/src/errors.md lacks the row {classes}"));
    assert_eq!(row.2, lookup(&format!("{}000", UNAVAILABLE_CLASSES[0])).http_status);
    assert_eq!(rows.len(), REGISTRY.len() + 1, "docs/src/errors.md documents no code the registry lacks");
}
