//! `[[providers]]`: where calls go and with which credential.

use super::raw::{AuthScheme, ProviderFile};
use super::{ConfigError, Env, by_name, field_error};
use crate::catalog::Provider;
use crate::envoy_config::Upstream;
use std::collections::HashMap;
use tollgate_core::headers;
use tollgate_core::providers::{AuthStyle, ProviderKind};

/// Default longest answer: ten minutes, enough for a long stream.
const DEFAULT_TIMEOUT_MS: u32 = 600_000;

/// Validates every `[[providers]]` entry; `env` resolves `api_key_env`.
pub(super) fn validate(
    files: Vec<ProviderFile>,
    env: &Env<'_>,
) -> Result<HashMap<String, Provider>, ConfigError> {
    let entries = files.into_iter().enumerate();
    by_name(
        "providers",
        entries.map(|(i, p)| provider(i, p, env)),
        |p| &p.name,
    )
}

/// A name that is also a valid Envoy cluster name.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A lower-case HTTP header name.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn provider(i: usize, p: ProviderFile, env: &Env<'_>) -> Result<Provider, ConfigError> {
    let key = match &p.api_key_env {
        None => None,
        Some(var) => Some(env(var).filter(|k| !k.trim().is_empty()).ok_or_else(|| {
            field_error(
                format!("providers[{i}].api_key_env"),
                format!("names the environment variable `{var}`, which is not set"),
            )
        })?),
    };
    provider_with_key(p, key.as_deref(), &|f| format!("providers[{i}].{f}"))
}

/// Validates one provider whose key (if any) is `key`; `field` names a field of it in
/// errors (`providers[0].url` for the config file, `url` for the HTTP API).
pub(crate) fn provider_with_key(
    p: ProviderFile,
    key: Option<&str>,
    field: &dyn Fn(&str) -> String,
) -> Result<Provider, ConfigError> {
    if !is_name(&p.name) {
        return Err(field_error(
            field("name"),
            "must be a non-empty name of letters, digits, '-', '_' or '.' (it is also an Envoy cluster name)",
        ));
    }
    // Required: a provider without an address cannot be reached.
    let url = p.url.as_deref().ok_or_else(|| {
        field_error(
            field("url"),
            "is missing: give the provider's address, e.g. https://api.openai.com",
        )
    })?;
    let url = Upstream::parse(url).map_err(|e| field_error(field("url"), e))?;
    let kind = match p.kind.as_deref() {
        None => ProviderKind::OpenAi,
        Some(k) => ProviderKind::from_name(k).ok_or_else(|| {
            let kinds: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.name()).collect();
            field_error(
                field("kind"),
                format!("`{k}` is not one of {}", kinds.join(", ")),
            )
        })?,
    };
    let (default_header, default_scheme) = match kind.default_auth() {
        AuthStyle::Bearer => ("authorization", AuthScheme::Bearer),
        AuthStyle::Raw(header) => (header, AuthScheme::Raw),
    };
    let auth_header = p.auth_header.unwrap_or_else(|| default_header.to_owned());
    let auth_scheme = p.auth_scheme.unwrap_or(default_scheme);
    if !is_header_name(&auth_header) {
        return Err(field_error(
            field("auth_header"),
            "must be a lower-case header name",
        ));
    }
    let auth_value = key.map(|key| match auth_scheme {
        AuthScheme::Bearer => format!("Bearer {}", key.trim()),
        AuthScheme::Raw => key.trim().to_owned(),
    });
    let timeout_ms = p.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=3_600_000).contains(&timeout_ms) {
        return Err(field_error(
            field("timeout_ms"),
            "must be between 1 and 3600000",
        ));
    }
    for (j, h) in p.forward_headers.iter().enumerate() {
        if !is_header_name(h) || headers::never_forwarded(h) || *h == auth_header {
            return Err(field_error(
                field(&format!("forward_headers[{j}]")),
                format!(
                    "`{h}` must be a lower-case header name that is not a credential, a cookie \
                     or a header the gateway sets"
                ),
            ));
        }
    }
    Ok(Provider {
        name: p.name,
        url,
        kind,
        timeout_ms,
        auth_header,
        auth_value,
        forward_headers: p.forward_headers,
        allow_background: p.allow_background,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> ProviderFile {
        ProviderFile {
            name: name.into(),
            url: Some("http://127.0.0.1:9000".into()),
            kind: None,
            auth_header: None,
            auth_scheme: None,
            api_key_env: None,
            timeout_ms: None,
            forward_headers: Vec::new(),
            allow_background: false,
        }
    }

    fn err(files: Vec<ProviderFile>) -> String {
        validate(files, &|_| None)
            .expect_err("providers must be refused")
            .to_string()
    }

    #[test]
    fn the_kind_sets_the_default_credential_header() {
        let env = |v: &str| (v == "KEY").then(|| " sk-1 ".to_owned());
        let anthropic = ProviderFile {
            kind: Some("anthropic".into()),
            api_key_env: Some("KEY".into()),
            ..named("a")
        };
        let raw_bearer = ProviderFile {
            auth_header: Some("api-key".into()),
            auth_scheme: Some(AuthScheme::Bearer),
            api_key_env: Some("KEY".into()),
            ..named("b")
        };
        let p = validate(vec![anthropic, raw_bearer, named("c")], &env).unwrap();
        assert_eq!(p["a"].auth_header, "x-api-key");
        assert_eq!(p["a"].auth_value.as_deref(), Some("sk-1"));
        assert_eq!(p["b"].auth_header, "api-key");
        assert_eq!(p["b"].auth_value.as_deref(), Some("Bearer sk-1"));
        assert_eq!(p["c"].kind, ProviderKind::OpenAi);
        assert_eq!(p["c"].auth_value, None);
        assert_eq!(p["c"].timeout_ms, DEFAULT_TIMEOUT_MS);
    }

    #[test]
    fn each_refusal_names_the_entry_and_field() {
        let upper = ProviderFile {
            auth_header: Some("X-Key".into()),
            ..named("p")
        };
        assert!(err(vec![upper]).contains("providers[0].auth_header"));
        assert!(err(vec![named("p"), named("p")]).contains("providers[1].name"));
        let unset = ProviderFile {
            api_key_env: Some("UNSET".into()),
            ..named("q")
        };
        let e = err(vec![named("p"), unset]);
        assert!(
            e.contains("providers[1].api_key_env") && e.contains("UNSET"),
            "{e}"
        );
        let forwards_host = ProviderFile {
            forward_headers: vec!["x-ok".into(), "host".into()],
            ..named("p")
        };
        assert!(err(vec![forwards_host]).contains("providers[0].forward_headers[1]"));
        let nowhere = ProviderFile {
            url: None,
            ..named("p")
        };
        assert!(err(vec![named("o"), nowhere]).contains("providers[1].url"));
        let ftp = ProviderFile {
            url: Some("ftp://files.example.com".into()),
            ..named("p")
        };
        assert!(err(vec![ftp]).contains("providers[0].url"));
    }
}
