//! Whether a virtual key may call a model: the decision, apart from how its facts are fetched.

use crate::errors::ApiError;

/// The state of a virtual key as the control plane knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// No key has this hash.
    Unknown,
    /// Usable.
    Active,
    /// Revoked by an operator.
    Revoked,
}

/// Decides a call to `model` with a key in `state` that may use `allowed_models`
/// (empty: all), given whether any provider serves `model`.
///
/// The order matters: an unknown or revoked key learns nothing about which models exist.
pub fn decide(
    state: KeyState,
    allowed_models: &[String],
    model: &str,
    model_is_served: bool,
) -> Result<(), ApiError> {
    match state {
        KeyState::Unknown => Err(ApiError::unauthenticated(
            "Incorrect API key provided. Check the key or ask your administrator for a new one.",
        )),
        KeyState::Revoked => Err(ApiError::unauthenticated("This API key has been revoked.")),
        KeyState::Active
            if !allowed_models.is_empty() && !allowed_models.iter().any(|m| m == model) =>
        {
            Err(ApiError::forbidden(
                Some("model"),
                format!("This API key is not allowed to use the model `{model}`."),
            ))
        }
        KeyState::Active if !model_is_served => Err(ApiError::model_not_found(model)),
        KeyState::Active => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn active_key_any_model() {
        assert!(decide(KeyState::Active, &[], "gpt-4o", true).is_ok());
    }

    #[test]
    fn allow_list_is_enforced() {
        let allowed = models(&["gpt-4o-mini"]);
        assert!(decide(KeyState::Active, &allowed, "gpt-4o-mini", true).is_ok());
        let e = decide(KeyState::Active, &allowed, "gpt-4o", true).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (403, Some("model")));
    }

    #[test]
    fn unknown_and_revoked_are_401_before_model_checks() {
        for state in [KeyState::Unknown, KeyState::Revoked] {
            let e = decide(state, &models(&["x"]), "not-served", false).unwrap_err();
            assert_eq!(e.status, 401);
        }
    }

    #[test]
    fn unserved_model_is_404() {
        let e = decide(KeyState::Active, &[], "nope", false).unwrap_err();
        assert_eq!(e.status, 404);
        assert_eq!(e.code, Some("model_not_found"));
    }
}
