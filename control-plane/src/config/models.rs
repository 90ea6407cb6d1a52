//! `[[models]]`: what clients may ask for, who serves it and at which price.

use super::raw::ModelFile;
use super::{ConfigError, by_name, field_error};
use crate::catalog::{Model, PriceSchedule, Provider};
use std::collections::HashMap;
use tollgate_core::pricing::{self, Price};

/// Longest model name, in bytes.
const MAX_NAME_BYTES: usize = 256;

/// Validates every `[[models]]` entry against the validated `providers`; at least one.
pub(super) fn validate(
    files: Vec<ModelFile>,
    providers: &HashMap<String, Provider>,
    default_max_output_tokens: u64,
) -> Result<HashMap<String, Model>, ConfigError> {
    let entries = files.into_iter().enumerate();
    let models = by_name(
        "models",
        entries.map(|(i, m)| {
            model(m, providers, default_max_output_tokens, &|f| {
                format!("models[{i}].{f}")
            })
        }),
        |m| &m.name,
    )?;
    if models.is_empty() {
        return Err(field_error("models", "must list at least one model"));
    }
    Ok(models)
}

/// Validates one model against the `providers` it may name; `field` names a field of it
/// in errors (`models[0].input` for the config file, `input` for the HTTP API).
pub(crate) fn model(
    m: ModelFile,
    providers: &HashMap<String, Provider>,
    default_max_output_tokens: u64,
    field: &dyn Fn(&str) -> String,
) -> Result<Model, ConfigError> {
    if m.name.trim().is_empty() || m.name.len() > MAX_NAME_BYTES {
        return Err(field_error(field("name"), "must be 1 to 256 bytes"));
    }
    if !providers.contains_key(&m.provider) {
        return Err(field_error(
            field("provider"),
            format!("names `{}`, which is not a provider", m.provider),
        ));
    }
    let price_of = |name: &str, value: Option<f64>, required: bool| -> Result<u64, ConfigError> {
        match value {
            None if required && !m.free => Err(field_error(
                field(name),
                "is missing: give the price in USD per 1M tokens, or set `free = true`",
            )),
            None => Ok(0),
            Some(_) if m.free => Err(field_error(
                field(name),
                "is set on a model marked `free = true`",
            )),
            Some(v) => {
                pricing::micros_per_mtok(v).map_err(|e| field_error(field(name), e.to_string()))
            }
        }
    };
    let price = Price {
        input: price_of("input", m.input, true)?,
        output: price_of("output", m.output, true)?,
        cache_read: price_of("cache_read", m.cache_read, false)?,
        cache_write: price_of("cache_write", m.cache_write, false)?,
    };
    if m.upstream_model
        .as_deref()
        .is_some_and(|u| u.trim().is_empty() || u.len() > MAX_NAME_BYTES)
    {
        return Err(field_error(
            field("upstream_model"),
            "must be 1 to 256 bytes",
        ));
    }
    let max_output_tokens = m
        .max_output_tokens
        .map(|n| super::limits::max_output_tokens(&field("max_output_tokens"), n))
        .transpose()?
        .unwrap_or(default_max_output_tokens);
    Ok(Model {
        name: m.name,
        provider: m.provider,
        upstream_model: m.upstream_model,
        prices: PriceSchedule::fixed(price),
        max_output_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> HashMap<String, Provider> {
        let p = Provider::for_tests("p");
        HashMap::from([(p.name.clone(), p)])
    }

    fn priced(name: &str, input: f64, output: f64) -> ModelFile {
        ModelFile {
            name: name.into(),
            provider: "p".into(),
            upstream_model: None,
            input: Some(input),
            output: Some(output),
            cache_read: None,
            cache_write: None,
            free: false,
            max_output_tokens: None,
        }
    }

    fn err(files: Vec<ModelFile>) -> String {
        validate(files, &providers(), 16_384)
            .expect_err("models must be refused")
            .to_string()
    }

    #[test]
    fn prices_are_micro_dollars_per_million_tokens() {
        let free = ModelFile {
            input: None,
            output: None,
            free: true,
            ..priced("free", 0.0, 0.0)
        };
        let m = validate(vec![priced("m", 0.15, 0.6), free], &providers(), 16_384).unwrap();
        assert_eq!(m["m"].prices.at(0).input, 150_000);
        assert_eq!(m["m"].prices.at(0).output, 600_000);
        assert_eq!(m["m"].prices.at(0).cache_read, 0);
        assert_eq!(*m["free"].prices.at(0), Price::default());
    }

    #[test]
    fn each_refusal_names_the_entry_and_field() {
        assert!(err(Vec::new()).contains("`models`"));
        assert!(err(vec![priced("a", 1.0, 1.0), priced("a", 1.0, 1.0)]).contains("models[1].name"));
        let elsewhere = ModelFile {
            provider: "q".into(),
            ..priced("a", 1.0, 1.0)
        };
        assert!(err(vec![priced("a", 1.0, 1.0), elsewhere]).contains("models[1].provider"));
        assert!(err(vec![priced("a", -1.0, 1.0)]).contains("models[0].input"));
        let unpriced_output = ModelFile {
            output: None,
            ..priced("a", 1.0, 1.0)
        };
        assert!(err(vec![unpriced_output]).contains("models[0].output"));
        let priced_free = ModelFile {
            free: true,
            output: None,
            ..priced("a", 1.0, 1.0)
        };
        assert!(err(vec![priced_free]).contains("models[0].input"));
        let uncapped = ModelFile {
            max_output_tokens: Some(0),
            ..priced("a", 1.0, 1.0)
        };
        assert!(err(vec![uncapped]).contains("models[0].max_output_tokens"));
    }

    #[test]
    fn the_output_cap_is_the_models_own_or_the_default() {
        let capped = ModelFile {
            max_output_tokens: Some(4_096),
            ..priced("capped", 1.0, 1.0)
        };
        let m = validate(vec![capped, priced("plain", 1.0, 1.0)], &providers(), 999).unwrap();
        assert_eq!(m["capped"].max_output_tokens, 4_096);
        assert_eq!(m["plain"].max_output_tokens, 999);
    }
}
