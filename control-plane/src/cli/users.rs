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
    let subject = crate::budgets::Subject::User(name);
    if let Some(note) = super::idle_subject_note(store, &subject).await? {
        writeln!(out, "{note}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Limits;

    fn args(argv: &[&str]) -> UserLimitArgs {
        use clap::Parser;
        let argv = ["tollgate", "users", "limit"].iter().chain(argv).copied();
        match super::super::Cli::try_parse_from(argv).unwrap().command {
            super::super::Command::Users(super::super::UsersCommand::Limit(a)) => a,
            other => panic!("not users limit: {other:?}"),
        }
    }

    #[tokio::test]
    async fn user_limits_are_set_merged_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let defaults = LimitSettings {
            user_requests_per_minute: Some(40),
            ..LimitSettings::default()
        };
        let mut out = Vec::new();
        limit(&store, &defaults, &args(&["alice", "--tpm", "0"]), &mut out)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "User alice: rpm=40 (default) tpm=0. Gateways apply it within their key cache time.\n\
             Note: no active key belongs to user `alice` (names are case-sensitive); this applies \
             to no call until `keys create --user alice` or `keys update KEY_ID --user alice`.\n"
        );
        limit(
            &store,
            &defaults,
            &args(&["alice", "--rpm", "7"]),
            &mut Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            store.user_limits("alice").await.unwrap(),
            Limits {
                requests_per_minute: Some(7),
                tokens_per_minute: Some(0)
            },
            "a flag left out keeps the stored value"
        );
        limit(
            &store,
            &defaults,
            &args(&["alice", "--rpm", "none", "--tpm", "none"]),
            &mut Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(store.user_limits("alice").await.unwrap(), Limits::default());
        let e = limit(&store, &defaults, &args(&["alice"]), &mut Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("--rpm, --tpm"), "{e}");
        use clap::Parser;
        for flag in ["--rpm", "--tpm"] {
            let argv = ["tollgate", "users", "limit", "alice", flag, "-1"];
            let e = super::super::Cli::try_parse_from(argv)
                .unwrap_err()
                .to_string();
            assert!(e.contains("`-1` is neither a whole number"), "{e}");
        }
    }
}
