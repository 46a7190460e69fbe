//! Wire helpers of the fake: percent-decoding, query/form parsing, Looker's SQL `LIKE` search
//! semantics and the `fields` parameter. Pure functions, unit-tested without I/O.

use serde_json::{Map, Value};

/// Decodes `%XX` escapes (and `+` as a space when `plus_as_space`, as in query strings and
/// `application/x-www-form-urlencoded` bodies). Invalid escapes are kept as they are.
pub(crate) fn pct_decode(s: &str, plus_as_space: bool) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `a=1&b=x%20y` (query string or form body) into decoded pairs, in order.
pub(crate) fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k, true), pct_decode(v, true))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// `%`: any run of characters, possibly empty.
    Any,
    /// `_`: exactly one character.
    One,
    Lit(char),
}

/// Equal ignoring case (Unicode lower case), without allocating; ASCII text (every email the
/// benches search for, among thousands of users) compares byte by byte.
pub(crate) fn eq_caseless(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// Case-insensitive SQL `LIKE` as Looker's search endpoints apply it: `%` matches any run of
/// characters, `_` exactly one, and a backslash makes the next character literal (`\%`, `\_`,
/// `\\`). A trailing lone backslash matches a backslash.
pub(crate) fn like(pattern: &str, text: &str) -> bool {
    // No wildcard and no escape (an exact email, the common search): a case-insensitive
    // comparison, without building the token and character lists for every user searched.
    if !pattern.contains(['%', '_', '\\']) {
        return eq_caseless(pattern, text);
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars().flat_map(char::to_lowercase);
    while let Some(c) = chars.next() {
        toks.push(match c {
            '\\' => Tok::Lit(chars.next().unwrap_or('\\')),
            '%' => Tok::Any,
            '_' => Tok::One,
            c => Tok::Lit(c),
        });
    }
    let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    // Greedy matching with backtracking to the last `%`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match toks.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(Tok::One) => true,
            Some(Tok::Lit(c)) => *c == text[t],
            None => false,
        };
        if step {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Any)
}

/// One entry of a `fields` parameter: `name` or `name(sub,fields)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldSel {
    pub name: String,
    pub sub: Option<Vec<FieldSel>>,
}

/// Parses `id,email,credentials_email(email,type)`. Tolerant: whitespace is ignored and an
/// unbalanced parenthesis ends the list.
pub(crate) fn parse_fields(s: &str) -> Vec<FieldSel> {
    fn list(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Vec<FieldSel> {
        let mut out = Vec::new();
        loop {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if matches!(c, ',' | '(' | ')') {
                    break;
                }
                if !c.is_whitespace() {
                    name.push(c);
                }
                chars.next();
            }
            let mut sub = None;
            if chars.peek() == Some(&'(') {
                chars.next();
                sub = Some(list(chars));
                if chars.peek() == Some(&')') {
                    chars.next();
                }
            }
            if !name.is_empty() {
                out.push(FieldSel { name, sub });
            }
            match chars.peek() {
                Some(',') => {
                    chars.next();
                }
                _ => return out,
            }
        }
    }
    list(&mut s.chars().peekable())
}

/// Keeps only the selected top-level keys (and, for `name(sub)`, the selected nested keys) of an
/// object, or of each object of an array. Unknown names are ignored, as Looker does.
pub(crate) fn apply_fields(value: Value, sel: &[FieldSel]) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(|v| apply_fields(v, sel)).collect()),
        Value::Object(map) => {
            let mut out = Map::new();
            for f in sel {
                if let Some(v) = map.get(&f.name) {
                    let v = match &f.sub {
                        Some(sub) => apply_fields(v.clone(), sub),
                        None => v.clone(),
                    };
                    out.insert(f.name.clone(), v);
                }
            }
            Value::Object(out)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn like_wildcards_and_case() {
        assert!(like("Ada@Example.com", "ada@example.COM"));
        assert!(!like("ada@example.com", "ada@example.co"));
        assert!(!like("ada@example.co", "ada@example.com"));
        assert!(like("ÉLODIE@x.fr", "élodie@X.FR"));
        assert!(like("dan%", "danger"));
        assert!(like("dan%", "Danzig"));
        assert!(!like("dan%", "David"));
        assert!(like("D_m%", "Damage"));
        assert!(like("D_m%", "dump"));
        assert!(like("%", ""));
        assert!(like("%@x.com", "a@X.COM"));
        assert!(!like("a", "ab"));
        assert!(!like("ab", "a"));
        assert!(like("a%b%c", "aXXbYYc"));
        assert!(!like("a%b%c", "aXXbYY"));
        assert!(like("%a%a%", "banana"));
    }

    #[test]
    fn like_underscore_is_a_wildcard_unless_escaped() {
        assert!(like("a_b@x.com", "axb@x.com"));
        assert!(!like(r"a\_b@x.com", "axb@x.com"));
        assert!(like(r"a\_b@x.com", "a_b@x.com"));
        assert!(like(r"a\_b@x.com", "A_B@X.com"));
    }

    #[test]
    fn like_escaped_percent_and_backslash() {
        assert!(like("a%c", "abbbc"));
        assert!(!like(r"a\%c", "abbbc"));
        assert!(like(r"a\%c", "a%c"));
        assert!(like(r"a\\b", r"a\b"));
        assert!(!like(r"a\\b", r"a\\b"));
        assert!(like(r"a\\%", r"a\anything"));
        assert!(like("a\\", "a\\"));
        assert!(like(r"\a", "a"));
    }

    #[test]
    fn pct_decoding() {
        assert_eq!(pct_decode("a%5F%5cb", false), r"a_\b");
        assert_eq!(pct_decode("a+b", true), "a b");
        assert_eq!(pct_decode("a+b", false), "a+b");
        assert_eq!(pct_decode("100%", false), "100%");
        assert_eq!(pct_decode("%zz%4", false), "%zz%4");
        assert_eq!(pct_decode("%E2%9C%93", false), "✓");
    }

    #[test]
    fn pairs_parsing() {
        assert_eq!(
            parse_pairs("client_id=a%2Bb&client_secret=x+y&&flag"),
            vec![
                ("client_id".into(), "a+b".into()),
                ("client_secret".into(), "x y".into()),
                ("flag".into(), String::new())
            ]
        );
    }

    #[test]
    fn fields_selection() {
        let sel = parse_fields("id, email,credentials_email(email),sessions(id)");
        assert_eq!(sel.len(), 4);
        let v = json!({
            "id": "1", "email": "a@x", "first_name": "A",
            "credentials_email": {"email": "a@x", "type": "email"},
            "sessions": [{"id": "5", "browser": "x"}]
        });
        assert_eq!(
            apply_fields(v, &sel),
            json!({"id": "1", "email": "a@x", "credentials_email": {"email": "a@x"}, "sessions": [{"id": "5"}]})
        );
        assert_eq!(
            apply_fields(json!([{"id": 1, "x": 2}]), &parse_fields("id")),
            json!([{"id": 1}])
        );
    }
}
