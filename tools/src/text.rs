//! Small text utilities: a token estimate, truncation at character boundaries, whitespace
//! clean-up.

/// An estimate of how many LLM tokens `text` takes: one per CJK character (Han, kana,
/// Hangul, full-width punctuation), one per four other characters, rounded up.
///
/// Qwen-style BPE vocabularies (Step-Audio 2's LLM) spend about one token per common Han
/// character and about four characters per token on English; this is meant for budgets,
/// not for exact counts.
pub fn approx_tokens(text: &str) -> usize {
    let (cjk, other) = text.chars().fold((0usize, 0usize), |(cjk, other), c| {
        if is_cjk(c) {
            (cjk + 1, other)
        } else {
            (cjk, other + 1)
        }
    });
    cjk + other.div_ceil(4)
}

/// Whether `c` is a CJK character that a tokenizer treats as roughly one token: Han
/// ideographs, kana, Hangul, CJK punctuation and full-width forms.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3000..=0x303F      // CJK symbols and punctuation
        | 0x3040..=0x30FF    // hiragana, katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF00..=0xFFEF    // half- and full-width forms
        | 0x20000..=0x2FFFF  // CJK extensions B–F and supplements
    )
}

/// `text` cut to at most `max_chars` characters; a cut text ends in `…` (which counts).
pub fn truncate_chars(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    if max_chars == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max_chars - 1).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// `text` cut so that [`approx_tokens`] of the result is at most `max_tokens`; a cut text
/// ends in `…`.
pub fn truncate_tokens(text: &str, max_tokens: usize) -> String {
    if approx_tokens(text) <= max_tokens {
        return text.to_owned();
    }
    // Keep room for the ellipsis (one character: at most one token).
    let budget = max_tokens.saturating_sub(1);
    let mut cjk = 0usize;
    let mut other = 0usize;
    let mut end = 0usize;
    for (i, c) in text.char_indices() {
        let (next_cjk, next_other) = if is_cjk(c) { (cjk + 1, other) } else { (cjk, other + 1) };
        if next_cjk + next_other.div_ceil(4) > budget {
            break;
        }
        cjk = next_cjk;
        other = next_other;
        end = i + c.len_utf8();
    }
    let mut out = text[..end].trim_end().to_owned();
    out.push('…');
    out
}

/// Runs of whitespace (including newlines) replaced by one space, ends trimmed.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimate_counts_cjk_per_char_and_latin_per_four() {
        assert_eq!(approx_tokens(""), 0);
        assert_eq!(approx_tokens("abcd"), 1);
        assert_eq!(approx_tokens("abcde"), 2);
        assert_eq!(approx_tokens("上证指数"), 4);
        assert_eq!(approx_tokens("上证 index"), 2 + 2);
    }

    #[test]
    fn token_truncation_respects_the_budget_and_char_boundaries() {
        let text = "上证指数开盘跌3.64点，跌幅为0.1%，报3796.71点".repeat(5);
        for budget in [1, 5, 17, 40] {
            let cut = truncate_tokens(&text, budget);
            assert!(approx_tokens(&cut) <= budget, "{budget}: {cut}");
            assert!(cut.ends_with('…'));
        }
        assert_eq!(truncate_tokens("short", 10), "short");
    }

    #[test]
    fn char_truncation_marks_the_cut() {
        assert_eq!(truncate_chars("hello world", 20), "hello world");
        let cut = truncate_chars("hello world", 7);
        assert_eq!(cut.chars().count(), 6);
        assert!(cut.ends_with('…'));
        assert_eq!(collapse_whitespace("  a \n\t b  "), "a b");
    }
}
