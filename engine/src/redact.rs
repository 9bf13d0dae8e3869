//! Keeping secrets out of everything backflow shows or stores: error values, trap messages,
//! rejected-row answers, retry warnings, run history, `--json`.
//!
//! Two rules, applied together by [`redact`]:
//! - every *granted* secret (the value of an environment variable a plugin may read, at
//!   least four characters long) is replaced wherever it appears;
//! - anything shaped like a credential is cut: the word after `Bearer`/`Basic`/`Token`, and
//!   the value after a credential-named key (`Authorization`, `X-Api-Key`, `api_key`,
//!   `token`, `password`, `secret`), whether written `key: value`, `key=value` or
//!   `"key": "value"`, and the password in a URL's `user:password@`. Destinations echo
//!   request headers back in error bodies; this catches a credential even when it came from
//!   the config text rather than a granted variable. A key that ends a dotted path label
//!   (`destinations.crm.config.headers.Authorization: message`, `config.token: message`)
//!   names a setting that a message is about, not a value: what follows it is kept.

/// What a redacted value reads as.
pub const REDACTED: &str = "[redacted]";

/// Header and field names whose values are credentials (compared case-insensitively).
const SECRET_KEYS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "password",
    "secret",
    "client_secret",
];

/// Schemes whose next word is a credential.
const SCHEMES: &[&str] = &["bearer", "basic", "token"];

/// `text` with every secret in `secrets` and every credential-shaped value replaced.
pub fn redact(secrets: &[String], text: &str) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    redact_credentials(&out)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/=:@%".contains(c)
}

/// Whether the key at `start..end` is the last segment of a dotted path used as a label,
/// `destinations.crm.config.headers.Authorization: message`: what follows is a message
/// about that setting, not its value. Only `segment.Key:` with the colon right after the key
/// counts; `"a.token": "abc"`, `a.token = "abc"` and `Authorization: Bearer …` are still cut.
fn ends_dotted_label(bytes: &[u8], start: usize, end: usize) -> bool {
    start >= 2
        && bytes[start - 1] == b'.'
        && (bytes[start - 2].is_ascii_alphanumeric() || matches!(bytes[start - 2], b'_' | b'-'))
        && bytes.get(end) == Some(&b':')
        && bytes.get(end + 1).is_none_or(|b| *b == b' ')
}

/// Cuts credential-shaped values (see the module docs).
pub fn redact_credentials(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    // (start, end) byte ranges to replace, found on the lowercase copy (same byte offsets:
    // ASCII lowercasing keeps lengths).
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let bytes = text.as_bytes();
    let word_start = |i: usize| {
        i == 0
            || !(bytes[i - 1] as char).is_ascii_alphanumeric()
                && bytes[i - 1] != b'_'
                && bytes[i - 1] != b'-'
    };
    // The value after `i` (skipping spaces, quotes and one separator), as a byte range.
    let value_after = |mut i: usize, separators: &[u8]| -> Option<(usize, usize)> {
        let mut seen_separator = separators.is_empty();
        while i < bytes.len()
            && (bytes[i] == b' '
                || bytes[i] == b'"'
                || bytes[i] == b'\''
                || (!seen_separator && separators.contains(&bytes[i])))
        {
            if separators.contains(&bytes[i]) {
                seen_separator = true;
            }
            i += 1;
        }
        if !seen_separator {
            return None;
        }
        let start = i;
        while i < bytes.len() && is_token_char(bytes[i] as char) {
            i += 1;
        }
        (i > start).then_some((start, i))
    };
    for scheme in SCHEMES {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(scheme).map(|p| p + from) {
            from = pos + scheme.len();
            if word_start(pos) && bytes.get(from) == Some(&b' ') {
                if let Some(range) = value_after(from, &[]) {
                    // "Basic auth is required" is prose, not a credential: a credential is
                    // long or has no vowels-only shape; keep it simple and require 8+ chars.
                    if range.1 - range.0 >= 8 && &text[range.0..range.1] != REDACTED {
                        cuts.push(range);
                    }
                }
            }
        }
    }
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(key).map(|p| p + from) {
            from = pos + key.len();
            if !word_start(pos)
                || bytes
                    .get(from)
                    .is_some_and(|b| (*b as char).is_ascii_alphanumeric() || *b == b'_')
                || ends_dotted_label(bytes, pos, from)
            {
                continue;
            }
            if let Some((start, end)) = value_after(from, b":=") {
                // `Authorization: Bearer X`: the scheme rule cuts X; keep the scheme readable.
                let value = &lower[start..end];
                if SCHEMES.contains(&value) || &text[start..end] == REDACTED {
                    continue;
                }
                cuts.push((start, end));
            }
        }
    }
    // The password of a URL's user info: scheme://user:PASSWORD@host.
    let mut from = 0;
    while let Some(pos) = text[from..].find("://").map(|p| p + from) {
        from = pos + 3;
        let authority_end = text[from..]
            .find(['/', ' ', '"', '\'', '?', '#'])
            .map_or(text.len(), |e| e + from);
        let authority = &text[from..authority_end];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                if colon + 1 < at && &authority[colon + 1..at] != REDACTED {
                    cuts.push((from + colon + 1, from + at));
                }
            }
        }
    }
    if cuts.is_empty() {
        return text.to_string();
    }
    cuts.sort();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in cuts {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_secrets_are_replaced_wherever_they_appear() {
        let secrets = vec!["s3cr3t-value".to_string(), "abc".to_string()];
        assert_eq!(
            redact(
                &secrets,
                "got s3cr3t-value twice: s3cr3t-value; abc stays (too short)"
            ),
            "got [redacted] twice: [redacted]; abc stays (too short)"
        );
    }

    #[test]
    fn credential_shaped_values_are_cut() {
        let cases = [
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y",
                "Authorization: Bearer [redacted]",
            ),
            (
                r#"{"headers":{"authorization":"Basic dXNlcjpwYXNzd29yZA==","accept":"*/*"}}"#,
                r#"{"headers":{"authorization":"Basic [redacted]","accept":"*/*"}}"#,
            ),
            (
                r#"{"x-api-key": "k-1234567890", "ok": true}"#,
                r#"{"x-api-key": "[redacted]", "ok": true}"#,
            ),
            (
                "postgres://u:pw@h/db?password=hunter22&x=1",
                "postgres://u:[redacted]@h/db?password=[redacted]&x=1",
            ),
            ("api_key=ABCDEF12345", "api_key=[redacted]"),
            (
                "https://bob:hunter2@crm.example.com/v1: connection refused",
                "https://bob:[redacted]@crm.example.com/v1: connection refused",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_credentials(input), expected, "{input}");
        }
    }

    #[test]
    fn prose_is_left_alone() {
        for text in [
            "HTTP 401: Basic auth is required",
            "the token expired",
            "tokens: 3",
            "no password given",
            "HTTP 500: internal error",
        ] {
            assert_eq!(redact_credentials(text), text);
        }
    }

    #[test]
    fn a_dotted_config_label_is_not_a_credential() {
        for text in [
            // The plugin SDK's message for a missing secret, labelled by the engine (issue 37).
            "destination crm: backflow.toml: destinations.crm.config.headers.Authorization: \
             environment variable CRM_TOKEN is not set or not granted to this destination \
             (add it to grants.env)",
            // A plugin naming its own field (issue 41).
            "destinations.crm.config.token: the API answered 401",
            "config.token: the API answered 401",
            "config.password: is empty",
            "destinations.hook.config.headers.X-Api-Key: unterminated ${env.NAME} reference",
        ] {
            assert_eq!(redact_credentials(text), text);
        }
    }

    #[test]
    fn credentials_next_to_dotted_labels_are_still_cut() {
        let cases = [
            (
                "config.headers.Authorization: HTTP 401: you sent Authorization: Bearer abcdefgh123",
                "config.headers.Authorization: HTTP 401: you sent Authorization: Bearer [redacted]",
            ),
            (
                "HTTP 401: you sent X-Api-Key: k-1234567890",
                "HTTP 401: you sent X-Api-Key: [redacted]",
            ),
            (r#"{"token": "abc123"}"#, r#"{"token": "[redacted]"}"#),
            (r#"{"auth.token": "abc123"}"#, r#"{"auth.token": "[redacted]"}"#),
            ("token=abc123", "token=[redacted]"),
            ("config.token = abc123", "config.token = [redacted]"),
            ("auth.token=abc123", "auth.token=[redacted]"),
            ("request.headers.authorization:Basic-abc123", "request.headers.authorization:[redacted]"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_credentials(input), expected, "{input}");
        }
    }

    #[test]
    fn multibyte_text_never_panics() {
        let text = "Authorization: Bearer 🔑🔑🔑🔑 é token=ü€ password: 密码密码密码";
        let _ = redact_credentials(text);
        let _ = redact(&["密码密码".to_string()], text);
    }
}

/// Fuzzing by property (issue 16): any text redacts without panicking, and a granted
/// secret never survives.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text(text in "\\PC{0,80}", secret in "[a-zA-Z0-9€]{4,12}") {
            let out = redact(std::slice::from_ref(&secret), &format!("{text}{secret}{text}"));
            prop_assert!(!out.contains(&secret));
        }
    }
}
