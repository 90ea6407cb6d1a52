//! `tollgate secrets …`: the master key that seals provider keys.

use super::CliError;
use crate::audit::AuditEntry;
use crate::catalog::admin::rotate_master;
use crate::clock::Clock;
use crate::config::Config;
use crate::secrets::{Keyring, MasterKey};
use crate::store::Store;
use std::io::Write;

/// `secrets generate-key`: prints a new random master key (base64).
pub(super) fn generate_key(out: &mut impl Write) -> Result<(), CliError> {
    writeln!(out, "{}", MasterKey::generate().to_base64().as_str())?;
    Ok(())
}

/// `secrets rotate-master`: re-wraps every provider key under the configured master key,
/// opening each with the master key or `secrets.previous_master_key_*`. Control planes
/// running meanwhile keep serving: they open keys under either master key.
pub(super) async fn rotate(
    store: &Store,
    config: &Config,
    clock: &Clock,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let keys =
        Keyring::load(config.secrets.clone()).map_err(crate::catalog::admin::CatalogError::from)?;
    let current = keys
        .current()
        .map_err(crate::catalog::admin::CatalogError::from)?;
    let moved = rotate_master(store, &keys).await?;
    // The target is the master key's id: a digest, never the key.
    store
        .record_audit(&AuditEntry::cli(
            "secrets.rotate_master",
            current.id(),
            clock.now_ms(),
        ))
        .await?;
    writeln!(
        out,
        "{moved} provider key(s) re-wrapped; every stored key is now under master key {}.",
        current.id()
    )?;
    if config.secrets.previous.is_some() {
        writeln!(
            out,
            "Once every control plane reads the new master key, remove \
             `secrets.previous_master_key_*` and destroy the old key."
        )?;
    }
    Ok(())
}
