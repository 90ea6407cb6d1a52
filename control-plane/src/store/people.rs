//! Users, their sessions, and the failed-login counters in the store.

use super::{Store, StoreError};
use crate::users::Role;
use sqlx::Row;

/// A user as stored (the password only as its Argon2id hash).
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Stable id, e.g. `usr_3f2a…`.
    pub id: String,
    /// Unique name, the one keys and budgets carry.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// When the user was disabled, if they are.
    pub disabled_at_ms: Option<i64>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash stays out of logs: it is what an offline guesser needs.
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_at_ms", &self.created_at_ms)
            .field("disabled_at_ms", &self.disabled_at_ms)
            .finish_non_exhaustive()
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The id the signed token names.
    pub id: String,
    /// Whose session it is.
    pub user_id: String,
    /// When it was opened, Unix ms.
    pub created_at_ms: i64,
    /// When it ends unless refreshed, Unix ms.
    pub expires_at_ms: i64,
}

/// Columns of `users` that [`user_row`] reads.
const USER_COLUMNS: &str = "id, name, role, password_hash, created_at_ms, disabled_at_ms";

impl Store {
    /// Stores a new user; `false` if the name is taken.
    pub async fn insert_user(&self, user: &UserRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO users (id, name, role, password_hash, created_at_ms, disabled_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(user.created_at_ms)
        .bind(user.disabled_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The user with this name.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_row).transpose()
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_row).transpose()
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_row).collect()
    }

    /// Gives the user a role; `false` if no user has this id.
    pub async fn set_user_role(&self, id: &str, role: Role) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the user's password hash and ends their sessions (whoever knew the old
    /// password is signed out); `false` if no user has this id.
    pub async fn set_user_password(
        &self,
        id: &str,
        password_hash: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        revoke_sessions_of(&mut tx, id, at_ms).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables (`Some(at)`) or enables (`None`) the user; disabling also ends their
    /// sessions. `false` if no user has this id.
    pub async fn set_user_disabled(
        &self,
        id: &str,
        disabled_at_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled_at_ms = $1 WHERE id = $2")
            .bind(disabled_at_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if let Some(at_ms) = disabled_at_ms {
            revoke_sessions_of(&mut tx, id, at_ms).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores a new session.
    pub async fn insert_session(&self, session: &SessionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&session.id)
        .bind(&session.user_id)
        .bind(session.created_at_ms)
        .bind(session.expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this id and its user, if the session is unrevoked and unexpired at
    /// `now_ms` and its user is enabled: what a request's signed token must still name.
    pub async fn live_session(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<(SessionRow, UserRow)>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id AS session_id, s.user_id, s.created_at_ms AS session_created_at_ms, \
                    s.expires_at_ms, u.id, u.name, u.role, u.password_hash, u.created_at_ms, \
                    u.disabled_at_ms \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id = $1 AND s.revoked_at_ms IS NULL AND s.expires_at_ms > $2 \
               AND u.disabled_at_ms IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let session = SessionRow {
            id: row.try_get("session_id")?,
            user_id: row.try_get("user_id")?,
            created_at_ms: row.try_get("session_created_at_ms")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
        };
        Ok(Some((session, user_row(&row)?)))
    }

    /// Moves a live session's end to `expires_at_ms` (a refresh); `false` if it is revoked.
    pub async fn extend_session(&self, id: &str, expires_at_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET expires_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(expires_at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a session; `false` if it was already ended or never existed.
    pub async fn revoke_session(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every session of a user; returns how many were live.
    pub async fn revoke_user_sessions(&self, user_id: &str, at_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ended = revoke_sessions_of(&mut tx, user_id, at_ms).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Counts one failed login against `subject` in fixed windows of `window_ms` and
    /// returns the failures in the current window, this one included.
    pub async fn count_login_failure(
        &self,
        subject: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<u64, StoreError> {
        // One statement, so replicas counting at once never lose a failure.
        let row = sqlx::query(
            "INSERT INTO login_failures (subject, window_start_ms, failures) VALUES ($1, $2, 1) \
             ON CONFLICT (subject) DO UPDATE SET \
               failures = CASE WHEN login_failures.window_start_ms <= $2 - $3 THEN 1 \
                               ELSE login_failures.failures + 1 END, \
               window_start_ms = CASE WHEN login_failures.window_start_ms <= $2 - $3 THEN $2 \
                                      ELSE login_failures.window_start_ms END \
             RETURNING failures",
        )
        .bind(subject)
        .bind(now_ms)
        .bind(window_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(super::unsigned(&row, "failures")?.unwrap_or(0))
    }

    /// The failed logins of `subject` in the window that holds `now_ms`.
    pub async fn login_failures(
        &self,
        subject: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT failures FROM login_failures WHERE subject = $1 AND window_start_ms > $2 - $3",
        )
        .bind(subject)
        .bind(now_ms)
        .bind(window_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => super::unsigned(&row, "failures")?.unwrap_or(0),
            None => 0,
        })
    }

    /// Forgets the failed logins of `subject` (after a successful login).
    pub async fn clear_login_failures(&self, subject: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE subject = $1")
            .bind(subject)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Ends the live sessions of `user_id` inside `tx`; returns how many.
async fn revoke_sessions_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    at_ms: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at_ms = $1 WHERE user_id = $2 AND revoked_at_ms IS NULL",
    )
    .bind(at_ms)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

fn user_row(row: &sqlx::any::AnyRow) -> Result<UserRow, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(UserRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: role.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        password_hash: row.try_get("password_hash")?,
        created_at_ms: row.try_get("created_at_ms")?,
        disabled_at_ms: row.try_get("disabled_at_ms")?,
    })
}

#[cfg(test)]
mod tests;
