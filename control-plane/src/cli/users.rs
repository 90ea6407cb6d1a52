//! `tollgate users limit`.

use super::{CliError, UserLimitArgs};
use crate::config::LimitSettings;
use crate::keys::owner_name;
use crate::store::Store;
use std::io::Write;

/// Sets a user's own limits, or clears them back to the config's defaults (`none`).
pub(super) async fn limit(
    store: &Store,
    defaults: &LimitSettings,
    args: &UserLimitArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if args.rpm.is_none() && args.tpm.is_none() {
        return Err(CliError::NothingToChange("--rpm, --tpm"));
    }
    let name = owner_name("user", &args.name)?;
    // A flag left out keeps the stored value; read it back to merge.
    let mut limits = store.user_limits(&name).await?;
    if let Some(rpm) = args.rpm {
        limits.requests_per_minute = rpm.0.and_then(|n| u32::try_from(n).ok());
    }
    if let Some(tpm) = args.tpm {
        limits.tokens_per_minute = tpm.0;
    }
    store.set_user_limits(&name, limits).await?;
    let show = |own: Option<u64>, resolved: Option<u64>| match (own, resolved) {
        (Some(n), _) => n.to_string(),
        (None, Some(n)) => format!("{n} (default)"),
        (None, None) => "unlimited (default)".to_owned(),
    };
    writeln!(
        out,
        "User {name}: rpm={} tpm={}. Gateways apply it within their key cache time.",
        show(
            limits.requests_per_minute.map(u64::from),
            defaults
                .user_requests_per_minute(limits.requests_per_minute)
                .map(u64::from)
        ),
        show(
            limits.tokens_per_minute,
            defaults.user_tokens_per_minute(limits.tokens_per_minute)
        ),
    )?;
    Ok(())
}
