//! PATCH (RFC 7644 §3.5.2) on a stored resource, including the forms Okta and Entra ID send:
//! ops in any case (`Replace`), no path with a value object (`{"active": false}`, Entra's dotted
//! keys `"name.givenName"` and URN-prefixed keys), value-filter paths (`members[value eq "x"]`,
//! `emails[type eq "work"].value`), Entra's legacy remove (`path: "members"` with a value array)
//! and booleans as the strings `"True"`/`"False"`.
//!
//! Pure: operates on the stored JSON object; the caller re-validates the result with
//! [`super::schema::normalize`].

use super::schema::{self, Attr, Container, ENTERPRISE_SCHEMA, Mutability, SchemaCase, Ty};
use gatehouse_domain::scim_filter::{AttrPath, Filter, PatchPath, matches, parse_path};
use gatehouse_store::scim_store::ScimKind;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub op: Op,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// A PATCH that cannot be applied; `scim_type` is the RFC 7644 §3.12 `scimType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct PatchError {
    pub scim_type: &'static str,
    pub detail: String,
}

fn fail(scim_type: &'static str, detail: impl Into<String>) -> PatchError {
    PatchError {
        scim_type,
        detail: detail.into(),
    }
}

/// Read a PatchOp message body.
pub fn parse(body: &Value) -> Result<Vec<Operation>, PatchError> {
    let Value::Object(map) = body else {
        return Err(fail("invalidSyntax", "a PatchOp body must be a JSON object"));
    };
    if let Some(schemas) = map.get("schemas")
        && !schemas
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s.as_str() == Some(schema::PATCH_OP)))
    {
        return Err(fail(
            "invalidSyntax",
            format!("schemas must contain {}", schema::PATCH_OP),
        ));
    }
    let ops = map
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
        .map(|(_, v)| v);
    let Some(Value::Array(ops)) = ops else {
        return Err(fail("invalidSyntax", "Operations must be an array"));
    };
    if ops.is_empty() {
        return Err(fail("invalidSyntax", "Operations is empty"));
    }
    ops.iter()
        .enumerate()
        .map(|(i, o)| {
            let Value::Object(o) = o else {
                return Err(fail(
                    "invalidSyntax",
                    format!("Operations[{i}] must be an object"),
                ));
            };
            let get = |name: &str| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            };
            let op = match get("op").and_then(Value::as_str) {
                Some(s) if s.eq_ignore_ascii_case("add") => Op::Add,
                Some(s) if s.eq_ignore_ascii_case("replace") => Op::Replace,
                Some(s) if s.eq_ignore_ascii_case("remove") => Op::Remove,
                other => {
                    return Err(fail(
                        "invalidSyntax",
                        format!("Operations[{i}].op must be add, replace or remove, not {other:?}"),
                    ));
                }
            };
            let path = match get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.trim().is_empty() => None,
                Some(Value::String(p)) => Some(
                    parse_path(p)
                        .map_err(|e| fail("invalidPath", format!("Operations[{i}].path {p:?}: {e}")))?,
                ),
                Some(_) => {
                    return Err(fail(
                        "invalidPath",
                        format!("Operations[{i}].path must be a string"),
                    ));
                }
            };
            let value = get("value").cloned();
            if op != Op::Remove && value.is_none() {
                return Err(fail("invalidValue", format!("Operations[{i}] needs a value")));
            }
            if op == Op::Remove && path.is_none() {
                return Err(fail("noTarget", format!("Operations[{i}]: remove needs a path")));
            }
            Ok(Operation { op, path, value })
        })
        .collect()
}

/// Apply every operation in order to `body` (the stored resource). All or nothing: the caller
/// keeps its copy when this fails.
pub fn apply(kind: ScimKind, body: &mut Map<String, Value>, ops: &[Operation]) -> Result<(), PatchError> {
    for op in ops {
        match &op.path {
            // RFC 7644 §3.5.2 on the extension as a whole (`path` = its schema URN): add and
            // replace set the sub-attributes given, the others stay (as for any complex
            // attribute); remove drops the extension.
            Some(path) if kind == ScimKind::User && is_whole_extension(path) => match op.op {
                Op::Remove => {
                    body.remove(ENTERPRISE_SCHEMA);
                }
                Op::Add | Op::Replace => {
                    let v = op.value.as_ref().unwrap_or(&Value::Null);
                    apply_extension(kind, body, op.op, ENTERPRISE_SCHEMA, v)?;
                }
            },
            Some(path) => apply_path(kind, body, op.op, path, op.value.as_ref(), false)?,
            None => {
                let Some(Value::Object(value)) = &op.value else {
                    return Err(fail(
                        "invalidValue",
                        "an operation without a path needs an object value",
                    ));
                };
                for (k, v) in value {
                    if kind == ScimKind::User && k.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
                        apply_extension(kind, body, op.op, k, v)?;
                        continue;
                    }
                    if ["schemas", "meta"].iter().any(|s| k.eq_ignore_ascii_case(s)) {
                        continue;
                    }
                    let path =
                        parse_path(k).map_err(|e| fail("invalidPath", format!("value key {k:?}: {e}")))?;
                    apply_path(kind, body, op.op, &path, Some(v), true)?;
                }
            }
        }
    }
    Ok(())
}

/// Whether `pp` names the enterprise extension itself
/// (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`), not one of its attributes.
fn is_whole_extension(pp: &PatchPath) -> bool {
    let p = &pp.path;
    pp.value_filter.is_none()
        && pp.sub_attr.is_none()
        && p.sub_attr.is_none()
        && p.schema
            .as_deref()
            .is_some_and(|s| format!("{s}:{}", p.attr).eq_ignore_ascii_case(ENTERPRISE_SCHEMA))
}

/// Add or replace every sub-attribute of the extension object `v` (named `name` in messages).
fn apply_extension(
    kind: ScimKind,
    body: &mut Map<String, Value>,
    op: Op,
    name: &str,
    v: &Value,
) -> Result<(), PatchError> {
    let Value::Object(ext) = v else {
        return Err(fail("invalidValue", format!("{name} must be an object")));
    };
    for (k, v) in ext {
        let path = PatchPath {
            path: AttrPath {
                schema: Some(ENTERPRISE_SCHEMA.into()),
                attr: k.clone(),
                sub_attr: None,
            },
            value_filter: None,
            sub_attr: None,
        };
        apply_path(kind, body, op, &path, Some(v), true)?;
    }
    Ok(())
}

fn coerce_one(attr: &Attr, v: &Value) -> Result<Option<Value>, PatchError> {
    schema::coerce_single(attr, v).map_err(|e| fail("invalidValue", e.0))
}

fn coerce_all(attr: &Attr, v: &Value) -> Result<Option<Value>, PatchError> {
    schema::coerce(attr, v).map_err(|e| fail("invalidValue", e.0))
}

/// Two elements of a multi-valued attribute are the same value when their `value`s are equal
/// (members, emails, ...) or, without one, when they are equal as a whole.
fn same_element(a: &Value, b: &Value) -> bool {
    match (a.get("value"), b.get("value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn apply_path(
    kind: ScimKind,
    body: &mut Map<String, Value>,
    op: Op,
    pp: &PatchPath,
    value: Option<&Value>,
    from_value_object: bool,
) -> Result<(), PatchError> {
    let Some((container, attr)) = schema::resolve(kind, &pp.path) else {
        // Not an attribute this server supports (see /Schemas): ignored like on POST.
        return Ok(());
    };
    match attr.mutability {
        Mutability::WriteOnly => return Ok(()), // password: never stored
        Mutability::ReadOnly if from_value_object => return Ok(()), // Okta's rename sends `id`
        Mutability::ReadOnly => {
            return Err(fail("mutability", format!("{} is read-only", attr.name)));
        }
        Mutability::ReadWrite => {}
    }
    let target: &mut Map<String, Value> = match container {
        Container::Core => body,
        Container::Enterprise => {
            let ext = body
                .entry(ENTERPRISE_SCHEMA.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !ext.is_object() {
                *ext = Value::Object(Map::new());
            }
            ext.as_object_mut().expect("just made an object")
        }
    };
    let sub = match pp.target_sub_attr() {
        None => None,
        Some(s) => match schema::find(attr.subs, s) {
            Some(a) => Some(a),
            None if attr.ty == Ty::Complex => return Ok(()), // unknown sub-attribute: ignored
            None => {
                return Err(fail(
                    "invalidPath",
                    format!("{} has no sub-attributes", attr.name),
                ));
            }
        },
    };
    let name = attr.name;
    match &pp.value_filter {
        None => apply_plain(target, attr, sub, op, value),
        Some(filter) => {
            if !(attr.multi && attr.ty == Ty::Complex) {
                return Err(fail(
                    "invalidPath",
                    format!("{name} is not multi-valued; a value filter cannot apply"),
                ));
            }
            apply_filtered(kind, target, attr, sub, filter, op, value)
        }
    }?;
    if let Some(Value::Object(ext)) = body.get(ENTERPRISE_SCHEMA)
        && ext.is_empty()
    {
        body.remove(ENTERPRISE_SCHEMA);
    }
    Ok(())
}

fn apply_plain(
    target: &mut Map<String, Value>,
    attr: &Attr,
    sub: Option<&Attr>,
    op: Op,
    value: Option<&Value>,
) -> Result<(), PatchError> {
    let name = attr.name;
    if let Some(sub) = sub {
        let set = |obj: &mut Map<String, Value>| -> Result<(), PatchError> {
            match op {
                Op::Remove => {
                    obj.remove(sub.name);
                }
                Op::Add | Op::Replace => match coerce_one(sub, value.unwrap_or(&Value::Null))? {
                    Some(v) => {
                        obj.insert(sub.name.to_string(), v);
                    }
                    None => {
                        obj.remove(sub.name);
                    }
                },
            }
            Ok(())
        };
        if attr.multi {
            if let Some(Value::Array(items)) = target.get_mut(name) {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    set(item)?;
                }
            }
        } else {
            let obj = target
                .entry(name.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !obj.is_object() {
                *obj = Value::Object(Map::new());
            }
            set(obj.as_object_mut().expect("just made an object"))?;
            if obj.as_object().is_some_and(Map::is_empty) {
                target.remove(name);
            }
        }
        return Ok(());
    }
    match op {
        Op::Remove => {
            // Entra legacy: remove members by value array instead of a value-filter path.
            if attr.multi
                && let Some(v) = value.filter(|v| !v.is_null())
            {
                let gone: Vec<Value> = match v {
                    Value::Array(items) => items.clone(),
                    one => vec![one.clone()],
                };
                if let Some(Value::Array(items)) = target.get_mut(name) {
                    items.retain(|item| !gone.iter().any(|g| same_element(item, g)));
                    if items.is_empty() {
                        target.remove(name);
                    }
                }
            } else {
                target.remove(name);
            }
        }
        Op::Add | Op::Replace => {
            let v = value.unwrap_or(&Value::Null);
            let Some(new) = coerce_all(attr, v)? else {
                if op == Op::Replace {
                    target.remove(name);
                }
                return Ok(());
            };
            match (op, attr.multi, attr.ty) {
                (Op::Add, true, _) => {
                    let existing = target
                        .entry(name.to_string())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if !existing.is_array() {
                        *existing = Value::Array(Vec::new());
                    }
                    let items = existing.as_array_mut().expect("just made an array");
                    for n in new.as_array().into_iter().flatten() {
                        match items.iter_mut().find(|i| same_element(i, n)) {
                            Some(i) => merge(i, n),
                            None => items.push(n.clone()),
                        }
                    }
                }
                (_, false, Ty::Complex) => {
                    // RFC 7644 §3.5.2.1/3: sub-attributes given replace, the others stay.
                    let cur = target
                        .entry(name.to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !cur.is_object() {
                        *cur = Value::Object(Map::new());
                    }
                    merge(cur, &new);
                }
                _ => {
                    target.insert(name.to_string(), new);
                }
            }
        }
    }
    Ok(())
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
}

fn apply_filtered(
    kind: ScimKind,
    target: &mut Map<String, Value>,
    attr: &Attr,
    sub: Option<&Attr>,
    filter: &Filter,
    op: Op,
    value: Option<&Value>,
) -> Result<(), PatchError> {
    let name = attr.name;
    let case = SchemaCase(kind);
    let test = Filter::ValuePath {
        path: AttrPath::new(name),
        filter: Box::new(filter.clone()),
    };
    let items: Vec<Value> = match target.get(name) {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    let hit = |item: &Value| {
        let mut one = Map::new();
        one.insert(name.to_string(), Value::Array(vec![item.clone()]));
        matches(&test, &Value::Object(one), &case)
    };
    let mut items_out = Vec::with_capacity(items.len());
    let mut matched = 0usize;
    for item in items {
        if !hit(&item) {
            items_out.push(item);
            continue;
        }
        matched += 1;
        match (op, sub) {
            (Op::Remove, None) => {}
            (Op::Remove, Some(sub)) => {
                let mut item = item;
                if let Some(o) = item.as_object_mut() {
                    o.remove(sub.name);
                }
                items_out.push(item);
            }
            (Op::Add | Op::Replace, _) => items_out.push(updated(attr, sub, item, value)?),
        }
    }
    if matched == 0 && op != Op::Remove {
        // Entra replaces `emails[type eq "work"].value` on a user without a work email: the
        // equality in the filter seeds a new element.
        let Some((p, s)) = filter.as_string_equality() else {
            return Err(fail("noTarget", format!("no value of {name} matches the filter")));
        };
        let Some(seed_attr) = schema::find(attr.subs, &p.attr) else {
            return Err(fail("noTarget", format!("no value of {name} matches the filter")));
        };
        let mut seed = Map::new();
        seed.insert(seed_attr.name.to_string(), Value::String(s.to_string()));
        items_out.push(updated(attr, sub, Value::Object(seed), value)?);
    }
    if items_out.is_empty() {
        target.remove(name);
    } else {
        target.insert(name.to_string(), Value::Array(items_out));
    }
    Ok(())
}

fn updated(
    attr: &Attr,
    sub: Option<&Attr>,
    mut item: Value,
    value: Option<&Value>,
) -> Result<Value, PatchError> {
    let v = value.unwrap_or(&Value::Null);
    match sub {
        Some(sub) => {
            if let Some(o) = item.as_object_mut() {
                match coerce_one(sub, v)? {
                    Some(v) => {
                        o.insert(sub.name.to_string(), v);
                    }
                    None => {
                        o.remove(sub.name);
                    }
                }
            }
        }
        None => {
            if let Some(new) = coerce_one(attr, v)? {
                merge(&mut item, &new);
            }
        }
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(kind: ScimKind, body: Value, patch: Value) -> Result<Value, PatchError> {
        let ops = parse(&patch)?;
        let mut map = body.as_object().unwrap().clone();
        apply(kind, &mut map, &ops)?;
        Ok(Value::Object(map))
    }

    fn ops(ops: Value) -> Value {
        json!({ "schemas": [schema::PATCH_OP], "Operations": ops })
    }

    fn user() -> Value {
        json!({
            "userName": "a@example.com",
            "active": true,
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "a@example.com", "type": "work", "primary": true}],
        })
    }

    #[test]
    fn okta_deactivate_without_path() {
        let out = run(
            ScimKind::User,
            user(),
            ops(json!([{"op": "replace", "value": {"active": false}}])),
        )
        .unwrap();
        assert_eq!(out["active"], false);
    }

    #[test]
    fn entra_deactivate_with_path_and_legacy_string() {
        for v in [json!(false), json!("False")] {
            let out = run(
                ScimKind::User,
                user(),
                ops(json!([{"op": "Replace", "path": "active", "value": v}])),
            )
            .unwrap();
            assert_eq!(out["active"], false);
        }
        let e = run(
            ScimKind::User,
            user(),
            ops(json!([{"op": "Replace", "path": "active", "value": "nope"}])),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, "invalidValue");
    }

    #[test]
    fn value_filter_paths_and_dotted_keys() {
        let out = run(
            ScimKind::User,
            user(),
            ops(json!([
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com"},
                {"op": "replace", "value": {
                    "displayName": "Bjfe", "name.givenName": "Kkom", "name.familyName": "Unua",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Aklq"}},
                {"op": "Add", "path": "nickName", "value": "Babs"},
                {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Eng"},
            ])),
        )
        .unwrap();
        assert_eq!(out["emails"][0]["value"], "new@example.com");
        assert_eq!(out["emails"][0]["primary"], true);
        assert_eq!(out["name"], json!({"givenName": "Kkom", "familyName": "Unua"}));
        assert_eq!(out["displayName"], "Bjfe");
        assert_eq!(out["nickName"], "Babs");
        assert_eq!(
            out[ENTERPRISE_SCHEMA],
            json!({"employeeNumber": "Aklq", "department": "Eng"})
        );
    }

    /// scim2-tester's PATCH of the extension as a whole: `path` is the schema URN itself.
    #[test]
    fn patch_of_the_whole_enterprise_extension_adds_replaces_and_removes_it() {
        let mut u = user();
        u[ENTERPRISE_SCHEMA] = json!({"department": "Ops", "costCenter": "C1"});
        let urn = ENTERPRISE_SCHEMA;
        let added = run(
            ScimKind::User,
            user(),
            ops(json!([{"op": "add", "path": urn,
                "value": {"employeeNumber": "42", "manager": {"value": "m1"}}}])),
        )
        .unwrap();
        assert_eq!(
            added[ENTERPRISE_SCHEMA],
            json!({"employeeNumber": "42", "manager": {"value": "m1"}})
        );

        // Replace of a complex target: what is given replaces, the rest stays (RFC 7644 §3.5.2.3).
        let replaced = run(
            ScimKind::User,
            u.clone(),
            ops(json!([{"op": "Replace", "path": urn.to_ascii_lowercase(),
                "value": {"department": "Eng", "division": "D"}}])),
        )
        .unwrap();
        assert_eq!(
            replaced[ENTERPRISE_SCHEMA],
            json!({"department": "Eng", "costCenter": "C1", "division": "D"})
        );

        let removed = run(
            ScimKind::User,
            u.clone(),
            ops(json!([{"op": "remove", "path": urn}])),
        )
        .unwrap();
        assert!(removed.get(ENTERPRISE_SCHEMA).is_none(), "{removed}");
        assert_eq!(removed["userName"], "a@example.com");

        let e = run(
            ScimKind::User,
            u,
            ops(json!([{"op": "replace", "path": urn, "value": "Eng"}])),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, "invalidValue");
    }

    #[test]
    fn filter_without_match_seeds_an_element() {
        let out = run(
            ScimKind::User,
            json!({"userName": "x"}),
            ops(json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@x"}])),
        )
        .unwrap();
        assert_eq!(out["emails"], json!([{"type": "work", "value": "w@x"}]));
    }

    #[test]
    fn group_members_every_client_form() {
        let group = json!({"displayName": "G", "members": [{"value": "u1"}, {"value": "u2"}]});
        // Okta: remove by value filter, add by array.
        let out = run(
            ScimKind::Group,
            group.clone(),
            ops(json!([
                {"op": "remove", "path": "members[value eq \"u1\"]"},
                {"op": "add", "path": "members", "value": [{"value": "u3", "display": "c"}, {"value": "u2"}]},
            ])),
        )
        .unwrap();
        assert_eq!(
            out["members"],
            json!([{"value": "u2"}, {"value": "u3", "display": "c"}])
        );
        // Entra legacy: Remove with path members and a value array ($ref null).
        let out = run(
            ScimKind::Group,
            group.clone(),
            ops(json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "u2"}]}])),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u1"}]));
        // Remove everyone, then replace the whole list.
        let out = run(
            ScimKind::Group,
            group.clone(),
            ops(json!([{"op": "remove", "path": "members"}])),
        )
        .unwrap();
        assert!(out.get("members").is_none());
        let out = run(
            ScimKind::Group,
            group.clone(),
            ops(json!([{"op": "replace", "path": "members", "value": [{"value": "u9"}]}])),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u9"}]));
        // Okta rename: no path, value with id and displayName (id is ignored).
        let out = run(
            ScimKind::Group,
            group,
            ops(json!([{"op": "replace", "value": {"id": "forged", "displayName": "New"}}])),
        )
        .unwrap();
        assert_eq!(out["displayName"], "New");
        assert!(out.get("id").is_none());
    }

    #[test]
    fn malformed_patches_are_rejected_with_their_scim_type() {
        let bad = [
            (json!([]), "invalidSyntax"),
            (json!({"Operations": "x"}), "invalidSyntax"),
            (ops(json!([])), "invalidSyntax"),
            (ops(json!([{"op": "move", "path": "x"}])), "invalidSyntax"),
            (ops(json!([{"op": "remove"}])), "noTarget"),
            (ops(json!([{"op": "add", "path": "x"}])), "invalidValue"),
            (
                ops(json!([{"op": "add", "path": "emails[type eq", "value": 1}])),
                "invalidPath",
            ),
            (
                json!({"schemas": ["wrong"], "Operations": [{"op": "add", "value": {}}]}),
                "invalidSyntax",
            ),
        ];
        for (body, scim_type) in bad {
            let e = run(ScimKind::User, user(), body.clone()).unwrap_err();
            assert_eq!(e.scim_type, scim_type, "{body}: {e}");
        }
        let e = run(
            ScimKind::User,
            user(),
            ops(json!([{"op": "replace", "path": "id", "value": "x"}])),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, "mutability");
    }
}
