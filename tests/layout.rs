//! The module graph stays a DAG (issue 9): every `crate::TOP` path in a
//! top-level module's files (outside `#[cfg(test)]` items) is an edge
//! TOP-of-the-file → TOP, and no chain of edges comes back to where it
//! started. Reads `src/` only: no network, no build.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules `lib.rs` declares.
fn top_modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

/// `src/NAME.rs` and everything under `src/NAME/`.
fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        out.push(file);
    }
    walk(&src.join(module), &mut out);
    out.sort();
    out
}

/// The source with comments, string and char literals blanked out (so a
/// brace or a `crate::` inside them counts for nothing), same length.
fn code_only(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
                blank(&mut out, i, end);
                i = end;
            }
            b'r' if matches!(b.get(i + 1), Some(b'#') | Some(b'"'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = text[start..]
                    .find(&close)
                    .map_or(b.len(), |n| start + n + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|n| i + 2 + n + 1)
                } else {
                    let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 2 + len)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Blanks every item under `#[cfg(test)]`; returns the names of test modules
/// declared with `mod NAME;` (their files are left out too).
fn drop_test_items(code: &mut [u8]) -> Vec<String> {
    const ATTR: &[u8] = b"#[cfg(test)]";
    let mut file_modules = Vec::new();
    let mut at = 0;
    while let Some(found) = code[at..].windows(ATTR.len()).position(|w| w == ATTR) {
        let start = at + found;
        let mut i = start + ATTR.len();
        // The item runs to its first `;` or to the brace closing its body.
        let mut depth = 0usize;
        let mut end = code.len();
        while i < code.len() {
            match code[i] {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let item = String::from_utf8_lossy(&code[start + ATTR.len()..end]).into_owned();
        let words: Vec<&str> = item.split_whitespace().collect();
        if let [.., "mod", name] = words.as_slice() {
            if let Some(name) = name.strip_suffix(';') {
                file_modules.push(name.to_string());
            }
        }
        for c in &mut code[start..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        at = end;
    }
    file_modules
}

/// The top-level modules `code` names through `crate::`.
fn references(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue; // `mycrate::`
        }
        let rest = code[i + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each path.
            let mut depth = 0usize;
            let mut expecting = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expecting = true,
                    c if expecting && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident(&group[j..]));
                        expecting = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| modules.contains(m));
    out
}

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// module → module it references → files that do.
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_modules(&src);
    assert!(modules.len() > 10, "lib.rs declares {modules:?}");
    let mut graph = Graph::new();
    for m in &modules {
        // Files first, then edges: a test module's file (`mod tests;` under
        // #[cfg(test)]) may sort before the file declaring it.
        let mut scanned = Vec::new();
        let mut test_files: Vec<PathBuf> = Vec::new();
        for f in files_of(&src, m) {
            let text = std::fs::read_to_string(&f).expect("read a source file");
            let mut code = code_only(&text);
            let children = if f.file_name().is_some_and(|n| n == "mod.rs") {
                f.parent().map(Path::to_path_buf)
            } else {
                Some(f.with_extension(""))
            };
            for t in drop_test_items(&mut code) {
                if let Some(dir) = &children {
                    test_files.push(dir.join(format!("{t}.rs")));
                    test_files.push(dir.join(t));
                }
            }
            let refs = references(&String::from_utf8_lossy(&code), &modules);
            scanned.push((f, refs));
        }
        for (f, refs) in scanned {
            if test_files.iter().any(|t| f.starts_with(t)) {
                continue;
            }
            let name = f.strip_prefix(&src).unwrap_or(&f).display().to_string();
            for to in refs {
                if &to != m {
                    graph
                        .entry(m.clone())
                        .or_default()
                        .entry(to)
                        .or_default()
                        .insert(name.clone());
                }
            }
        }
        graph.entry(m.clone()).or_default();
    }
    graph
}

/// A cycle, if there is one, as the modules along it (first = last).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn describe(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, to)| {
            let to: Vec<&str> = to.keys().map(String::as_str).collect();
            format!("  {m} → {}", to.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    if let Some(cycle) = find_cycle(&graph) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                let files: Vec<&str> = graph[&w[0]][&w[1]].iter().map(String::as_str).collect();
                format!("  {} → {} ({})", w[0], w[1], files.join(", "))
            })
            .collect();
        panic!(
            "import cycle {}:\n{}\n\nthe whole graph:\n{}",
            cycle.join(" → "),
            steps.join("\n"),
            describe(&graph)
        );
    }
}

#[test]
fn the_engine_and_the_store_never_import_a_front_end() {
    let graph = graph();
    // `frontend`: the shared session driver, once it lands.
    let above = [
        "frontend",
        "imap",
        "pop3",
        "submission",
        "managesieve",
        "smtp",
        "admin",
        "server",
    ];
    for low in [
        "app",
        "continuity",
        "directory",
        "migrate",
        "route",
        "store",
    ] {
        let edges = &graph[low];
        for high in above {
            assert!(
                !edges.contains_key(high),
                "{low} imports {high} ({:?})",
                edges.get(high)
            );
        }
    }
}

#[test]
fn the_layout_section_of_lib_rs_names_every_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let doc: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let words: BTreeSet<&str> = doc
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let missing: Vec<String> = top_modules(&src)
        .into_iter()
        .filter(|m| !words.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "lib.rs's layout section does not name {missing:?}"
    );
}

/// The checker itself: a planted cycle is found, test items and literals
/// are not counted.
#[test]
fn the_checker_sees_paths_and_skips_tests_and_literals() {
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let text = "use crate::{a::X, b};\n// crate::c\nlet s = \"crate::c\";\n\
                #[cfg(test)]\nmod tests { use crate::c; fn f() { let _ = '{'; } }\n\
                fn g<'x>(v: &'x str) -> char { 'c' }\nuse crate::b::Y;\n";
    let mut code = code_only(text);
    assert!(drop_test_items(&mut code).is_empty());
    let got = references(&String::from_utf8_lossy(&code), &modules);
    assert_eq!(got, ["a", "b"].iter().map(|s| s.to_string()).collect());

    let mut g = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a")] {
        g.entry(from.into())
            .or_default()
            .entry(to.into())
            .or_default()
            .insert(format!("{from}.rs"));
    }
    let cycle = find_cycle(&g).expect("the planted cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    g.get_mut("c").map(|e| e.remove("a"));
    assert_eq!(find_cycle(&g), None);
}
