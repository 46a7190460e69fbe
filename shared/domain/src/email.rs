//! The email rule every intake applies before an address enters Gatehouse (subject emails,
//! SCIM `emails[].value`): strict on purpose. An identity provider never sends more than this,
//! and an address is used as a Looker login and search term, a cloud user name and a log field.
//!
//! One `@`; a local part of 1–64 characters from RFC 5322's dot-atom (letters and digits of any
//! script, and ``!#$%&'*+-/=?^_`{|}~.``, no leading, trailing or double dot); a domain of
//! 1–253 characters made of dot-separated labels of letters, digits and inner hyphens; at most
//! 254 characters in all. Nothing else: no control character, no space, no quoted local part, no
//! IP literal, no Unicode format character (bidi overrides, zero-width joiners).

/// Why an address was refused; never repeats the address (it may be hostile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid email address: {0}")]
pub struct InvalidEmail(pub &'static str);

pub const MAX_LEN: usize = 254;
const MAX_LOCAL: usize = 64;
const MAX_LABEL: usize = 63;

/// Check `s` against the rule above.
pub fn validate(s: &str) -> Result<(), InvalidEmail> {
    if s.is_empty() {
        return Err(InvalidEmail("empty"));
    }
    if s.chars().count() > MAX_LEN {
        return Err(InvalidEmail("longer than 254 characters"));
    }
    if s.chars().any(|c| c.is_control() || is_format(c)) {
        return Err(InvalidEmail("contains a control or format character"));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(InvalidEmail("contains whitespace"));
    }
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(InvalidEmail("needs exactly one @"));
    };
    if local.is_empty() || local.chars().count() > MAX_LOCAL {
        return Err(InvalidEmail("local part must have 1 to 64 characters"));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(InvalidEmail("local part has a misplaced dot"));
    }
    if !local
        .chars()
        .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
    {
        return Err(InvalidEmail("local part has a character outside the dot-atom"));
    }
    if domain.is_empty() || domain.chars().count() > 253 {
        return Err(InvalidEmail("domain must have 1 to 253 characters"));
    }
    for label in domain.split('.') {
        if label.is_empty() || label.chars().count() > MAX_LABEL {
            return Err(InvalidEmail("domain has an empty or over-long label"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(InvalidEmail("domain label starts or ends with a hyphen"));
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err(InvalidEmail(
                "domain has a character other than letters, digits, - and .",
            ));
        }
    }
    Ok(())
}

/// Unicode format characters (category Cf) that change how text displays without showing:
/// bidi embeddings and overrides, isolates, zero-width (non-)joiners, the BOM, soft hyphen.
pub fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_addresses_pass() {
        for ok in [
            "john.doe@example.com",
            "a@x",
            "first+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "jürgen@bücher.de",
            "x_y-z@a-b.example",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn hostile_or_malformed_addresses_are_refused() {
        for bad in [
            "",
            "a",
            "a@b@c",
            "@example.com",
            "a@",
            "a\n2026-01-01 INFO forged@example.com",
            "a\r@example.com",
            "a\u{1b}[31m@example.com",
            "a\u{202e}moc.elpmaxe@x",
            "a\u{200b}@example.com",
            "a b@example.com",
            "\"a b\"@example.com",
            ".a@example.com",
            "a.@example.com",
            "a..b@example.com",
            "a@-example.com",
            "a@example..com",
            "a@example.com.",
            "a@[127.0.0.1]",
            "a<b>@example.com",
            "a@exa_mple.com",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} must be refused");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(validate(&long_local).is_err());
        let long = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
        assert!(validate(&long).is_err());
    }

    #[test]
    fn the_error_never_repeats_the_address() {
        let e = validate("secret\u{7}@example.com").unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }

    proptest! {
        #[test]
        fn no_accepted_address_has_a_control_character(s in "\\PC{0,40}[\\x00-\\x1f\\x7f-\\x9f]\\PC{0,40}") {
            prop_assert!(validate(&s).is_err());
        }

        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = validate(&s);
        }
    }
}
