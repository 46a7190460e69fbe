//! What the SCIM server supports, as data: the User, Enterprise User and Group attributes. The
//! same tables drive input normalization, case rules of filters, projections and the discovery
//! documents (`/Schemas`, `/ResourceTypes`, `/ServiceProviderConfig`), so what is described is
//! exactly what is supported.

use gatehouse_domain::scim_filter::{AttrPath, CaseExact};
use gatehouse_store::scim_store::ScimKind;
use serde_json::{Map, Value, json};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    String,
    Boolean,
    Complex,
    Reference,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadWrite,
    ReadOnly,
    WriteOnly,
}

/// One attribute of a schema.
#[derive(Debug)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Ty,
    pub multi: bool,
    pub case_exact: bool,
    pub required: bool,
    pub mutability: Mutability,
    /// Unique among resources of the type (server-enforced).
    pub unique: bool,
    pub subs: &'static [Attr],
    pub description: &'static str,
}

const fn s(name: &'static str, description: &'static str) -> Attr {
    Attr {
        name,
        ty: Ty::String,
        multi: false,
        case_exact: false,
        required: false,
        mutability: Mutability::ReadWrite,
        unique: false,
        subs: &[],
        description,
    }
}

const fn exact(mut a: Attr) -> Attr {
    a.case_exact = true;
    a
}

const fn read_only(mut a: Attr) -> Attr {
    a.mutability = Mutability::ReadOnly;
    a
}

const fn boolean(name: &'static str, description: &'static str) -> Attr {
    let mut a = s(name, description);
    a.ty = Ty::Boolean;
    a
}

const fn reference(name: &'static str, description: &'static str) -> Attr {
    let mut a = s(name, description);
    a.ty = Ty::Reference;
    a.case_exact = true;
    a
}

const fn complex(name: &'static str, subs: &'static [Attr], description: &'static str) -> Attr {
    let mut a = s(name, description);
    a.ty = Ty::Complex;
    a.subs = subs;
    a
}

const fn multi(mut a: Attr) -> Attr {
    a.multi = true;
    a
}

/// value/display/type/primary: the sub-attributes of emails, phoneNumbers, ims, photos, ...
const MULTI_SUBS: &[Attr] = &[
    s("value", "the value"),
    s("display", "a human-readable name"),
    s("type", "a label, e.g. work or home"),
    boolean("primary", "the primary value"),
];

const NAME_SUBS: &[Attr] = &[
    s("formatted", "the full name"),
    s("familyName", "family name (Looker last name)"),
    s("givenName", "given name (Looker first name)"),
    s("middleName", "middle name"),
    s("honorificPrefix", "e.g. Ms."),
    s("honorificSuffix", "e.g. III"),
];

const ADDRESS_SUBS: &[Attr] = &[
    s("formatted", "full address"),
    s("streetAddress", "street"),
    s("locality", "city"),
    s("region", "state or region"),
    s("postalCode", "postal code"),
    s("country", "country"),
    s("type", "work, home or other"),
    boolean("primary", "the primary address"),
];

const GROUP_REF_SUBS: &[Attr] = &[
    exact(read_only(s("value", "the group's id"))),
    read_only(reference("$ref", "the group's URI")),
    read_only(s("display", "the group's displayName")),
    read_only(s("type", "direct")),
];

const MEMBER_SUBS: &[Attr] = &[
    exact(s("value", "the member User's id")),
    reference("$ref", "the member's URI"),
    s("display", "the member's display name"),
    s("type", "User"),
];

const MANAGER_SUBS: &[Attr] = &[
    exact(s("value", "the manager's id")),
    reference("$ref", "the manager's URI"),
    read_only(s("displayName", "the manager's name")),
];

/// Attributes every resource has (RFC 7643 §3.1), handled by the server.
pub const COMMON: &[Attr] = &[
    exact(read_only(s("id", "server-assigned, unique, stable"))),
    exact(s("externalId", "the IdP's own identifier")),
];

pub const USER_ATTRS: &[Attr] = &[
    {
        let mut a = s(
            "userName",
            "unique login (Looker login; email when no email is given)",
        );
        a.required = true;
        a.unique = true;
        a
    },
    complex("name", NAME_SUBS, "the person's name"),
    s("displayName", "name shown to people"),
    s("nickName", "casual name"),
    reference("profileUrl", "profile page"),
    s("title", "job title"),
    s("userType", "e.g. Employee or Contractor"),
    s("preferredLanguage", "e.g. en-US"),
    s("locale", "e.g. en-US"),
    s("timezone", "e.g. America/Los_Angeles"),
    boolean(
        "active",
        "false offboards the person in Looker; \"True\"/\"False\" strings are accepted",
    ),
    {
        let mut a = s("password", "accepted and discarded: never stored, never returned");
        a.mutability = Mutability::WriteOnly;
        a
    },
    multi(complex(
        "emails",
        MULTI_SUBS,
        "the primary (else work, else first) is the Looker email",
    )),
    multi(complex("phoneNumbers", MULTI_SUBS, "phone numbers")),
    multi(complex("ims", MULTI_SUBS, "instant messaging addresses")),
    multi(complex("photos", MULTI_SUBS, "photo URLs")),
    multi(complex("addresses", ADDRESS_SUBS, "postal addresses")),
    multi(read_only(complex(
        "groups",
        GROUP_REF_SUBS,
        "groups the user belongs to (change them through /Groups)",
    ))),
    multi(complex("entitlements", MULTI_SUBS, "entitlements")),
    multi(complex("roles", MULTI_SUBS, "roles")),
    multi(complex("x509Certificates", MULTI_SUBS, "certificates")),
];

pub const ENTERPRISE_ATTRS: &[Attr] = &[
    s("employeeNumber", "employee number"),
    s("costCenter", "cost center"),
    s("organization", "organization"),
    s("division", "division"),
    s("department", "department (a profile attribute policies may map)"),
    complex("manager", MANAGER_SUBS, "the manager"),
];

pub const GROUP_ATTRS: &[Attr] = &[
    {
        let mut a = s("displayName", "the group name policies match on");
        a.required = true;
        a
    },
    multi(complex(
        "members",
        MEMBER_SUBS,
        "member Users (nested groups are not supported)",
    )),
];

/// The attribute table of a resource kind (core schema; `COMMON` comes on top).
pub fn core_attrs(kind: ScimKind) -> &'static [Attr] {
    match kind {
        ScimKind::User => USER_ATTRS,
        ScimKind::Group => GROUP_ATTRS,
    }
}

pub fn core_schema(kind: ScimKind) -> &'static str {
    match kind {
        ScimKind::User => USER_SCHEMA,
        ScimKind::Group => GROUP_SCHEMA,
    }
}

/// Case-insensitive lookup in a table.
pub fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// Where an attribute path points: the top level or the enterprise extension object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Core,
    Enterprise,
}

/// Resolve `[schema:]attr` for a kind. `None` when the attribute is not supported.
pub fn resolve(kind: ScimKind, path: &AttrPath) -> Option<(Container, &'static Attr)> {
    let schema = path.schema.as_deref();
    let core = schema.is_none_or(|s| s.eq_ignore_ascii_case(core_schema(kind)));
    if core {
        return find(COMMON, &path.attr)
            .or_else(|| find(core_attrs(kind), &path.attr))
            .map(|a| (Container::Core, a));
    }
    if kind == ScimKind::User && schema.is_some_and(|s| s.eq_ignore_ascii_case(ENTERPRISE_SCHEMA)) {
        return find(ENTERPRISE_ATTRS, &path.attr).map(|a| (Container::Enterprise, a));
    }
    None
}

/// Case rules of RFC 7643 as this server declares them in `/Schemas`.
pub struct SchemaCase(pub ScimKind);

impl CaseExact for SchemaCase {
    fn case_exact(&self, path: &AttrPath) -> bool {
        if path.is("meta", Some("version")) || path.is("meta", Some("location")) {
            return true;
        }
        let Some((_, attr)) = resolve(self.0, path) else {
            return false;
        };
        match &path.sub_attr {
            None => attr.case_exact,
            Some(sub) => find(attr.subs, sub).is_some_and(|a| a.case_exact),
        }
    }
}

fn describe(a: &Attr) -> Value {
    let ty = match a.ty {
        Ty::String => "string",
        Ty::Boolean => "boolean",
        Ty::Complex => "complex",
        Ty::Reference => "reference",
    };
    let mutability = match a.mutability {
        Mutability::ReadWrite => "readWrite",
        Mutability::ReadOnly => "readOnly",
        Mutability::WriteOnly => "writeOnly",
    };
    let returned = match (a.mutability, a.name) {
        (Mutability::WriteOnly, _) => "never",
        (_, "id") => "always",
        _ => "default",
    };
    let mut v = json!({
        "name": a.name,
        "type": ty,
        "multiValued": a.multi,
        "description": a.description,
        "required": a.required,
        "caseExact": a.case_exact,
        "mutability": mutability,
        "returned": returned,
        "uniqueness": if a.unique || a.name == "id" { "server" } else { "none" },
    });
    if a.ty == Ty::Complex {
        v["subAttributes"] = Value::Array(a.subs.iter().map(describe).collect());
    }
    if a.ty == Ty::Reference {
        v["referenceTypes"] = if a.name == "profileUrl" {
            json!(["external"])
        } else {
            json!(["User", "Group"])
        };
    }
    v
}

fn schema_doc(id: &str, name: &str, description: &str, attrs: &[Attr], base: &str) -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attrs.iter().map(describe).collect::<Vec<_>>(),
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{id}") },
    })
}

/// The three schemas, as `/Schemas` lists them.
pub fn schemas(base: &str) -> Vec<Value> {
    let user: Vec<&Attr> = COMMON.iter().skip(1).chain(USER_ATTRS).collect();
    let group: Vec<&Attr> = COMMON.iter().skip(1).chain(GROUP_ATTRS).collect();
    let doc = |id, name, desc, attrs: Vec<&Attr>| {
        let mut d = schema_doc(id, name, desc, &[], base);
        d["attributes"] = Value::Array(attrs.into_iter().map(describe).collect());
        d
    };
    vec![
        doc(USER_SCHEMA, "User", "User account", user),
        doc(GROUP_SCHEMA, "Group", "Group of Users", group),
        schema_doc(
            ENTERPRISE_SCHEMA,
            "EnterpriseUser",
            "Enterprise User",
            ENTERPRISE_ATTRS,
            base,
        ),
    ]
}

pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "User account",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{ "schema": ENTERPRISE_SCHEMA, "required": false }],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") },
        }),
        json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Group of Users",
            "schema": GROUP_SCHEMA,
            "schemaExtensions": [],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group") },
        }),
    ]
}

pub fn service_provider_config(base: &str, max_results: usize) -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": max_results },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "Authorization: Bearer <token>, one of the tokens in [scim] tokens or GATEHOUSE_SCIM_TOKEN",
            "primary": true,
        }],
        "meta": { "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig") },
    })
}

/// Why a resource body cannot be accepted (a 400 `invalidValue`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Coerce a JSON value to an attribute's type. `Ok(None)` means unassigned (null, empty).
/// Booleans accept Entra's legacy `"True"`/`"False"` strings.
pub fn coerce(attr: &Attr, value: &Value) -> Result<Option<Value>, Invalid> {
    if value.is_null() {
        return Ok(None);
    }
    if attr.multi {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        let mut out = Vec::new();
        for item in items {
            if let Some(v) = coerce_single(attr, item)? {
                out.push(v);
            }
        }
        return Ok(if out.is_empty() {
            None
        } else {
            Some(Value::Array(out))
        });
    }
    coerce_single(attr, value)
}

/// Coerce one value (an element, for a multi-valued attribute).
pub fn coerce_single(attr: &Attr, value: &Value) -> Result<Option<Value>, Invalid> {
    let wrong = |want: &str| Invalid(format!("{} must be {want}", attr.name));
    match (attr.ty, value) {
        (_, Value::Null) => Ok(None),
        (Ty::String | Ty::Reference, Value::String(s)) => Ok(Some(Value::String(s.clone()))),
        (Ty::String | Ty::Reference, _) => Err(wrong("a string")),
        (Ty::Boolean, Value::Bool(b)) => Ok(Some(Value::Bool(*b))),
        (Ty::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(Value::Bool(true))),
        (Ty::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(Value::Bool(false))),
        (Ty::Boolean, _) => Err(wrong("a boolean")),
        (Ty::Complex, Value::Object(map)) => {
            let out = normalize_object(attr.subs, map, attr.name)?;
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        (Ty::Complex, _) => Err(wrong("an object")),
    }
}

/// Keep the supported sub-attributes of `map` under their canonical names, coerced.
fn normalize_object(
    attrs: &[Attr],
    map: &Map<String, Value>,
    parent: &str,
) -> Result<Map<String, Value>, Invalid> {
    let mut out = Map::new();
    for (k, v) in map {
        let Some(a) = find(attrs, k) else { continue };
        if a.mutability != Mutability::ReadWrite {
            continue;
        }
        match coerce(a, v) {
            Ok(Some(v)) => {
                out.insert(a.name.to_string(), v);
            }
            Ok(None) => {}
            Err(Invalid(m)) => return Err(Invalid(format!("{parent}.{m}"))),
        }
    }
    Ok(out)
}

/// Turn a request body (POST/PUT, or a PATCH result) into the stored form: supported writable
/// attributes only, canonical names, coerced types; `password`, read-only attributes (`id`,
/// `meta`, `groups`) and attributes no schema here defines are dropped. Required attributes
/// are checked.
pub fn normalize(kind: ScimKind, body: &Value) -> Result<Map<String, Value>, Invalid> {
    let Value::Object(map) = body else {
        return Err(Invalid("the resource must be a JSON object".into()));
    };
    let mut out = Map::new();
    for (k, v) in map {
        if kind == ScimKind::User && k.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
            let Value::Object(ext) = v else {
                if v.is_null() {
                    continue;
                }
                return Err(Invalid(format!("{ENTERPRISE_SCHEMA} must be an object")));
            };
            let ext = normalize_object(ENTERPRISE_ATTRS, ext, ENTERPRISE_SCHEMA)?;
            if !ext.is_empty() {
                out.insert(ENTERPRISE_SCHEMA.to_string(), Value::Object(ext));
            }
            continue;
        }
        let Some(a) = find(&COMMON[1..], k).or_else(|| find(core_attrs(kind), k)) else {
            continue;
        };
        if a.mutability != Mutability::ReadWrite {
            continue;
        }
        if let Some(v) = coerce(a, v)? {
            out.insert(a.name.to_string(), v);
        }
    }
    for a in core_attrs(kind).iter().filter(|a| a.required) {
        match out.get(a.name) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => return Err(Invalid(format!("{} is required", a.name))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_keeps_supported_attributes_under_canonical_names() {
        let body = json!({
            "schemas": [USER_SCHEMA],
            "USERNAME": "a@example.com",
            "password": "secret",
            "id": "forged",
            "groups": [{"value": "g"}],
            "active": "False",
            "name": {"GivenName": "A", "unknown": 1},
            "emails": {"value": "a@example.com"},
            "favouriteColour": "blue",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {"Department": "Eng"},
        });
        let out = Value::Object(normalize(ScimKind::User, &body).unwrap());
        assert_eq!(
            out,
            json!({
                "userName": "a@example.com",
                "active": false,
                "name": {"givenName": "A"},
                "emails": [{"value": "a@example.com"}],
                ENTERPRISE_SCHEMA: {"department": "Eng"},
            })
        );
    }

    #[test]
    fn normalize_rejects_missing_required_and_wrong_types() {
        assert!(normalize(ScimKind::User, &json!({"name": {}})).is_err());
        assert!(normalize(ScimKind::User, &json!({"userName": 3})).is_err());
        assert!(normalize(ScimKind::User, &json!({"userName": "x", "active": "maybe"})).is_err());
        assert!(normalize(ScimKind::Group, &json!({"members": []})).is_err());
        assert!(normalize(ScimKind::Group, &json!([])).is_err());
    }

    #[test]
    fn case_rules_follow_the_schema() {
        let c = SchemaCase(ScimKind::User);
        assert!(c.case_exact(&AttrPath::new("id")));
        assert!(c.case_exact(&AttrPath::new("externalId")));
        assert!(!c.case_exact(&AttrPath::new("userName")));
        assert!(!c.case_exact(&AttrPath::with_sub("emails", "value")));
        let g = SchemaCase(ScimKind::Group);
        assert!(g.case_exact(&AttrPath::with_sub("members", "value")));
        assert!(!g.case_exact(&AttrPath::new("displayName")));
    }

    #[test]
    fn discovery_documents_describe_the_tables() {
        let s = schemas("/scim/v2");
        assert_eq!(s.len(), 3);
        let user = &s[0];
        let names: Vec<&str> = user["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"userName") && names.contains(&"active") && names.contains(&"emails"));
        let pw = user["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "password")
            .unwrap();
        assert_eq!(pw["returned"], "never");
        assert_eq!(service_provider_config("", 200)["bulk"]["supported"], false);
    }
}
