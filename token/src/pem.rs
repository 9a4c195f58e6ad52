//! Minimal PEM armor (RFC 7468) for the key files.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER bytes of the first PEM block labelled `label` in `text`.
pub(crate) fn decode(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no '{begin}' line (is this the right file?)"))?;
    let body_start = start + begin.len();
    let body_len = text[body_start..]
        .find(&end)
        .ok_or_else(|| format!("no '{end}' line (file truncated?)"))?;
    let body: String = text[body_start..body_start + body_len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| format!("bad base64 inside the PEM block: {e}"))
}

/// The DER bytes of every PEM block labelled `label` in `text` (at least one).
pub(crate) fn decode_all(text: &str, label: &str) -> Result<Vec<Vec<u8>>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        out.push(decode(&rest[start..], label)?);
        rest = &rest[start + begin.len()..];
    }
    if out.is_empty() {
        return Err(format!("no '{begin}' line (is this the right file?)"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let der: Vec<u8> = (0..=200u8).collect();
        let text = encode("PRIVATE KEY", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        assert_eq!(decode(&text, "PRIVATE KEY").unwrap(), der);
        assert!(decode(&text, "PUBLIC KEY")
            .unwrap_err()
            .contains("BEGIN PUBLIC KEY"));
        let cut = &text[..text.len() / 2];
        assert!(decode(cut, "PRIVATE KEY").unwrap_err().contains("END"));
        let bad = text.replace('A', "*");
        assert!(decode(&bad, "PRIVATE KEY").is_err());
        let two = format!("{text}{}", encode("PRIVATE KEY", b"second"));
        assert_eq!(
            decode_all(&two, "PRIVATE KEY").unwrap(),
            vec![der.clone(), b"second".to_vec()]
        );
        assert!(decode_all(&two, "PUBLIC KEY").is_err());
    }
}
