//! `tollgate keys create | list | revoke | update | rotate`.

use super::{CliError, CreateKeyArgs, ListKeysArgs, RevokeKeyArgs, RotateKeyArgs, UpdateKeyArgs};
use crate::audit::AuditEntry;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::keys::{self, KeySpec};
use crate::store::{KeyRow, KeyUpdate, Limits, Store};
use std::io::Write;

/// Issues a key and prints its secret, the only time it is shown.
pub(super) async fn create(
    store: &Store,
    catalog: &Catalog,
    clock: &Clock,
    args: CreateKeyArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let spec = KeySpec {
        name: args.name,
        models: args.models,
        requests_per_minute: args.rpm,
        tokens_per_minute: args.tpm,
        user: args.user,
        team: args.team,
        expires_at_ms: args.expires_in.map(|d| from_now(clock, d)),
    };
    let issued = keys::create(store, catalog, clock, spec).await?;
    store
        .record_audit(&AuditEntry::cli(
            "key.create",
            &issued.row.id,
            clock.now_ms(),
        ))
        .await?;
    if args.quiet {
        writeln!(out, "{}", issued.secret)?;
    } else {
        writeln!(out, "Created key {} ({}).", issued.row.id, issued.row.name)?;
        writeln!(out, "Secret (shown once, store it now): {}", issued.secret)?;
    }
    Ok(())
}

/// Prints every key, oldest first: one line each, as a table or as JSON.
pub(super) async fn list(
    store: &Store,
    clock: &Clock,
    args: &ListKeysArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let now_ms = clock.now_ms();
    for k in store.list_keys().await? {
        let (model_limits, _) = store.model_limits_and_budgets(&k.id, &[]).await?;
        if args.json {
            let mut line = json_line(&k, now_ms);
            line["model_limits"] = model_limits
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "model": m.model,
                        "requests_per_minute": m.limits.requests_per_minute,
                        "tokens_per_minute": m.limits.tokens_per_minute,
                    })
                })
                .collect();
            writeln!(out, "{line}")?;
        } else {
            let models = if k.models.is_empty() {
                "*".to_owned()
            } else {
                k.models.join(",")
            };
            let limit = |l: Option<u64>| l.map_or_else(|| "default".to_owned(), |n| n.to_string());
            let mut extra = String::new();
            if !model_limits.is_empty() {
                let part = |l: Option<u64>| l.map_or_else(|| "none".to_owned(), |n| n.to_string());
                let each: Vec<String> = model_limits
                    .iter()
                    .map(|m| {
                        format!(
                            "{}:{}:{}",
                            m.model,
                            part(m.limits.requests_per_minute.map(u64::from)),
                            part(m.limits.tokens_per_minute)
                        )
                    })
                    .collect();
                extra.push_str(&format!("  model_limits={}", each.join(",")));
            }
            if let Some(user) = &k.user {
                extra.push_str(&format!("  user={user}"));
            }
            if let Some(team) = &k.team {
                extra.push_str(&format!("  team={team}"));
            }
            if let Some(at) = k.expires_at_ms.filter(|_| k.revoked_at_ms.is_none()) {
                extra.push_str(&format!(
                    "  expires={}",
                    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + ms_duration(at))
                ));
            }
            if let Some(until) = k.previous_until_ms.filter(|&u| u > now_ms) {
                extra.push_str(&format!(
                    "  old_secret_until={}",
                    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + ms_duration(until))
                ));
            }
            writeln!(
                out,
                "{}  {:8}  {}…  models={}  rpm={} tpm={}{}  {}",
                k.id,
                status(&k, now_ms),
                k.key_prefix,
                models,
                limit(k.requests_per_minute.map(u64::from)),
                limit(k.tokens_per_minute),
                extra,
                k.name
            )?;
        }
    }
    Ok(())
}

/// Changes a key's limits, user, team or expiry, and its per-model limits.
pub(super) async fn update(
    store: &Store,
    catalog: &Catalog,
    clock: &Clock,
    args: UpdateKeyArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let clear_or = |clear: bool, value: Option<String>| {
        if clear { Some(None) } else { value.map(Some) }
    };
    let update = KeyUpdate {
        requests_per_minute: args.rpm.map(|l| l.0.and_then(|n| u32::try_from(n).ok())),
        tokens_per_minute: args.tpm.map(|l| l.0),
        user: clear_or(args.no_user, args.user),
        team: clear_or(args.no_team, args.team),
        expires_at_ms: if args.no_expiry {
            Some(None)
        } else {
            args.expires_in.map(|d| Some(from_now(clock, d)))
        },
    };
    if update == KeyUpdate::default() && args.model_limits.is_empty() {
        return Err(CliError::NothingToChange(
            "--rpm, --tpm, --user, --no-user, --team, --no-team, --expires-in, --no-expiry, --model-limit",
        ));
    }
    let model_limits: Vec<(String, Limits)> = args
        .model_limits
        .iter()
        .map(|m| {
            let limits = Limits {
                requests_per_minute: m.rpm,
                tokens_per_minute: m.tpm,
            };
            (m.model.clone(), limits)
        })
        .collect();
    keys::update(store, catalog, clock, &args.id, update, &model_limits).await?;
    store
        .record_audit(&AuditEntry::cli("key.update", &args.id, clock.now_ms()))
        .await?;
    writeln!(
        out,
        "Updated {}. Gateways apply it within their key cache time.",
        args.id
    )?;
    Ok(())
}

/// Revokes a key by id.
pub(super) async fn revoke(
    store: &Store,
    clock: &Clock,
    args: &RevokeKeyArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    keys::revoke(store, clock, &args.id).await?;
    store
        .record_audit(&AuditEntry::cli("key.revoke", &args.id, clock.now_ms()))
        .await?;
    writeln!(
        out,
        "Revoked {}. Gateways refuse it within their key cache time.",
        args.id
    )?;
    Ok(())
}

/// Gives a key a new secret and prints it, the only time it is shown.
pub(super) async fn rotate(
    store: &Store,
    clock: &Clock,
    args: &RotateKeyArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let issued = keys::rotate(store, clock, &args.id, args.grace).await?;
    store
        .record_audit(&AuditEntry::cli("key.rotate", &args.id, clock.now_ms()))
        .await?;
    if args.quiet {
        writeln!(out, "{}", issued.secret)?;
        return Ok(());
    }
    writeln!(out, "Rotated {} ({}).", issued.row.id, issued.row.name)?;
    writeln!(
        out,
        "New secret (shown once, store it now): {}",
        issued.secret
    )?;
    match issued.row.previous_until_ms {
        Some(until) => writeln!(
            out,
            "The old secret works until {} ({}).",
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + ms_duration(until)),
            humantime::format_duration(args.grace)
        )?,
        None => writeln!(
            out,
            "The old secret is refused within the gateways' key cache time."
        )?,
    }
    Ok(())
}

/// `clock`'s now plus `d`, in Unix ms, saturating.
fn from_now(clock: &Clock, d: std::time::Duration) -> i64 {
    clock
        .now_ms()
        .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A non-negative Unix ms instant as a duration since the epoch.
fn ms_duration(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn status(k: &KeyRow, now_ms: i64) -> &'static str {
    match keys::standing(k, crate::store::SecretMatch::Current, now_ms) {
        keys::Standing::Usable { .. } => "active",
        keys::Standing::Expired => "expired",
        keys::Standing::Revoked | keys::Standing::SecretRetired => "revoked",
    }
}

fn json_line(k: &KeyRow, now_ms: i64) -> serde_json::Value {
    serde_json::json!({
        "id": k.id, "name": k.name, "prefix": k.key_prefix, "models": k.models,
        "status": status(k, now_ms), "created_at_ms": k.created_at_ms,
        "revoked_at_ms": k.revoked_at_ms, "expires_at_ms": k.expires_at_ms,
        "old_secret_until_ms": k.previous_until_ms.filter(|&until| until > now_ms),
        "requests_per_minute": k.requests_per_minute,
        "tokens_per_minute": k.tokens_per_minute, "user": k.user, "team": k.team,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;

    async fn setup() -> (tempfile::TempDir, Store, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n",
            dir.path(),
            |_| None,
        )
        .unwrap();
        let store = Store::open(&config.storage.database_url).await.unwrap();
        (dir, store, config.catalog)
    }

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn keys_are_created_listed_and_revoked_at_the_clocks_time() {
        let (_dir, store, catalog) = setup().await;
        let time = ManualClock::at(1_000);
        let clock = time.clock();
        let mut out = Vec::new();
        let args = CreateKeyArgs {
            name: "ci".into(),
            models: vec!["m".into()],
            quiet: true,
            rpm: None,
            tpm: None,
            user: None,
            team: None,
            expires_in: None,
        };
        create(&store, &catalog, &clock, args, &mut out)
            .await
            .unwrap();
        let secret = text(out);
        assert!(
            secret.starts_with(tollgate_core::keys::KEY_PREFIX),
            "{secret}"
        );
        assert_eq!(secret.lines().count(), 1);

        let mut out = Vec::new();
        list(
            &store,
            &Clock::system(),
            &ListKeysArgs { json: true },
            &mut out,
        )
        .await
        .unwrap();
        let line: serde_json::Value = serde_json::from_str(text(out).trim()).unwrap();
        assert_eq!(line["name"], "ci");
        assert_eq!(line["models"], serde_json::json!(["m"]));
        assert_eq!(line["status"], "active");
        assert_eq!(line["created_at_ms"], 1_000);
        assert_eq!(line["requests_per_minute"], serde_json::Value::Null);
        let id = line["id"].as_str().unwrap().to_owned();

        time.advance_ms(500);
        let mut out = Vec::new();
        revoke(&store, &clock, &RevokeKeyArgs { id: id.clone() }, &mut out)
            .await
            .unwrap();
        assert!(text(out).starts_with(&format!("Revoked {id}.")));
        let row = store.list_keys().await.unwrap().remove(0);
        assert_eq!(row.revoked_at_ms, Some(1_500));

        let mut out = Vec::new();
        list(
            &store,
            &Clock::system(),
            &ListKeysArgs { json: false },
            &mut out,
        )
        .await
        .unwrap();
        let table = text(out);
        assert!(
            table.starts_with(&format!(
                "{id}  revoked   {}…  models=m  rpm=default tpm=default  ci",
                row.key_prefix
            )),
            "{table}"
        );
    }

    #[tokio::test]
    async fn a_key_for_an_unserved_model_is_refused_naming_the_served_ones() {
        let (_dir, store, catalog) = setup().await;
        let args = CreateKeyArgs {
            name: "k".into(),
            models: vec!["gpt-9".into()],
            quiet: false,
            rpm: None,
            tpm: None,
            user: None,
            team: None,
            expires_in: None,
        };
        let mut out = Vec::new();
        let e = create(&store, &catalog, &Clock::system(), args, &mut out)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpt-9") && e.contains("served models: m"), "{e}");
        assert!(out.is_empty());
        assert!(store.list_keys().await.unwrap().is_empty());
    }

    /// The `keys create` arguments a command line parsed into.
    fn create_args(cli: super::super::Cli) -> CreateKeyArgs {
        match cli.command {
            super::super::Command::Keys(super::super::KeysCommand::Create(args)) => args,
            other => panic!("not keys create: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_key_created_with_rpm_stores_its_own_limit() {
        use clap::Parser;
        let (_dir, store, catalog) = setup().await;
        for (flag, stored) in [("0", Some(0)), ("25", Some(25))] {
            let cli = super::super::Cli::try_parse_from([
                "tollgate", "keys", "create", "--name", "k", "--rpm", flag, "--quiet",
            ])
            .unwrap();
            let args = create_args(cli);
            assert_eq!(args.rpm, stored);
            create(&store, &catalog, &Clock::system(), args, &mut Vec::new())
                .await
                .unwrap();
        }
        let stored: Vec<Option<u32>> = store
            .list_keys()
            .await
            .unwrap()
            .iter()
            .map(|k| k.requests_per_minute)
            .collect();
        assert_eq!(stored, [Some(0), Some(25)]);
        let negative = super::super::Cli::try_parse_from([
            "tollgate", "keys", "create", "--name", "k", "--rpm", "-1",
        ]);
        assert!(negative.is_err());
    }

    /// The arguments a `tollgate keys …` command line parsed into.
    fn keys_command(args: &[&str]) -> super::super::KeysCommand {
        use clap::Parser;
        let argv = ["tollgate", "keys"].iter().chain(args).copied();
        match super::super::Cli::try_parse_from(argv).unwrap().command {
            super::super::Command::Keys(command) => command,
            other => panic!("not keys: {other:?}"),
        }
    }

    fn parse_error(args: &[&str]) -> String {
        use clap::Parser;
        let argv = ["tollgate"].iter().chain(args).copied();
        super::super::Cli::try_parse_from(argv)
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn keys_expire_when_told_and_rotate_with_a_grace_for_the_old_secret() {
        let (_dir, store, catalog) = setup().await;
        let time = ManualClock::at(1_000_000);
        let clock = time.clock();
        let super::super::KeysCommand::Create(args) =
            keys_command(&["create", "--name", "k", "--expires-in", "1h", "--quiet"])
        else {
            panic!("create");
        };
        let mut out = Vec::new();
        create(&store, &catalog, &clock, args, &mut out)
            .await
            .unwrap();
        let old_secret = text(out).trim().to_owned();
        let key = store.list_keys().await.unwrap().remove(0);
        assert_eq!(key.expires_at_ms, Some(1_000_000 + 3_600_000));

        let super::super::KeysCommand::Rotate(args) =
            keys_command(&["rotate", &key.id, "--grace", "10m"])
        else {
            panic!("rotate");
        };
        let mut out = Vec::new();
        rotate(&store, &clock, &args, &mut out).await.unwrap();
        let printed = text(out);
        let new_secret = printed
            .lines()
            .find_map(|l| l.strip_prefix("New secret (shown once, store it now): "))
            .unwrap()
            .to_owned();
        assert_ne!(new_secret, old_secret);
        assert!(printed.contains("The old secret works until"), "{printed}");
        let audited: Vec<(String, String, String)> = store
            .list_audit(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.entry.actor, r.entry.action, r.entry.target))
            .collect();
        for action in ["key.create", "key.rotate"] {
            assert!(
                audited.contains(&("cli".into(), action.into(), key.id.clone())),
                "{action} not audited: {audited:?}"
            );
        }
        let old = store
            .key_grant_by_hash(&tollgate_core::keys::hash_key(old_secret.as_bytes()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(old.key.previous_until_ms, Some(1_000_000 + 600_000));

        let mut out = Vec::new();
        list(&store, &clock, &ListKeysArgs { json: true }, &mut out)
            .await
            .unwrap();
        let line: serde_json::Value = serde_json::from_str(text(out).trim()).unwrap();
        assert_eq!(line["old_secret_until_ms"], 1_600_000);
        assert_eq!(line["expires_at_ms"], 4_600_000);
        assert!(
            !line.to_string().contains(&new_secret),
            "a listing never holds a secret"
        );

        // Past the expiry the listing says so; clearing the expiry needs the key active.
        time.advance_ms(3_600_000);
        let mut out = Vec::new();
        list(&store, &clock, &ListKeysArgs { json: false }, &mut out)
            .await
            .unwrap();
        assert!(text(out).contains(" expired "), "expired keys are marked");
        let super::super::KeysCommand::Update(args) =
            keys_command(&["update", &key.id, "--no-expiry"])
        else {
            panic!("update");
        };
        update(&store, &catalog, &clock, args, &mut Vec::new())
            .await
            .unwrap();
        let mut out = Vec::new();
        list(&store, &clock, &ListKeysArgs { json: true }, &mut out)
            .await
            .unwrap();
        let line: serde_json::Value = serde_json::from_str(text(out).trim()).unwrap();
        assert_eq!(
            (line["status"].as_str(), &line["expires_at_ms"]),
            (Some("active"), &serde_json::Value::Null)
        );
    }

    #[tokio::test]
    async fn an_expiry_in_the_past_and_an_overlong_grace_are_refused() {
        let (_dir, store, catalog) = setup().await;
        let clock = Clock::system();
        let super::super::KeysCommand::Create(args) =
            keys_command(&["create", "--name", "k", "--expires-in", "0s"])
        else {
            panic!("create");
        };
        let e = create(&store, &catalog, &clock, args, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("must be in the future"), "{e}");
        assert!(
            store.list_keys().await.unwrap().is_empty(),
            "nothing stored"
        );

        let issued = crate::keys::create(
            &store,
            &catalog,
            &clock,
            KeySpec {
                name: "k".into(),
                ..KeySpec::default()
            },
        )
        .await
        .unwrap();
        let super::super::KeysCommand::Rotate(args) =
            keys_command(&["rotate", &issued.row.id, "--grace", "31d"])
        else {
            panic!("rotate");
        };
        let e = rotate(&store, &clock, &args, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("at most 30 days"), "{e}");
        assert_eq!(
            store
                .key_by_id(&issued.row.id)
                .await
                .unwrap()
                .unwrap()
                .key_hash,
            issued.row.key_hash,
            "not rotated"
        );
        assert!(
            parse_error(&["keys", "rotate", &issued.row.id]).contains("--grace"),
            "the grace is never implied"
        );
        assert!(
            parse_error(&["keys", "create", "--name", "k", "--expires-in", "soon"]).contains("90d")
        );
    }

    #[tokio::test]
    async fn keys_are_created_with_user_team_and_tpm_and_updated() {
        let (_dir, store, catalog) = setup().await;
        let super::super::KeysCommand::Create(args) = keys_command(&[
            "create", "--name", "k", "--user", "alice", "--team", "ml", "--tpm", "0", "--quiet",
        ]) else {
            panic!("create");
        };
        create(&store, &catalog, &Clock::system(), args, &mut Vec::new())
            .await
            .unwrap();
        let key = store.list_keys().await.unwrap().remove(0);
        assert_eq!(
            (
                key.user.as_deref(),
                key.team.as_deref(),
                key.tokens_per_minute
            ),
            (Some("alice"), Some("ml"), Some(0))
        );

        let super::super::KeysCommand::Update(args) = keys_command(&[
            "update",
            &key.id,
            "--rpm",
            "12",
            "--tpm",
            "none",
            "--no-team",
            "--user",
            "bob",
            "--model-limit",
            "m:5:none",
        ]) else {
            panic!("update");
        };
        let mut out = Vec::new();
        update(&store, &catalog, &Clock::system(), args, &mut out)
            .await
            .unwrap();
        assert!(text(out).starts_with(&format!("Updated {}.", key.id)));
        let grant = store
            .key_grant_by_hash(&key.key_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(grant.key.requests_per_minute, Some(12));
        assert_eq!(grant.key.tokens_per_minute, None);
        assert_eq!(
            (grant.key.user.as_deref(), grant.key.team),
            (Some("bob"), None)
        );
        let (models, _) = store.model_limits_and_budgets(&key.id, &[]).await.unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(
            (models[0].model.as_str(), models[0].limits),
            (
                "m",
                Limits {
                    requests_per_minute: Some(5),
                    tokens_per_minute: None
                }
            )
        );
        // The operator can see what was set.
        let mut out = Vec::new();
        list(
            &store,
            &Clock::system(),
            &ListKeysArgs { json: false },
            &mut out,
        )
        .await
        .unwrap();
        let table = text(out);
        assert!(
            table.contains("rpm=12 tpm=default  model_limits=m:5:none  user=bob"),
            "{table}"
        );
        let mut out = Vec::new();
        list(
            &store,
            &Clock::system(),
            &ListKeysArgs { json: true },
            &mut out,
        )
        .await
        .unwrap();
        let line: serde_json::Value = serde_json::from_str(text(out).trim()).unwrap();
        assert_eq!(
            line["model_limits"],
            serde_json::json!([{"model": "m", "requests_per_minute": 5, "tokens_per_minute": null}])
        );
        // Both parts `none` removes the model's limits.
        let super::super::KeysCommand::Update(args) =
            keys_command(&["update", &key.id, "--model-limit", "m:none:none"])
        else {
            panic!("update");
        };
        update(&store, &catalog, &Clock::system(), args, &mut Vec::new())
            .await
            .unwrap();
        let (models, _) = store.model_limits_and_budgets(&key.id, &[]).await.unwrap();
        assert!(models.is_empty());
    }

    #[tokio::test]
    async fn key_updates_refuse_what_they_cannot_apply() {
        let (_dir, store, catalog) = setup().await;
        let super::super::KeysCommand::Update(args) = keys_command(&["update", "key_nope"]) else {
            panic!("update");
        };
        let e = update(&store, &catalog, &Clock::system(), args, &mut Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("--rpm") && e.contains("--model-limit"), "{e}");
        let super::super::KeysCommand::Update(args) =
            keys_command(&["update", "key_nope", "--rpm", "1"])
        else {
            panic!("update");
        };
        let e = update(&store, &catalog, &Clock::system(), args, &mut Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no key with id `key_nope`"), "{e}");
        let super::super::KeysCommand::Update(args) =
            keys_command(&["update", "key_nope", "--model-limit", "gpt-9:1:1"])
        else {
            panic!("update");
        };
        let e = update(&store, &catalog, &Clock::system(), args, &mut Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpt-9"), "{e}");
        for (args, flag) in [
            (&["keys", "update", "k", "--rpm", "many"][..], "--rpm"),
            (&["keys", "update", "k", "--rpm", "4294967296"][..], "--rpm"),
            (
                &["keys", "update", "k", "--tpm", "9223372036854775808"][..],
                "--tpm",
            ),
            (
                &["keys", "update", "k", "--model-limit", "m:1"][..],
                "--model-limit",
            ),
            (
                &["keys", "update", "k", "--user", "a", "--no-user"][..],
                "--no-user",
            ),
            (
                &[
                    "keys",
                    "create",
                    "--name",
                    "k",
                    "--tpm",
                    "9223372036854775808",
                ][..],
                "--tpm",
            ),
        ] {
            let e = parse_error(args);
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn a_model_limit_may_name_a_model_with_colons() {
        let super::super::KeysCommand::Update(args) =
            keys_command(&["update", "k", "--model-limit", "llama3:8b:none:1000"])
        else {
            panic!("update");
        };
        assert_eq!(
            args.model_limits,
            vec![super::super::ModelLimitArg {
                model: "llama3:8b".into(),
                rpm: None,
                tpm: Some(1000),
            }]
        );
    }
}
