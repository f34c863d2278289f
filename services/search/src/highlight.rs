//! Highlights (API.md): the content HTML-escaped, with matched words wrapped in
//! `<em>`…`</em>`; for content longer than [`MAX_FRAGMENT_CHARS`] characters, a fragment
//! of at most that many characters (the `…` marks where it was cut included) around the
//! first match. Escaping happens piece by piece around the matches, so the markup is
//! the only HTML in the result.

use std::collections::HashSet;

use crate::analysis::Word;

/// Longest highlight, in characters of the content (ellipses included, tags not).
pub const MAX_FRAGMENT_CHARS: usize = 200;

/// Characters of context kept before the first match in a fragment.
const CONTEXT_BEFORE: usize = 30;

const ELLIPSIS: char = '…';

/// The highlight of `content`, whose indexed words are `words`, for query `terms`.
pub fn highlight(content: &str, words: &[Word], terms: &HashSet<String>) -> String {
    let matches = matched_ranges(words, terms);
    let total = content.chars().count();
    if total <= MAX_FRAGMENT_CHARS {
        return render(content, 0, content.len(), &matches);
    }
    let first = matches
        .first()
        .map_or(0, |&(start, _)| content[..start].chars().count());
    let (start, end) = window(first, total);
    let byte_at = |chars: usize| {
        content
            .char_indices()
            .nth(chars)
            .map_or(content.len(), |(i, _)| i)
    };
    let (from, to) = (byte_at(start), byte_at(end));
    let mut out = String::new();
    if start > 0 {
        out.push(ELLIPSIS);
    }
    out.push_str(&render(content, from, to, &matches));
    if end < total {
        out.push(ELLIPSIS);
    }
    out
}

/// The character window `[start, end)` of a fragment of content with `total`
/// characters whose first match starts at character `first`, leaving room for the
/// ellipses so that the fragment never exceeds [`MAX_FRAGMENT_CHARS`].
fn window(first: usize, total: usize) -> (usize, usize) {
    if total <= MAX_FRAGMENT_CHARS {
        return (0, total);
    }
    let start = first.saturating_sub(CONTEXT_BEFORE);
    if start == 0 {
        // Cut at the end only.
        return (0, MAX_FRAGMENT_CHARS - 1);
    }
    if start + MAX_FRAGMENT_CHARS - 2 >= total {
        // Cut at the start only.
        return (total - (MAX_FRAGMENT_CHARS - 1), total);
    }
    (start, start + MAX_FRAGMENT_CHARS - 2)
}

/// Byte ranges of the words that match a term, sorted and merged where they overlap
/// (search-mode words overlap: 已添加 and 添加).
fn matched_ranges(words: &[Word], terms: &HashSet<String>) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = words
        .iter()
        .filter(|w| terms.contains(&w.text))
        .map(|w| (w.start, w.end))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// `content[from..to]` escaped, with the parts inside `matches` wrapped in `<em>`.
fn render(content: &str, from: usize, to: usize, matches: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity((to - from) + 16);
    let mut at = from;
    for &(start, end) in matches {
        let (start, end) = (start.max(from), end.min(to));
        if start >= end || start < at {
            continue;
        }
        escape_into(&mut out, &content[at..start]);
        out.push_str("<em>");
        escape_into(&mut out, &content[start..end]);
        out.push_str("</em>");
        at = end;
    }
    escape_into(&mut out, &content[at..to]);
    out
}

/// Appends `text` with `& < > " '` escaped.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{WordTokenizer, query_terms};

    fn hl(content: &str, query: &str) -> String {
        let words = WordTokenizer::for_index().words(content);
        let terms: HashSet<String> = query_terms(query).into_iter().collect();
        highlight(content, &words, &terms)
    }

    fn visible_chars(highlight: &str) -> usize {
        let text = highlight.replace("<em>", "").replace("</em>", "");
        let text = text
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'");
        text.chars().count()
    }

    #[test]
    fn matched_words_are_wrapped() {
        assert_eq!(hl("我们的消息", "消息"), "我们的<em>消息</em>");
        assert_eq!(hl("已添加为好友", "添加"), "已<em>添加</em>为好友");
        assert_eq!(
            hl("Hello World hello", "hello"),
            "<em>Hello</em> World <em>hello</em>"
        );
    }

    #[test]
    fn content_is_escaped_and_only_em_is_markup() {
        assert_eq!(
            hl("<b>消息</b> & 'x' \"y\"", "消息"),
            "&lt;b&gt;<em>消息</em>&lt;/b&gt; &amp; &#39;x&#39; &quot;y&quot;"
        );
        assert_eq!(
            hl("<script>alert(1)</script>", "script"),
            "&lt;<em>script</em>&gt;alert(1)&lt;/<em>script</em>&gt;"
        );
    }

    #[test]
    fn long_content_gives_a_fragment_around_the_first_match() {
        let content = format!("{}消息{}", "前".repeat(300), "后".repeat(300));
        let out = hl(&content, "消息");
        assert!(out.starts_with('…') && out.ends_with('…'), "{out}");
        assert!(out.contains("<em>消息</em>"));
        assert!(
            visible_chars(&out) <= MAX_FRAGMENT_CHARS,
            "{}",
            visible_chars(&out)
        );
        // Some context before the match is kept.
        assert!(out.starts_with(&format!("…{}", "前".repeat(CONTEXT_BEFORE))));
    }

    #[test]
    fn fragments_at_either_end_are_cut_on_one_side_only() {
        let head = format!("消息{}", "字".repeat(400));
        let out = hl(&head, "消息");
        assert!(
            out.starts_with("<em>消息</em>") && out.ends_with('…'),
            "{out}"
        );
        assert_eq!(visible_chars(&out), MAX_FRAGMENT_CHARS);

        let tail = format!("{}消息", "字".repeat(400));
        let out = hl(&tail, "消息");
        assert!(
            out.starts_with('…') && out.ends_with("<em>消息</em>"),
            "{out}"
        );
        assert_eq!(visible_chars(&out), MAX_FRAGMENT_CHARS);
    }

    #[test]
    fn content_of_exactly_the_limit_is_not_cut() {
        let content = format!("消息{}", "a ".repeat(99));
        assert_eq!(content.chars().count(), 200);
        assert!(!hl(&content, "消息").contains('…'));
    }

    #[test]
    fn escaping_does_not_count_against_the_fragment() {
        let content = format!("{} word {}", "&".repeat(300), "<".repeat(300));
        let out = hl(&content, "word");
        assert!(out.contains("<em>word</em>"));
        assert!(visible_chars(&out) <= MAX_FRAGMENT_CHARS);
        assert!(!out.contains("<<") && !out.contains("&&"));
    }

    #[test]
    fn windows_never_exceed_the_limit() {
        for total in [201, 250, 1000] {
            for first in [0, 1, 29, 30, 31, 100, total - 1] {
                let (start, end) = window(first, total);
                let cut = usize::from(start > 0) + usize::from(end < total);
                assert!(end - start + cut <= MAX_FRAGMENT_CHARS, "{total} {first}");
                assert!(
                    start <= first && first < end,
                    "{total} {first}: {start}..{end}"
                );
            }
        }
    }
}
