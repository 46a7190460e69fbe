//! No module cycles (issue 12, item 5): inside each library crate of `shared/`, the top-level
//! modules form a directed acyclic graph. A module `a` depends on `b` when code of `a` (any file
//! under it, tests excluded) names `crate::b::…`, or reaches `b` through `super`. A cycle means
//! neither side can be read, tested or moved without the other; ARCHITECTURE.md names the
//! direction of each arrow.
//!
//! Parsed with `syn`, so grouped imports (`use crate::{a, b::C}`), paths in types and
//! expressions, and re-exports all count; comments and strings do not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// A crate's top-level modules and, per module, the others it names (with one file that does).
type Graph = BTreeMap<String, BTreeMap<String, PathBuf>>;

/// Collects the modules a file's paths reach, resolved from the file's own module path.
struct Refs<'a> {
    /// The module the file is, from the crate root (`["engine"]`, `["cloud", "sweep"]`).
    here: &'a [String],
    found: BTreeSet<String>,
}

impl Refs<'_> {
    /// The crate-level module a path starting with `segments` lands in, if any.
    fn resolve(&mut self, segments: &[String]) {
        let mut base: Vec<String> = Vec::new();
        let mut rest = segments;
        match segments.first().map(String::as_str) {
            Some("crate") => rest = &segments[1..],
            Some("self") => {
                base = self.here.to_vec();
                rest = &segments[1..];
            }
            Some("super") => {
                base = self.here.to_vec();
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            _ => return,
        }
        let top = base.first().or_else(|| rest.first());
        if let Some(top) = top {
            self.found.insert(top.clone());
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.resolve(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.resolve(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.resolve(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

/// `#[cfg(test)]` (or any `cfg` naming `test`): test code may reach anywhere.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta.require_list().is_ok_and(|l| {
                l.tokens
                    .to_string()
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|t| t == "test")
            })
    })
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.resolve(&segments);
        syn::visit::visit_path(self, p);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if !is_test_only(&u.attrs) {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test_only(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_test_only(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if !is_test_only(&i.attrs) {
            syn::visit::visit_item_impl(self, i);
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src` (`engine.rs` → `[engine]`, `cloud/mod.rs` →
/// `[cloud]`, `cloud/sweep.rs` → `[cloud, sweep]`; the crate root → `[]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(src, f).first().cloned())
        .collect();
    let mut g: Graph = modules.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
    for file in &files {
        let here = module_of(src, file);
        let Some(top) = here.first().cloned() else {
            continue; // the crate root declares the modules: it names them all
        };
        let text = std::fs::read_to_string(file).expect("readable source");
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut refs = Refs {
            here: &here,
            found: BTreeSet::new(),
        };
        refs.visit_file(&ast);
        for to in refs.found {
            if to != top && modules.contains(&to) {
                g.get_mut(&top)
                    .expect("known module")
                    .entry(to)
                    .or_insert_with(|| file.clone());
            }
        }
    }
    g
}

/// One cycle of `g`, as the modules along it and the file of each arrow, if any.
fn a_cycle(g: &Graph) -> Option<Vec<(String, PathBuf)>> {
    fn walk(
        g: &Graph,
        node: &str,
        path: &mut Vec<(String, PathBuf)>,
        on_path: &mut BTreeSet<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<(String, PathBuf)>> {
        on_path.insert(node.to_string());
        for (next, file) in &g[node] {
            path.push((next.clone(), file.clone()));
            if on_path.contains(next) {
                let start = path.iter().position(|(m, _)| m == next).unwrap_or(0);
                return Some(path[start..].to_vec());
            }
            if !done.contains(next)
                && let Some(c) = walk(g, next, path, on_path, done)
            {
                return Some(c);
            }
            path.pop();
        }
        on_path.remove(node);
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in g.keys() {
        if done.contains(node) {
            continue;
        }
        let mut path = vec![(node.clone(), PathBuf::new())];
        if let Some(c) = walk(g, node, &mut path, &mut BTreeSet::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn render(cycle: &[(String, PathBuf)], root: &Path) -> String {
    // The first module's file is the arrow into it from outside the cycle: its last arrow
    // closes the loop instead.
    let arrows = cycle.iter().skip(1).map(|(m, f)| {
        let f = f.strip_prefix(root).unwrap_or(f);
        format!(" → {m} (named in {})", f.display())
    });
    cycle.first().map(|(m, _)| m.clone()).unwrap_or_default() + &arrows.collect::<String>()
}

#[test]
fn no_library_crate_has_a_module_cycle() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let mut cycles = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(&shared).expect("shared/") {
        let src = entry.expect("entry").path().join("src");
        if !src.is_dir() {
            continue;
        }
        checked += 1;
        if let Some(c) = a_cycle(&graph(&src)) {
            cycles.push(format!("{}: {}", src.display(), render(&c, &src)));
        }
    }
    assert!(
        checked >= 8,
        "only {checked} crates found under {}",
        shared.display()
    );
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

/// The checker itself: a cycle through a grouped import and a `super` path is found, and a
/// test module's reach back is not one.
#[test]
fn the_checker_finds_a_cycle_through_grouped_imports_and_super() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::{c::C, b::B};\npub struct A;\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "pub mod inner;\npub struct B;\n#[cfg(test)]\nmod tests { use crate::a::A; }\n",
    )
    .unwrap();
    std::fs::write(src.join("c.rs"), "pub struct C;\n").unwrap();
    let g = graph(&src);
    assert!(
        a_cycle(&g).is_none(),
        "a test module's import is not an arrow: {g:?}"
    );
    std::fs::write(
        src.join("b/inner.rs"),
        "pub fn f() -> super::super::a::A { super::super::a::A }\n",
    )
    .unwrap();
    let cycle = a_cycle(&graph(&src)).expect("a → b → a");
    let names: BTreeSet<&str> = cycle.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["a", "b"]), "{cycle:?}");
}
