//! The offline index's tokenizer for mixed Chinese and English text.
//!
//! Runs of letters and digits become one token each (then lower-cased, English stop words
//! removed, English-stemmed). Runs of CJK characters, which are written without spaces,
//! become overlapping character bigrams ("上证指数" → 上证, 证指, 指数); a lone CJK
//! character is a unigram. Bigrams need no dictionary and match any query word of two or
//! more characters that appears in the text.

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, Stemmer, StopWordFilter, TextAnalyzer, Token,
    TokenStream, Tokenizer,
};

use crate::text::is_cjk;

/// The name the tokenizer is registered under in the index.
pub(crate) const TOKENIZER_NAME: &str = "voxloop_mixed";

/// Tokens longer than this (in bytes) are dropped (base64 blobs, hashes).
const MAX_TOKEN_BYTES: usize = 48;

/// The full analyzer: [`MixedTokenizer`] and the filters.
pub(crate) fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(MixedTokenizer)
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop_words) => {
            builder.filter(stop_words).filter(Stemmer::new(Language::English)).build()
        }
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// The terms `text` is indexed or searched as, in order, without repeats.
pub(crate) fn terms(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out: Vec<String> = Vec::new();
    while stream.advance() {
        let term = &stream.token().text;
        if !out.contains(term) {
            out.push(term.clone());
        }
    }
    out
}

/// Splits text into word tokens and CJK bigrams (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MixedTokenizer;

/// The tokens of one text, precomputed.
pub(crate) struct MixedTokenStream {
    tokens: std::vec::IntoIter<Token>,
    current: Token,
}

impl Tokenizer for MixedTokenizer {
    type TokenStream<'a> = MixedTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> MixedTokenStream {
        MixedTokenStream { tokens: split(text).into_iter(), current: Token::default() }
    }
}

impl TokenStream for MixedTokenStream {
    fn advance(&mut self) -> bool {
        match self.tokens.next() {
            Some(token) => {
                self.current = token;
                true
            }
            None => false,
        }
    }

    fn token(&self) -> &Token {
        &self.current
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.current
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Cjk,
    Other,
}

fn class(c: char) -> Class {
    if is_cjk(c) && c.is_alphanumeric() {
        Class::Cjk
    } else if c.is_alphanumeric() {
        Class::Word
    } else {
        Class::Other
    }
}

/// The raw tokens of `text`, before filters.
fn split(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut run: Vec<(usize, char)> = Vec::new();
    let mut run_class = Class::Other;
    for (offset, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        let next = class(c);
        if next != run_class || next == Class::Other {
            flush(text, &run, run_class, &mut tokens);
            run.clear();
            run_class = next;
        }
        if next != Class::Other {
            run.push((offset, c));
        }
    }
    tokens
}

/// Emits the tokens of one run of same-class characters.
fn flush(text: &str, run: &[(usize, char)], class: Class, tokens: &mut Vec<Token>) {
    let end_of = |i: usize| run[i].0 + run[i].1.len_utf8();
    let mut emit = |from: usize, to: usize| {
        tokens.push(Token {
            offset_from: from,
            offset_to: to,
            position: tokens.len(),
            text: text[from..to].to_owned(),
            position_length: 1,
        });
    };
    match (class, run.len()) {
        (_, 0) | (Class::Other, _) => {}
        (Class::Word, n) => emit(run[0].0, end_of(n - 1)),
        (Class::Cjk, 1) => emit(run[0].0, end_of(0)),
        (Class::Cjk, _) => {
            for pair in run.windows(2) {
                emit(pair[0].0, pair[1].0 + pair[1].1.len_utf8());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_text_splits_into_words_and_cjk_bigrams() {
        let texts: Vec<String> =
            split("上证指数 opened at 3796.71点，跌").into_iter().map(|t| t.text).collect();
        assert_eq!(texts, ["上证", "证指", "指数", "opened", "at", "3796", "71", "点", "跌"]);
    }

    #[test]
    fn analyzer_lowercases_stems_and_drops_stop_words() {
        assert_eq!(terms("The Markets are Opening"), ["market", "open"]);
        assert_eq!(terms("天气 天气预报"), ["天气", "气预", "预报"]);
    }
}
