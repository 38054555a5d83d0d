//! The full-text analyzer, for Chinese and English in one field.
//!
//! 1. **Segmentation**: jieba (`tantivy-jieba`, search mode), which splits Chinese into words
//!    (and, in search mode, also emits the shorter words inside long ones: 铁皮屋顶 → 铁皮, 屋顶,
//!    铁皮屋顶) and passes Latin-script words through.
//! 2. **Cleanup** ([`MixedTokenizer`]): lowercase; drop tokens with no letter or digit (jieba
//!    emits spaces and punctuation as tokens); drop stop words — English function words and the
//!    request phrasing people put around a description ("find me", "帮我找一段 … 的").
//! 3. **Stemming**: English Snowball stemmer (rain/raining/rains → rain); CJK tokens pass
//!    through unchanged.
//!
//! Queries go through the same analyzer, so a query term matches when its stem appears in the
//! description, tags or transcript.

use tantivy::tokenizer::{Language, Stemmer, TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy_jieba::JiebaTokenizer;

/// The name the analyzer is registered under in the index.
pub const ANALYZER: &str = "voxloop_mixed";

/// Words dropped from documents and queries.
const STOP_WORDS: &[&str] = &[
    // English function words (Lucene's classic list).
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
    // Request phrasing around a description.
    "find", "me", "i", "want", "need", "please", "give", "some", "my", "can", "could", "would",
    "get", "show", "looking", "search",
    // Chinese function words and request phrasing (as jieba segments them).
    "的", "了", "是", "我", "你", "要", "想", "找", "帮", "帮我", "请", "给", "给我", "一个",
    "一段", "一些", "一下", "吗", "呢", "吧", "和", "在", "有", "个", "段", "听",
];

/// jieba segmentation followed by lowercasing and removal of punctuation and stop words.
#[derive(Clone, Default)]
pub struct MixedTokenizer {
    jieba: JiebaTokenizer,
}

/// The tokens of one text, already cleaned.
pub struct VecTokenStream {
    tokens: Vec<Token>,
    next: usize,
}

impl TokenStream for VecTokenStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        // `advance` returned true before any call, so `next >= 1` (tantivy's contract).
        &self.tokens[self.next.saturating_sub(1).min(self.tokens.len().saturating_sub(1))]
    }

    fn token_mut(&mut self) -> &mut Token {
        let i = self.next.saturating_sub(1).min(self.tokens.len().saturating_sub(1));
        &mut self.tokens[i]
    }
}

impl Tokenizer for MixedTokenizer {
    type TokenStream<'a> = VecTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        let mut stream = self.jieba.token_stream(text);
        let mut tokens = Vec::new();
        while let Some(token) = stream.next() {
            if !token.text.chars().any(char::is_alphanumeric) {
                continue;
            }
            let lower = token.text.to_lowercase();
            if STOP_WORDS.contains(&lower.as_str()) {
                continue;
            }
            let mut t = token.clone();
            t.text = lower;
            tokens.push(t);
        }
        VecTokenStream { tokens, next: 0 }
    }
}

/// The analyzer: [`MixedTokenizer`] then the English stemmer.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(MixedTokenizer::default()).filter(Stemmer::new(Language::English)).build()
}

/// The analyzed terms of `text`, in order, without repeats.
pub fn terms(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out: Vec<String> = Vec::new();
    while let Some(token) = stream.next() {
        if !out.contains(&token.text) {
            out.push(token.text.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_is_lowercased_stemmed_and_stripped_of_stop_words() {
        assert_eq!(
            terms("Find me the sound of RAIN falling on a tin roof!"),
            vec!["sound", "rain", "fall", "tin", "roof"]
        );
    }

    #[test]
    fn chinese_is_segmented_into_words() {
        let t = terms("帮我找一段门铃响的音效");
        assert!(t.contains(&"门铃".to_string()), "{t:?}");
        assert!(t.contains(&"音效".to_string()), "{t:?}");
        for stop in ["的", "帮", "我", "找", "一段"] {
            assert!(!t.contains(&stop.to_string()), "{stop} in {t:?}");
        }
    }

    #[test]
    fn mixed_text_keeps_both_scripts() {
        let t = terms("robot voice 机器人的声音");
        assert!(t.contains(&"robot".to_string()) && t.contains(&"机器人".to_string()), "{t:?}");
        assert!(t.contains(&"声音".to_string()), "{t:?}");
    }
}
