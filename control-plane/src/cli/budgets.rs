//! `tollgate budgets set | list | delete`.

use super::{CliError, DeleteBudgetArgs, ListBudgetsArgs, SetBudgetArgs};
use crate::audit::AuditEntry;
use crate::budgets::{Period, Subject};
use crate::clock::Clock;
use crate::keys::{KeyError, owner_name};
use crate::store::{BudgetStatus, Store};
use std::io::Write;
use tollgate_core::pricing::format_dollars;

/// Creates or changes the budget of the subject named by `--key`, `--user` or `--team`.
pub(super) async fn set(
    store: &Store,
    clock: &Clock,
    args: &SetBudgetArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let subject = match (&args.key, &args.user, &args.team) {
        (Some(key), None, None) => {
            if !store.key_exists(key).await? {
                return Err(KeyError::NoSuchKey(key.clone()).into());
            }
            Subject::Key(key.clone())
        }
        (None, Some(user), None) => Subject::User(owner_name("user", user)?),
        (None, None, Some(team)) => Subject::Team(owner_name("team", team)?),
        // clap's group allows exactly one.
        _ => return Err(CliError::NothingToChange("one of --key, --user, --team")),
    };
    let set = store
        .set_budget(&subject.to_string(), args.period, args.usd, clock.now_ms())
        .await?;
    store
        .record_audit(&AuditEntry::cli(
            "budget.set",
            &set.budget.id,
            clock.now_ms(),
        ))
        .await?;
    let per = match set.budget.period {
        Period::Total => "in total",
        Period::Day => "per day (UTC)",
        Period::Month => "per month (UTC)",
    };
    writeln!(
        out,
        "{} budget {} for {}: {} {per}.",
        if set.created { "Created" } else { "Changed" },
        set.budget.id,
        set.budget.subject,
        format_dollars(set.budget.limit_picos),
    )?;
    if !set.created {
        lowered_note(store, clock, &set.budget.id, out).await?;
    }
    if let Some(note) = super::idle_subject_note(store, &subject).await? {
        writeln!(out, "{note}")?;
    }
    Ok(())
}

/// When a changed limit is below what the window has spent and leased, says that the
/// leases out may still be spent: lowering never takes back money already leased.
async fn lowered_note(
    store: &Store,
    clock: &Clock,
    budget_id: &str,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let now = store.list_budgets(clock.now_ms()).await?;
    let Some(b) = now.iter().find(|b| b.budget.id == budget_id) else {
        return Ok(());
    };
    if b.spent_picos.saturating_add(b.leased_picos) > b.budget.limit_picos && b.leased_picos > 0 {
        writeln!(
            out,
            "Note: {} is leased to gateways and {} spent in this window; no new lease is \
             granted, but what is leased may still be spent until their leases expire \
             ([budgets] lease_ttl_ms).",
            format_dollars(b.leased_picos),
            format_dollars(b.spent_picos),
        )?;
    }
    Ok(())
}

/// Prints every budget with its money in the current window.
pub(super) async fn list(
    store: &Store,
    clock: &Clock,
    args: &ListBudgetsArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    for b in store.list_budgets(clock.now_ms()).await? {
        if args.json {
            writeln!(out, "{}", json_line(&b))?;
        } else {
            writeln!(
                out,
                "{}  {}  {}  limit={} spent={} leased={} available={}",
                b.budget.id,
                b.budget.subject,
                b.budget.period,
                format_dollars(b.budget.limit_picos),
                format_dollars(b.spent_picos),
                format_dollars(b.leased_picos),
                format_dollars(b.available_picos()),
            )?;
        }
    }
    Ok(())
}

/// Deletes a budget by id.
pub(super) async fn delete(
    store: &Store,
    clock: &Clock,
    args: &DeleteBudgetArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if !store.delete_budget(&args.id).await? {
        return Err(CliError::NoSuchBudget(args.id.clone()));
    }
    store
        .record_audit(&AuditEntry::cli("budget.delete", &args.id, clock.now_ms()))
        .await?;
    writeln!(
        out,
        "Deleted budget {}. Gateways stop holding calls against it within their key cache time. \
         Its spend is forgotten: a budget set again for its subject starts from $0.",
        args.id
    )?;
    Ok(())
}

fn json_line(b: &BudgetStatus) -> serde_json::Value {
    serde_json::json!({
        "id": b.budget.id, "subject": b.budget.subject, "period": b.budget.period.as_str(),
        "window_start_ms": b.window_start_ms, "limit_picos": b.budget.limit_picos,
        "spent_picos": b.spent_picos, "leased_picos": b.leased_picos,
        "available_picos": b.available_picos(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{LeaseAsk, UsageRow};

    fn command(argv: &[&str]) -> super::super::BudgetsCommand {
        use clap::Parser;
        let argv = ["tollgate", "budgets"].iter().chain(argv).copied();
        match super::super::Cli::try_parse_from(argv).unwrap().command {
            super::super::Command::Budgets(c) => c,
            other => panic!("not budgets: {other:?}"),
        }
    }

    fn parse_error(argv: &[&str]) -> String {
        use clap::Parser;
        let argv = ["tollgate", "budgets"].iter().chain(argv).copied();
        super::super::Cli::try_parse_from(argv)
            .unwrap_err()
            .to_string()
    }

    async fn run(store: &Store, clock: &Clock, argv: &[&str]) -> Result<String, CliError> {
        let mut out = Vec::new();
        match command(argv) {
            super::super::BudgetsCommand::Set(a) => set(store, clock, &a, &mut out).await?,
            super::super::BudgetsCommand::List(a) => list(store, clock, &a, &mut out).await?,
            super::super::BudgetsCommand::Delete(a) => {
                delete(store, &Clock::system(), &a, &mut out).await?
            }
        }
        Ok(String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn budgets_are_set_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        // 2026-01-31T12:00Z.
        let time = ManualClock::at(1_769_860_800_000);
        let clock = time.clock();
        let said = run(
            &store,
            &clock,
            &["set", "--team", "ml", "--period", "day", "--usd", "12.50"],
        )
        .await
        .unwrap();
        let id = said
            .strip_prefix("Created budget ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .to_owned();
        assert_eq!(
            said,
            format!(
                "Created budget {id} for team:ml: {} per day (UTC).\nNote: no active key belongs \
                 to team `ml` (names are case-sensitive); this applies to no call until \
                 `keys create --team ml` or `keys update KEY_ID --team ml`.\n",
                format_dollars(12_500_000_000_000)
            )
        );
        let said = run(
            &store,
            &clock,
            &["set", "--team", "ml", "--period", "day", "--usd", "20"],
        )
        .await
        .unwrap();
        assert!(said.starts_with(&format!("Changed budget {id} ")), "{said}");

        // Money leased and spent shows in the current window.
        let ask = LeaseAsk {
            budget_id: &id,
            holder: "h",
            lease_id: None,
            want_picos: 5_000_000_000_000,
            need_picos: 1,
            now_ms: clock.now_ms(),
            ttl_ms: 60_000,
        };
        store.lease(ask).await.unwrap();
        store
            .insert_usage(&[UsageRow {
                request_id: "r".into(),
                key_id: "key_a".into(),
                model: "m".into(),
                provider: "p".into(),
                status: 200,
                input_uncached: 0,
                cache_read: 0,
                cache_write: 0,
                output: 0,
                reasoning: 0,
                estimated: false,
                partial: false,
                cost_picos: 1_000_000_000_000,
                finished_at_ms: clock.now_ms(),
                duration_ms: 1,
                user: None,
                team: Some("ml".into()),
                lease_ids: Vec::new(),
                lease_charge_picos: 0,
                done_lease_ids: Vec::new(),
            }])
            .await
            .unwrap();
        let table = run(&store, &clock, &["list"]).await.unwrap();
        assert_eq!(
            table,
            format!(
                "{id}  team:ml  day  limit={} spent={} leased={} available={}\n",
                format_dollars(20_000_000_000_000),
                format_dollars(1_000_000_000_000),
                format_dollars(5_000_000_000_000),
                format_dollars(14_000_000_000_000),
            )
        );
        let json: serde_json::Value = serde_json::from_str(
            run(&store, &clock, &["list", "--json"])
                .await
                .unwrap()
                .trim(),
        )
        .unwrap();
        assert_eq!(json["available_picos"], 14_000_000_000_000u64);
        assert_eq!(json["window_start_ms"], 1_769_817_600_000i64);
        // The next day the window is fresh.
        time.advance_ms(86_400_000);
        let json: serde_json::Value = serde_json::from_str(
            run(&store, &clock, &["list", "--json"])
                .await
                .unwrap()
                .trim(),
        )
        .unwrap();
        assert_eq!(
            (json["spent_picos"].as_u64(), json["leased_picos"].as_u64()),
            (Some(0), Some(0))
        );

        assert!(
            run(&store, &clock, &["delete", &id])
                .await
                .unwrap()
                .starts_with("Deleted budget")
        );
        let e = run(&store, &clock, &["delete", &id])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&id), "{e}");
        assert_eq!(run(&store, &clock, &["list"]).await.unwrap(), "");
    }

    #[tokio::test]
    async fn a_budget_no_active_key_falls_under_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config::parse(
            "[[providers]]\nname = \"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\nfree = true\n",
            dir.path(),
            |_| None,
        )
        .unwrap();
        let store = Store::open(&config.storage.database_url).await.unwrap();
        let clock = Clock::system();
        let spec = |name: &str| crate::keys::KeySpec {
            name: name.into(),
            models: Vec::new(),
            requests_per_minute: None,
            tokens_per_minute: None,
            user: Some("alice".into()),
            team: Some("ml".into()),
            expires_at_ms: None,
        };
        let kept = crate::keys::create(&store, &config.catalog, &clock, spec("kept"))
            .await
            .unwrap();
        let gone = crate::keys::create(&store, &config.catalog, &clock, spec("gone"))
            .await
            .unwrap();
        crate::keys::revoke(&store, &clock, &gone.row.id)
            .await
            .unwrap();
        let budget = |flag: &str, subject: &str| {
            vec![
                "set".to_owned(),
                flag.to_owned(),
                subject.to_owned(),
                "--period".into(),
                "total".into(),
                "--usd".into(),
                "1".into(),
            ]
        };
        for (argv, note) in [
            (budget("--key", &kept.row.id), None),
            (budget("--user", "alice"), None),
            (budget("--team", "ml"), None),
            (budget("--key", &gone.row.id), Some("is revoked")),
            (
                budget("--user", "Alice"),
                Some("no active key belongs to user `Alice`"),
            ),
            (
                budget("--team", "m1"),
                Some("no active key belongs to team `m1`"),
            ),
        ] {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let said = run(&store, &clock, &argv).await.unwrap();
            assert!(said.contains("$1.000000 in total."), "{said}");
            match note {
                None => assert!(!said.contains("Note:"), "{argv:?}: {said}"),
                Some(note) => assert!(said.contains(note), "{argv:?}: {said}"),
            }
        }
    }

    #[tokio::test]
    async fn lowering_a_limit_under_what_is_out_says_leases_still_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let clock = Clock::system();
        let set = |usd: &'static str| ["set", "--team", "ml", "--period", "day", "--usd", usd];
        let said = run(&store, &clock, &set("10")).await.unwrap();
        let id = store.list_budgets(clock.now_ms()).await.unwrap()[0]
            .budget
            .id
            .clone();
        assert!(!said.contains("leased"), "{said}");
        store
            .lease(LeaseAsk {
                budget_id: &id,
                holder: "h",
                lease_id: None,
                want_picos: 4_000_000_000_000,
                need_picos: 1,
                now_ms: clock.now_ms(),
                ttl_ms: 60_000,
            })
            .await
            .unwrap();
        // Still above what is out: nothing to say.
        let said = run(&store, &clock, &set("5")).await.unwrap();
        assert!(!said.contains("leased"), "{said}");
        let said = run(&store, &clock, &set("1")).await.unwrap();
        assert!(
            said.contains("$4.000000 is leased to gateways")
                && said.contains("until their leases expire"),
            "{said}"
        );
        let said = run(&store, &clock, &["delete", &id]).await.unwrap();
        assert!(said.contains("starts from $0"), "{said}");
    }

    #[tokio::test]
    async fn budget_commands_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let clock = Clock::system();
        let e = run(
            &store,
            &clock,
            &[
                "set", "--key", "key_nope", "--period", "total", "--usd", "1",
            ],
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("key_nope"), "{e}");
        // A sign is refused by the amount's parser, which says why, not taken for a flag.
        let e = parse_error(&["set", "--user", "a", "--period", "day", "--usd", "-3"]);
        assert!(e.contains("`-3` is not an amount in dollars"), "{e}");
        for (argv, flag) in [
            (&["set", "--period", "day", "--usd", "1"][..], "--key"),
            (
                &[
                    "set", "--user", "a", "--team", "b", "--period", "day", "--usd", "1",
                ][..],
                "--team",
            ),
            (
                &["set", "--user", "a", "--period", "week", "--usd", "1"][..],
                "--period",
            ),
            (
                &[
                    "set",
                    "--user",
                    "a",
                    "--period",
                    "day",
                    "--usd",
                    "1.0000000000001",
                ][..],
                "--usd",
            ),
            (
                &["set", "--user", "a", "--period", "day", "--usd", "-3"][..],
                "--usd",
            ),
            (
                &["set", "--user", "a", "--period", "day", "--usd", "99999999"][..],
                "--usd",
            ),
        ] {
            let e = parse_error(argv);
            assert!(e.contains(flag), "{argv:?}: {e}");
        }
    }
}
