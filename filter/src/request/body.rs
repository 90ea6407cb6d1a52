//! Body time: the whole request body is validated, and rewritten when the provider needs
//! it (its model name, `include_usage` on streams, Anthropic's format).

use super::Admitted;
use serde_json::{Value, json};
use tollgate_core::anthropic;
use tollgate_core::endpoints::Endpoint;
use tollgate_core::hold::{self, TokenBound};
use tollgate_core::providers::ProviderKind;
use tollgate_core::refusal::Refusal;
use tollgate_core::settings::FilterSettings;
use tollgate_core::tokens::{self, PromptSample};
use tollgate_core::unmetered::{self, Allowances};
use tollgate_core::validation;

/// What the call keeps from its body for metering.
#[derive(Debug)]
pub(super) struct Kept {
    /// A bounded sample of the prompt, kept to estimate its tokens if the provider reports
    /// none; the body itself is dropped once forwarded.
    pub(super) prompt: PromptSample,
    /// The client asked for `stream_options.include_usage`.
    pub(super) client_include_usage: bool,
    /// The gateway added `include_usage`; the client must not see the extra chunk.
    pub(super) injected_usage: bool,
    /// Exact prompt tokens counted before admission (`count_prompt_tokens`).
    pub(super) counted_prompt: Option<u64>,
    /// The most tokens the call can use: what token limits and budgets hold.
    pub(super) bound: TokenBound,
    /// The endpoint generates output (not embeddings).
    pub(super) generates: bool,
}

/// A body that may go on.
#[derive(Debug)]
pub(super) struct Checked {
    /// The body the provider gets instead of the client's, if it changes.
    pub(super) rewrite: Option<Vec<u8>>,
    /// What metering keeps.
    pub(super) kept: Kept,
}

/// Validates the whole `body` of an admitted call and decides its rewrite.
pub(super) fn check(
    admitted: &Admitted,
    settings: &FilterSettings,
    body: &[u8],
) -> Result<Checked, Refusal> {
    let target = &admitted.target;
    let endpoint = &target.endpoint;
    let mut valid = validation::request(endpoint, body, settings.max_body_bytes)?;
    // Routing and `include_usage` were decided from what json_to_metadata read; a body
    // that says otherwise (a duplicated key read two ways, a `model` of another JSON
    // type) would be billed as one call and served as another.
    if valid.info.model != target.model {
        return Err(Refusal::invalid(
            "model",
            "`model` must appear once, as a string.",
        ));
    }
    if valid.info.stream != target.stream_hint {
        return Err(Refusal::invalid(
            "stream",
            "`stream` must appear once, as a boolean.",
        ));
    }
    let allowances = Allowances {
        background: admitted.route.allow_background,
        held: !admitted.budgets.is_empty(),
    };
    unmetered::check(endpoint, &valid.body, allowances)?;
    let kind = admitted.kind;
    let upstream_model = match admitted.route.upstream_model.as_str() {
        "" => target.model.as_str(),
        m => m,
    };
    let prompt = tokens::prompt_sample(endpoint, upstream_model, &valid.body);
    #[cfg(feature = "exact-count")]
    let counted_prompt = settings
        .count_prompt_tokens
        .then(|| tokens::prompt(endpoint, &target.model, &valid.body));
    #[cfg(not(feature = "exact-count"))]
    let counted_prompt = None;

    let max_output_tokens = admitted
        .route
        .price
        .as_ref()
        .map_or(0, |p| p.max_output_tokens);
    let max_output_tokens = match max_output_tokens {
        0 => settings.default_max_output_tokens,
        cap => cap,
    };
    let bound = hold::token_bound(&valid.info, &prompt, counted_prompt, max_output_tokens);

    // A call that holds budget money asks its provider for no more than it held, in the
    // body as this gateway read it: re-written whole, so a key sent twice (read last-wins
    // here) cannot be read another way upstream.
    let budgeted = !admitted.budgets.is_empty() && (kind.translates() || admitted.body_rewritable);
    if budgeted && valid.info.generates {
        hold::cap_output(
            &mut valid.body,
            absent_output_cap(kind, endpoint, max_output_tokens),
            max_output_tokens,
        );
    }

    let mut injected_usage = false;
    let rewritten = if kind.translates() {
        Some(anthropic::request(&valid.body, upstream_model)?)
    } else {
        let mut changed = budgeted;
        if upstream_model != target.model {
            valid
                .body
                .insert("model".into(), Value::String(upstream_model.to_owned()));
            changed = true;
        }
        let streams_usage = matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
        // Only when content-length was dropped at header time, or the rewrite would be cut.
        if admitted.body_rewritable
            && valid.info.stream
            && !valid.info.include_usage
            && streams_usage
            && kind.needs_include_usage()
        {
            let options = valid
                .body
                .entry("stream_options")
                .or_insert_with(|| json!({}));
            // `null` is legal (the API's default) and means no options.
            if options.is_null() {
                *options = json!({});
            }
            if let Value::Object(o) = options {
                o.insert("include_usage".into(), Value::Bool(true));
                injected_usage = true;
                changed = true;
            }
        }
        changed.then(|| Value::Object(valid.body))
    };
    Ok(Checked {
        rewrite: rewritten.map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        kept: Kept {
            prompt,
            client_include_usage: valid.info.include_usage,
            injected_usage,
            counted_prompt,
            bound,
            generates: valid.info.generates,
        },
    })
}

/// The output cap field a body without one gets, and its value: Anthropic's default (its
/// `max_tokens` is required), else the model's cap in the field the endpoint and provider
/// read (OpenAI's chat models read only `max_completion_tokens`).
fn absent_output_cap(
    kind: ProviderKind,
    endpoint: &Endpoint,
    cap: u64,
) -> Option<(&'static str, u64)> {
    if kind.translates() {
        return Some(("max_tokens", anthropic::DEFAULT_MAX_TOKENS.min(cap)));
    }
    let field = match endpoint {
        Endpoint::ChatCompletions if matches!(kind, ProviderKind::OpenAi | ProviderKind::Xai) => {
            "max_completion_tokens"
        }
        Endpoint::ChatCompletions | Endpoint::Completions => "max_tokens",
        Endpoint::Responses => "max_output_tokens",
        Endpoint::Embeddings | Endpoint::ListModels | Endpoint::GetModel(_) => return None,
    };
    Some((field, cap))
}
