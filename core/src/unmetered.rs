//! Refuses calls the gateway could not price: options that change what the provider charges
//! beyond the price table (tiers, per-call tool fees), and calls whose cost it never sees.

use crate::endpoints::Endpoint;
use crate::errors::ApiError;
use serde_json::{Map, Value};

/// Error code of every refusal here, so clients and logs can tell them apart.
const CODE: &str = "unmetered_option";

fn refuse(param: &str, message: String) -> ApiError {
    ApiError {
        code: Some(CODE),
        ..ApiError::invalid(param, message)
    }
}

/// What the operator allows beyond what the price table covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowances {
    /// Responses `background: true`: the answer is fetched later, outside the gateway, so
    /// its usage is never seen; allowed only where the operator accepts that.
    pub background: bool,
    /// The call holds budget money, so its prompt must be bounded by its body: input the
    /// provider fetches from its own storage (an earlier response, a conversation, a
    /// stored prompt, a file by id or URL) could cost any amount past the hold.
    pub held: bool,
}

/// Checks a valid request body for options the gateway cannot meter.
pub fn check(
    endpoint: &Endpoint,
    body: &Map<String, Value>,
    allowed: Allowances,
) -> Result<(), ApiError> {
    // Prices are per model at the standard tier; `flex`, `priority`, `scale` (and `auto`,
    // which lets the provider pick one) are billed at other rates.
    match body.get("service_tier") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "default" => {}
        Some(other) => {
            return Err(refuse(
                "service_tier",
                format!(
                    "`service_tier` {other} is not available through this gateway: its prices \
                     cover the default tier only. Omit the field or send \"default\"."
                ),
            ));
        }
    }
    if allowed.held {
        stored_input(endpoint, body)?;
    }
    match endpoint {
        Endpoint::ChatCompletions
            if body.get("web_search_options").is_some_and(|v| !v.is_null()) =>
        {
            return Err(refuse(
                "web_search_options",
                "Web search is billed per call by the provider, which this gateway cannot \
                 meter; it is not available through this gateway."
                    .into(),
            ));
        }
        Endpoint::Responses => {
            if body.get("background") == Some(&Value::Bool(true)) && !allowed.background {
                return Err(refuse(
                    "background",
                    "Background responses finish outside the gateway, so their usage cannot \
                     be metered; they are not allowed for this model."
                        .into(),
                ));
            }
            let tools = body.get("tools").and_then(Value::as_array);
            for (i, tool) in tools.into_iter().flatten().enumerate() {
                let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
                if !matches!(kind, "function" | "custom") {
                    return Err(refuse(
                        &format!("tools[{i}].type"),
                        format!(
                            "Built-in tool `{kind}` is billed per call by the provider, which \
                             this gateway cannot meter; only `function` and `custom` tools \
                             are available."
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Refuses input the provider reads from its own storage, whose size the body does not
/// bound.
fn stored_input(endpoint: &Endpoint, body: &Map<String, Value>) -> Result<(), ApiError> {
    let stored = |param: &str, what: &str| {
        refuse(
            param,
            format!(
                "{what} is read by the provider from its own storage, so its size is not known                  before the call and cannot be held against this key's budget; send the                  input in the request instead."
            ),
        )
    };
    if *endpoint == Endpoint::Responses {
        for (field, what) in [
            ("previous_response_id", "An earlier response"),
            ("conversation", "A conversation"),
            ("prompt", "A stored prompt"),
        ] {
            if body.get(field).is_some_and(|v| !v.is_null()) {
                return Err(stored(field, what));
            }
        }
    }
    let (list, parts_of) = match endpoint {
        Endpoint::ChatCompletions => ("messages", "content"),
        Endpoint::Responses => ("input", "content"),
        _ => return Ok(()),
    };
    let items = body.get(list).and_then(Value::as_array);
    for (i, item) in items.into_iter().flatten().enumerate() {
        let parts = item.get(parts_of).and_then(Value::as_array);
        for (j, part) in parts.into_iter().flatten().enumerate() {
            // Chat nests the file in `file`; Responses' `input_file` is the part itself.
            let file = match part.get("type").and_then(Value::as_str) {
                Some("file") => part.get("file"),
                Some("input_file") => Some(part),
                _ => None,
            };
            let inline = file
                .and_then(|f| f.get("file_data"))
                .is_some_and(Value::is_string);
            if file.is_some() && !inline {
                return Err(stored(
                    &format!("{list}[{i}].{parts_of}[{j}]"),
                    "A file by id or URL",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => unreachable!("test bodies are objects"),
        }
    }

    fn chat(v: Value) -> Result<(), ApiError> {
        check(&Endpoint::ChatCompletions, &body(v), Allowances::default())
    }

    #[test]
    fn only_the_default_tier_is_priced() {
        assert!(chat(json!({"model": "m"})).is_ok());
        assert!(chat(json!({"service_tier": null})).is_ok());
        assert!(chat(json!({"service_tier": "default"})).is_ok());
        for tier in ["priority", "flex", "scale", "auto"] {
            let e = chat(json!({ "service_tier": tier })).unwrap_err();
            assert_eq!(
                (e.status, e.param.as_deref(), e.code),
                (400, Some("service_tier"), Some(CODE))
            );
        }
        assert!(chat(json!({"service_tier": 1})).is_err());
    }

    #[test]
    fn web_search_is_refused() {
        let e = chat(json!({"web_search_options": {}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("web_search_options"));
        assert!(chat(json!({"web_search_options": null})).is_ok());
    }

    #[test]
    fn background_responses_need_the_operators_allowance() {
        let b = body(json!({"background": true, "input": "x"}));
        let e = check(&Endpoint::Responses, &b, Allowances::default()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("background"));
        assert!(
            check(
                &Endpoint::Responses,
                &b,
                Allowances {
                    background: true,
                    ..Allowances::default()
                }
            )
            .is_ok()
        );
        let fg = body(json!({"background": false}));
        assert!(check(&Endpoint::Responses, &fg, Allowances::default()).is_ok());
    }

    #[test]
    fn a_held_call_may_not_read_stored_input() {
        let held = Allowances {
            held: true,
            ..Allowances::default()
        };
        let responses = |v: Value, a| check(&Endpoint::Responses, &body(v), a);
        for (field, value) in [
            ("previous_response_id", json!("resp_1")),
            ("conversation", json!("conv_1")),
            ("prompt", json!({"id": "pmpt_1"})),
        ] {
            let mut b = json!({"input": "hi"});
            b[field] = value;
            let e = responses(b.clone(), held).unwrap_err();
            assert_eq!((e.param.as_deref(), e.code), (Some(field), Some(CODE)));
            assert!(responses(b, Allowances::default()).is_ok());
        }
        let by_id = json!({"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "x"}, {"type": "input_file", "file_id": "file-1"}]}]});
        let e = responses(by_id, held).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0].content[1]"));
        let inline = json!({"input": [{"role": "user", "content": [
            {"type": "input_file", "file_data": "data:application/pdf;base64,AAAA"}]}]});
        assert!(responses(inline, held).is_ok());
        let chat_by_id = json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-1"}}]}]});
        let e = check(&Endpoint::ChatCompletions, &body(chat_by_id.clone()), held).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
        assert!(
            check(
                &Endpoint::ChatCompletions,
                &body(chat_by_id),
                Allowances::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn built_in_response_tools_are_refused_functions_pass() {
        let ok = body(json!({"tools": [{"type": "function", "name": "f"}]}));
        assert!(check(&Endpoint::Responses, &ok, Allowances::default()).is_ok());
        let bad = body(json!({"tools": [{"type": "function"}, {"type": "web_search"}]}));
        let e = check(&Endpoint::Responses, &bad, Allowances::default()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[1].type"));
    }
}
