//! One strength rule for every intake credential (Okta hook secret, SCIM bearer tokens, Graph
//! `clientState`, Google channel tokens, Standard Webhooks secrets), checked at load: a weak or
//! empty secret is a configuration error, never "no authentication". Messages name the field and
//! never contain the secret.

use super::ConfigError;
use secrecy::{ExposeSecret, SecretString};

/// Fewest characters a shared secret or token may have.
pub const MIN_SECRET_CHARS: usize = 16;
/// Standard Webhooks: the key after `whsec_` is base64 of 24 to 64 bytes.
pub const WHSEC_MIN_BYTES: usize = 24;
pub const WHSEC_MAX_BYTES: usize = 64;
/// The prefix of a Standard Webhooks secret.
pub const WHSEC_PREFIX: &str = "whsec_";

/// A shared secret or bearer token: at least [`MIN_SECRET_CHARS`] characters, at most `max`
/// (the sender's own limit, if any), and not one character repeated.
pub fn check_token(field: &str, secret: &SecretString, max: Option<usize>) -> Result<(), ConfigError> {
    let s = secret.expose_secret();
    let n = s.chars().count();
    if s.trim().is_empty() {
        return Err(ConfigError::new(
            field,
            format!("is empty: set a random value of at least {MIN_SECRET_CHARS} characters"),
        ));
    }
    if n < MIN_SECRET_CHARS {
        return Err(ConfigError::new(
            field,
            format!("is too weak: at least {MIN_SECRET_CHARS} characters are needed ({n} given)"),
        ));
    }
    if let Some(max) = max
        && n > max
    {
        return Err(ConfigError::new(
            field,
            format!("is too long: at most {max} characters ({n} given)"),
        ));
    }
    if one_repeated(s.chars()) {
        return Err(ConfigError::new(
            field,
            "is too weak: it is one character repeated; use a random value",
        ));
    }
    Ok(())
}

/// A Standard Webhooks signing secret: `whsec_` + standard base64 of 24 to 64 bytes that are
/// not one byte repeated.
pub fn check_whsec(field: &str, secret: &SecretString) -> Result<(), ConfigError> {
    let s = secret.expose_secret();
    let Some(b64) = s.strip_prefix(WHSEC_PREFIX) else {
        return Err(ConfigError::new(
            field,
            format!("is not a Standard Webhooks secret: it must start with {WHSEC_PREFIX}"),
        ));
    };
    let Some(bytes) = base64_decode(b64) else {
        return Err(ConfigError::new(
            field,
            "is not a whsec_<base64> secret (standard base64 after the prefix)",
        ));
    };
    let n = bytes.len();
    if !(WHSEC_MIN_BYTES..=WHSEC_MAX_BYTES).contains(&n) {
        return Err(ConfigError::new(
            field,
            format!("is not {WHSEC_MIN_BYTES} to {WHSEC_MAX_BYTES} bytes after base64 decoding ({n} given)"),
        ));
    }
    if one_repeated(bytes.iter()) {
        return Err(ConfigError::new(
            field,
            "is too weak: its key is one byte repeated; use random bytes",
        ));
    }
    Ok(())
}

fn one_repeated<T: PartialEq>(mut items: impl Iterator<Item = T>) -> bool {
    match items.next() {
        None => true,
        Some(first) => items.all(|c| c == first),
    }
}

/// Decode standard base64, padding optional (as the generic intake decodes the same key);
/// `None` if `s` is not standard base64.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    const B64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    B64.decode(s).ok().filter(|b| !b.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_string())
    }

    #[test]
    fn tokens_need_sixteen_characters_and_more_than_one_distinct() {
        check_token("f", &s("0123456789abcdef"), None).unwrap();
        check_token("f", &s("ääääääääääääääää-"), None).unwrap();
        for weak in [
            "",
            " ",
            "                ",
            "0123456789abcde",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            let e = check_token("okta.hook_secret", &s(weak), None).unwrap_err();
            assert_eq!(e.field, "okta.hook_secret", "{weak:?}");
            if !weak.trim().is_empty() {
                assert!(!e.to_string().contains(weak), "{e}");
            }
        }
        let e = check_token("f", &s(&"ab".repeat(65)), Some(128)).unwrap_err();
        assert!(e.message.contains("at most 128"), "{e}");
    }

    #[test]
    fn whsec_is_the_prefix_and_24_to_64_random_bytes() {
        // 24 bytes (the Standard Webhooks example secret).
        check_whsec("f", &s("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        // 64 bytes, padding optional
        let b64_64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw";
        check_whsec("f", &s(&format!("whsec_{b64_64}=="))).unwrap();
        check_whsec("f", &s(&format!("whsec_{b64_64}"))).unwrap();
        for (bad, why) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
            ("whsec_", "base64"),
            ("whsec_not base64!", "base64"),
            ("whsec_c2Vjb25kIHNlY3JldCBrZXkgaGVyZSE=", "(23 given)"),
            ("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "one byte repeated"),
        ] {
            let e = check_whsec("generic.secrets[0]", &s(bad)).unwrap_err();
            assert_eq!(e.field, "generic.secrets[0]");
            assert!(e.message.contains(why), "{bad}: {e}");
            let key = bad.trim_start_matches("whsec_");
            assert!(key.len() < 4 || !e.to_string().contains(key), "{e}");
        }
        // 65 bytes
        let e = check_whsec("f", &s("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=")).unwrap_err();
        assert!(e.message.contains("(65 given)"), "{e}");
    }

    #[test]
    fn base64_decodes_exactly() {
        assert_eq!(base64_decode("QUJD").unwrap(), b"ABC");
        assert_eq!(base64_decode("QUI=").unwrap(), b"AB");
        assert_eq!(base64_decode("QUI").unwrap(), b"AB");
        assert_eq!(base64_decode("QQ==").unwrap(), b"A");
        assert_eq!(
            base64_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap().len(),
            24
        );
        // The intake's own decoder (padding indifferent) takes "QQ=" too, so the check does.
        assert_eq!(base64_decode("QQ=").unwrap(), b"A");
        for bad in ["", "Q", "QUJD====", "ab$d", "ab-_", "Q==="] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }
}
