//! The most tokens a call can use, known before it is sent: what a token limit holds and
//! what a budget prices at admission, settled to the real usage when the call ends.
//!
//! Both halves are upper bounds a client cannot talk down: the prompt is counted (or, when
//! it was too large to count, bounded by its bytes, since a byte-level BPE token is at
//! least one byte), and the output is the client's cap, never more than the model's, so a
//! hostile `max_tokens` cannot lock a whole limit.

use crate::tokens::PromptSample;
use crate::validation::RequestInfo;
use serde_json::{Map, Value};

/// The upper bound of a call's tokens, in its two priced halves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBound {
    /// Prompt tokens, at most.
    pub prompt: u64,
    /// Output tokens over all choices, at most.
    pub output: u64,
}

impl TokenBound {
    /// Prompt and output together (saturating).
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.output)
    }
}

/// The token bound of a call: `counted` prompt tokens when the prompt was counted, else
/// its framing and media plus one token per byte of text; output the client's cap, or
/// `max_output_tokens` (the model's) when it sent none or more, times the choices asked
/// for; no output for embeddings.
pub fn token_bound(
    info: &RequestInfo,
    prompt: &PromptSample,
    counted: Option<u64>,
    max_output_tokens: u64,
) -> TokenBound {
    TokenBound {
        prompt: counted.unwrap_or_else(|| prompt_bound(prompt)),
        output: output_bound(info, max_output_tokens),
    }
}

/// The most tokens a prompt can be when it was not counted: its overhead plus its bytes.
pub fn prompt_bound(prompt: &PromptSample) -> u64 {
    prompt.overhead.saturating_add(prompt.texts.total_bytes)
}

/// The most output tokens a call can be charged for.
pub fn output_bound(info: &RequestInfo, max_output_tokens: u64) -> u64 {
    if !info.generates {
        return 0;
    }
    let per_choice = info
        .max_output
        .map_or(max_output_tokens, |asked| asked.min(max_output_tokens));
    per_choice.saturating_mul(info.n.max(1))
}

/// The request fields that cap a call's output.
pub const OUTPUT_CAP_FIELDS: [&str; 3] =
    ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// Rewrites a request body so its provider is asked for no more output per choice than
/// `cap`, the cap its hold was computed at: every output cap field above it is lowered to
/// it, and when none is sent, `absent` (a field and its value, at most `cap`) is added.
/// Returns whether the body changed. Without this a provider honouring its own, larger
/// maximum bills past the hold, in an answer the gateway cannot cut.
pub fn cap_output(body: &mut Map<String, Value>, absent: Option<(&str, u64)>, cap: u64) -> bool {
    let mut changed = false;
    let mut sent = false;
    for field in OUTPUT_CAP_FIELDS {
        let Some(value) = body.get_mut(field) else {
            continue;
        };
        if let Some(asked) = value.as_u64() {
            sent = true;
            if asked > cap {
                *value = Value::from(cap);
                changed = true;
            }
        }
    }
    if !sent && let Some((field, value)) = absent {
        body.insert(field.to_owned(), Value::from(value.min(cap)));
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::TextSample;
    use proptest::prelude::*;

    fn info(max_output: Option<u64>, n: u64, generates: bool) -> RequestInfo {
        RequestInfo {
            model: "m".to_owned(),
            stream: false,
            include_usage: false,
            n,
            max_output,
            generates,
        }
    }

    fn sample(overhead: u64, total_bytes: u64) -> PromptSample {
        PromptSample {
            texts: TextSample {
                pieces: Vec::new(),
                total_bytes,
            },
            overhead,
        }
    }

    #[test]
    fn a_counted_prompt_is_held_at_its_count() {
        let b = token_bound(
            &info(Some(100), 1, true),
            &sample(7, 4_000),
            Some(900),
            4_096,
        );
        assert_eq!(
            b,
            TokenBound {
                prompt: 900,
                output: 100
            }
        );
        assert_eq!(b.total(), 1_000);
    }

    #[test]
    fn an_uncounted_prompt_is_held_at_its_overhead_plus_its_bytes() {
        let b = token_bound(&info(Some(100), 1, true), &sample(7, 4_000), None, 4_096);
        assert_eq!(b.prompt, 4_007);
    }

    #[test]
    fn the_output_is_capped_at_the_model_maximum_and_defaults_to_it() {
        assert_eq!(output_bound(&info(Some(1_000_000), 1, true), 4_096), 4_096);
        assert_eq!(output_bound(&info(None, 1, true), 4_096), 4_096);
        assert_eq!(output_bound(&info(Some(10), 1, true), 4_096), 10);
    }

    #[test]
    fn every_choice_is_held() {
        assert_eq!(output_bound(&info(Some(10), 3, true), 4_096), 30);
        assert_eq!(output_bound(&info(None, 0, true), 50), 50);
    }

    #[test]
    fn embeddings_hold_no_output() {
        assert_eq!(output_bound(&info(Some(10), 1, false), 4_096), 0);
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => Map::new(),
        }
    }

    #[test]
    fn output_caps_above_the_hold_are_lowered_and_a_missing_one_added() {
        let mut b = obj(serde_json::json!({"max_tokens": 5, "max_completion_tokens": 900}));
        assert!(cap_output(&mut b, Some(("max_tokens", 100)), 100));
        assert_eq!(
            (&b["max_tokens"], &b["max_completion_tokens"]),
            (&Value::from(5), &Value::from(100))
        );
        let mut b = obj(serde_json::json!({"max_tokens": 100}));
        assert!(!cap_output(
            &mut b,
            Some(("max_completion_tokens", 100)),
            100
        ));
        assert!(!b.contains_key("max_completion_tokens"));
        let mut b = obj(serde_json::json!({"model": "m"}));
        assert!(cap_output(&mut b, Some(("max_output_tokens", 4_096)), 100));
        assert_eq!(b["max_output_tokens"], 100);
        let mut b = obj(serde_json::json!({"model": "m"}));
        assert!(!cap_output(&mut b, None, 100));
    }

    proptest! {
        #[test]
        fn huge_numbers_saturate_and_never_wrap(
            asked in any::<Option<u64>>(), n in any::<u64>(), cap in any::<u64>(),
            overhead in any::<u64>(), bytes in any::<u64>(),
        ) {
            let b = token_bound(&info(asked, n, true), &sample(overhead, bytes), None, cap);
            prop_assert!(b.prompt >= overhead.max(bytes));
            prop_assert!(b.output >= asked.unwrap_or(cap).min(cap));
            prop_assert!(b.total() >= b.prompt.max(b.output));
        }
    }
}
