//! Generators for property-based fuzzing (proptest, stable Rust) of every parser that reads
//! outside input: arbitrary bytes, arbitrary JSON, and structure-aware inputs — a valid sample of
//! the shape with a few mutations (a field replaced by another type, removed, emptied, made huge,
//! given hostile unicode or extreme numbers, nested past `serde_json`'s recursion limit of 128, an
//! array repeated, a key of the shape added where it does not belong), then optionally a few byte
//! edits (truncation, a flipped byte, invalid UTF-8).
//!
//! Every input is bounded in size by construction (a few KiB, except the deep-nesting inputs, which
//! are at most ~100 KiB of brackets), so each case finishes and memory stays small. How many cases
//! run: `PROPTEST_CASES` when set (`make fuzz` sets it high), else the default each test passes to
//! [`config`] (small, so `make test` stays fast).

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value};

/// The proptest configuration of a fuzz property: `PROPTEST_CASES` cases, else `default_cases`.
/// Failures are kept in `proptest-regressions/` beside the test's source file (commit them).
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

/// Arbitrary bytes (up to 4 KiB).
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..4096)
}

/// Strings a hostile or broken sender might put anywhere: empty, blank, control characters,
/// NUL, look-alikes and direction overrides, lone surrogate escapes' replacements, numbers and
/// times at the edge of their ranges, long runs (up to 8 KiB), and arbitrary unicode.
pub fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "\\PC{0,64}",
        1 => "[\\x00-\\x1f\\x7f]{1,16}",
        1 => prop::sample::select(vec![
            "", " ", "\t", "\u{0}", "null", "true", "[]", "{}", "\"", "\\", "'", "/", "..", ".", ":",
            "a@b", "@", "a@", "@b", "A\u{212A}te", "\u{FB01}", "\u{202E}moc.elgoog", "\u{FEFF}x",
            "\u{1F980}", "e\u{301}", "\r\nX-Injected: 1", "%00", "../../etc/passwd",
            "2099-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "+275760-09-13T00:00:00Z",
            "1970-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "2024-02-30T00:00:00Z",
            "2024-01-01T00:00:00+25:00", "2024-01-01T24:00:00Z", "2024-01-01T23:59:60Z",
            "-1", "0", "1e400", "-1e400", "NaN", "Infinity", "18446744073709551616",
            "-9223372036854775809", "0x10", "whsec_", "v1,", "v1,====", "v1a,x",
        ])
        .prop_map(str::to_string),
        1 => (prop::sample::select(vec!['a', '\u{0}', '(', '[', '"', '\\', '\u{1F980}', ' ']), 256usize..8192)
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Numbers at the edges: the integer limits, zero, negative zero, huge and tiny floats.
pub fn extreme_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(i64::MIN)),
        Just(Value::from(i64::MAX)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        Just(Number::from_f64(-0.0).map(Value::Number).unwrap_or(Value::Null)),
        Just(Number::from_f64(1e308).map(Value::Number).unwrap_or(Value::Null)),
        Just(Number::from_f64(5e-324).map(Value::Number).unwrap_or(Value::Null)),
    ]
}

/// Arbitrary JSON: at most 4 levels, 64 nodes, 8 items per array or object.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        extreme_number(),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Brackets nested far past any parser's limit (up to 100,000 levels), as bytes: `[[[…]]]`,
/// `{"a":{"a":…}}`, unclosed, or inside a field of an object.
pub fn deep_nesting() -> impl Strategy<Value = Vec<u8>> {
    (0usize..4, 100usize..100_000).prop_map(|(shape, depth)| {
        let (open, close): (&str, &str) = match shape {
            0 => ("[", "]"),
            1 => ("{\"a\":", "}"),
            2 => ("[", ""),
            _ => ("{\"value\":[", "]}"),
        };
        let mut s = String::with_capacity(depth * (open.len() + close.len()) + 4);
        for _ in 0..depth {
            s.push_str(open);
        }
        s.push('1');
        for _ in 0..depth {
            s.push_str(close);
        }
        s.into_bytes()
    })
}

/// One change to one node of a document.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace the node by arbitrary JSON (often of another type).
    Replace(Value),
    /// Remove it from its parent (a missing field).
    Remove,
    /// Replace it by a hostile string.
    Text(String),
    /// Replace it by an extreme number.
    Number(Value),
    /// The empty value of its type (`""`, `[]`, `{}`, `0`), or `null`.
    Empty,
    /// Wrap it in this many arrays (up to 300: past `serde_json`'s limit of 128).
    Nest(u16),
    /// Repeat an array's first element (or the node itself, as an array) this many times.
    Repeat(u8),
    /// Add one of the document's own keys (the `n`th, modulo) to an object, with this value.
    AddKey(usize, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => json().prop_map(Mutation::Replace),
        2 => Just(Mutation::Remove),
        3 => nasty_string().prop_map(Mutation::Text),
        2 => extreme_number().prop_map(Mutation::Number),
        1 => Just(Mutation::Empty),
        1 => (1u16..300).prop_map(Mutation::Nest),
        1 => (2u8..64).prop_map(Mutation::Repeat),
        1 => (any::<usize>(), json()).prop_map(|(k, v)| Mutation::AddKey(k, v)),
    ]
}

/// One to five mutations, each at a node chosen by its index (modulo the node count).
pub fn mutations() -> impl Strategy<Value = Vec<(usize, Mutation)>> {
    prop::collection::vec((any::<usize>(), mutation()), 1..6)
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, here: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(here.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                here.push(Seg::Index(i));
                paths(x, here, out);
                here.pop();
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                here.push(Seg::Key(k.clone()));
                paths(x, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| keys(x, out)),
        Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                keys(x, out);
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match (seg, v) {
        (Seg::Key(k), Value::Object(m)) => m.get_mut(k),
        (Seg::Index(i), Value::Array(a)) => a.get_mut(*i),
        _ => None,
    })
}

/// `sample` with `muts` applied in order.
pub fn apply(sample: &Value, muts: &[(usize, Mutation)]) -> Value {
    let mut doc = sample.clone();
    let mut known = Vec::new();
    keys(sample, &mut known);
    for (at, m) in muts {
        let mut all = Vec::new();
        paths(&doc, &mut Vec::new(), &mut all);
        let path = &all[at % all.len()];
        if let Mutation::Remove = m {
            match path.split_last() {
                Some((last, parent)) => {
                    if let Some(p) = node_mut(&mut doc, parent) {
                        match (last, p) {
                            (Seg::Key(k), Value::Object(o)) => {
                                o.remove(k);
                            }
                            (Seg::Index(i), Value::Array(a)) => {
                                a.remove(*i);
                            }
                            _ => {}
                        }
                    }
                }
                None => doc = Value::Null,
            }
            continue;
        }
        let Some(node) = node_mut(&mut doc, path) else {
            continue;
        };
        match m {
            Mutation::Replace(v) | Mutation::Number(v) => *node = v.clone(),
            Mutation::Text(s) => *node = Value::String(s.clone()),
            Mutation::Empty => {
                *node = match node {
                    Value::String(_) => Value::String(String::new()),
                    Value::Array(_) => Value::Array(Vec::new()),
                    Value::Object(_) => Value::Object(Map::new()),
                    Value::Number(_) => Value::from(0),
                    _ => Value::Null,
                }
            }
            Mutation::Nest(n) => {
                for _ in 0..*n {
                    *node = Value::Array(vec![node.take()]);
                }
            }
            Mutation::Repeat(n) => {
                let first = match &*node {
                    Value::Array(a) => a.first().cloned(),
                    other => Some(other.clone()),
                };
                if let Some(first) = first {
                    *node = Value::Array(vec![first; usize::from(*n)]);
                }
            }
            Mutation::AddKey(k, v) => {
                if let (Value::Object(o), false) = (&mut *node, known.is_empty()) {
                    o.insert(known[k % known.len()].clone(), v.clone());
                }
            }
            Mutation::Remove => {}
        }
    }
    doc
}

/// One of `samples` (valid documents of the shape) with a few mutations.
pub fn mutated(samples: Vec<Value>) -> impl Strategy<Value = Value> {
    (prop::sample::select(samples), mutations()).prop_map(|(s, m)| apply(&s, &m))
}

/// A change to serialized bytes.
#[derive(Debug, Clone)]
pub enum ByteEdit {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
}

/// [`mutated`] serialized, then zero to three byte edits (so also invalid JSON and UTF-8 near a
/// valid document).
pub fn mutated_bytes(samples: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    let edit = prop_oneof![
        any::<usize>().prop_map(ByteEdit::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| ByteEdit::Flip(i, x)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                b"\xff".to_vec(),
                b"\xc3".to_vec(),
                b"\xed\xa0\x80".to_vec(),
                b"\\u0000".to_vec(),
                b"\\ud800".to_vec(),
                b",".to_vec(),
                b"]".to_vec(),
                b"}".to_vec(),
                b"\"".to_vec(),
                b"[".to_vec(),
            ])
        )
            .prop_map(|(i, b)| ByteEdit::Insert(i, b)),
    ];
    (mutated(samples), prop::collection::vec(edit, 0..4)).prop_map(|(doc, edits)| {
        let mut b = serde_json::to_vec(&doc).unwrap_or_default();
        for e in edits {
            let len = b.len().max(1);
            match e {
                ByteEdit::Truncate(i) => b.truncate(i % len),
                ByteEdit::Flip(i, x) => {
                    if let Some(c) = b.get_mut(i % len) {
                        *c ^= x;
                    }
                }
                ByteEdit::Insert(i, ins) => {
                    let at = (i % len).min(b.len());
                    b.splice(at..at, ins);
                }
            }
        }
        b
    })
}

/// Any input a parser of JSON bodies may see: arbitrary bytes, arbitrary JSON, deep nesting, and
/// (most often) mutations of `samples`, as values or as edited bytes.
pub fn body(samples: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => bytes(),
        1 => json().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => deep_nesting(),
        3 => mutated(samples.clone()).prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        2 => mutated_bytes(samples),
    ]
}

/// Every JSON object in every `.json` file of a handbook fixtures folder (`../shared/fixtures/DIR`
/// beside the repository), nested ones included: a fixture often wraps the payload in an
/// exchange (`request.body`, `detail`, `message`, ...). Panics when the folder has none.
pub fn fixture_objects(dir: &str) -> Vec<Value> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures")
        .join(dir);
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        collect_objects(&v, &mut out);
    }
    assert!(!out.is_empty(), "no samples in {dir}");
    out
}

fn collect_objects(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            out.push(v.clone());
            m.values().for_each(|x| collect_objects(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_objects(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mutations_reach_every_node_and_removal_removes() {
        let doc = json!({"a": [1, {"b": "x"}], "c": true});
        let mut all = Vec::new();
        paths(&doc, &mut Vec::new(), &mut all);
        assert_eq!(all.len(), 6, "root, a, a[0], a[1], a[1].b, c");
        // The 5th node in order is a[1].b.
        let out = apply(&doc, &[(4, Mutation::Remove)]);
        assert_eq!(out, json!({"a": [1, {}], "c": true}));
        let out = apply(&doc, &[(5, Mutation::Nest(2))]);
        assert_eq!(out, json!({"a": [1, {"b": "x"}], "c": [[true]]}));
        let out = apply(&doc, &[(0, Mutation::AddKey(1, json!(0)))]);
        assert_eq!(out["b"], json!(0), "{out}");
    }

    #[test]
    fn deep_nesting_is_refused_by_serde_json_not_a_stack_overflow() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = serde_json::from_str::<Value>(&deep).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }
}
