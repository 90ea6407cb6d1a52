//! Token usage in one normalized schema, whatever the provider's format.
//!
//! The fields never overlap: `input_uncached + cache_read + cache_write` is the whole prompt,
//! and `reasoning` is informational only (already inside `output` for the formats parsed here),
//! so a price can be applied to each field without double counting.

use serde_json::Value;

/// Tokens of one call, split the way they are priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens billed at the full input rate.
    pub input_uncached: u64,
    /// Prompt tokens read from the provider's cache.
    pub cache_read: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write: u64,
    /// Generated tokens, reasoning included.
    pub output: u64,
    /// Of `output`, the tokens spent on hidden reasoning.
    pub reasoning: u64,
    /// Counted by the gateway because the provider reported nothing.
    pub estimated: bool,
    /// The response ended early; these are the tokens seen until then.
    pub partial: bool,
}

impl Usage {
    /// All prompt tokens, cached or not.
    pub fn input_total(&self) -> u64 {
        self.input_uncached + self.cache_read + self.cache_write
    }
}

fn count(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Reads an OpenAI Chat Completions / Completions / Embeddings `usage` object.
///
/// `prompt_tokens` includes cached and cache-write tokens; they are split out here.
/// Returns `None` when `usage` is absent or has no `prompt_tokens`.
pub fn from_openai_usage(usage: &Value) -> Option<Usage> {
    let prompt = usage.get("prompt_tokens")?.as_u64()?;
    let cache_read = count(usage, "/prompt_tokens_details/cached_tokens");
    let cache_write = count(usage, "/prompt_tokens_details/cache_write_tokens");
    Some(Usage {
        // Saturate: a provider reporting more cached tokens than prompt tokens is wrong,
        // and charging a negative amount would be worse than charging none.
        input_uncached: prompt
            .saturating_sub(cache_read)
            .saturating_sub(cache_write),
        cache_read: cache_read.min(prompt),
        cache_write: cache_write.min(prompt.saturating_sub(cache_read)),
        output: count(usage, "/completion_tokens"),
        reasoning: count(usage, "/completion_tokens_details/reasoning_tokens"),
        estimated: false,
        partial: false,
    })
}

/// Reads the usage of a whole (non-streamed) OpenAI-format response body.
pub fn from_openai_body(body: &[u8]) -> Option<Usage> {
    let v: Value = serde_json::from_slice(body).ok()?;
    from_openai_usage(v.get("usage")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_chat_usage() {
        let u = from_openai_usage(&json!({
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29
        }))
        .unwrap();
        assert_eq!(u.input_uncached, 19);
        assert_eq!(u.output, 10);
        assert_eq!(u.cache_read, 0);
        assert_eq!(u.input_total(), 19);
    }

    #[test]
    fn cached_and_reasoning_split_out() {
        let u = from_openai_usage(&json!({
            "prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 256}
        }))
        .unwrap();
        assert_eq!(
            (u.input_uncached, u.cache_read, u.cache_write),
            (500, 400, 100)
        );
        assert_eq!((u.output, u.reasoning), (300, 256));
    }

    #[test]
    fn inconsistent_cache_counts_never_go_negative() {
        let u = from_openai_usage(&json!({
            "prompt_tokens": 10, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 5}
        }))
        .unwrap();
        assert_eq!(u.input_total(), 10);
        assert_eq!(u.input_uncached, 0);
    }

    #[test]
    fn body_without_usage_is_none() {
        assert_eq!(from_openai_body(br#"{"id":"x"}"#), None);
        assert_eq!(from_openai_body(b"not json"), None);
        assert_eq!(from_openai_body(br#"{"usage":null}"#), None);
    }
}
