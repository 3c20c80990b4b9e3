//! Files of the commit that may be SOPS-encrypted (`env_file`, `configs`
//! and `secrets` files, the folder's `.env`): opened with the operator's
//! age key where the commit is trusted, and left sealed where it is not.
//!
//! A sealed file is seen as written (its values are the `ENC[…]` texts) and
//! reported as unknown with a notice, never as an error: a branch under
//! test validates and runs its pipeline without the key, and nothing it
//! does can make pier decrypt for it.

use super::diagnostic::{Diagnostic, Location};
use super::sops::{self, Keys, Opened};
use super::validate::{RepoTree, read_file};

/// Whether loading opens SOPS files.
#[derive(Debug, Clone, Copy)]
pub enum Decrypt<'a> {
    /// With the operator's keys. With none given, an encrypted file is an
    /// error that says how to give one: a trusted commit never deploys
    /// ciphertext.
    With(&'a Keys),
    /// Never (a branch under test): encrypted files stay sealed.
    Never,
}

/// A file of the commit, read.
#[derive(Clone)]
pub enum Read {
    /// Not encrypted.
    Plain(Vec<u8>),
    /// Encrypted, and opened.
    Opened(Opened),
    /// Encrypted, and left so (as written).
    Sealed(Vec<u8>),
    Missing,
}

/// Read `path`, opening it if it is a SOPS file and `decrypt` allows.
/// `Err` is a message for the file (a damaged repository, a MAC that does
/// not match, no key that opens it).
pub fn read(tree: &dyn RepoTree, path: &str, decrypt: Decrypt<'_>) -> Result<Read, String> {
    let Some(bytes) = read_file(tree, path)? else {
        return Ok(Read::Missing);
    };
    if !sops::is_encrypted(path, &bytes) {
        return Ok(Read::Plain(bytes));
    }
    match decrypt {
        Decrypt::Never => Ok(Read::Sealed(bytes)),
        Decrypt::With(keys) => sops::decrypt(path, &bytes, keys)
            .map(Read::Opened)
            .map_err(|e| format!("`{path}` {e}")),
    }
}

/// The notice for a file left sealed.
pub fn sealed_notice(path: &str, used_by: &str) -> Diagnostic {
    Diagnostic::notice(
        Location::new(path, 1, 1),
        format!(
            "`{path}` ({used_by}) is encrypted with SOPS and not opened here: its values are unknown, and taken as written"
        ),
    )
}

/// The variables of a sealed env file: its keys with their encrypted
/// texts, SOPS's own entries left out.
pub fn sealed_variables(path: &str, bytes: &[u8]) -> Vec<(String, String)> {
    let format = sops::Format::of(path);
    let Ok(sops::Node::Map(entries)) = sops::document::parse(format, bytes) else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|(key, _)| key != "sops" && !key.starts_with("sops_") && !key.starts_with('\0'))
        .filter_map(|(key, value)| {
            let text = String::from_utf8_lossy(&value.scalar_bytes()?).into_owned();
            Some((key, text))
        })
        .collect()
}
