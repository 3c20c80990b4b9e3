//! `pier secret new|edit|set`: SOPS files written by pier, readable by
//! `sops` (and the other way round). The plaintext only ever sits in a
//! private folder (in memory under /dev/shm where there is one) while an
//! editor has it open, and is removed after.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pier::manifest::sops::{self, Format, Keys};

use crate::cli::SecretCommand;

pub fn secret(command: SecretCommand) -> ExitCode {
    let outcome = match command {
        SecretCommand::New { file, recipients } => new(&file, &recipients),
        SecretCommand::Edit { file } => edit(&file),
        SecretCommand::Set { file, key } => set(&file, &key),
    };
    match outcome {
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn new(file: &Path, recipients: &[String]) -> Result<String, String> {
    if file.exists() {
        return Err(format!(
            "{} exists; change it with `pier secret edit`",
            file.display()
        ));
    }
    let plain = if std::io::stdin().is_terminal() {
        let starter = match Format::of(&file.to_string_lossy()) {
            Format::Yaml => "# key: value\n",
            Format::Json => "{\n}\n",
            Format::Dotenv => "# KEY=value\n",
            Format::Binary => "",
        };
        in_editor(file, starter.as_bytes())?
    } else {
        read_stdin()?
    };
    let sealed = sops::encrypt(Format::of(&file.to_string_lossy()), &plain, recipients)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    write(file, &sealed)?;
    Ok(format!(
        "{}: encrypted to {}",
        file.display(),
        recipients.join(", ")
    ))
}

fn edit(file: &Path) -> Result<String, String> {
    let (bytes, recipients, keys) = open(file)?;
    let name = file.to_string_lossy();
    let opened = sops::decrypt(&name, &bytes, &keys).map_err(|e| format!("{name} {e}"))?;
    let before = opened.plaintext();
    let after = in_editor(file, &before)?;
    if after == before {
        return Ok(format!("{name}: unchanged"));
    }
    let sealed = sops::encrypt(opened.format, &after, &recipients)
        .map_err(|e| format!("{name}: {e}; the file is unchanged"))?;
    write(file, &sealed)?;
    Ok(format!(
        "{name}: encrypted again to {}",
        recipients.join(", ")
    ))
}

fn set(file: &Path, key: &str) -> Result<String, String> {
    let (bytes, recipients, keys) = open(file)?;
    let name = file.to_string_lossy();
    let mut opened = sops::decrypt(&name, &bytes, &keys).map_err(|e| format!("{name} {e}"))?;
    let mut value = String::from_utf8(read_stdin()?)
        .map_err(|_| "the value on standard input is not UTF-8 text".to_string())?;
    // `echo value | pier secret set` means the value, not its newline.
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    let path: Vec<&str> = key.split('.').collect();
    opened
        .set(&path, value)
        .map_err(|e| format!("{name}: {e}"))?;
    let sealed = sops::encrypt(opened.format, &opened.plaintext(), &recipients)
        .map_err(|e| format!("{name}: {e}"))?;
    write(file, &sealed)?;
    Ok(format!("{name}: {key} set"))
}

/// The file, the recipients to write it to, and the key that opens it.
fn open(file: &Path) -> Result<(Vec<u8>, Vec<String>, Keys), String> {
    let name = file.to_string_lossy();
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {name}: {e}"))?;
    if !sops::is_encrypted(&name, &bytes) {
        return Err(format!(
            "{name} is not a SOPS file; create one with `pier secret new`"
        ));
    }
    let recipients = sops::rewritable(&name, &bytes).map_err(|e| format!("{name} {e}"))?;
    let keys = Keys::from_env()?;
    if keys.is_empty() {
        return Err(format!("{name} {}", sops::SopsError::NoKey));
    }
    Ok((bytes, recipients, keys))
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(input)
}

/// Write beside the file, then rename over it: never half a file.
fn write(file: &Path, bytes: &[u8]) -> Result<(), String> {
    let partial = file.with_extension("pier-partial");
    std::fs::write(&partial, bytes)
        .and_then(|()| std::fs::rename(&partial, file))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Let the user change `text` in $VISUAL/$EDITOR (default `vi`), in a
/// private folder that is removed afterwards; the result.
fn in_editor(file: &Path, text: &[u8]) -> Result<Vec<u8>, String> {
    let folder = private_folder()?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().replace(".sops", ""))
        .unwrap_or_else(|| "secret".into());
    let path = folder.0.join(name);
    let edited = std::fs::write(&path, text)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
        .and_then(|()| run_editor(&path))
        .and_then(|()| {
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        });
    drop(folder);
    edited
}

fn run_editor(path: &Path) -> Result<(), String> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|e| !e.trim().is_empty()))
        .unwrap_or_else(|| "vi".into());
    // Through the shell, so `EDITOR="code --wait"` works as everywhere.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("{editor} \"$1\""), "pier-editor"])
        .arg(path)
        .status()
        .map_err(|e| format!("cannot run the editor `{editor}`: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the editor `{editor}` failed ({status}); the file is unchanged"
        ));
    }
    Ok(())
}

/// A folder only this user can enter; removed with everything in it when
/// dropped.
struct PrivateFolder(PathBuf);

impl Drop for PrivateFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn private_folder() -> Result<PrivateFolder, String> {
    use std::os::unix::fs::DirBuilderExt;
    let memory = Path::new("/dev/shm");
    let base = if memory.is_dir() {
        memory.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let mut random = [0u8; 8];
    aes_gcm::aead::rand_core::RngCore::fill_bytes(&mut aes_gcm::aead::OsRng, &mut random);
    let path = base.join(format!("pier-secret-{}", hex::encode(random)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok(PrivateFolder(path))
}
