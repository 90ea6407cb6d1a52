//! `tollgate users create|list|set-role|disable|enable|reset-password|limit`.

use super::{CliError, CreateUserArgs, ListUsersArgs, SetRoleArgs, UserLimitArgs};
use crate::audit::AuditEntry;
use crate::clock::Clock;
use crate::config::LimitSettings;
use crate::keys::owner_name;
use crate::store::Store;
use std::io::{BufRead, IsTerminal, Write};

/// The new user's password: prompted for twice without echo on a terminal, else the first
/// line of standard input (`printf '%s\n' "$PW" | tollgate users create …`).
pub(super) fn read_password() -> Result<String, CliError> {
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ")?;
        if rpassword::prompt_password("Password again: ")? != password {
            return Err(CliError::PasswordsDiffer);
        }
        return Ok(password);
    }
    first_line(std::io::stdin().lock())
}

/// The first line of `input` without its line ending.
fn first_line(mut input: impl BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Creates a user with `password` and records it in the audit log.
pub(super) async fn create(
    store: &Store,
    clock: &Clock,
    args: &CreateUserArgs,
    password: String,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let user = crate::users::create(store, clock, &args.name, args.role, password).await?;
    store
        .record_audit(&AuditEntry::cli("user.create", &user.name, clock.now_ms()))
        .await?;
    writeln!(
        out,
        "User {} ({}) created with role {}. They sign in with POST /api/auth/login.",
        user.name, user.id, user.role
    )?;
    Ok(())
}

/// The user named `name`, or [`UserError::NoSuchUser`].
pub(super) async fn user_named(
    store: &Store,
    name: &str,
) -> Result<crate::store::UserRow, CliError> {
    let name = crate::users::user_name(name)?;
    Ok(store
        .user_by_name(&name)
        .await?
        .ok_or(crate::users::UserError::NoSuchUser(name))?)
}

/// Gives a user a role.
pub(super) async fn set_role(
    store: &Store,
    clock: &Clock,
    args: &SetRoleArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let user = user_named(store, &args.name).await?;
    store.set_user_role(&user.id, args.role).await?;
    let action = format!("user.set_role.{}", args.role);
    store
        .record_audit(&AuditEntry::cli(&action, &user.name, clock.now_ms()))
        .await?;
    writeln!(out, "User {} is now {}.", user.name, args.role)?;
    Ok(())
}

/// Disables (ending their sessions) or enables a user.
pub(super) async fn set_disabled(
    store: &Store,
    clock: &Clock,
    name: &str,
    disabled: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let user = user_named(store, name).await?;
    let now = clock.now_ms();
    store
        .set_user_disabled(&user.id, disabled.then_some(now))
        .await?;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    store
        .record_audit(&AuditEntry::cli(action, &user.name, now))
        .await?;
    if disabled {
        writeln!(
            out,
            "User {} disabled: their sessions ended; gateways refuse their keys within their key cache time.",
            user.name
        )?;
    } else {
        writeln!(out, "User {} enabled.", user.name)?;
    }
    Ok(())
}

/// Sets a user's password, ending their sessions.
pub(super) async fn reset_password(
    store: &Store,
    clock: &Clock,
    name: &str,
    password: String,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let user = user_named(store, name).await?;
    let hash = crate::users::hash_password(password).await?;
    let now = clock.now_ms();
    store.set_user_password(&user.id, &hash, now).await?;
    store
        .record_audit(&AuditEntry::cli("user.reset_password", &user.name, now))
        .await?;
    writeln!(out, "Password of {} set; their sessions ended.", user.name)?;
    Ok(())
}

/// Lists users: a table, or JSON lines.
pub(super) async fn list(
    store: &Store,
    args: &ListUsersArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let users = store.list_users().await?;
    if args.json {
        for user in &users {
            let line = serde_json::json!({
                "id": user.id,
                "name": user.name,
                "role": user.role,
                "created_at_ms": user.created_at_ms,
                "disabled_at_ms": user.disabled_at_ms,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    writeln!(out, "{:<22} {:<24} {:<7} STATUS", "ID", "NAME", "ROLE")?;
    for user in &users {
        let status = if user.disabled_at_ms.is_some() {
            "disabled"
        } else {
            "active"
        };
        writeln!(
            out,
            "{:<22} {:<24} {:<7} {status}",
            user.id,
            user.name,
            user.role.as_str()
        )?;
    }
    Ok(())
}

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
    use crate::users::Role;

    #[test]
    fn the_password_is_the_first_line_without_its_ending() {
        let read = |input: &str| first_line(std::io::Cursor::new(input.to_owned())).unwrap();
        assert_eq!(read("pass word 123\nsecond"), "pass word 123");
        assert_eq!(read("crlf password\r\n"), "crlf password");
        assert_eq!(read("no newline"), "no newline");
        assert_eq!(read(""), "");
    }

    #[tokio::test]
    async fn create_stores_a_hash_audits_and_list_shows_no_secret() {
        let (_dir, store) = crate::store::test_stores::sqlite().await;
        let time = crate::clock::ManualClock::at(5_000);
        let clock = time.clock();
        let args = CreateUserArgs {
            name: " root ".into(),
            role: Role::Admin,
        };
        let mut out = Vec::new();
        create(
            &store,
            &clock,
            &args,
            "a good long password".into(),
            &mut out,
        )
        .await
        .unwrap();
        let printed = String::from_utf8(out).unwrap();
        assert!(
            printed.starts_with("User root (usr_") && printed.contains("role admin"),
            "{printed}"
        );
        let root = store.user_by_name("root").await.unwrap().unwrap();
        assert_eq!(root.role, Role::Admin);
        assert!(crate::passwords::verify(
            "a good long password",
            &root.password_hash
        ));
        let audit = store.list_audit(None, 5).await.unwrap();
        assert_eq!(
            audit[0].entry,
            AuditEntry::cli("user.create", "root", 5_000)
        );

        let e = create(
            &store,
            &clock,
            &args,
            "a good long password".into(),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("exists"), "{e}");
        let short = CreateUserArgs {
            name: "bob".into(),
            role: Role::Member,
        };
        let e = create(&store, &clock, &short, "short".into(), &mut Vec::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("at least 12"), "{e}");

        let mut out = Vec::new();
        let demote = SetRoleArgs {
            name: "root".into(),
            role: Role::Viewer,
        };
        time.advance_ms(1);
        set_role(&store, &clock, &demote, &mut out).await.unwrap();
        // Entries of one millisecond have no order among them: each step gets its own.
        time.advance_ms(1);
        assert_eq!(
            store.user_by_name("root").await.unwrap().unwrap().role,
            Role::Viewer
        );
        set_disabled(&store, &clock, "root", true, &mut out)
            .await
            .unwrap();
        assert_eq!(
            store
                .user_by_name("root")
                .await
                .unwrap()
                .unwrap()
                .disabled_at_ms,
            Some(5_002)
        );
        time.advance_ms(1);
        set_disabled(&store, &clock, "root", false, &mut out)
            .await
            .unwrap();
        time.advance_ms(1);
        assert_eq!(
            store
                .user_by_name("root")
                .await
                .unwrap()
                .unwrap()
                .disabled_at_ms,
            None
        );
        reset_password(
            &store,
            &clock,
            "root",
            "another long password".into(),
            &mut out,
        )
        .await
        .unwrap();
        let root = store.user_by_name("root").await.unwrap().unwrap();
        assert!(crate::passwords::verify(
            "another long password",
            &root.password_hash
        ));
        let e = set_disabled(&store, &clock, "nobody", true, &mut out)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no user `nobody`"), "{e}");
        let actions: Vec<String> = store
            .list_audit(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.entry.action)
            .collect();
        assert_eq!(
            actions[..4],
            [
                "user.reset_password",
                "user.enable",
                "user.disable",
                "user.set_role.viewer"
            ]
        );

        for json in [false, true] {
            let mut out = Vec::new();
            list(&store, &ListUsersArgs { json }, &mut out)
                .await
                .unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("root") && text.contains("viewer"), "{text}");
            assert!(
                !text.contains("argon2") && !text.contains("long password"),
                "{text}"
            );
        }
    }

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
