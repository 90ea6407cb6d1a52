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
