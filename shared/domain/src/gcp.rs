//! GCP names, parsed: the resources whose IAM policy Gatehouse edits and Google group keys.
//! A leaf: the policy validates with it, the cloud target acts with it.

/// A resource whose IAM policy Gatehouse edits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GcpResource {
    /// Resource Manager v3: `projects/{id}`.
    Project { project: String },
    /// BigQuery v2: `projects/{p}/datasets/{d}`.
    Dataset { project: String, dataset: String },
    /// IAM v1: `projects/{p}/serviceAccounts/{email}`.
    ServiceAccount { project: String, email: String },
}

/// Which Google API serves a resource's IAM policy (each has its own base URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcpApi {
    ResourceManager,
    BigQuery,
    Iam,
}

impl GcpResource {
    /// Parse `projects/P`, `projects/P/datasets/D` or `projects/P/serviceAccounts/EMAIL`.
    pub fn parse(name: &str) -> Option<Self> {
        let parts: Vec<&str> = name.split('/').collect();
        let ok = |s: &str| !s.is_empty() && !s.contains([':', '?', '#', ' ']);
        match parts.as_slice() {
            ["projects", p] if ok(p) => Some(GcpResource::Project {
                project: p.to_string(),
            }),
            ["projects", p, "datasets", d] if ok(p) && ok(d) => Some(GcpResource::Dataset {
                project: p.to_string(),
                dataset: d.to_string(),
            }),
            ["projects", p, "serviceAccounts", e] if ok(p) && ok(e) => Some(GcpResource::ServiceAccount {
                project: p.to_string(),
                email: e.to_string(),
            }),
            _ => None,
        }
    }

    pub fn api(&self) -> GcpApi {
        match self {
            GcpResource::Project { .. } => GcpApi::ResourceManager,
            GcpResource::Dataset { .. } => GcpApi::BigQuery,
            GcpResource::ServiceAccount { .. } => GcpApi::Iam,
        }
    }

    /// Path below the API's base URL, without the `:getIamPolicy` / `:setIamPolicy` verb.
    pub fn path(&self) -> String {
        match self {
            GcpResource::Project { project } => format!("/v3/projects/{project}"),
            GcpResource::Dataset { project, dataset } => {
                format!("/bigquery/v2/projects/{project}/datasets/{dataset}")
            }
            GcpResource::ServiceAccount { project, email } => {
                format!("/v1/projects/{project}/serviceAccounts/{email}")
            }
        }
    }
}

/// Whether `s` is usable as a Google group key: `name@domain`, no spaces, slashes or colons.
pub fn is_group_email(s: &str) -> bool {
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '\''))
    };
    ok(local) && ok(domain) && domain.contains('.')
}
