//! In-memory evaluation of a [`Filter`] against a SCIM resource as JSON.
//!
//! Rules (RFC 7644 §3.4.2.2 where it speaks, documented choices where it does not):
//! - attribute names and schema URN keys are matched case-insensitively;
//! - an attribute with a schema URN is looked up under that URN key of the resource; a core schema
//!   URN (`urn:ietf:params:scim:schemas:core:…`) names the top level;
//! - a comparison holds if ANY value of a multi-valued attribute matches; comparing a complex
//!   value without a sub-attribute (`emails eq "x"`, `members eq "id"`) compares its `value`;
//! - `ne` is the negation of `eq` (so it also holds when the attribute is absent);
//! - `eq null` holds when the attribute is absent or null, `ne null` when it is present;
//! - strings compare case-insensitively unless [`CaseExact`] says otherwise; `gt`/`ge`/`lt`/`le`
//!   on strings are lexicographic; on [`CaseExact::date_time`] attributes both sides are read as
//!   instants (RFC 3339, or without an offset as UTC) when they parse;
//! - a boolean literal equals a string `"true"`/`"false"` in any case (Entra legacy `active`);
//! - order and substring operators on booleans, and any comparison between different JSON types,
//!   do not match.

use super::{AttrPath, CaseExact, CompareOp, Filter};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use std::cmp::Ordering;

/// Evaluates `filter` against `resource` (a SCIM resource as JSON). Never fails: anything that
/// cannot match (missing attribute, type mismatch) is simply not a match.
pub fn matches(filter: &Filter, resource: &Value, case: &dyn CaseExact) -> bool {
    eval(filter, resource, case, None)
}

/// RFC 7643 case rules: `id` and `externalId` compare case-exactly (RFC 7643 §3.1); everything
/// else (`userName`, `emails.value`, `displayName`, …) does not.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc7643CaseExact;

impl CaseExact for Rfc7643CaseExact {
    fn case_exact(&self, path: &AttrPath) -> bool {
        path.is("id", None) || path.is("externalId", None)
    }
}

/// `parent` is the attribute whose values a value filter is running over.
fn eval(filter: &Filter, res: &Value, case: &dyn CaseExact, parent: Option<&AttrPath>) -> bool {
    match filter {
        Filter::And(a, b) => eval(a, res, case, parent) && eval(b, res, case, parent),
        Filter::Or(a, b) => eval(a, res, case, parent) || eval(b, res, case, parent),
        Filter::Not(inner) => !eval(inner, res, case, parent),
        Filter::Present(path) => lookup(res, path).into_iter().any(non_empty),
        Filter::Compare { path, op, value } => {
            let full = full_path(parent, path);
            let exact = case.case_exact(&full);
            let date_time = case.date_time(&full);
            let candidates: Vec<&Value> = lookup(res, path)
                .into_iter()
                .filter_map(|v| {
                    if path.sub_attr.is_none() && v.is_object() {
                        get_ci(v, "value")
                    } else {
                        Some(v)
                    }
                })
                .collect();
            if value.is_null() {
                let present = candidates.iter().any(|v| !v.is_null());
                return match op {
                    CompareOp::Eq => !present,
                    CompareOp::Ne => present,
                    _ => false,
                };
            }
            match op {
                CompareOp::Ne => !candidates
                    .iter()
                    .any(|c| compare(c, CompareOp::Eq, value, exact, date_time)),
                _ => candidates
                    .iter()
                    .any(|c| compare(c, *op, value, exact, date_time)),
            }
        }
        Filter::ValuePath { path, filter } => {
            let full = full_path(parent, path);
            lookup(res, path).into_iter().any(|element| {
                if element.is_object() {
                    eval(filter, element, case, Some(&full))
                } else {
                    // A multi-valued simple attribute: its values are the `value` of the filter.
                    let wrapped = serde_json::json!({ "value": element });
                    eval(filter, &wrapped, case, Some(&full))
                }
            })
        }
    }
}

/// The path as the schema knows it: inside `emails[...]`, `value` is `emails.value`.
fn full_path(parent: Option<&AttrPath>, path: &AttrPath) -> AttrPath {
    match parent {
        None => path.clone(),
        Some(parent) => AttrPath {
            schema: parent.schema.clone(),
            attr: parent.attr.clone(),
            sub_attr: Some(path.attr.clone()),
        },
    }
}

/// Case-insensitive member lookup (exact spelling first).
fn get_ci<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
    let map = obj.as_object()?;
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn flatten<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    match v {
        Value::Array(items) => out.extend(items.iter()),
        other => out.push(other),
    }
}

/// Every value `path` names in `res`, multi-valued attributes flattened.
fn lookup<'v>(res: &'v Value, path: &AttrPath) -> Vec<&'v Value> {
    let base = match &path.schema {
        None => Some(res),
        Some(schema) => get_ci(res, schema).or_else(|| {
            const CORE: &str = "urn:ietf:params:scim:schemas:core:";
            let core = schema
                .get(..CORE.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(CORE));
            core.then_some(res)
        }),
    };
    let mut values = Vec::new();
    if let Some(v) = base.and_then(|b| get_ci(b, &path.attr)) {
        flatten(v, &mut values);
    }
    match &path.sub_attr {
        None => values,
        Some(sub) => {
            let mut subs = Vec::new();
            for v in values {
                if let Some(s) = get_ci(v, sub) {
                    flatten(s, &mut subs);
                }
            }
            subs
        }
    }
}

/// `pr`: not null, not an empty string or array, and for a complex value some non-empty member.
fn non_empty(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(non_empty),
        Value::Object(map) => map.values().any(non_empty),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

fn parse_date_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

fn ordered(ordering: Option<Ordering>, op: CompareOp) -> bool {
    let Some(o) = ordering else { return false };
    match op {
        CompareOp::Eq => o == Ordering::Equal,
        CompareOp::Ne => o != Ordering::Equal,
        CompareOp::Gt => o == Ordering::Greater,
        CompareOp::Ge => o != Ordering::Less,
        CompareOp::Lt => o == Ordering::Less,
        CompareOp::Le => o != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn bool_of(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// One attribute value `cand` against the filter's literal.
fn compare(cand: &Value, op: CompareOp, literal: &Value, exact: bool, date_time: bool) -> bool {
    match (cand, literal) {
        (Value::String(a), Value::String(b)) => {
            if date_time
                && !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
                && let (Some(x), Some(y)) = (parse_date_time(a), parse_date_time(b))
            {
                return ordered(Some(x.cmp(&y)), op);
            }
            let (a, b) = if exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                _ => ordered(Some(a.cmp(&b)), op),
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            let ordering = match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
                (Some(x), Some(y), _, _) => Some(x.cmp(&y)),
                (_, _, Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => a.as_f64().zip(b.as_f64()).and_then(|(x, y)| x.partial_cmp(&y)),
            };
            ordered(ordering, op)
        }
        (Value::Bool(a), Value::Bool(b)) => op == CompareOp::Eq && a == b,
        (Value::String(a), Value::Bool(b)) => op == CompareOp::Eq && bool_of(a) == Some(*b),
        _ => false,
    }
}
