//! The audit log: who changed what, when, and from where, for every change made through
//! the API or the CLI. Entries never hold a secret: targets are ids and names.

use serde::Serialize;

/// The actor and origin of changes made with the `tollgate` command line.
pub const CLI: &str = "cli";

/// One change, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Who: a user's name, or `cli`.
    pub actor: String,
    /// What, as `object.verb`: `user.create`, `key.revoke`, `session.login`.
    pub action: String,
    /// What it was done to: an id or a name, never a secret.
    pub target: String,
    /// Where from: the client's IP address, or `cli`.
    pub from: String,
    /// When, Unix ms.
    pub at_ms: i64,
}

impl AuditEntry {
    /// A change made with the command line at `at_ms`.
    pub fn cli(action: &str, target: &str, at_ms: i64) -> Self {
        Self {
            actor: CLI.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            from: CLI.to_owned(),
            at_ms,
        }
    }
}

/// A stored entry with the id that orders it among entries of the same millisecond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// The entry's id; with `at_ms` the cursor to page past it.
    pub id: String,
    /// The change.
    #[serde(flatten)]
    pub entry: AuditEntry,
}
