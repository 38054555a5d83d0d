//! The one way tool text is cut before it reaches the model: results over a policy's or the
//! agent's limit, and error messages.

/// Cuts `text` to at most `max_bytes` bytes at a character boundary, ending it with a marker
/// that tells the model how much there was (`\n[… output truncated: 1234 bytes in all]`, or a
/// bare `…` where that does not fit). Returns whether it cut. Bytes, not characters, because
/// the limit is there to bound what is tokenized and kept in the KV cache, and a Chinese
/// character is three bytes of UTF-8.
pub fn truncate_output(text: &mut String, max_bytes: usize) -> bool {
    if text.len() <= max_bytes {
        return false;
    }
    let full = format!("\n[… output truncated: {} bytes in all]", text.len());
    let marker = if full.len() < max_bytes { full.as_str() } else { "…" };
    let mut end = max_bytes.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    if marker.len() <= max_bytes {
        text.push_str(marker);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::truncate_output;

    #[test]
    fn cuts_chinese_text_at_a_character_boundary() {
        let original = "语音助手调用工具。".repeat(100); // 3 bytes a character
        for max in [60, 61, 62, 100, 255] {
            let mut text = original.clone();
            assert!(truncate_output(&mut text, max));
            assert!(text.len() <= max, "{} > {max}", text.len());
            let marker = format!("\n[… output truncated: {} bytes in all]", original.len());
            let kept = text.strip_suffix(&marker).unwrap();
            assert!(original.starts_with(kept));
            assert!(kept.len() + 3 > max - marker.len(), "cut no more than one character");
        }
    }

    #[test]
    fn short_text_is_untouched_and_tiny_limits_keep_an_ellipsis() {
        let mut text = "你好".to_owned();
        assert!(!truncate_output(&mut text, 6));
        assert_eq!(text, "你好");
        let mut text = "你好世界".to_owned();
        assert!(truncate_output(&mut text, 8));
        assert_eq!(text, "你…");
        let mut text = "héllo".to_owned();
        assert!(truncate_output(&mut text, 0));
        assert_eq!(text, "");
    }
}
