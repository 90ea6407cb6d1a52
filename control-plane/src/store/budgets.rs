//! Budgets in the store: their definitions, their windows' money, the leases of it that
//! Envoys hold, settlement of recorded costs and reclaim of expired leases.
//!
//! Every change of a window's money is one conditional UPDATE, so replicas sharing a
//! PostgreSQL database never over-grant: PostgreSQL locks the row and re-checks the WHERE
//! of a waiting UPDATE, and SQLite has one writer. Transactions take lease rows before
//! window rows, and several of each in sorted order, so two replicas never deadlock.
//! Each transaction starts with a write, so a SQLite reader never has to upgrade.

use super::{Store, StoreError, int, to_i64};
use crate::budgets::{Period, subjects_of};
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, HashMap};

/// The largest value a BIGINT column holds, written into SQL.
const MAX: &str = "9223372036854775807";

/// `column + $param`, saturating at i64::MAX instead of overflowing (`$param` >= 0).
pub(super) fn saturating_add(column: &str, param: &str) -> String {
    format!("CASE WHEN {column} > {MAX} - {param} THEN {MAX} ELSE {column} + {param} END")
}

/// `column - $param`, never below 0 (`$param` >= 0).
pub(super) fn floor_sub(column: &str, param: &str) -> String {
    format!("CASE WHEN {column} < {param} THEN 0 ELSE {column} - {param} END")
}

/// A budget as defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRow {
    /// Stable id, `bud_…`.
    pub id: String,
    /// `key:<id>`, `user:<name>` or `team:<name>`.
    pub subject: String,
    /// How often its money comes back.
    pub period: Period,
    /// Pico-dollars per window.
    pub limit_picos: u64,
}

/// A budget and its money in the window holding some instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    /// The budget.
    pub budget: BudgetRow,
    /// Start of the window, Unix ms (0 for a total budget).
    pub window_start_ms: i64,
    /// Recorded spend in the window.
    pub spent_picos: u64,
    /// Leased to Envoys and not yet settled or reclaimed.
    pub leased_picos: u64,
}

impl BudgetStatus {
    /// Neither spent nor leased: what a new lease could get.
    pub fn available_picos(&self) -> u64 {
        self.budget
            .limit_picos
            .saturating_sub(self.spent_picos)
            .saturating_sub(self.leased_picos)
    }
}

/// What `budgets set` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSet {
    /// The budget as it now is.
    pub budget: BudgetRow,
    /// Whether it is new (else its limit was changed).
    pub created: bool,
}

/// A lease request, validated by the caller (`need <= want`).
#[derive(Debug, Clone, Copy)]
pub struct LeaseAsk<'a> {
    /// The budget.
    pub budget_id: &'a str,
    /// The Envoy asking.
    pub holder: &'a str,
    /// Its open lease to top up, if any.
    pub lease_id: Option<&'a str>,
    /// Pico-dollars it would like added.
    pub want_picos: u64,
    /// The least that serves it.
    pub need_picos: u64,
    /// Now, Unix ms.
    pub now_ms: i64,
    /// How long the lease may be drawn on from now.
    pub ttl_ms: i64,
}

/// A lease as granted or topped up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its id (new when the asked one could not be topped up).
    pub lease_id: String,
    /// Added by this grant.
    pub granted_picos: u64,
    /// All grants of the lease so far.
    pub total_picos: u64,
    /// Until when it may be drawn on, Unix ms.
    pub expires_at_ms: i64,
    /// End of the budget's window, Unix ms; 0 for a total budget.
    pub window_end_ms: i64,
    /// Money neither spent nor leased after the grant.
    pub available_picos: u64,
}

/// The answer to a [`LeaseAsk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Money leased (possibly 0 for a renewal with `need` 0).
    Granted(Lease),
    /// Less than `need` is available in the window.
    Exhausted {
        /// What is available.
        available_picos: u64,
        /// End of the window, Unix ms; 0 for a total budget.
        window_end_ms: i64,
    },
    /// No budget has that id.
    UnknownBudget,
}

/// A lease closed by reclaim, and the money it gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    /// The lease.
    pub lease_id: String,
    /// Its budget.
    pub budget_id: String,
    /// Granted and never used: back to the window.
    pub returned_picos: u64,
}

fn budget_row(row: &sqlx::any::AnyRow) -> Result<BudgetRow, StoreError> {
    let period: String = row.try_get("period")?;
    let limit: i64 = row.try_get("limit_picos")?;
    Ok(BudgetRow {
        id: row.try_get("id")?,
        subject: row.try_get("subject")?,
        period: period
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        limit_picos: u64::try_from(limit).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

/// A money column (never negative by construction; a negative one reads as 0).
pub(super) fn money(row: &sqlx::any::AnyRow, column: &str) -> Result<u64, StoreError> {
    Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
}

/// `(SELECT limit) - spent - leased` of the window row being updated: cannot overflow, as
/// leased never passes the limit and spent saturates.
const AVAILABLE: &str =
    "((SELECT limit_picos FROM budgets WHERE id = $1) - spent_picos - leased_picos)";

/// Creates a window row if it is not there yet: idempotent across replicas.
async fn open_window(
    conn: &mut AnyConnection,
    budget_id: &str,
    start_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO budget_windows (budget_id, window_start_ms) VALUES ($1, $2) \
         ON CONFLICT (budget_id, window_start_ms) DO NOTHING",
    )
    .bind(budget_id)
    .bind(start_ms)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Sets the limit of `subject`'s budget for `period`, creating it if needed.
    pub async fn set_budget(
        &self,
        subject: &str,
        period: Period,
        limit_picos: u64,
        now_ms: i64,
    ) -> Result<BudgetSet, StoreError> {
        let limit = to_i64("the budget's limit", limit_picos)?;
        let id = format!("bud_{}", hex::encode(rand::random::<[u8; 8]>()));
        let row = sqlx::query(
            "INSERT INTO budgets (id, subject, period, limit_picos, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (subject, period) DO UPDATE SET limit_picos = excluded.limit_picos \
             RETURNING id, subject, period, limit_picos",
        )
        .bind(&id)
        .bind(subject)
        .bind(period.as_str())
        .bind(limit)
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        let budget = budget_row(&row)?;
        Ok(BudgetSet {
            created: budget.id == id,
            budget,
        })
    }

    /// Deletes a budget with its windows and leases; `false` if there was none.
    pub async fn delete_budget(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM budgets WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM budget_leases WHERE budget_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM budget_windows WHERE budget_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The budget with this id.
    pub async fn budget(&self, id: &str) -> Result<Option<BudgetRow>, StoreError> {
        let row = sqlx::query("SELECT id, subject, period, limit_picos FROM budgets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(budget_row).transpose()
    }

    /// Every budget with its money in the window holding `at_ms`, by subject and period.
    pub async fn list_budgets(&self, at_ms: i64) -> Result<Vec<BudgetStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, subject, period, limit_picos FROM budgets ORDER BY subject, period, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let windows = sqlx::query(
            "SELECT budget_id, window_start_ms, spent_picos, leased_picos FROM budget_windows",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut money_of = HashMap::new();
        for w in &windows {
            let key: (String, i64) = (w.try_get("budget_id")?, w.try_get("window_start_ms")?);
            money_of.insert(key, (money(w, "spent_picos")?, money(w, "leased_picos")?));
        }
        rows.iter()
            .map(|row| {
                let budget = budget_row(row)?;
                let window_start_ms = budget.period.window(at_ms).start_ms;
                let (spent_picos, leased_picos) = money_of
                    .get(&(budget.id.clone(), window_start_ms))
                    .copied()
                    .unwrap_or((0, 0));
                Ok(BudgetStatus {
                    budget,
                    window_start_ms,
                    spent_picos,
                    leased_picos,
                })
            })
            .collect()
    }

    /// Leases money of a budget's current window to a holder, or tops up its open lease:
    /// between `need` and `want`, never more than the window has left.
    pub async fn lease(&self, ask: LeaseAsk<'_>) -> Result<LeaseOutcome, StoreError> {
        let want = to_i64("want_picos", ask.want_picos)?;
        let need = to_i64("need_picos", ask.need_picos)?;
        let Some(budget) = self.budget(ask.budget_id).await? else {
            return Ok(LeaseOutcome::UnknownBudget);
        };
        let window = budget.period.window(ask.now_ms);
        let expires_at_ms = ask.now_ms.saturating_add(ask.ttl_ms);
        open_window(
            &mut *self.pool.acquire().await?,
            &budget.id,
            window.start_ms,
        )
        .await?;

        let mut tx = self.pool.begin().await?;
        // A top-up extends the lease first: once extended, a racing reclaim no longer
        // matches it (its WHERE is re-checked after the row lock).
        let topped = match ask.lease_id.filter(|id| !id.is_empty()) {
            None => None,
            Some(id) => sqlx::query(
                "UPDATE budget_leases SET expires_at_ms = $1 \
                 WHERE lease_id = $2 AND budget_id = $3 AND window_start_ms = $4 \
                 AND holder = $5 AND closed = 0 AND expires_at_ms >= $6 \
                 RETURNING lease_id",
            )
            .bind(expires_at_ms)
            .bind(id)
            .bind(&budget.id)
            .bind(window.start_ms)
            .bind(ask.holder)
            .bind(ask.now_ms)
            .fetch_optional(&mut *tx)
            .await?
            .map(|_| id.to_owned()),
        };
        let granted = sqlx::query(&format!(
            "UPDATE budget_windows SET \
             leased_picos = leased_picos + (CASE WHEN {AVAILABLE} < $3 THEN {AVAILABLE} ELSE $3 END), \
             last_grant_picos = (CASE WHEN {AVAILABLE} < $3 THEN {AVAILABLE} ELSE $3 END) \
             WHERE budget_id = $1 AND window_start_ms = $2 AND {AVAILABLE} >= $4 \
             RETURNING last_grant_picos, spent_picos, leased_picos"
        ))
        .bind(&budget.id)
        .bind(window.start_ms)
        .bind(want)
        .bind(need)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(granted) = granted else {
            tx.rollback().await?;
            let available_picos = self
                .budget_status(&budget, window.start_ms)
                .await?
                .available_picos();
            return Ok(LeaseOutcome::Exhausted {
                available_picos,
                window_end_ms: window.end_ms,
            });
        };
        let grant: i64 = granted.try_get("last_grant_picos")?;
        let available_picos = budget
            .limit_picos
            .saturating_sub(money(&granted, "spent_picos")?)
            .saturating_sub(money(&granted, "leased_picos")?);
        let (lease_id, total) = match topped {
            Some(id) => {
                let row = sqlx::query(&format!(
                    "UPDATE budget_leases SET granted_picos = {} WHERE lease_id = $2 \
                     RETURNING granted_picos",
                    saturating_add("granted_picos", "$1")
                ))
                .bind(grant)
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
                (id, money(&row, "granted_picos")?)
            }
            None => {
                let id = format!("lease_{}", hex::encode(rand::random::<[u8; 12]>()));
                sqlx::query(
                    "INSERT INTO budget_leases \
                     (lease_id, budget_id, window_start_ms, holder, granted_picos, expires_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(&budget.id)
                .bind(window.start_ms)
                .bind(ask.holder)
                .bind(grant)
                .bind(expires_at_ms)
                .execute(&mut *tx)
                .await?;
                (id, u64::try_from(grant).unwrap_or(0))
            }
        };
        tx.commit().await?;
        Ok(LeaseOutcome::Granted(Lease {
            lease_id,
            granted_picos: u64::try_from(grant).unwrap_or(0),
            total_picos: total,
            expires_at_ms,
            window_end_ms: window.end_ms,
            available_picos,
        }))
    }

    /// A budget's money in the window starting at `start_ms`.
    async fn budget_status(
        &self,
        budget: &BudgetRow,
        start_ms: i64,
    ) -> Result<BudgetStatus, StoreError> {
        let row = sqlx::query(
            "SELECT spent_picos, leased_picos FROM budget_windows \
             WHERE budget_id = $1 AND window_start_ms = $2",
        )
        .bind(&budget.id)
        .bind(start_ms)
        .fetch_optional(&self.pool)
        .await?;
        let (spent_picos, leased_picos) = match row {
            Some(r) => (money(&r, "spent_picos")?, money(&r, "leased_picos")?),
            None => (0, 0),
        };
        Ok(BudgetStatus {
            budget: budget.clone(),
            window_start_ms: start_ms,
            spent_picos,
            leased_picos,
        })
    }

    /// Closes every open lease whose `expires_at_ms` is before `cutoff_ms` and returns
    /// its unused money to its window. Each lease is closed by exactly one caller, however
    /// many replicas sweep at once.
    pub async fn reclaim_expired(&self, cutoff_ms: i64) -> Result<Vec<Reclaimed>, StoreError> {
        let candidates = sqlx::query(
            "SELECT lease_id FROM budget_leases WHERE closed = 0 AND expires_at_ms < $1 \
             ORDER BY expires_at_ms, lease_id LIMIT 1000",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut reclaimed = Vec::new();
        for candidate in candidates {
            let lease_id: String = candidate.try_get("lease_id")?;
            let mut tx = self.pool.begin().await?;
            let closed = sqlx::query(
                "UPDATE budget_leases SET closed = 1 \
                 WHERE lease_id = $1 AND closed = 0 AND expires_at_ms < $2 \
                 RETURNING budget_id, window_start_ms, granted_picos, used_picos",
            )
            .bind(&lease_id)
            .bind(cutoff_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(closed) = closed else {
                // Another replica closed it, or its holder renewed it meanwhile.
                tx.rollback().await?;
                continue;
            };
            let budget_id: String = closed.try_get("budget_id")?;
            let returned =
                money(&closed, "granted_picos")?.saturating_sub(money(&closed, "used_picos")?);
            sqlx::query(&format!(
                "UPDATE budget_windows SET leased_picos = {} \
                 WHERE budget_id = $2 AND window_start_ms = $3",
                floor_sub("leased_picos", "$1")
            ))
            .bind(to_i64("returned_picos", returned)?)
            .bind(&budget_id)
            .bind(closed.try_get::<i64, _>("window_start_ms")?)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            reclaimed.push(Reclaimed {
                lease_id,
                budget_id,
                returned_picos: returned,
            });
        }
        Ok(reclaimed)
    }

    /// A lease's grant, use and state, for tests and inspection.
    pub async fn lease_state(
        &self,
        lease_id: &str,
    ) -> Result<Option<(u64, u64, bool)>, StoreError> {
        let row = sqlx::query(
            "SELECT granted_picos, used_picos, closed FROM budget_leases WHERE lease_id = $1",
        )
        .bind(lease_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                money(&r, "granted_picos")?,
                money(&r, "used_picos")?,
                int(&r, "closed")? != 0,
            ))
        })
        .transpose()
    }
}

/// Charges each new usage row's cost, in the transaction that stored it: per budget of
/// its key, user and team, `spent += cost` in the window of the lease the row names for
/// that budget (or of its finish time); a named open lease's `used` grows by what its
/// grant covered of the larger of the cost and what the Envoy charged it, and that much
/// leaves the window's `leased`.
pub(super) async fn settle(
    conn: &mut AnyConnection,
    rows: &[&super::UsageRow],
) -> Result<(), StoreError> {
    // A call that cost nothing may still have charged a lease or be done with one.
    let charged: Vec<&super::UsageRow> = rows
        .iter()
        .copied()
        .filter(|r| r.cost_picos > 0 || r.lease_charge_picos > 0 || !r.done_lease_ids.is_empty())
        .collect();
    if charged.is_empty() {
        return Ok(());
    }
    let mut subjects: Vec<String> = charged
        .iter()
        .flat_map(|r| {
            subjects_of(
                &r.key_id,
                r.user.as_deref().unwrap_or(""),
                r.team.as_deref().unwrap_or(""),
            )
        })
        .collect();
    subjects.sort();
    subjects.dedup();
    let mut lease_ids: Vec<&str> = charged
        .iter()
        .flat_map(|r| r.lease_ids.iter().map(String::as_str))
        .collect();
    lease_ids.sort_unstable();
    lease_ids.dedup();

    let budgets = budgets_of(conn, &subjects).await?;
    let leases = leases_of(conn, &lease_ids).await?;
    if budgets.is_empty() {
        return Ok(());
    }

    // Draws on leases, by lease id (in order), and spend per window (in order): the
    // spend is the cost, the draw what the Envoy charged the lease (see `lease_charge`).
    let mut draws: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    // Leases drawn on by one call alone: closed once drawn on.
    let mut done: Vec<&str> = Vec::new();
    let mut spend: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for r in &charged {
        let cost = r.cost_picos;
        let own = subjects_of(
            &r.key_id,
            r.user.as_deref().unwrap_or(""),
            r.team.as_deref().unwrap_or(""),
        );
        let applies = |budget_id: &str| {
            budgets
                .iter()
                .any(|b| b.id == budget_id && own.contains(&b.subject))
        };
        let mut covered = Vec::new();
        let mut named: Vec<&str> = r.lease_ids.iter().map(String::as_str).collect();
        named.sort_unstable();
        named.dedup();
        for id in named {
            if let Some((budget_id, window_start)) = leases.get(id) {
                // One charge per budget per call, even if it names two of its leases; a
                // lease of a budget that does not apply to the call is not drawn on (its
                // holder's grant would be used up by a call it never admitted).
                if covered.contains(&budget_id.as_str()) || !applies(budget_id) {
                    continue;
                }
                covered.push(budget_id.as_str());
                // The lease gives up what the Envoy charged it, if more than the cost:
                // the Envoy no longer counts that money as free on its lease.
                draws
                    .entry(id)
                    .or_default()
                    .push(cost.max(r.lease_charge_picos));
                if r.done_lease_ids.iter().any(|d| d == id) {
                    done.push(id);
                }
                let entry = spend.entry((budget_id.clone(), *window_start)).or_default();
                entry.0 = entry.0.saturating_add(cost);
            }
        }
        for b in budgets.iter().filter(|b| own.contains(&b.subject)) {
            if covered.contains(&b.id.as_str()) {
                continue;
            }
            let start = b.period.window(r.finished_at_ms).start_ms;
            let entry = spend.entry((b.id.clone(), start)).or_default();
            entry.0 = entry.0.saturating_add(cost);
        }
    }
    for (lease_id, costs) in &draws {
        let Some((budget_id, window_start)) = leases.get(*lease_id) else {
            continue;
        };
        for cost in costs {
            // The grant covers at most what is left of it; the rest of the cost is an
            // overrun, charged to spent alone. A draw above the call's cost leaves leased
            // without being spent: that money is free again.
            let drawn = sqlx::query(
                "UPDATE budget_leases SET \
                 used_picos = used_picos + (CASE WHEN granted_picos - used_picos < $1 \
                   THEN granted_picos - used_picos ELSE $1 END), \
                 last_drawn_picos = (CASE WHEN granted_picos - used_picos < $1 \
                   THEN granted_picos - used_picos ELSE $1 END) \
                 WHERE lease_id = $2 AND closed = 0 RETURNING last_drawn_picos",
            )
            .bind(*cost)
            .bind(*lease_id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(drawn) = drawn {
                let drawn: i64 = drawn.try_get("last_drawn_picos")?;
                let entry = spend.entry((budget_id.clone(), *window_start)).or_default();
                entry.1 = entry.1.saturating_add(drawn.max(0));
            }
        }
        if done.contains(lease_id) {
            // No Envoy draws on it again: what is left of its grant is free now.
            let closed = sqlx::query(
                "UPDATE budget_leases SET closed = 1 WHERE lease_id = $1 AND closed = 0 \
                 RETURNING granted_picos, used_picos",
            )
            .bind(*lease_id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(closed) = closed {
                let unused =
                    money(&closed, "granted_picos")?.saturating_sub(money(&closed, "used_picos")?);
                let entry = spend.entry((budget_id.clone(), *window_start)).or_default();
                entry.1 = entry
                    .1
                    .saturating_add(i64::try_from(unused).unwrap_or(i64::MAX));
            }
        }
    }
    for ((budget_id, start), (spent, released)) in &spend {
        open_window(&mut *conn, budget_id, *start).await?;
        sqlx::query(&format!(
            "UPDATE budget_windows SET spent_picos = {}, leased_picos = {} \
             WHERE budget_id = $3 AND window_start_ms = $4",
            saturating_add("spent_picos", "$1"),
            floor_sub("leased_picos", "$2"),
        ))
        .bind(*spent)
        .bind(*released)
        .bind(budget_id)
        .bind(*start)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// `n` placeholders from `$from`: `$from, $from+1, …`.
fn placeholders(from: usize, n: usize) -> String {
    let list: Vec<String> = (from..from + n).map(|i| format!("${i}")).collect();
    list.join(", ")
}

/// The budgets of these subjects.
async fn budgets_of(
    conn: &mut AnyConnection,
    subjects: &[String],
) -> Result<Vec<BudgetRow>, StoreError> {
    let mut found = Vec::new();
    // Bounded statements: a batch may name many subjects.
    for chunk in subjects.chunks(500) {
        let sql = format!(
            "SELECT id, subject, period, limit_picos FROM budgets WHERE subject IN ({}) \
             ORDER BY subject, period",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for s in chunk {
            query = query.bind(s);
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.push(budget_row(&row)?);
        }
    }
    Ok(found)
}

/// The budget and window of each of these leases that exists.
async fn leases_of(
    conn: &mut AnyConnection,
    lease_ids: &[&str],
) -> Result<HashMap<String, (String, i64)>, StoreError> {
    let mut found = HashMap::new();
    // Bounded statements: a batch may name many leases.
    for chunk in lease_ids.chunks(500) {
        let sql = format!(
            "SELECT lease_id, budget_id, window_start_ms FROM budget_leases \
             WHERE lease_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.insert(
                row.try_get("lease_id")?,
                (row.try_get("budget_id")?, row.try_get("window_start_ms")?),
            );
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
