//! `tollgate budgets set | list | delete`.

use super::{CliError, DeleteBudgetArgs, ListBudgetsArgs, SetBudgetArgs};
use crate::budgets::Subject;
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
    writeln!(
        out,
        "{} budget {} for {}: {} per {}.",
        if set.created { "Created" } else { "Changed" },
        set.budget.id,
        set.budget.subject,
        format_dollars(set.budget.limit_picos),
        set.budget.period,
    )?;
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
    args: &DeleteBudgetArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if !store.delete_budget(&args.id).await? {
        return Err(CliError::NoSuchBudget(args.id.clone()));
    }
    writeln!(
        out,
        "Deleted budget {}. Gateways stop holding calls against it within their key cache time.",
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
            super::super::BudgetsCommand::Delete(a) => delete(store, &a, &mut out).await?,
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
                "Created budget {id} for team:ml: {} per day.\n",
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
