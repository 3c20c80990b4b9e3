//! Masking secrets in output that arrives in pieces: a secret split
//! between two chunks, or a character split between two reads, is masked
//! as surely as a whole one.

/// Replace every secret value in `text` with `***`.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    // The longest first, so a secret inside another is not masked piecemeal.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// Masks a stream of output that arrives in arbitrary chunks: text is let
/// out only once no secret could still straddle its end, so a secret split
/// across two chunks is masked as surely as a whole one.
pub struct Masker<'a> {
    secrets: &'a [String],
    /// Masked text held back: its tail may be the start of a secret.
    pending: String,
    /// Characters held back: one less than the longest secret.
    hold: usize,
    /// The start of a character whose other bytes are in the next chunk.
    partial: Vec<u8>,
}

impl<'a> Masker<'a> {
    pub fn new(secrets: &'a [String]) -> Masker<'a> {
        let longest = secrets.iter().map(|s| s.chars().count()).max().unwrap_or(0);
        Masker {
            secrets,
            pending: String::new(),
            hold: longest.saturating_sub(1),
            partial: Vec::new(),
        }
    }

    /// Take a chunk of raw output; returns what may be shown now. A
    /// character split between chunks is decoded whole, so a secret that
    /// holds one is masked like any other; bytes that are not UTF-8 show
    /// as U+FFFD.
    pub fn push_bytes(&mut self, chunk: &[u8]) -> String {
        self.partial.extend_from_slice(chunk);
        let mut text = String::new();
        let mut rest: &[u8] = &self.partial;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).expect("checked valid"));
                    match error.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // A character cut off at the end: wait for the rest.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.partial = rest.to_vec();
        self.push(&text)
    }

    /// Take a chunk; returns what may be shown now.
    pub fn push(&mut self, chunk: &str) -> String {
        self.pending.push_str(chunk);
        let masked = mask(&self.pending, self.secrets);
        let chars = masked.chars().count();
        let keep_from = masked
            .char_indices()
            .nth(chars.saturating_sub(self.hold))
            .map_or(masked.len(), |(at, _)| at);
        self.pending = masked[keep_from..].to_string();
        masked[..keep_from].to_string()
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self) -> String {
        let cut_off = std::mem::take(&mut self.partial);
        self.pending.push_str(&String::from_utf8_lossy(&cut_off));
        mask(&std::mem::take(&mut self.pending), self.secrets)
    }
}
