//! Text analysis: how message content and queries are cut into words.
//!
//! Text is split into runs of CJK characters and runs of other letters and digits;
//! whitespace and punctuation never become terms, so query-syntax characters in a
//! query are simply ignored. Non-CJK runs are lower-cased words.
//!
//! CJK runs have no spaces. Content is indexed with jieba's search-mode words plus
//! every character and every pair of adjacent characters of the run; a query is cut
//! with jieba's precise mode and each of its words is looked up as the pairs of
//! adjacent characters inside it (a single character as itself). The pairs never
//! cross the query's word boundaries, so 消息 matches 我们的消息 and not 消费, and
//! 添加 matches 已添加为好友 even where jieba cuts the content as 已添/加为好友 (it
//! does: its HMM joins 已 and 添).

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy_jieba::JiebaTokenizer;

/// Name under which the index registers [`WordTokenizer::for_index`].
pub const INDEX_TOKENIZER: &str = "beehive_words";

/// Longest term kept (bytes); longer "words" (a pasted blob) are dropped.
const MAX_TERM_BYTES: usize = 64;

/// One word of a text: its lower-cased text and byte range in the original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// Whether `c` is written without spaces between words (Han, kana).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF
        | 0x20000..=0x2A6DF | 0x2A700..=0x2EBEF | 0x30000..=0x3134F)
}

/// Splits `text` into `(byte offset, run, is_cjk)` runs of CJK characters and of other
/// letters and digits, dropping everything else.
fn runs(text: &str) -> Vec<(usize, &str, bool)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, bool)> = None;
    for (i, c) in text.char_indices() {
        let class = if is_cjk(c) {
            Some(true)
        } else if c.is_alphanumeric() {
            Some(false)
        } else {
            None
        };
        match (current, class) {
            (Some((_, cjk)), Some(now)) if cjk == now => {}
            (Some((start, cjk)), _) => {
                out.push((start, &text[start..i], cjk));
                current = class.map(|now| (i, now));
            }
            (None, _) => current = class.map(|now| (i, now)),
        }
    }
    if let Some((start, cjk)) = current {
        out.push((start, &text[start..], cjk));
    }
    out
}

/// Every character and every pair of adjacent characters of a CJK run at `offset`.
fn grams(run: &str, offset: usize, singles: bool, out: &mut Vec<Word>) {
    let chars: Vec<(usize, char)> = run.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        if singles {
            out.push(Word {
                text: c.to_string(),
                start: offset + i,
                end: offset + i + c.len_utf8(),
            });
        }
        if let Some(&(j, d)) = chars.get(k + 1) {
            out.push(Word {
                text: run[i..j + d.len_utf8()].to_owned(),
                start: offset + i,
                end: offset + j + d.len_utf8(),
            });
        }
    }
}

/// Segmentation and lower-casing, for the index or for queries.
#[derive(Clone)]
pub struct WordTokenizer {
    jieba: JiebaTokenizer,
    index: bool,
}

impl WordTokenizer {
    /// What content is indexed with.
    pub fn for_index() -> Self {
        Self {
            jieba: JiebaTokenizer::with_search_mode(true),
            index: true,
        }
    }

    /// What queries are cut with.
    pub fn for_query() -> Self {
        Self {
            jieba: JiebaTokenizer::with_search_mode(false),
            index: false,
        }
    }

    /// The words of `text`, in order of their start (index words overlap).
    pub fn words(&mut self, text: &str) -> Vec<Word> {
        let mut out = Vec::new();
        for (offset, run, cjk) in runs(text) {
            if !cjk {
                if run.len() <= MAX_TERM_BYTES {
                    out.push(Word {
                        text: run.to_lowercase(),
                        start: offset,
                        end: offset + run.len(),
                    });
                }
                continue;
            }
            let mut stream = self.jieba.token_stream(run);
            let mut pieces: Vec<(usize, usize)> = Vec::new();
            while stream.advance() {
                let token = stream.token();
                pieces.push((token.offset_from, token.offset_to));
            }
            if self.index {
                for (from, to) in pieces {
                    if run[from..to].chars().count() > 2 {
                        out.push(Word {
                            text: run[from..to].to_owned(),
                            start: offset + from,
                            end: offset + to,
                        });
                    }
                }
                grams(run, offset, true, &mut out);
            } else {
                for (from, to) in pieces {
                    let word = &run[from..to];
                    if word.chars().count() == 1 {
                        grams(word, offset + from, true, &mut out);
                    } else {
                        grams(word, offset + from, false, &mut out);
                    }
                }
            }
        }
        out.sort_by_key(|w| (w.start, w.end));
        out
    }
}

/// The distinct words of a query, in order of first appearance.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in WordTokenizer::for_query().words(query) {
        if !terms.contains(&word.text) {
            terms.push(word.text);
        }
    }
    terms
}

/// A token stream over already computed words.
pub struct WordStream {
    tokens: Vec<Token>,
    next: usize,
}

impl TokenStream for WordStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next.saturating_sub(1)]
    }

    fn token_mut(&mut self) -> &mut Token {
        let index = self.next.saturating_sub(1);
        &mut self.tokens[index]
    }
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream {
        let mut tokens: Vec<Token> = self
            .words(text)
            .into_iter()
            .enumerate()
            .map(|(position, word)| Token {
                offset_from: word.start,
                offset_to: word.end,
                position,
                text: word.text,
                position_length: 1,
            })
            .collect();
        // `token()` before the first `advance()` must not panic on empty text.
        if tokens.is_empty() {
            tokens.push(Token::default());
            return WordStream { tokens, next: 1 };
        }
        WordStream { tokens, next: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_words(text: &str) -> Vec<String> {
        WordTokenizer::for_index()
            .words(text)
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    #[test]
    fn chinese_is_cut_into_words_not_characters() {
        let words = index_words("我们的消息");
        assert!(words.contains(&"消息".to_owned()), "{words:?}");
        assert!(!words.contains(&"消费".to_owned()));
        assert_eq!(query_terms("消费"), vec!["消费".to_owned()]);
        assert_eq!(query_terms("消息"), vec!["消息".to_owned()]);
    }

    #[test]
    fn search_mode_finds_a_word_inside_a_compound() {
        let words = index_words("已添加为好友");
        assert!(words.contains(&"添加".to_owned()), "{words:?}");
        assert!(words.contains(&"好友".to_owned()), "{words:?}");
        // Every query term of a text is among its indexed words.
        for text in [
            "已添加为好友",
            "我们的消息",
            "中华人民共和国成立了",
            "数据库连接池",
        ] {
            let words = index_words(text);
            for term in query_terms(text) {
                assert!(words.contains(&term), "{term} missing from {words:?}");
            }
        }
        // Query pairs stay inside jieba's words: no pair across 的 and 消.
        assert!(!query_terms("我们的消息").contains(&"的消".to_owned()));
    }

    #[test]
    fn other_scripts_are_lower_cased_words_and_punctuation_is_dropped() {
        assert_eq!(
            query_terms("Hello, WORLD! (title:x) AND \"quoted\"*"),
            vec!["hello", "world", "title", "x", "and", "quoted"]
        );
        assert_eq!(
            query_terms("  +-&&||!(){}[]^\"~*?:\\/ "),
            Vec::<String>::new()
        );
        assert_eq!(query_terms("Grüße café"), vec!["grüße", "café"]);
        assert_eq!(query_terms("Rust消息"), vec!["rust", "消息"]);
    }

    #[test]
    fn offsets_point_into_the_original_text() {
        let text = "Ab 我们的消息";
        for word in WordTokenizer::for_index().words(text) {
            assert_eq!(text[word.start..word.end].to_lowercase(), word.text);
        }
    }

    #[test]
    fn overlong_tokens_are_not_terms() {
        let blob = "x".repeat(200);
        assert!(query_terms(&blob).is_empty());
        assert_eq!(query_terms(&format!("{blob} ok")), vec!["ok".to_owned()]);
    }

    #[test]
    fn the_token_stream_of_empty_text_is_empty() {
        let mut tokenizer = WordTokenizer::for_index();
        let mut stream = tokenizer.token_stream("");
        assert!(!stream.advance());
    }
}
