//! docs/ARCHITECTURE.md's module table stays true (issue 22): every path it
//! names exists under `host/src`, and every module there is named.

use std::collections::BTreeSet;
use std::path::Path;

/// The backticked paths in the first column of the module table.
fn table_paths(doc: &str) -> Vec<String> {
    let mut lines = doc
        .lines()
        .skip_while(|l| !l.starts_with("| module | concern |"));
    lines.next();
    lines
        .skip(1) // |---|---|
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_module_table_and_the_source_tree_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("../docs/ARCHITECTURE.md")).unwrap();
    let src = root.join("src");
    let named = table_paths(&doc);
    assert!(named.len() > 10, "no module table found: {named:?}");
    for path in &named {
        let on_disk = src.join(path.trim_end_matches('/'));
        let ok = if path.ends_with('/') {
            on_disk.is_dir()
        } else {
            on_disk.is_file()
        };
        assert!(
            ok,
            "docs/ARCHITECTURE.md names `{path}`, which is not in host/src"
        );
    }
    // Every module of the crate and of `adapter/` and `policy/` is named
    // (a folder by itself, or each of its files).
    let named: BTreeSet<&str> = named.iter().map(String::as_str).collect();
    for folder in ["", "adapter/", "policy/"] {
        for entry in std::fs::read_dir(src.join(folder)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().unwrap().is_dir();
            if (!is_dir && !name.ends_with(".rs")) || name == "mod.rs" {
                continue;
            }
            let path = format!("{folder}{name}{}", if is_dir { "/" } else { "" });
            let covered = named.contains(path.as_str())
                || (!folder.is_empty() && named.contains(folder))
                || (is_dir && named.iter().any(|n| n.starts_with(&path)));
            assert!(
                covered,
                "host/src/{path} is missing from docs/ARCHITECTURE.md's module table"
            );
        }
    }
}
