//! The age keys that open SOPS files, found where SOPS looks for them:
//! `PIER_AGE_KEY_FILE`, then `SOPS_AGE_KEY_FILE`, then `SOPS_AGE_KEY` (the
//! key itself), then SOPS's default file
//! (`$XDG_CONFIG_HOME/sops/age/keys.txt`, `~/.config/sops/age/keys.txt`).

use std::io::{Read, Write};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Age identities (X25519). Debug never shows them.
#[derive(Default)]
pub struct Keys {
    identities: Vec<age::x25519::Identity>,
    /// Where they were read from, for messages.
    pub origin: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} from {:?})", self.identities.len(), self.origin)
    }
}

impl Keys {
    /// No key: SOPS files stay sealed.
    pub fn none() -> Keys {
        Keys::default()
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// The keys named by the environment, as SOPS finds them. No variable
    /// and no default file: no key (not an error). A variable naming a
    /// file that cannot be read, or a key that does not parse, is an error.
    pub fn from_env() -> Result<Keys, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        for name in ["PIER_AGE_KEY_FILE", "SOPS_AGE_KEY_FILE"] {
            if let Some(path) = var(name) {
                return Keys::from_file(&path).map_err(|e| format!("{e} (from {name})"));
            }
        }
        if let Some(text) = var("SOPS_AGE_KEY") {
            let mut keys = Keys::parse(&text).map_err(|e| format!("{e} (in SOPS_AGE_KEY)"))?;
            keys.origin = Some("SOPS_AGE_KEY".into());
            return Ok(keys);
        }
        let config = var("XDG_CONFIG_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| var("HOME").map(|h| std::path::Path::new(&h).join(".config")));
        if let Some(default) = config.map(|c| c.join("sops/age/keys.txt"))
            && default.is_file()
        {
            return Keys::from_file(&default.to_string_lossy());
        }
        Ok(Keys::none())
    }

    pub fn from_file(path: &str) -> Result<Keys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the age key file {path}: {e}"))?;
        let mut keys = Keys::parse(&text).map_err(|e| format!("{e} in {path}"))?;
        keys.origin = Some(path.to_string());
        Ok(keys)
    }

    /// An age identity file: `AGE-SECRET-KEY-1…` lines, `#` comments.
    pub fn parse(text: &str) -> Result<Keys, String> {
        let mut identities = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity = age::x25519::Identity::from_str(line)
                .map_err(|_| format!("line {} is not an age secret key", n + 1))?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err("no age secret key".into());
        }
        Ok(Keys {
            identities,
            origin: None,
        })
    }

    /// The public keys (recipients) of these identities.
    pub fn recipients(&self) -> Vec<String> {
        self.identities
            .iter()
            .map(|i| i.to_public().to_string())
            .collect()
    }

    /// The 32-byte data key of a file from one of its `enc` age files.
    pub(super) fn unwrap_data_key(&self, armored: &str) -> Option<[u8; 32]> {
        let reader = age::armor::ArmoredReader::new(armored.as_bytes());
        let decryptor = age::Decryptor::new(reader).ok()?;
        let identities = self.identities.iter().map(|i| i as &dyn age::Identity);
        let mut plain = Vec::new();
        decryptor
            .decrypt(identities)
            .ok()?
            .read_to_end(&mut plain)
            .ok()?;
        plain.try_into().ok()
    }

    /// A key for fingerprints of secret contents, derived from these
    /// identities: the same wherever the same key is given (the daemon, a
    /// standby, `pier apply`), and unknown to whoever lacks it.
    pub fn fingerprint_key(&self) -> Option<[u8; 32]> {
        if self.is_empty() {
            return None;
        }
        let mut secrets: Vec<String> = self
            .identities
            .iter()
            .map(|i| i.to_string().expose_secret().to_string())
            .collect();
        secrets.sort();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"pier fingerprint key")
            .expect("HMAC takes any key length");
        for secret in &secrets {
            mac.update(secret.as_bytes());
        }
        Some(mac.finalize().into_bytes().into())
    }
}

/// The data key as an armored age file for one recipient.
pub(super) fn wrap_data_key(data_key: &[u8; 32], recipient: &str) -> Result<String, String> {
    let recipient = age::x25519::Recipient::from_str(recipient)
        .map_err(|_| format!("`{recipient}` is not an age recipient (age1…)"))?;
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| format!("cannot encrypt to it: {e}"))?;
    let mut out = Vec::new();
    let armored = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| e.to_string())?;
    let mut writer = encryptor.wrap_output(armored).map_err(|e| e.to_string())?;
    writer.write_all(data_key).map_err(|e| e.to_string())?;
    writer
        .finish()
        .and_then(|armored| armored.finish())
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}
