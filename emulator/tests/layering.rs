//! The workspace's module graph has no cycles: within every module, its child modules import
//! each other in one direction only, and the few cross-crate rules hold (the requester does
//! not reach into the endpoint).
//!
//! The graph is read from the sources as text: the module tree from `mod x;` declarations
//! (from each crate's `lib.rs` and `main.rs`, honouring `#[path]`), and the edges from every
//! `crate::`, `super::` and `self::` path in a module's files (`use` trees expanded). Test
//! modules (`#[cfg(test)]` items) are left out: a test may import anything above the module it
//! tests. An edge `a -> b` between two children of the same module `p` exists when a file in
//! `p::a`'s subtree names a path inside `p::b`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace crates: (crate name in paths, source directory from the workspace root).
const CRATES: &[(&str, &str)] = &[
    ("emulator", "emulator/src"),
    ("harness", "harness/src"),
    ("experiments", "experiments/src"),
    ("paper_figures", "paper-figures/src"),
];

/// Modules that must not name a path: (crate, module path, forbidden path prefix, why).
const FORBIDDEN: &[(&str, &str, &str, &str)] = &[(
    "harness",
    "dma",
    "emulator::endpoint",
    "the requester shares only emulator's lower layers (mem, wire, udp, pattern, units) with the endpoint",
)];

/// One module: its path from the crate root and the source file holding it.
struct Module {
    path: Vec<String>,
    file: PathBuf,
    /// Source with comments, strings, and `#[cfg(test)]` items removed.
    code: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `file` relative to the workspace, for messages.
fn shown(file: &Path) -> String {
    file.strip_prefix(workspace()).unwrap_or(file).display().to_string()
}

/// Removes comments and empties string and char literals.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if src[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if src[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(hashes) = raw_string_start(rest) {
            let open = 2 + hashes; // r, #..., "
            let close = format!("\"{}", "#".repeat(hashes));
            let body = &rest[open..];
            i += open + body.find(&close).map_or(body.len(), |e| e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime.
            let lit = if rest.starts_with("'\\") {
                rest[2..].find('\'').map(|e| e + 3)
            } else {
                rest.char_indices().nth(2).filter(|&(_, c)| c == '\'').map(|(e, _)| e + 1)
            };
            match lit {
                Some(n) => {
                    i += n;
                    out.push_str("' '");
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`...: the number of hashes, if a raw string starts here.
fn raw_string_start(s: &str) -> Option<usize> {
    let s = s.strip_prefix('b').unwrap_or(s);
    let s = s.strip_prefix('r')?;
    let hashes = s.bytes().take_while(|&c| c == b'#').count();
    (s.as_bytes().get(hashes) == Some(&b'"')).then_some(hashes)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Removes every item marked `#[cfg(test)]` (a `mod x;`, or an item up to its matching brace).
fn drop_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let semi = item.find(';').unwrap_or(item.len());
        let brace = item.find('{').unwrap_or(item.len());
        if semi < brace {
            rest = &item[(semi + 1).min(item.len())..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = item.len();
        for (k, c) in item.char_indices().skip(brace) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// `mod name;` declarations (outside tests): (name, `#[path]` if given).
fn declared_modules(code: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let words: Vec<&str> = code.split_whitespace().collect();
    for (k, w) in words.iter().enumerate() {
        if *w != "mod" {
            continue;
        }
        let Some(next) = words.get(k + 1) else { continue };
        let Some(name) = next.strip_suffix(';') else { continue };
        let path = (0..k).rev().take(6).find_map(|j| {
            let w = words[j];
            w.starts_with("#[path").then(|| words[j..k].join(" "))
        });
        let path = path.and_then(|p| p.split('"').nth(1).map(str::to_owned));
        out.push((name.to_owned(), path));
    }
    out
}

/// Reads the module tree below `root_file` (a crate root).
fn modules(root_file: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut todo = vec![(Vec::<String>::new(), root_file.to_path_buf())];
    while let Some((path, file)) = todo.pop() {
        let src = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let code = drop_test_items(&strip(&src));
        // Where this file's child modules live: beside a mod.rs/lib.rs/main.rs, else in a
        // directory named after the file.
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let dir = if path.is_empty() || stem == "mod" {
            file.parent().unwrap().to_path_buf()
        } else {
            file.parent().unwrap().join(stem)
        };
        for (name, explicit) in declared_modules(&code) {
            let child = match explicit {
                Some(p) => file.parent().unwrap().join(p),
                None if dir.join(format!("{name}.rs")).exists() => dir.join(format!("{name}.rs")),
                None => dir.join(&name).join("mod.rs"),
            };
            let mut p = path.clone();
            p.push(name);
            todo.push((p, child));
        }
        out.push(Module { path, file, code });
    }
    out
}

/// Every path in `code` that starts with `head::` (`crate`, `super` or `self`), use trees
/// expanded: `crate::a::{b, c::{d}}` gives `[a, b]` and `[a, c, d]`.
fn paths_after(code: &str, head: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let pat = format!("{head}::");
    let mut from = 0;
    while let Some(k) = code[from..].find(&pat) {
        let at = from + k;
        from = at + pat.len();
        if code[..at].chars().next_back().is_some_and(|c| is_ident(c) || c == ':') {
            continue; // part of a longer path (`super::super::x` is counted once, from its start)
        }
        let mut supers = 0;
        let mut rest = &code[at + pat.len()..];
        if head == "super" {
            supers = 1;
            while let Some(r) = rest.trim_start().strip_prefix("super::") {
                supers += 1;
                rest = r;
            }
        }
        let mut trees = Vec::new();
        use_tree(rest, Vec::new(), &mut trees);
        out.extend(trees.into_iter().map(|t| (supers, t)));
    }
    out
}

/// Parses one use tree at the start of `s` below `prefix`; returns bytes consumed.
fn use_tree(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix;
    let mut i = 0;
    loop {
        let t = &s[i..];
        let ws = t.len() - t.trim_start().len();
        i += ws;
        let t = &s[i..];
        if let Some(group) = t.strip_prefix('{') {
            i += 1;
            let mut g = group;
            loop {
                let n = use_tree(g, path.clone(), out);
                i += n;
                g = &s[i..];
                let ws = g.len() - g.trim_start().len();
                i += ws;
                g = &s[i..];
                if let Some(r) = g.strip_prefix(',') {
                    i += 1;
                    g = r;
                    let ws = g.len() - g.trim_start().len();
                    if g[ws..].starts_with('}') {
                        i += ws + 1;
                        return i;
                    }
                } else {
                    if g.starts_with('}') {
                        i += 1;
                    }
                    return i;
                }
            }
        }
        let n = t.find(|c: char| !is_ident(c)).unwrap_or(t.len());
        if n == 0 {
            break;
        }
        path.push(t[..n].to_owned());
        i += n;
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    // `x as y`: the alias is not a path.
    let t = &s[i..];
    if let Some(alias) = t.trim_start().strip_prefix("as").filter(|a| a.starts_with(char::is_whitespace)) {
        let a = alias.trim_start();
        let n = a.find(|c: char| !is_ident(c)).unwrap_or(a.len());
        i = s.len() - a.len() + n;
    }
    if !path.is_empty() {
        out.push(path);
    }
    i
}

/// What a module names: every resolved path from the crate root.
fn references(m: &Module) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (_, p) in paths_after(&m.code, "crate") {
        out.push(p);
    }
    // A file module's `super` is its parent; `self` is itself.
    for (supers, p) in paths_after(&m.code, "super") {
        if supers <= m.path.len() {
            let mut full = m.path[..m.path.len() - supers].to_vec();
            full.extend(p);
            out.push(full);
        }
    }
    for (_, p) in paths_after(&m.code, "self") {
        let mut full = m.path.clone();
        full.extend(p);
        out.push(full);
    }
    out
}

type Edges = BTreeMap<Vec<String>, BTreeMap<(String, String), BTreeSet<PathBuf>>>;

/// Edges between sibling modules, keyed by their parent.
fn sibling_edges(mods: &[Module]) -> Edges {
    let known: BTreeSet<&[String]> = mods.iter().map(|m| m.path.as_slice()).collect();
    let mut edges = Edges::new();
    for m in mods {
        for t in references(m) {
            let common = m.path.iter().zip(&t).take_while(|(a, b)| a == b).count();
            if common < m.path.len() && common < t.len() && known.contains(&t[..=common]) {
                edges
                    .entry(m.path[..common].to_vec())
                    .or_default()
                    .entry((m.path[common].clone(), t[common].clone()))
                    .or_default()
                    .insert(m.file.clone());
            }
        }
    }
    edges
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(edges: &BTreeMap<(String, String), BTreeSet<PathBuf>>) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        graph.entry(a).or_default().push(b);
        graph.entry(b).or_default();
    }
    struct T<'a> {
        graph: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        for &w in &t.graph[v] {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.stack.contains(&w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T { graph: &graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), out: Vec::new() };
    for &v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn crate_modules() -> Vec<(&'static str, Vec<Module>)> {
    let ws = workspace();
    let mut out = Vec::new();
    for &(name, src) in CRATES {
        for root in ["lib.rs", "main.rs"] {
            let file = ws.join(src).join(root);
            if file.exists() {
                out.push((name, modules(&file)));
            }
        }
    }
    out
}

#[test]
fn no_import_cycles_between_sibling_modules() {
    let mut report = Vec::new();
    for (krate, mods) in crate_modules() {
        for (parent, edges) in sibling_edges(&mods) {
            for scc in cycles(&edges) {
                let at = std::iter::once(krate).chain(parent.iter().map(String::as_str)).collect::<Vec<_>>().join("::");
                report.push(format!("cycle in {at}: {}", scc.join(", ")));
                for ((a, b), files) in &edges {
                    if scc.contains(a) && scc.contains(b) {
                        let files: Vec<String> = files.iter().map(|f| shown(f)).collect();
                        report.push(format!("    {a} -> {b}  ({})", files.join(", ")));
                    }
                }
            }
        }
    }
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn layers_import_only_what_they_may() {
    let mut report = Vec::new();
    for (krate, mods) in crate_modules() {
        for &(k, module, forbidden, why) in FORBIDDEN {
            let module: Vec<&str> = module.split("::").collect();
            for m in mods.iter().filter(|m| k == krate && m.path.starts_with(&module.iter().map(|s| s.to_string()).collect::<Vec<_>>())) {
                let needle = format!("{forbidden}::");
                if m.code.contains(&needle) || m.code.contains(&format!("{forbidden}::{{")) {
                    report.push(format!("{} names {forbidden}: {why}", shown(&m.file)));
                }
            }
        }
    }
    assert!(report.is_empty(), "layering:\n{}", report.join("\n"));
}

/// The reader itself: a known cycle is found, and a use tree expands as written.
#[test]
fn the_reader_finds_what_it_should() {
    let mut out = Vec::new();
    use_tree("a::{b, c::{d, e as f}, self}, x", Vec::new(), &mut out);
    assert_eq!(out, [vec!["a", "b"], vec!["a", "c", "d"], vec!["a", "c", "e"], vec!["a", "self"]]);
    let code = drop_test_items(&strip("use crate::x; // crate::y\n#[cfg(test)]\nmod tests { use crate::z; }\nconst S: &str = \"crate::w\";"));
    let names: Vec<Vec<String>> = paths_after(&code, "crate").into_iter().map(|(_, p)| p).collect();
    assert_eq!(names, [vec!["x".to_owned()]]);
    let mk = |p: &str, code: &str| Module { path: p.split("::").map(str::to_owned).collect(), file: PathBuf::from(p), code: code.to_owned() };
    let mods = [mk("a", "use super::b::X;"), mk("b", "fn f() { crate::a::g() }"), mk("c", "use crate::a;")];
    let edges = sibling_edges(&mods);
    assert_eq!(cycles(&edges[&Vec::<String>::new()]), [vec!["a".to_owned(), "b".to_owned()]]);
}
