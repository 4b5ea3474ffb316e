//! The server's ed25519 signing key: created on first start, kept in the
//! data folder, readable only by its owner.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::Rng;
use ruma::signatures::Ed25519KeyPair;

use crate::StartupError;

/// File name of the signing key inside the data folder.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// The server's signing key with its key ID version (`ed25519:<version>`).
pub struct SigningKey {
    /// The key pair.
    pub pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Reads `<dir>/signing.key`, or creates it if absent. The file holds one
    /// line, `ed25519 <version> <unpadded base64 of the PKCS#8 document>`.
    ///
    /// # Errors
    /// The file cannot be written, or exists and does not hold a key.
    pub fn load_or_create(dir: &Path) -> Result<Self, StartupError> {
        let path = dir.join(SIGNING_KEY_FILE);
        let fail = |reason: String| StartupError::SigningKey { path: path.clone(), reason };
        if !path.exists() {
            let document = Ed25519KeyPair::generate();
            let version: String =
                rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(6).map(char::from).collect();
            let line = format!("ed25519 a_{version} {}\n", STANDARD_NO_PAD.encode(&document));
            write_private(&path, line.as_bytes()).map_err(|e| fail(e.to_string()))?;
            tracing::info!(path = %path.display(), "created a new signing key");
        }
        let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let mut parts = text.split_whitespace();
        let (Some("ed25519"), Some(version), Some(der)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(fail("expected 'ed25519 <version> <base64>'".into()));
        };
        let der = STANDARD_NO_PAD.decode(der).map_err(|e| fail(format!("bad base64: {e}")))?;
        let pair = Ed25519KeyPair::from_der(&der, version.to_owned()).map_err(|e| fail(e.to_string()))?;
        Ok(Self { pair })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
