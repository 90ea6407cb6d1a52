//! Provider keys encrypted at rest, by envelope encryption.
//!
//! Each secret is sealed with its own random 256-bit data key (AES-256-GCM, random nonce,
//! the provider's name as associated data, so a sealed key copied onto another provider's
//! row does not open). The data key is wrapped by the master key (AES-256-GCM again) and
//! stored beside the ciphertext with the master key's id. The master key never reaches the
//! database: it comes from an environment variable or a file (`[secrets]`).
//!
//! Rotating the master key re-wraps only the data keys ([`Keyring::rewrap`]); the
//! ciphertexts stay as they are. A [`Keyring`] opens secrets wrapped by the master key or
//! by the previous one, picked by id, and reads a key file again when it meets an id it
//! does not know, so a running control plane follows a rotation without a restart.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use thiserror::Error;
use zeroize::Zeroizing;

/// Bytes of a master key and of a data key.
const KEY_BYTES: usize = 32;
/// Bytes of an AES-GCM nonce.
const NONCE_BYTES: usize = 12;

/// Why a secret could not be sealed or opened, or a master key not loaded.
#[derive(Debug, Error)]
pub enum SecretsError {
    /// A master key is not 32 bytes written as hex or base64.
    #[error(
        "{origin} must hold a 32-byte key as 64 hex digits or base64 (e.g. `openssl rand -base64 32`)"
    )]
    BadMasterKey {
        /// Where the key came from (a variable or a file, never the value).
        origin: String,
    },
    /// A master key file could not be read.
    #[error("cannot read the master key file {path}: {source}")]
    ReadKeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No master key is configured, so no secret can be sealed or opened.
    #[error(
        "no master key is configured: set TOLLGATE_MASTER_KEY or `secrets.master_key_file` to store provider keys"
    )]
    NoMasterKey,
    /// The secret's data key was wrapped by a master key this process does not have.
    #[error(
        "sealed under master key {0}, which is neither the master key nor `secrets.previous_master_key_*`"
    )]
    UnknownMasterKey(String),
    /// The stored secret does not open: altered, truncated, or sealed for another name.
    #[error("the sealed secret is damaged or belongs to another provider")]
    Damaged,
}

/// A 256-bit master key and its id; its `Debug` shows only the id.
pub struct MasterKey {
    id: String,
    key: Zeroizing<[u8; KEY_BYTES]>,
}

impl MasterKey {
    /// Parses a key written as 64 hex digits or as base64 (standard or URL-safe, padded or
    /// not); `origin` names where it came from in the error.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SecretsError> {
        let text = text.trim();
        let bad = || SecretsError::BadMasterKey {
            origin: origin.to_owned(),
        };
        let bytes = Zeroizing::new(if text.len() == 2 * KEY_BYTES {
            hex::decode(text).map_err(|_| bad())?
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
                .ok_or_else(bad)?
        });
        let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| bad())?;
        Ok(Self::from_bytes(key))
    }

    /// A new random key.
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    fn from_bytes(key: [u8; KEY_BYTES]) -> Self {
        let key = Zeroizing::new(key);
        // A one-way digest: it names the key in rows and messages without revealing it.
        let digest = Sha256::new()
            .chain_update(b"tollgate master key id\0")
            .chain_update(key.as_slice())
            .finalize();
        Self {
            id: format!("mk_{}", hex::encode(&digest[..8])),
            key,
        }
    }

    /// The key's id, stored with every data key it wraps.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as base64, to write into a key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.key.as_slice()))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.key.as_slice()))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A secret as stored: all of it safe to keep in the database and none of it the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The secret encrypted by its data key, base64.
    pub ciphertext: String,
    /// The nonce of `ciphertext`, base64.
    pub nonce: String,
    /// The data key encrypted by the master key: nonce then ciphertext, base64.
    pub wrapped_key: String,
    /// Id of the master key that wrapped the data key.
    pub master_key_id: String,
    /// What people see of the secret: `sha256:` and 12 hex digits of its digest.
    pub fingerprint: String,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("master_key_id", &self.master_key_id)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// What people see of `secret`: enough to tell two keys apart, nothing to use.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..12])
}

/// Seals `secret` for `name` (its associated data) under `master`.
pub fn seal(master: &MasterKey, name: &str, secret: &str) -> Result<SealedSecret, SecretsError> {
    let data_key = MasterKey::from_bytes(rand::random());
    let nonce: [u8; NONCE_BYTES] = rand::random();
    let ciphertext = data_key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret.as_bytes(),
                aad: name.as_bytes(),
            },
        )
        .map_err(|_| SecretsError::Damaged)?;
    Ok(SealedSecret {
        ciphertext: STANDARD.encode(ciphertext),
        nonce: STANDARD.encode(nonce),
        wrapped_key: wrap(master, &data_key)?,
        master_key_id: master.id.clone(),
        fingerprint: fingerprint(secret),
    })
}

/// Opens a secret sealed for `name` under `master`.
pub fn open(
    master: &MasterKey,
    name: &str,
    sealed: &SealedSecret,
) -> Result<Zeroizing<String>, SecretsError> {
    if sealed.master_key_id != master.id {
        return Err(SecretsError::UnknownMasterKey(sealed.master_key_id.clone()));
    }
    let data_key = unwrap(master, &sealed.wrapped_key)?;
    let nonce: [u8; NONCE_BYTES] = decode(&sealed.nonce)?
        .as_slice()
        .try_into()
        .map_err(|_| SecretsError::Damaged)?;
    let plain = Zeroizing::new(
        data_key
            .cipher()
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &decode(&sealed.ciphertext)?,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Damaged)?,
    );
    let text = std::str::from_utf8(&plain).map_err(|_| SecretsError::Damaged)?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// The data key encrypted by `master` (associated data: the master key's id), as
/// base64 of nonce then ciphertext.
fn wrap(master: &MasterKey, data_key: &MasterKey) -> Result<String, SecretsError> {
    let nonce: [u8; NONCE_BYTES] = rand::random();
    let wrapped = master
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: data_key.key.as_slice(),
                aad: master.id.as_bytes(),
            },
        )
        .map_err(|_| SecretsError::Damaged)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&wrapped);
    Ok(STANDARD.encode(out))
}

fn unwrap(master: &MasterKey, wrapped: &str) -> Result<MasterKey, SecretsError> {
    let wrapped = decode(wrapped)?;
    if wrapped.len() <= NONCE_BYTES {
        return Err(SecretsError::Damaged);
    }
    let (nonce, ciphertext) = wrapped.split_at(NONCE_BYTES);
    let key = Zeroizing::new(
        master
            .cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: master.id.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Damaged)?,
    );
    let key: [u8; KEY_BYTES] = key
        .as_slice()
        .try_into()
        .map_err(|_| SecretsError::Damaged)?;
    Ok(MasterKey::from_bytes(key))
}

fn decode(text: &str) -> Result<Vec<u8>, SecretsError> {
    STANDARD.decode(text).map_err(|_| SecretsError::Damaged)
}

/// Where a master key comes from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// An environment variable, read once at start (its value kept here).
    Env {
        /// The variable's name.
        var: String,
        /// The key it held.
        key: Arc<MasterKey>,
    },
    /// A file, read again whenever its key may have changed (a rotation).
    File {
        /// The file.
        path: PathBuf,
    },
}

impl MasterKeySource {
    /// The key as the source holds it now.
    pub fn load(&self) -> Result<Arc<MasterKey>, SecretsError> {
        match self {
            MasterKeySource::Env { key, .. } => Ok(Arc::clone(key)),
            MasterKeySource::File { path } => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    SecretsError::ReadKeyFile {
                        path: path.clone(),
                        source,
                    }
                })?);
                let origin = format!("the master key file {}", path.display());
                Ok(Arc::new(MasterKey::parse(&text, &origin)?))
            }
        }
    }
}

impl fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterKeySource::Env { var, key } => write!(f, "Env({var}, {})", key.id()),
            MasterKeySource::File { path } => write!(f, "File({})", path.display()),
        }
    }
}

impl PartialEq for MasterKeySource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Env { var: a, key: ka }, Self::Env { var: b, key: kb }) => {
                a == b && ka.id() == kb.id()
            }
            (Self::File { path: a }, Self::File { path: b }) => a == b,
            _ => false,
        }
    }
}

impl Eq for MasterKeySource {}

/// The master key sources of `[secrets]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsSettings {
    /// The key new secrets are sealed under; `None`: provider keys cannot be stored.
    pub master: Option<MasterKeySource>,
    /// The key before the last rotation, still opened until every secret is re-wrapped.
    pub previous: Option<MasterKeySource>,
}

/// The master keys a process seals and opens with: the configured ones, and every key it
/// has loaded since start (a key file replaced mid-rotation still opens what it wrapped).
#[derive(Debug)]
pub struct Keyring {
    settings: SecretsSettings,
    known: Mutex<HashMap<String, Arc<MasterKey>>>,
}

impl Keyring {
    /// Loads the keys `settings` names; a configured source that fails is an error.
    pub fn load(settings: SecretsSettings) -> Result<Self, SecretsError> {
        let ring = Self {
            settings,
            known: Mutex::default(),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// A keyring with no master key: it refuses to seal or open (tests, `check-config`).
    pub fn empty() -> Self {
        Self {
            settings: SecretsSettings::default(),
            known: Mutex::default(),
        }
    }

    /// Reads every configured source again and remembers what it holds.
    fn reload(&self) -> Result<(), SecretsError> {
        for source in [&self.settings.master, &self.settings.previous]
            .into_iter()
            .flatten()
        {
            self.remember(source.load()?);
        }
        Ok(())
    }

    fn remember(&self, key: Arc<MasterKey>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.insert(key.id().to_owned(), key);
    }

    /// The master key as its source holds it now (a key file is read again).
    pub fn current(&self) -> Result<Arc<MasterKey>, SecretsError> {
        let source = self
            .settings
            .master
            .as_ref()
            .ok_or(SecretsError::NoMasterKey)?;
        let key = source.load()?;
        self.remember(Arc::clone(&key));
        Ok(key)
    }

    /// The master key with this id: one already loaded, or else one the sources hold now.
    fn by_id(&self, id: &str) -> Result<Arc<MasterKey>, SecretsError> {
        let known = |ring: &Self| {
            let known = ring.known.lock().unwrap_or_else(PoisonError::into_inner);
            known.get(id).cloned()
        };
        if let Some(key) = known(self) {
            return Ok(key);
        }
        if self.settings.master.is_none() {
            return Err(SecretsError::NoMasterKey);
        }
        self.reload()?;
        known(self).ok_or_else(|| SecretsError::UnknownMasterKey(id.to_owned()))
    }

    /// Seals `secret` for `name` under the current master key.
    pub fn seal(&self, name: &str, secret: &str) -> Result<SealedSecret, SecretsError> {
        seal(&*self.current()?, name, secret)
    }

    /// Opens a secret sealed for `name`, under whichever known master key wrapped it.
    pub fn open(
        &self,
        name: &str,
        sealed: &SealedSecret,
    ) -> Result<Zeroizing<String>, SecretsError> {
        open(&*self.by_id(&sealed.master_key_id)?, name, sealed)
    }

    /// `sealed` with its data key wrapped by the current master key instead, or `None`
    /// when it already is; the ciphertext is unchanged.
    pub fn rewrap(&self, sealed: &SealedSecret) -> Result<Option<SealedSecret>, SecretsError> {
        let current = self.current()?;
        if sealed.master_key_id == current.id() {
            return Ok(None);
        }
        let data_key = unwrap(&*self.by_id(&sealed.master_key_id)?, &sealed.wrapped_key)?;
        Ok(Some(SealedSecret {
            wrapped_key: wrap(&current, &data_key)?,
            master_key_id: current.id().to_owned(),
            ..sealed.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_source(dir: &std::path::Path, name: &str, key: &MasterKey) -> MasterKeySource {
        let path = dir.join(name);
        std::fs::write(&path, key.to_base64().as_bytes()).unwrap();
        MasterKeySource::File { path }
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_name_and_master_key() {
        let master = MasterKey::generate();
        let sealed = seal(&master, "openai", "sk-live-123").unwrap();
        assert_eq!(&*open(&master, "openai", &sealed).unwrap(), "sk-live-123");
        assert!(matches!(
            open(&master, "anthropic", &sealed),
            Err(SecretsError::Damaged)
        ));
        let other = MasterKey::generate();
        assert!(matches!(
            open(&other, "openai", &sealed),
            Err(SecretsError::UnknownMasterKey(id)) if id == master.id()
        ));
        let mut flipped = sealed.clone();
        let mut bytes = STANDARD.decode(&flipped.ciphertext).unwrap();
        bytes[0] ^= 1;
        flipped.ciphertext = STANDARD.encode(bytes);
        assert!(matches!(
            open(&master, "openai", &flipped),
            Err(SecretsError::Damaged)
        ));
    }

    #[test]
    fn nothing_stored_or_printed_holds_the_secret_or_the_keys() {
        let master = MasterKey::generate();
        let secret = "sk-proj-abcdefghijklmnop";
        let a = seal(&master, "p", secret).unwrap();
        let b = seal(&master, "p", secret).unwrap();
        assert_ne!(
            a.ciphertext, b.ciphertext,
            "a fresh data key and nonce each time"
        );
        assert_ne!(a.wrapped_key, b.wrapped_key);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint, fingerprint(secret));
        assert!(a.fingerprint.starts_with("sha256:") && a.fingerprint.len() == 19);
        let stored = [
            &a.ciphertext,
            &a.nonce,
            &a.wrapped_key,
            &a.master_key_id,
            &a.fingerprint,
        ];
        let printed = format!("{a:?} {master:?}");
        let master_text = master.to_base64();
        for text in stored.iter().map(|s| s.as_str()).chain([printed.as_str()]) {
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains("abcdefgh"), "{text}");
            assert!(!text.contains(master_text.as_str()), "{text}");
        }
    }

    #[test]
    fn a_master_key_is_hex_or_base64_of_32_bytes() {
        let bytes = [7u8; 32];
        let hex_key = MasterKey::parse(&hex::encode(bytes), "x").unwrap();
        let b64 = MasterKey::parse(&format!(" {}\n", STANDARD.encode(bytes)), "x").unwrap();
        let url = MasterKey::parse(&URL_SAFE_NO_PAD.encode(bytes), "x").unwrap();
        assert_eq!(hex_key.id(), b64.id());
        assert_eq!(hex_key.id(), url.id());
        assert_ne!(hex_key.id(), MasterKey::generate().id());
        for bad in ["", "short", &STANDARD.encode([1u8; 16]), &"zz".repeat(32)] {
            let e = MasterKey::parse(bad, "TOLLGATE_MASTER_KEY").unwrap_err();
            assert!(e.to_string().contains("TOLLGATE_MASTER_KEY"), "{e}");
        }
    }

    #[test]
    fn a_rewrap_keeps_the_secret_and_moves_it_to_the_current_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let before = Keyring::load(SecretsSettings {
            master: Some(file_source(dir.path(), "master.key", &old)),
            previous: None,
        })
        .unwrap();
        let sealed = before.seal("p", "sk-1").unwrap();
        assert_eq!(sealed.master_key_id, old.id());

        let after = Keyring::load(SecretsSettings {
            master: Some(file_source(dir.path(), "new.key", &new)),
            previous: Some(file_source(dir.path(), "old.key", &old)),
        })
        .unwrap();
        let moved = after.rewrap(&sealed).unwrap().expect("re-wrapped");
        assert_eq!(moved.master_key_id, new.id());
        assert_eq!(
            moved.ciphertext, sealed.ciphertext,
            "only the data key moves"
        );
        assert_eq!(&*after.open("p", &moved).unwrap(), "sk-1");
        assert_eq!(
            &*after.open("p", &sealed).unwrap(),
            "sk-1",
            "the previous key still opens"
        );
        assert!(after.rewrap(&moved).unwrap().is_none());
        assert!(matches!(
            open(&old, "p", &moved),
            Err(SecretsError::UnknownMasterKey(_))
        ));
    }

    #[test]
    fn a_running_keyring_follows_its_key_file_and_keeps_the_keys_it_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let source = file_source(dir.path(), "master.key", &old);
        let ring = Keyring::load(SecretsSettings {
            master: Some(source),
            previous: None,
        })
        .unwrap();
        let under_old = ring.seal("p", "sk-old").unwrap();
        // A rotation elsewhere wraps a secret under the new key, then the file is replaced.
        let under_new = seal(&new, "q", "sk-new").unwrap();
        assert!(matches!(
            ring.open("q", &under_new),
            Err(SecretsError::UnknownMasterKey(_))
        ));
        file_source(dir.path(), "master.key", &new);
        assert_eq!(&*ring.open("q", &under_new).unwrap(), "sk-new");
        assert_eq!(&*ring.open("p", &under_old).unwrap(), "sk-old");
        assert_eq!(ring.seal("r", "sk-r").unwrap().master_key_id, new.id());
    }

    #[test]
    fn without_a_master_key_nothing_is_sealed_or_opened() {
        let ring = Keyring::empty();
        assert!(matches!(
            ring.seal("p", "k"),
            Err(SecretsError::NoMasterKey)
        ));
        let sealed = seal(&MasterKey::generate(), "p", "k").unwrap();
        assert!(matches!(
            ring.open("p", &sealed),
            Err(SecretsError::NoMasterKey)
        ));
    }
}
