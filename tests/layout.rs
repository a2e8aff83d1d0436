//! The shape of the source tree, kept: `.rs` files readable in one sitting (median at most
//! 200 lines, 90th percentile at most 500, none above 800) and no two files of a crate
//! importing each other. `cargo test --test layout -- --nocapture` prints the figures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MEDIAN_MAX: usize = 200;
const P90_MAX: usize = 500;
const FILE_MAX: usize = 800;

/// The tree checked: this repository, or `LAYOUT_ROOT` (to try the checks on a copy).
fn root() -> PathBuf {
    std::env::var_os("LAYOUT_ROOT")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Every `.rs` file under `dir`, skipping build output and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

#[test]
fn files_are_readable_in_one_sitting() {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    let mut sized: Vec<(usize, PathBuf)> = files.into_iter().map(|p| (lines(&p), p)).collect();
    sized.sort();
    assert!(sized.len() > 10, "found only {} .rs files", sized.len());
    let at = |q: f64| sized[((sized.len() - 1) as f64 * q).round() as usize].0;
    let (median, p90) = (at(0.5), at(0.9));
    let total: usize = sized.iter().map(|s| s.0).sum();
    let (max, biggest) = sized
        .last()
        .map(|(n, p)| (*n, p.clone()))
        .unwrap_or_default();
    println!(
        "{} .rs files, {total} lines: median {median}, 90th percentile {p90}, max {max} ({})",
        sized.len(),
        biggest.strip_prefix(root()).unwrap_or(&biggest).display()
    );
    let over: Vec<String> = sized
        .iter()
        .filter(|(n, _)| *n > FILE_MAX)
        .map(|(n, p)| format!("{} ({n})", p.strip_prefix(root()).unwrap_or(p).display()))
        .collect();
    assert!(over.is_empty(), "files over {FILE_MAX} lines: {over:?}");
    assert!(median <= MEDIAN_MAX, "median {median} > {MEDIAN_MAX}");
    assert!(p90 <= P90_MAX, "90th percentile {p90} > {P90_MAX}");
}

/// Source text without comments and string literals, so that paths in prose do not
/// count as imports.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
                prev = if prev == '\\' && c == '\\' { ' ' } else { c };
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' {
                in_str = true;
                prev = ' ';
                continue;
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// The crate's modules, as `mod name;` declarations lead from `root_file`: module path
/// → file.
fn modules(root_file: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut found = BTreeMap::from([(Vec::new(), root_file.to_path_buf())]);
    let mut todo = vec![(Vec::<String>::new(), root_file.to_path_buf())];
    while let Some((path, file)) = todo.pop() {
        let code = code_of(&std::fs::read_to_string(&file).unwrap_or_default());
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let stem = file.file_stem().unwrap_or_default().to_string_lossy();
        let own_dir = if ["mod", "lib", "main"].contains(&stem.as_ref()) || path.is_empty() {
            dir
        } else {
            dir.join(stem.as_ref())
        };
        for line in code.lines() {
            let t = line.trim();
            let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
            let t = t.strip_prefix("pub(super) ").unwrap_or(t);
            let t = t.strip_prefix("pub ").unwrap_or(t);
            let Some(name) = t.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) else {
                continue;
            };
            let name = name.trim().to_owned();
            for candidate in [
                own_dir.join(format!("{name}.rs")),
                own_dir.join(&name).join("mod.rs"),
            ] {
                if candidate.exists() {
                    let mut child = path.clone();
                    child.push(name.clone());
                    found.insert(child.clone(), candidate.clone());
                    todo.push((child, candidate));
                    break;
                }
            }
        }
    }
    found
}

/// `a::{b, c::{d, e}}` as `[a::b, a::c::d, a::c::e]`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..tree.len().saturating_sub(1)]);
    let mut parts = Vec::new();
    let (mut depth, mut current) = (0, String::new());
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' => {
                depth -= 1;
                current.push(c);
            }
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// The paths a file names that start at `crate`, `super` or `self`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = rest.find(';') {
            paths.extend(expand(&rest[..end]));
        }
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            paths.push(code[at..end].to_owned());
        }
    }
    paths
}

/// Which module of `modules` a path written in module `here` points into: the longest
/// module prefix it names.
fn target(path: &str, here: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Vec<String> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (mut at, mut rest): (Vec<String>, &[&str]) = match segments.first() {
        Some(&"crate") => (Vec::new(), &segments[1..]),
        _ => (here.to_vec(), &segments[..]),
    };
    while let Some((&first, tail)) = rest.split_first() {
        match first {
            "super" => {
                at.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = tail;
    }
    for segment in rest {
        let name = segment.split(" as ").next().unwrap_or(segment);
        let mut next = at.clone();
        next.push(name.to_owned());
        if modules.contains_key(&next) {
            at = next;
        } else {
            break;
        }
    }
    at
}

/// Crate roots: each package's `src/lib.rs` and `src/main.rs`, and its integration tests.
fn crate_roots() -> Vec<PathBuf> {
    let mut manifests = Vec::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        if dir.join("Cargo.toml").exists() {
            manifests.push(dir.clone());
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && name != "target" && !name.starts_with('.') {
                stack.push(entry.path());
            }
        }
    }
    let mut roots = Vec::new();
    for package in manifests {
        for file in ["src/lib.rs", "src/main.rs"] {
            if package.join(file).exists() {
                roots.push(package.join(file));
            }
        }
        for entry in std::fs::read_dir(package.join("tests"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "rs") {
                roots.push(path);
            } else if path.join("main.rs").exists() {
                roots.push(path.join("main.rs"));
            }
        }
    }
    roots
}

#[test]
fn no_two_files_import_each_other() {
    let mut cycles = Vec::new();
    let roots = crate_roots();
    assert!(roots.len() > 5, "found only {} crate roots", roots.len());
    for crate_root in roots {
        let modules = modules(&crate_root);
        let mut edges: BTreeSet<(Vec<String>, Vec<String>)> = BTreeSet::new();
        for (here, file) in &modules {
            let code = code_of(&std::fs::read_to_string(file).unwrap_or_default());
            for path in crate_paths(&code) {
                let first = path.split("::").next().unwrap_or_default();
                if !["crate", "super", "self"].contains(&first) {
                    continue;
                }
                let to = target(&path, here, &modules);
                if &to != here {
                    edges.insert((here.clone(), to));
                }
            }
        }
        for (a, b) in &edges {
            if a < b && edges.contains(&(b.clone(), a.clone())) {
                cycles.push(format!(
                    "{} <-> {}",
                    modules[a]
                        .strip_prefix(root())
                        .unwrap_or(&modules[a])
                        .display(),
                    modules[b]
                        .strip_prefix(root())
                        .unwrap_or(&modules[b])
                        .display()
                ));
            }
        }
    }
    println!("files importing each other: {}", cycles.len());
    assert!(cycles.is_empty(), "files importing each other: {cycles:?}");
}

#[test]
fn the_checks_see_what_they_look_for() {
    // A path into a sibling, one through `super`, a grouped `use`, and text that only
    // looks like a path.
    let code = code_of(
        "use crate::a::{b::C, d};\nfn f() { super::e::g(); }\n// crate::h::i\nlet s = \"crate::j\";\n",
    );
    let paths = crate_paths(&code);
    assert!(paths.contains(&"crate::a::b::C".to_owned()), "{paths:?}");
    assert!(paths.contains(&"crate::a::d".to_owned()), "{paths:?}");
    assert!(paths.contains(&"super::e::g".to_owned()), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.contains('h') || p.contains('j')),
        "{paths:?}"
    );
    let modules = BTreeMap::from([
        (vec![], PathBuf::from("lib.rs")),
        (vec!["a".to_owned()], PathBuf::from("a.rs")),
        (
            vec!["a".to_owned(), "b".to_owned()],
            PathBuf::from("a/b.rs"),
        ),
    ]);
    assert_eq!(
        target("crate::a::b::C", &[], &modules),
        vec!["a".to_owned(), "b".to_owned()]
    );
    assert_eq!(
        target("super::X", &["a".to_owned(), "b".to_owned()], &modules),
        vec!["a".to_owned()]
    );
}

/// Every Kafka client the crates make takes its properties from
/// `recsys_schemas::KafkaConfig::properties`, so the `[kafka]` table (TLS, SASL, ...)
/// reaches all of them: no crate source builds a `ClientConfig` of its own or sets a
/// property on one. Integration tests may (their clients are test tools).
#[test]
fn every_kafka_client_is_configured_in_one_place() {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    let mut own = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root()).unwrap_or(&file).to_path_buf();
        if rel.starts_with("tests") || rel.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap_or_default());
        if ["ClientConfig::new", "ClientConfig::default"]
            .iter()
            .any(|made| code.contains(made))
        {
            own.push(rel.display().to_string());
        }
    }
    assert!(
        own.is_empty(),
        "Kafka clients configured outside schemas/src/kafka.rs: {own:?}"
    );
}
