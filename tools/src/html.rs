//! Readable text from HTML: a small, forgiving extractor for fetched pages and local
//! `.html` documents.
//!
//! It keeps the text a reader sees, drops what they do not (scripts, styles, templates,
//! navigation, footers, asides, forms, hidden elements), breaks lines at block elements,
//! decodes character references, and prefers the page's `<main>`/`<article>` content when
//! there is enough of it. It is not a conforming HTML5 parser: mismatched tags are closed
//! leniently and unknown markup is skipped.

/// Text and title of an HTML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The `<title>`, or else the first `<h1>`, whitespace collapsed.
    pub title: Option<String>,
    /// The readable text: one paragraph per line, no blank lines.
    pub text: String,
}

/// Elements whose content is never shown as text.
const SKIPPED: [&str; 16] = [
    "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas", "nav",
    "footer", "aside", "form", "button", "select", "head",
];

/// Elements whose content is raw text: their end tag is the only markup inside.
const RAW_TEXT: [&str; 7] = ["script", "style", "textarea", "xmp", "iframe", "noembed", "noframes"];

/// Elements without content or end tag.
const VOID: [&str; 14] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// Elements that start a new line.
const BLOCK: [&str; 32] = [
    "address",
    "article",
    "blockquote",
    "br",
    "caption",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "td",
    "th",
    "tr",
    "ul",
];

/// Main content shorter than this (in characters) is not preferred over the whole page.
const MIN_MAIN_CHARS: usize = 80;

/// Extracts the title and readable text of `html`.
pub fn extract(html: &str) -> Extracted {
    let mut state = State::default();
    let bytes = html.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        let Some(markup) = parse_markup(html, i) else {
            i += 1;
            continue;
        };
        state.text(&html[text_start..i]);
        i = markup.end;
        match markup.kind {
            MarkupKind::Other => {}
            MarkupKind::End(name) => state.close(&name),
            MarkupKind::Start { name, self_closing, hidden } => {
                if RAW_TEXT.contains(&name.as_str()) || name == "title" {
                    let close = find_end_tag(html, i, &name);
                    if name == "title" && state.title.is_none() {
                        state.title = Some(decode_entities(&html[i..close.0]));
                    }
                    i = close.1;
                } else if !VOID.contains(&name.as_str()) && !self_closing {
                    if name == "body" {
                        // `</head>` is optional: the body starts a new section either way.
                        state.close("head");
                    }
                    state.open(name, hidden);
                } else if BLOCK.contains(&name.as_str()) {
                    state.line_break();
                }
            }
        }
        text_start = i;
    }
    state.text(&html[text_start..]);
    state.finish()
}

/// The text of an inline HTML fragment (a search snippet with `<strong>` highlights, a
/// title with entities) on one line.
pub fn inline_text(fragment: &str) -> String {
    if !fragment.contains(['<', '&']) {
        return crate::text::collapse_whitespace(fragment);
    }
    let extracted = extract(fragment);
    crate::text::collapse_whitespace(&extracted.text)
}

/// One piece of markup found at a `<`.
struct Markup {
    kind: MarkupKind,
    /// Byte offset just past the markup.
    end: usize,
}

enum MarkupKind {
    Start {
        name: String,
        self_closing: bool,
        hidden: bool,
    },
    End(String),
    /// A comment, doctype or processing instruction.
    Other,
}

/// Parses the markup starting at `html[at] == '<'`, or `None` if that `<` is text.
fn parse_markup(html: &str, at: usize) -> Option<Markup> {
    let rest = &html[at..];
    if let Some(comment) = rest.strip_prefix("<!--") {
        let end = comment.find("-->").map_or(html.len(), |p| at + 4 + p + 3);
        return Some(Markup { kind: MarkupKind::Other, end });
    }
    if rest.starts_with("<!") || rest.starts_with("<?") {
        let end = rest.find('>').map_or(html.len(), |p| at + p + 1);
        return Some(Markup { kind: MarkupKind::Other, end });
    }
    let (closing, name_at) = if rest.starts_with("</") { (true, 2) } else { (false, 1) };
    let name_len = rest[name_at..]
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b':')
        .count();
    if name_len == 0 || !rest.as_bytes()[name_at].is_ascii_alphabetic() {
        return None;
    }
    let name = rest[name_at..name_at + name_len].to_ascii_lowercase();
    let attrs_at = name_at + name_len;
    let close = find_tag_close(&rest[attrs_at..]).map_or(rest.len(), |p| attrs_at + p);
    let end = (at + close + 1).min(html.len());
    if closing {
        return Some(Markup { kind: MarkupKind::End(name), end });
    }
    let attrs = &rest[attrs_at..close.min(rest.len())];
    let self_closing = attrs.trim_end().ends_with('/');
    Some(Markup { kind: MarkupKind::Start { name, self_closing, hidden: is_hidden(attrs) }, end })
}

/// The offset of the `>` that closes a tag whose attributes start `attrs`, skipping
/// quoted attribute values.
fn find_tag_close(attrs: &str) -> Option<usize> {
    let mut quote = None;
    for (i, b) in attrs.bytes().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// Whether a start tag's attributes hide the element (`hidden`, `aria-hidden="true"`,
/// `display:none`).
fn is_hidden(attrs: &str) -> bool {
    let lower = attrs.to_ascii_lowercase();
    let has_hidden_attr = lower
        .split(|c: char| c.is_whitespace() || c == '/')
        .any(|token| token == "hidden" || token.starts_with("hidden="));
    let compact: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    has_hidden_attr
        || compact.contains("aria-hidden=\"true\"")
        || compact.contains("display:none")
        || compact.contains("role=\"navigation\"")
}

/// `(start of the end tag, offset past it)` for the first `</name` at or after `from`;
/// `(len, len)` if there is none.
fn find_end_tag(html: &str, from: usize, name: &str) -> (usize, usize) {
    let bytes = html.as_bytes();
    let needle_len = name.len() + 2;
    let mut i = from;
    while i + needle_len <= bytes.len() {
        if bytes[i] == b'<'
            && bytes[i + 1] == b'/'
            && bytes[i + 2..i + needle_len].eq_ignore_ascii_case(name.as_bytes())
        {
            let end = html[i..].find('>').map_or(html.len(), |p| i + p + 1);
            return (i, end);
        }
        i += 1;
    }
    (html.len(), html.len())
}

/// An open element.
struct Open {
    name: String,
    skipped: bool,
    main: bool,
}

#[derive(Default)]
struct State {
    stack: Vec<Open>,
    skip_depth: usize,
    main_depth: usize,
    all: Lines,
    main: Lines,
    title: Option<String>,
    first_h1: Option<String>,
    h1: Option<String>,
}

impl State {
    fn skipping(&self) -> bool {
        self.skip_depth > 0
    }

    fn open(&mut self, name: String, hidden: bool) {
        let skipped = hidden || SKIPPED.contains(&name.as_str());
        let main = name == "main" || name == "article";
        if BLOCK.contains(&name.as_str()) {
            self.line_break();
        }
        if name == "h1" && self.first_h1.is_none() && !self.skipping() {
            self.h1 = Some(String::new());
        }
        self.skip_depth += usize::from(skipped);
        self.main_depth += usize::from(main);
        self.stack.push(Open { name, skipped, main });
    }

    fn close(&mut self, name: &str) {
        let Some(position) = self.stack.iter().rposition(|open| open.name == name) else {
            return;
        };
        for open in self.stack.drain(position..) {
            self.skip_depth -= usize::from(open.skipped);
            self.main_depth -= usize::from(open.main);
        }
        if name == "h1" {
            if let Some(h1) = self.h1.take() {
                self.first_h1 = Some(h1);
            }
        }
        if BLOCK.contains(&name) {
            self.line_break();
        }
    }

    fn line_break(&mut self) {
        self.all.line_break();
        self.main.line_break();
    }

    fn text(&mut self, raw: &str) {
        if self.skipping() || raw.is_empty() {
            return;
        }
        let decoded = decode_entities(raw);
        if let Some(h1) = &mut self.h1 {
            h1.push_str(&decoded);
        }
        self.all.push(&decoded);
        if self.main_depth > 0 {
            self.main.push(&decoded);
        }
    }

    fn finish(mut self) -> Extracted {
        let all = std::mem::take(&mut self.all).finish();
        let main = std::mem::take(&mut self.main).finish();
        let text = if main.chars().count() >= MIN_MAIN_CHARS { main } else { all };
        let title = self
            .title
            .map(|t| crate::text::collapse_whitespace(&t))
            .filter(|t| !t.is_empty())
            .or_else(|| {
                self.first_h1
                    .map(|t| crate::text::collapse_whitespace(&t))
                    .filter(|t| !t.is_empty())
            });
        Extracted { title, text }
    }
}

/// Text accumulated line by line, whitespace collapsed within lines.
#[derive(Default)]
struct Lines {
    done: Vec<String>,
    current: String,
}

impl Lines {
    fn push(&mut self, text: &str) {
        let starts_with_space = text.starts_with(char::is_whitespace);
        let ends_with_space = text.ends_with(char::is_whitespace);
        let collapsed = crate::text::collapse_whitespace(text);
        if collapsed.is_empty() {
            if starts_with_space && !self.current.is_empty() && !self.current.ends_with(' ') {
                self.current.push(' ');
            }
            return;
        }
        if starts_with_space && !self.current.is_empty() && !self.current.ends_with(' ') {
            self.current.push(' ');
        }
        self.current.push_str(&collapsed);
        if ends_with_space {
            self.current.push(' ');
        }
    }

    fn line_break(&mut self) {
        let line = self.current.trim();
        if !line.is_empty() {
            self.done.push(line.to_owned());
        }
        self.current.clear();
    }

    fn finish(mut self) -> String {
        self.line_break();
        self.done.join("\n")
    }
}

/// Decodes character references: numeric (`&#233;`, `&#xE9;`) and the common named ones.
/// Unknown or malformed references are kept as written.
pub fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let reference = rest[1..]
            .find(';')
            .filter(|&p| p <= 32)
            .and_then(|p| decode_reference(&rest[1..1 + p]).map(|c| (c, p + 2)));
        match reference {
            Some((decoded, len)) => {
                out.push_str(decoded.as_str());
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text of the reference `&{name};`, if known.
fn decode_reference(name: &str) -> Option<String> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse::<u32>().ok()?,
        };
        let c = char::from_u32(code).filter(|c| *c != '\0').unwrap_or('\u{FFFD}');
        return Some(c.to_string());
    }
    let c = match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        "nbsp" | "ensp" | "emsp" | "thinsp" => " ",
        "shy" | "zwj" | "zwnj" | "lrm" | "rlm" => "",
        "mdash" => "—",
        "ndash" => "–",
        "hellip" => "…",
        "lsquo" => "‘",
        "rsquo" => "’",
        "ldquo" => "“",
        "rdquo" => "”",
        "laquo" => "«",
        "raquo" => "»",
        "middot" => "·",
        "bull" => "•",
        "times" => "×",
        "divide" => "÷",
        "deg" => "°",
        "plusmn" => "±",
        "copy" => "©",
        "reg" => "®",
        "trade" => "™",
        "euro" => "€",
        "pound" => "£",
        "yen" => "¥",
        "cent" => "¢",
        "sect" => "§",
        "para" => "¶",
        _ => return None,
    };
    Some(c.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_article_text_and_drops_boilerplate() {
        let html = r#"<!DOCTYPE html><html><head><title>Shanghai &amp; Shenzhen
            open</title><style>p { color: red }</style><script>var x = "</p>";</script></head>
            <body><nav><a href="/">Home</a> | <a href="/news">News</a></nav>
            <main><h1>Markets open lower</h1><p>The Shanghai Composite opened down 3.64 points,
            or 0.1%, at 3796.71.</p><p>The Shenzhen Component fell 0.33%&nbsp;to 12254.27.</p>
            <div hidden>tracking pixel text</div></main>
            <footer>© 2025 Example News</footer></body></html>"#;
        let page = extract(html);
        assert_eq!(page.title.as_deref(), Some("Shanghai & Shenzhen open"));
        let lines: Vec<&str> = page.text.lines().collect();
        assert_eq!(
            lines,
            [
                "Markets open lower",
                "The Shanghai Composite opened down 3.64 points, or 0.1%, at 3796.71.",
                "The Shenzhen Component fell 0.33% to 12254.27.",
            ]
        );
    }

    #[test]
    fn whole_body_is_used_without_main_content_and_inline_spacing_is_kept() {
        let html = "<body><p>Hello <b>bold</b>world and <i>more</i> text.<br>Next line</p>\
                    <!-- a comment with <p>markup</p> --><ul><li>one</li><li>two</li></ul></body>";
        let page = extract(html);
        assert_eq!(page.title, None);
        assert_eq!(page.text, "Hello boldworld and more text.\nNext line\none\ntwo");
    }

    #[test]
    fn entities_decode_and_unknown_ones_stay() {
        assert_eq!(
            decode_entities("a &lt;b&gt; &#233;&#xe9; &unknown; & c"),
            "a <b> éé &unknown; & c"
        );
        assert_eq!(decode_entities("天气&middot;预报"), "天气·预报");
    }

    #[test]
    fn stray_angle_brackets_and_unclosed_tags_do_not_lose_text() {
        let page = extract("<p>1 < 2 and 3 > 2<div>unclosed <span>span");
        assert_eq!(page.text, "1 < 2 and 3 > 2\nunclosed span");
        let page = extract("<h1>Only heading</h1>");
        assert_eq!(page.title.as_deref(), Some("Only heading"));
    }
}
