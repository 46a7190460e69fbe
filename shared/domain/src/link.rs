//! The durable link from a person to their accounts in one target (issue 16). A leaf: the
//! targets read with it, the SSO lookup takes the person's profile from it.

/// Who a read is for (issue 16): the person (the IdP's stable id, `Subject.key`) and the
/// accounts the state store links them to in this target, first linked first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub person: String,
    pub accounts: Vec<String>,
    /// The person's earlier emails the directory knows (`Identity::previous_emails`): a target
    /// that matches on email tries them when neither the link nor the current email finds the
    /// person.
    pub previous_emails: Vec<String>,
    /// The person's current IdP profile attributes (`Identity::profile`, values only): a target
    /// that looks people up by another id (Looker's SSO credential) takes it from here.
    pub profile: std::collections::BTreeMap<String, String>,
}

impl Link {
    /// A person with no link yet.
    pub fn unlinked(person: impl Into<String>) -> Self {
        Link {
            person: person.into(),
            ..Link::default()
        }
    }
}
