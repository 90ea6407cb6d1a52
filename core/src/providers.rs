//! What differs between providers: paths, usage formats, credentials, translation.
//!
//! Clients always speak OpenAI's API to the gateway; a provider kind says how that maps
//! onto the provider's own API.

use crate::endpoints::Endpoint;
use crate::errors::ApiError;
use crate::usage::Format;

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// api.openai.com.
    OpenAi,
    /// A self-hosted OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio).
    OpenAiCompatible,
    /// api.deepseek.com (OpenAI format, cache hits in `prompt_cache_hit_tokens`).
    DeepSeek,
    /// Gemini through its OpenAI-compatible endpoint (`/v1beta/openai/...`).
    Gemini,
    /// api.x.ai (Grok): OpenAI format, with chat reasoning outside `completion_tokens`.
    Xai,
    /// Anthropic Messages API: requests and answers are translated.
    Anthropic,
}

/// How the provider's credential is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `authorization: Bearer <key>`.
    Bearer,
    /// `<header>: <key>` (Anthropic's `x-api-key`, Azure's `api-key`).
    Raw(&'static str),
}

impl ProviderKind {
    /// Every kind, for listings and config errors.
    pub const ALL: [ProviderKind; 6] = [
        ProviderKind::OpenAi,
        ProviderKind::OpenAiCompatible,
        ProviderKind::DeepSeek,
        ProviderKind::Gemini,
        ProviderKind::Xai,
        ProviderKind::Anthropic,
    ];

    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::OpenAiCompatible => "openai_compatible",
            ProviderKind::DeepSeek => "deepseek",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Xai => "xai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The kind with this configuration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The credential header the provider expects by default.
    pub fn default_auth(self) -> AuthStyle {
        match self {
            ProviderKind::Anthropic => AuthStyle::Raw("x-api-key"),
            _ => AuthStyle::Bearer,
        }
    }

    /// Headers every request to this provider carries.
    pub fn fixed_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ProviderKind::Anthropic => &[("anthropic-version", "2023-06-01")],
            _ => &[],
        }
    }

    /// The provider's path for an endpoint, or a 400 naming what it lacks.
    pub fn upstream_path(
        self,
        endpoint: &Endpoint,
        provider: &str,
    ) -> Result<&'static str, ApiError> {
        use Endpoint as E;
        let path = match (self, endpoint) {
            (ProviderKind::OpenAi | ProviderKind::OpenAiCompatible, e) if e.is_proxied() => {
                Some(e.openai_path())
            }
            (ProviderKind::DeepSeek, E::ChatCompletions) => Some("/v1/chat/completions"),
            (ProviderKind::Gemini, E::ChatCompletions) => Some("/v1beta/openai/chat/completions"),
            (ProviderKind::Gemini, E::Embeddings) => Some("/v1beta/openai/embeddings"),
            (ProviderKind::Xai, E::ChatCompletions) => Some("/v1/chat/completions"),
            (ProviderKind::Xai, E::Responses) => Some("/v1/responses"),
            (ProviderKind::Anthropic, E::ChatCompletions) => Some("/v1/messages"),
            _ => None,
        };
        path.ok_or_else(|| {
            ApiError::invalid(
                "model",
                format!(
                    "This model's provider `{provider}` ({}) does not support {}.",
                    self.name(),
                    endpoint.openai_path()
                ),
            )
        })
    }

    /// The format of the provider's answers on an endpoint.
    pub fn usage_format(self, endpoint: &Endpoint) -> Format {
        match (self, endpoint) {
            (ProviderKind::Anthropic, _) => Format::Anthropic,
            (_, Endpoint::Responses) => Format::OpenAiResponses,
            (ProviderKind::Gemini | ProviderKind::Xai, Endpoint::ChatCompletions) => {
                Format::OpenAiChatReasoningApart
            }
            _ => Format::OpenAiChat,
        }
    }

    /// Requests and answers must be translated from and to OpenAI's format.
    pub fn translates(self) -> bool {
        self == ProviderKind::Anthropic
    }

    /// The provider reports usage on a stream only when asked (`stream_options.include_usage`),
    /// so the gateway asks on the client's behalf. DeepSeek and Gemini report it unasked, on
    /// the finish chunk; asking would move it and change what their clients receive.
    /// xAI accepts OpenAI's `stream_options`; where it puts usage unasked is not documented,
    /// so the gateway asks.
    pub fn needs_include_usage(self) -> bool {
        matches!(
            self,
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible | ProviderKind::Xai
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ProviderKind::ALL {
            assert_eq!(ProviderKind::from_name(k.name()), Some(k));
        }
        assert_eq!(ProviderKind::from_name("azure"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(
            ProviderKind::Gemini.upstream_path(&Endpoint::ChatCompletions, "g"),
            Ok("/v1beta/openai/chat/completions")
        );
        assert_eq!(
            ProviderKind::Anthropic.upstream_path(&Endpoint::ChatCompletions, "a"),
            Ok("/v1/messages")
        );
        assert_eq!(
            ProviderKind::Xai.upstream_path(&Endpoint::ChatCompletions, "x"),
            Ok("/v1/chat/completions")
        );
        assert_eq!(
            ProviderKind::Xai.upstream_path(&Endpoint::Responses, "x"),
            Ok("/v1/responses")
        );
        assert!(
            ProviderKind::Xai
                .upstream_path(&Endpoint::Embeddings, "x")
                .is_err()
        );
        assert_eq!(
            ProviderKind::OpenAiCompatible.upstream_path(&Endpoint::Embeddings, "v"),
            Ok("/v1/embeddings")
        );
        let e = ProviderKind::Anthropic
            .upstream_path(&Endpoint::Embeddings, "claude")
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("claude") && e.message.contains("/v1/embeddings"),
            "{}",
            e.message
        );
        assert!(
            ProviderKind::OpenAi
                .upstream_path(&Endpoint::ListModels, "o")
                .is_err()
        );
    }

    #[test]
    fn formats() {
        assert_eq!(
            ProviderKind::Gemini.usage_format(&Endpoint::ChatCompletions),
            Format::OpenAiChatReasoningApart
        );
        assert_eq!(
            ProviderKind::Gemini.usage_format(&Endpoint::Embeddings),
            Format::OpenAiChat
        );
        assert_eq!(
            ProviderKind::Xai.usage_format(&Endpoint::ChatCompletions),
            Format::OpenAiChatReasoningApart
        );
        assert_eq!(
            ProviderKind::Xai.usage_format(&Endpoint::Responses),
            Format::OpenAiResponses
        );
        assert_eq!(ProviderKind::Xai.default_auth(), AuthStyle::Bearer);
        assert_eq!(
            ProviderKind::OpenAi.usage_format(&Endpoint::Responses),
            Format::OpenAiResponses
        );
        assert_eq!(
            ProviderKind::Anthropic.usage_format(&Endpoint::ChatCompletions),
            Format::Anthropic
        );
    }
}
