//! The node key: an ed25519 seed in a file readable only by its owner (0600), created on first
//! start. The key's public half is the node's account address and its libp2p peer id.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use doin_primitives::Keypair;
use rand::RngCore;

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("node key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a key.
    #[error("node key {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Loads the key at `path`, creating it (mode 0600) if it does not exist. Returns the key and
/// whether it was created.
pub fn load_or_create(path: &Path) -> Result<(Keypair, bool), IdentityError> {
    let shown = path.display().to_string();
    let io = |source| IdentityError::Io { path: shown.clone(), source };
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Invalid {
                    path: shown,
                    reason: format!("permissions {mode:o} let others read it; run chmod 600"),
                });
            }
            let bytes = hex::decode(text.trim()).map_err(|e| IdentityError::Invalid {
                path: shown.clone(),
                reason: format!("not a hex seed: {e}"),
            })?;
            let seed: [u8; 32] = bytes.try_into().map_err(|_| IdentityError::Invalid {
                path: shown.clone(),
                reason: "the seed must be 32 bytes (64 hex characters)".into(),
            })?;
            Ok((Keypair::from_seed(seed), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            write_key(path, &seed).map_err(io)?;
            Ok((Keypair::from_seed(seed), true))
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes a key seed to `path` with mode 0600 (refusing to overwrite).
pub fn write_key(path: &Path, seed: &[u8; 32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(hex::encode(seed).as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let (a, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (b, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.address(), b.address());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&path).unwrap_err().to_string().contains("chmod 600"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "zz").unwrap();
        assert!(load_or_create(&path).unwrap_err().to_string().contains("hex"));
    }
}
