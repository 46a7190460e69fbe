//! SCIM 2.0 filters (RFC 7644 §3.4.2.2) and PATCH paths (RFC 7644 §3.5.2): parser, printer and
//! in-memory evaluator.
//!
//! Everything here is pure. A filter is parsed into a [`Filter`] tree and evaluated with [`matches`]
//! against a resource as JSON (as the SCIM server returns it: core attributes at the top level,
//! extension attributes under their schema URN key). Filters are never turned into SQL, so a filter
//! can never be an injection.
//!
//! Liberal where Okta and Entra ID are known to be sloppy, strict elsewhere:
//! - operators, `and`/`or`/`not`, `pr` and the literals `true`/`false`/`null` in any case;
//! - any run of whitespace between tokens, and none around brackets and parentheses (`not(`);
//! - Entra's lookup form `emails[type eq "work"].value eq "x"`, read as
//!   `emails[type eq "work" and value eq "x"]`;
//! - a string `"True"`/`"False"` in the data compares equal to the boolean (Entra legacy `active`);
//! - dateTimes without an offset (Okta's `2024-05-15T09:21:23`) are taken as UTC.
//!
//! Every parse error carries the byte offset where the input stopped making sense.

mod eval;
mod parse;

use std::fmt;

pub use eval::{Rfc7643CaseExact, matches};
pub use parse::{parse_filter, parse_path};

/// A comparison operator (RFC 7644 §3.4.2.2, table 3). `pr` is [`Filter::Present`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    /// All operators, in RFC order.
    pub const ALL: [CompareOp; 9] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    /// The operator as written in a filter (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    /// Parses an operator name, case-insensitively.
    pub fn from_name(name: &str) -> Option<CompareOp> {
        CompareOp::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attribute path: `[schema ":"] attr ["." sub_attr]`.
///
/// Names keep the case they were written in; compare them with [`AttrPath::is`] (attribute names
/// are case-insensitive, RFC 7643 §2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// Schema URN prefix, e.g. `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`.
    pub schema: Option<String>,
    pub attr: String,
    pub sub_attr: Option<String>,
}

impl AttrPath {
    /// A path to a top-level attribute with no schema and no sub-attribute.
    pub fn new(attr: impl Into<String>) -> AttrPath {
        AttrPath {
            schema: None,
            attr: attr.into(),
            sub_attr: None,
        }
    }

    /// A path `attr.sub_attr`.
    pub fn with_sub(attr: impl Into<String>, sub_attr: impl Into<String>) -> AttrPath {
        AttrPath {
            schema: None,
            attr: attr.into(),
            sub_attr: Some(sub_attr.into()),
        }
    }

    /// True when this path names `attr` (and `sub_attr`, if given), ignoring case and the schema.
    pub fn is(&self, attr: &str, sub_attr: Option<&str>) -> bool {
        self.attr.eq_ignore_ascii_case(attr)
            && match (&self.sub_attr, sub_attr) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// A parsed SCIM filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `path op value`; `value` is a JSON string, number, boolean or null.
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: serde_json::Value,
    },
    /// `path pr`.
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `path[filter]`: some value of the multi-valued (or complex) attribute `path` matches
    /// `filter`, whose paths are relative to that value (`emails[type eq "work"]`).
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

impl Filter {
    /// `path op value`.
    pub fn compare(path: AttrPath, op: CompareOp, value: impl Into<serde_json::Value>) -> Filter {
        Filter::Compare {
            path,
            op,
            value: value.into(),
        }
    }

    /// `self and other`.
    pub fn and(self, other: Filter) -> Filter {
        Filter::And(Box::new(self), Box::new(other))
    }

    /// `self or other`.
    pub fn or(self, other: Filter) -> Filter {
        Filter::Or(Box::new(self), Box::new(other))
    }

    /// `not (self)`. (Named `negate` because `not` would shadow `std::ops::Not`.)
    pub fn negate(self) -> Filter {
        Filter::Not(Box::new(self))
    }

    /// For the common lookup `attr eq "string"` (Okta and Entra look users up by `userName`,
    /// `externalId`, groups by `displayName`), the path and the string; `None` for anything else.
    /// Lets a server use an index, then confirm with [`matches`].
    pub fn as_string_equality(&self) -> Option<(&AttrPath, &str)> {
        match self {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value: serde_json::Value::String(s),
            } => Some((path, s.as_str())),
            _ => None,
        }
    }
}

/// Prints the filter in a form [`parse_filter`] reads back to an equal tree: operators in lower
/// case, values as JSON, and `and`/`or` operands that are themselves `and`/`or` in parentheses.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn operand(f: &mut fmt::Formatter<'_>, filter: &Filter, parens: bool) -> fmt::Result {
            if parens {
                write!(f, "({filter})")
            } else {
                write!(f, "{filter}")
            }
        }
        // Parentheses only where precedence (`and` before `or`) and left associativity need
        // them: a long `a and b and c …` chain prints as it was written, so what the parser
        // accepted, it reads back (it limits parentheses to 64 levels).
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {op} {value}"),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::And(a, b) => {
                operand(f, a, matches!(**a, Filter::Or(..)))?;
                f.write_str(" and ")?;
                operand(f, b, matches!(**b, Filter::And(..) | Filter::Or(..)))
            }
            Filter::Or(a, b) => {
                operand(f, a, false)?;
                f.write_str(" or ")?;
                operand(f, b, matches!(**b, Filter::Or(..)))
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

impl std::str::FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Filter, FilterError> {
        parse_filter(s)
    }
}

/// A PATCH operation's `path` (RFC 7644 §3.5.2):
///
/// | input | `path` | `value_filter` | `sub_attr` |
/// |---|---|---|---|
/// | `active` | `active` | – | – |
/// | `name.givenName` | `name.givenName` (in `path.sub_attr`) | – | – |
/// | `urn:…:enterprise:2.0:User:employeeNumber` | schema + `employeeNumber` | – | – |
/// | `members[value eq "x"]` | `members` | `value eq "x"` | – |
/// | `emails[type eq "work"].value` | `emails` | `type eq "work"` | `value` |
///
/// So a sub-attribute sits in `path.sub_attr` without a filter and in `sub_attr` after one; use
/// [`PatchPath::target_sub_attr`] to get it either way.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub path: AttrPath,
    pub value_filter: Option<Filter>,
    pub sub_attr: Option<String>,
}

impl PatchPath {
    /// The sub-attribute the operation targets, whether written `attr.sub` or `attr[filter].sub`.
    pub fn target_sub_attr(&self) -> Option<&str> {
        self.sub_attr.as_deref().or(self.path.sub_attr.as_deref())
    }
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(filter) = &self.value_filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PatchPath {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<PatchPath, FilterError> {
        parse_path(s)
    }
}

/// Why a filter or PATCH path does not parse. `position` is the byte offset in the input.
/// A SCIM server answers 400 with `scimType` `invalidFilter` (filters) or `invalidPath` (paths).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at {position}: {message}")]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

impl FilterError {
    pub(crate) fn new(position: usize, message: impl Into<String>) -> FilterError {
        FilterError {
            position,
            message: message.into(),
        }
    }
}

/// Which attributes compare case-exactly. The server passes its schema knowledge in;
/// [`Rfc7643CaseExact`] is the RFC 7643 default.
///
/// Inside a value filter the path is given in full: for `emails[value eq "x"]` the path asked about
/// is `emails.value`.
pub trait CaseExact {
    fn case_exact(&self, path: &AttrPath) -> bool;

    /// Whether the attribute is a SCIM `dateTime`, compared as an instant rather than as text.
    /// The default knows `meta.created` and `meta.lastModified`.
    fn date_time(&self, path: &AttrPath) -> bool {
        path.is("meta", Some("lastModified")) || path.is("meta", Some("created"))
    }
}

#[cfg(test)]
mod tests;
