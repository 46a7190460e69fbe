//! Recursive-descent parser for filters and PATCH paths. Precedence: `not` > `and` > `or`;
//! `and` and `or` associate to the left.

use super::{AttrPath, CompareOp, Filter, FilterError, PatchPath};
use serde_json::Value;

/// Deepest nesting of parentheses, `not` and value filters accepted.
const MAX_DEPTH: usize = 64;
/// Most attribute expressions accepted in one filter.
const MAX_TERMS: usize = 1024;

/// Parses a SCIM filter (RFC 7644 §3.4.2.2), e.g. `userName eq "bjensen"` or
/// `emails[type eq "work" and value co "@example.com"] or not (active eq true)`.
pub fn parse_filter(input: &str) -> Result<Filter, FilterError> {
    let mut p = Parser::new(input);
    p.skip_ws();
    if p.at_end() {
        return Err(FilterError::new(p.pos, "empty filter"));
    }
    let filter = p.or_expr(false)?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.unexpected("'and', 'or' or the end of the filter"));
    }
    Ok(filter)
}

/// Parses a PATCH operation's `path` (RFC 7644 §3.5.2): `attr`, `attr.sub`, `urn:…:attr`,
/// `attr[filter]` or `attr[filter].sub`.
pub fn parse_path(input: &str) -> Result<PatchPath, FilterError> {
    let mut p = Parser::new(input);
    p.skip_ws();
    if p.at_end() {
        return Err(FilterError::new(p.pos, "empty path"));
    }
    let path = p.attr_path()?;
    let mut value_filter = None;
    let mut sub_attr = None;
    if p.peek() == Some(b'[') {
        if path.sub_attr.is_some() {
            return Err(FilterError::new(
                p.pos,
                "a value filter cannot follow a sub-attribute",
            ));
        }
        p.pos += 1;
        p.depth += 1;
        value_filter = Some(p.or_expr(true)?);
        p.expect_close(b']')?;
        if p.peek() == Some(b'.') {
            p.pos += 1;
            sub_attr = Some(p.name()?);
        }
    }
    p.skip_ws();
    if !p.at_end() {
        return Err(p.unexpected("the end of the path"));
    }
    Ok(PatchPath {
        path,
        value_filter,
        sub_attr,
    })
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    terms: usize,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'$'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_path_char(b: u8) -> bool {
    is_name_char(b) || b == b'$' || b == b'.' || b == b':'
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Parser<'a> {
        Parser {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            depth: 0,
            terms: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// An error at the current position naming what was found and what was `expected`.
    fn unexpected(&self, expected: &str) -> FilterError {
        let found = match self.src.get(self.pos..).and_then(|rest| rest.chars().next()) {
            None => "end of input".to_string(),
            Some(c) => format!("{c:?}"),
        };
        FilterError::new(self.pos, format!("expected {expected}, found {found}"))
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::new(
                self.pos,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    /// True (and consumed) when the next token is the keyword `kw`, in any case.
    fn keyword(&mut self, kw: &str) -> bool {
        let end = self.pos + kw.len();
        let matches = self
            .bytes
            .get(self.pos..end)
            .is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()))
            && !self.bytes.get(end).is_some_and(|&b| is_path_char(b));
        if matches {
            self.pos = end;
        }
        matches
    }

    fn expect_close(&mut self, close: u8) -> Result<(), FilterError> {
        self.skip_ws();
        if self.peek() != Some(close) {
            return Err(self.unexpected(&format!("{:?}", close as char)));
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    fn or_expr(&mut self, in_value: bool) -> Result<Filter, FilterError> {
        let mut left = self.and_expr(in_value)?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if !self.keyword("or") {
                self.pos = save;
                return Ok(left);
            }
            let right = self.and_expr(in_value)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
    }

    fn and_expr(&mut self, in_value: bool) -> Result<Filter, FilterError> {
        let mut left = self.unary(in_value)?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if !self.keyword("and") {
                self.pos = save;
                return Ok(left);
            }
            let right = self.unary(in_value)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self, in_value: bool) -> Result<Filter, FilterError> {
        self.skip_ws();
        match self.peek() {
            None => return Err(self.unexpected("a filter")),
            Some(b'(') => {
                self.enter()?;
                self.pos += 1;
                let inner = self.or_expr(in_value)?;
                self.expect_close(b')')?;
                return Ok(inner);
            }
            Some(_) => {}
        }
        let save = self.pos;
        if self.keyword("not") {
            self.skip_ws();
            if self.peek() == Some(b'(') {
                self.enter()?;
                self.pos += 1;
                let inner = self.or_expr(in_value)?;
                self.expect_close(b')')?;
                return Ok(Filter::Not(Box::new(inner)));
            }
            // Not `not (`: an attribute that happens to be called "not".
            self.pos = save;
        }
        self.attr_expr(in_value)
    }

    /// `attrPath op value`, `attrPath pr`, or `attrPath[valFilter]` (optionally followed by Entra's
    /// `.sub op value`).
    fn attr_expr(&mut self, in_value: bool) -> Result<Filter, FilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(FilterError::new(self.pos, format!("more than {MAX_TERMS} terms")));
        }
        let path = self.attr_path()?;
        let save = self.pos;
        self.skip_ws();
        if self.peek() == Some(b'[') {
            if in_value {
                return Err(FilterError::new(self.pos, "value filters cannot be nested"));
            }
            if path.sub_attr.is_some() {
                return Err(FilterError::new(
                    self.pos,
                    "a value filter cannot follow a sub-attribute",
                ));
            }
            self.enter()?;
            self.pos += 1;
            let mut inner = self.or_expr(true)?;
            self.expect_close(b']')?;
            if self.peek() == Some(b'.') {
                // Entra: `emails[type eq "work"].value eq "x"` = `emails[type eq "work" and value eq "x"]`.
                self.pos += 1;
                let sub = AttrPath::new(self.name()?);
                let tail = self.operator_and_value(sub)?;
                inner = Filter::And(Box::new(inner), Box::new(tail));
            }
            return Ok(Filter::ValuePath {
                path,
                filter: Box::new(inner),
            });
        }
        self.pos = save;
        self.operator_and_value(path)
    }

    fn operator_and_value(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        if !self.skip_ws() {
            return Err(self.unexpected("whitespace and an operator after the attribute path"));
        }
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        let word = &self.src[start..self.pos];
        if word.is_empty() {
            return Err(self.unexpected("an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"));
        }
        if self.peek().is_some_and(is_path_char) {
            self.pos = start;
            return Err(self.unexpected("an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"));
        }
        if word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let Some(op) = CompareOp::from_name(word) else {
            return Err(FilterError::new(start, format!("unknown operator {word:?}")));
        };
        let value = self.value()?;
        Ok(Filter::Compare { path, op, value })
    }

    /// A JSON literal: string, number, `true`, `false` or `null` (the keywords in any case).
    fn value(&mut self) -> Result<Value, FilterError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                let mut i = start + 1;
                loop {
                    match self.bytes.get(i) {
                        None => return Err(FilterError::new(start, "unterminated string")),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                let text = &self.src[start..=i];
                let s: String = serde_json::from_str(text)
                    .map_err(|e| FilterError::new(start, format!("invalid string: {e}")))?;
                self.pos = i + 1;
                Ok(Value::String(s))
            }
            Some(b) if b == b'-' || b.is_ascii_digit() => {
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    self.pos += 1;
                }
                let text = &self.src[start..self.pos];
                let n: serde_json::Number = serde_json::from_str(text)
                    .map_err(|_| FilterError::new(start, format!("invalid number {text:?}")))?;
                Ok(Value::Number(n))
            }
            Some(b) if b.is_ascii_alphabetic() => {
                while self.peek().is_some_and(is_path_char) {
                    self.pos += 1;
                }
                let word = &self.src[start..self.pos];
                if word.eq_ignore_ascii_case("true") {
                    Ok(Value::Bool(true))
                } else if word.eq_ignore_ascii_case("false") {
                    Ok(Value::Bool(false))
                } else if word.eq_ignore_ascii_case("null") {
                    Ok(Value::Null)
                } else {
                    Err(FilterError::new(
                        start,
                        format!(
                            "expected a value (quoted string, number, true, false or null), found {word:?}"
                        ),
                    ))
                }
            }
            _ => Err(self.unexpected("a value (quoted string, number, true, false or null)")),
        }
    }

    /// An attribute name: `ALPHA *(ALPHA / DIGIT / "-" / "_")`, or `$ref`-style with a leading `$`.
    fn name(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        if !self.peek().is_some_and(is_name_start) {
            return Err(self.unexpected("an attribute name"));
        }
        self.pos += 1;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        Ok(self.src[start..self.pos].to_string())
    }

    /// `[URN ":"] ATTRNAME ["." ATTRNAME]`. The URN is everything up to the last `:`, so
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value` has schema
    /// `urn:…:2.0:User`, attribute `manager` and sub-attribute `value`.
    fn attr_path(&mut self) -> Result<AttrPath, FilterError> {
        let start = self.pos;
        if !self.peek().is_some_and(is_name_start) {
            return Err(self.unexpected("an attribute path"));
        }
        while self.peek().is_some_and(is_path_char) {
            self.pos += 1;
        }
        let end = self.pos;
        let token = &self.src[start..end];
        let (schema, rest_start) = if token.len() > 4 && token[..4].eq_ignore_ascii_case("urn:") {
            let colon = token.rfind(':').unwrap_or(3);
            (Some(token[..colon].to_string()), start + colon + 1)
        } else {
            (None, start)
        };
        // Re-scan the part after the schema as `name ["." name]`.
        self.pos = rest_start;
        let attr = self.name()?;
        let sub_attr = if self.peek() == Some(b'.') {
            self.pos += 1;
            Some(self.name()?)
        } else {
            None
        };
        if self.pos != end {
            return Err(self.unexpected("the end of the attribute path"));
        }
        Ok(AttrPath {
            schema,
            attr,
            sub_attr,
        })
    }
}
