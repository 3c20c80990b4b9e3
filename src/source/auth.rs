//! How pier authenticates to git remotes, and how it names them where
//! people (and logs) can see: the credential callbacks every fetch,
//! ls-remote and push uses, and URL redaction.
//!
//! Credentials come from the environment of the person or daemon running
//! pier, never from the repository: for SSH the agent (`SSH_AUTH_SOCK`),
//! then the key in `PIER_GIT_SSH_KEY`, then `~/.ssh/id_ed25519`,
//! `id_ecdsa` and `id_rsa`; for HTTPS `PIER_GIT_TOKEN` (user
//! `PIER_GIT_USER`, default `x-access-token`), then git's credential
//! helpers. SSH host keys are checked against `~/.ssh/known_hosts`.

use std::path::PathBuf;

/// What to do when a remote asks for credentials this many times: every
/// method has had its turn, so stop before the server locks the account.
const MAX_ATTEMPTS: usize = 6;

/// Callbacks that answer a remote's credential requests (see the module
/// docs for the order).
pub fn credential_callbacks() -> git2::RemoteCallbacks<'static> {
    super::git::load_https_roots();
    let mut callbacks = git2::RemoteCallbacks::new();
    let mut ssh_methods = SshMethods::from_environment();
    let mut plaintext_tried = false;
    let mut attempts = 0;
    callbacks.credentials(move |url, username, allowed| {
        attempts += 1;
        if attempts > MAX_ATTEMPTS {
            return Err(exhausted());
        }
        if allowed.contains(git2::CredentialType::USERNAME) {
            return git2::Cred::username(username.unwrap_or("git"));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            return ssh_methods
                .next(username.unwrap_or("git"))
                .unwrap_or_else(|| Err(exhausted()));
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if std::mem::replace(&mut plaintext_tried, true) {
                return Err(exhausted());
            }
            if let Ok(token) = std::env::var("PIER_GIT_TOKEN") {
                let user =
                    std::env::var("PIER_GIT_USER").unwrap_or_else(|_| "x-access-token".into());
                return git2::Cred::userpass_plaintext(&user, &token);
            }
            // Without a helper, libgit2's own error names none of the ways to fix it.
            return git2::Config::open_default()
                .and_then(|config| git2::Cred::credential_helper(&config, url, username))
                .map_err(|_| exhausted());
        }
        git2::Cred::default()
    });
    callbacks
}

fn exhausted() -> git2::Error {
    git2::Error::from_str(
        "authentication failed; load a key into ssh-agent or set PIER_GIT_SSH_KEY (ssh), \
         set PIER_GIT_TOKEN or configure a git credential helper (https)",
    )
}

/// The SSH methods not yet tried, in order: the agent, then key files.
struct SshMethods {
    agent: bool,
    keys: std::vec::IntoIter<PathBuf>,
}

impl SshMethods {
    fn from_environment() -> SshMethods {
        let mut keys = Vec::new();
        if let Some(key) = std::env::var_os("PIER_GIT_SSH_KEY") {
            keys.push(PathBuf::from(key));
        }
        if let Some(home) = std::env::var_os("HOME") {
            let ssh = PathBuf::from(home).join(".ssh");
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                keys.push(ssh.join(name));
            }
        }
        keys.retain(|key| key.is_file());
        SshMethods {
            agent: std::env::var_os("SSH_AUTH_SOCK").is_some(),
            keys: keys.into_iter(),
        }
    }

    fn next(&mut self, username: &str) -> Option<Result<git2::Cred, git2::Error>> {
        if std::mem::take(&mut self.agent) {
            return Some(git2::Cred::ssh_key_from_agent(username));
        }
        let key = self.keys.next()?;
        let public = key.with_extension("pub");
        let public = public.is_file().then_some(public);
        Some(git2::Cred::ssh_key(
            username,
            public.as_deref(),
            &key,
            std::env::var("PIER_GIT_SSH_PASSPHRASE").ok().as_deref(),
        ))
    }
}

/// A URL as pier shows and stores it: an `http(s)://` URL's user
/// information is replaced by `***` (a token is often the user name), and
/// any password in another URL too. `git@host:path` keeps its user, which
/// is no secret.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    // Schemes are case-insensitive (RFC 3986): `HTTPS://token@…` is https.
    let userinfo = if scheme.to_ascii_lowercase().starts_with("http") {
        "***".to_string()
    } else {
        match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***"),
            None => userinfo.to_string(),
        }
    };
    format!("{scheme}://{userinfo}@{host}{path}")
}

/// `text` with every occurrence of `url` (which may carry credentials)
/// replaced by its redacted form: for error messages from libgit2, which
/// may quote the URL it was given.
pub fn redact_in(text: &str, url: &str) -> String {
    let redacted = redact_url(url);
    if redacted == url {
        return text.to_string();
    }
    text.replace(url, &redacted)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_in_urls_are_hidden_and_plain_urls_kept() {
        for (url, shown) in [
            (
                "https://user:s3cret@example.com/team/app.git",
                "https://***@example.com/team/app.git",
            ),
            (
                "https://ghp_token@example.com/team/app",
                "https://***@example.com/team/app",
            ),
            (
                "ssh://git:pw@example.com/team/app",
                "ssh://git:***@example.com/team/app",
            ),
            (
                "HTTPS://ghp_token@example.com/team/app",
                "HTTPS://***@example.com/team/app",
            ),
            (
                "Http://user:pw@example.com/app",
                "Http://***@example.com/app",
            ),
            (
                "ssh://git@example.com/team/app",
                "ssh://git@example.com/team/app",
            ),
            (
                "git@example.com:team/app.git",
                "git@example.com:team/app.git",
            ),
            (
                "https://example.com/a@b/app.git",
                "https://example.com/a@b/app.git",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
