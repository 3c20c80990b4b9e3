//! One encrypted SOPS value: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`,
//! AES-256-GCM under the file's data key with a 32-byte IV, and the value's
//! path (`db:password:`) as additional data, so a value moved to another
//! key no longer decrypts.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload, rand_core::RngCore};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::document::{Node, float_text};

type Cipher = AesGcm<Aes256, U32>;

const TAG_LEN: usize = 16;

/// Whether `text` is an encrypted value.
pub fn is_encrypted(text: &str) -> bool {
    text.starts_with("ENC[AES256_GCM,")
}

/// Decrypt one value; `Err` says why (never the value).
pub fn decrypt(text: &str, key: &[u8; 32], aad: &str) -> Result<Node, String> {
    let inner = text
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|t| t.strip_suffix(']'))
        .ok_or("not an encrypted value")?;
    let field = |name: &str| {
        inner
            .split(',')
            .find_map(|part| part.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| format!("encrypted value without `{name}`"))
    };
    let decode = |name: &str| {
        STANDARD
            .decode(field(name)?)
            .map_err(|_| format!("`{name}` of an encrypted value is not base64"))
    };
    let (mut data, iv, tag) = (decode("data")?, decode("iv")?, decode("tag")?);
    if iv.len() != 32 || tag.len() != TAG_LEN {
        return Err("encrypted value with an IV or tag of the wrong length".into());
    }
    data.extend_from_slice(&tag);
    let cipher = Cipher::new(key.into());
    let plain = cipher
        .decrypt(
            Nonce::<U32>::from_slice(&iv),
            Payload {
                msg: &data,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| {
            "a value does not decrypt: the file was changed, or a value moved".to_string()
        })?;
    typed(field("type")?, plain)
}

fn typed(kind: &str, plain: Vec<u8>) -> Result<Node, String> {
    let text = || String::from_utf8(plain.clone()).map_err(|_| "a value is not UTF-8".to_string());
    Ok(match kind {
        "str" | "bytes" => match String::from_utf8(plain) {
            Ok(text) => Node::Str(text),
            Err(e) => Node::Bytes(e.into_bytes()),
        },
        "comment" => Node::Comment(text()?),
        "int" => Node::Int(
            text()?
                .parse()
                .map_err(|_| "an `int` value is not an integer")?,
        ),
        "float" => Node::Float(
            text()?
                .parse()
                .map_err(|_| "a `float` value is not a number")?,
        ),
        "bool" => Node::Bool(match text()?.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err("a `bool` value is neither True nor False".into()),
        }),
        other => return Err(format!("encrypted value of unknown type `{other}`")),
    })
}

/// Encrypt one scalar (a comment, or a value that is not a list or map).
pub fn encrypt(value: &Node, key: &[u8; 32], aad: &str) -> String {
    let (kind, plain): (&str, Vec<u8>) = match value {
        Node::Str(text) => ("str", text.clone().into_bytes()),
        Node::Bytes(bytes) => ("str", bytes.clone()),
        Node::Comment(text) => ("comment", text.clone().into_bytes()),
        Node::Int(n) => ("int", n.to_string().into_bytes()),
        Node::Float(x) => ("float", float_text(*x).into_bytes()),
        Node::Bool(b) => ("bool", if *b { "True" } else { "False" }.into()),
        Node::Null | Node::List(_) | Node::Map(_) => unreachable!("not an encrypted scalar"),
    };
    let mut iv = [0u8; 32];
    OsRng.fill_bytes(&mut iv);
    let cipher = Cipher::new(key.into());
    let mut sealed = cipher
        .encrypt(
            Nonce::<U32>::from_slice(&iv),
            Payload {
                msg: &plain,
                aad: aad.as_bytes(),
            },
        )
        .expect("AES-GCM encrypts any length SOPS values have");
    let tag = sealed.split_off(sealed.len() - TAG_LEN);
    format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
        STANDARD.encode(&sealed),
        STANDARD.encode(iv),
        STANDARD.encode(tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_their_type_and_only_at_their_path() {
        let key = [7u8; 32];
        for value in [
            Node::Str("hunter2".into()),
            Node::Int(5432),
            Node::Float(1.5),
            Node::Bool(true),
            Node::Comment(" note".into()),
        ] {
            let sealed = encrypt(&value, &key, "db:password:");
            assert!(is_encrypted(&sealed));
            assert_eq!(decrypt(&sealed, &key, "db:password:").unwrap(), value);
            assert!(decrypt(&sealed, &key, "db:other:").is_err());
            assert!(decrypt(&sealed, &[8u8; 32], "db:password:").is_err());
        }
    }
}
