//! Loading the offline document collection.
//!
//! A collection is either
//!
//! - a directory, searched recursively (hidden entries skipped, in path order), of
//!   - `.md` / `.markdown`: optional front matter between `---` lines with `title:`,
//!     `url:`, `date:` and `source:` keys; else the title is the first `# ` heading, or
//!     the file name;
//!   - `.txt`: the first non-empty line is the title;
//!   - `.html` / `.htm`: the `<title>` (or first `<h1>`) and the readable text;
//! - or a `.jsonl` file, one `{"title", "body", "url"?, "date"?, "source"?}` object per
//!   line (`text` or `content` may stand for `body`).
//!
//! A document's URL defaults to its path relative to the collection root.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{html, Error, Result};

/// Files larger than this are skipped (with a warning): a search collection holds
/// articles, not dumps.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// The label of documents that do not name their source.
const DEFAULT_SOURCE: &str = "local documents";

/// One searchable document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Document {
    pub title: String,
    pub body: String,
    pub url: String,
    pub date: Option<String>,
    pub source: String,
}

/// The documents of the collection at `root`, and a fingerprint of the files they came
/// from (paths, sizes, modification times) that changes when the collection does.
pub(crate) fn load(root: &Path) -> Result<(Vec<Document>, String)> {
    let meta = std::fs::metadata(root).map_err(|source| Error::Io {
        what: "offline search collection",
        path: root.into(),
        source,
    })?;
    if meta.is_file() {
        if root.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            return Err(Error::Document {
                path: root.into(),
                reason: "a collection file must be .jsonl (or give a directory)".into(),
            });
        }
        let text = read(root)?;
        return Ok((parse_jsonl(root, &text)?, fingerprint_line(root, root, &meta)));
    }
    let mut files = Vec::new();
    walk(root, &mut files)?;
    files.sort();
    let mut documents = Vec::with_capacity(files.len());
    let mut fingerprint = String::new();
    for path in files {
        let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
            what: "offline search document",
            path: path.clone(),
            source,
        })?;
        if meta.len() > MAX_FILE_BYTES {
            tracing::warn!(path = %path.display(), bytes = meta.len(), "offline search: document too large; skipped");
            continue;
        }
        fingerprint.push_str(&fingerprint_line(root, &path, &meta));
        let relative =
            path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        if let Some(document) = parse_file(&path, &relative)? {
            documents.push(document);
        }
    }
    Ok((documents, fingerprint))
}

/// Collects the supported files under `dir`.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        what: "offline search collection",
        path: dir.into(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            what: "offline search collection",
            path: dir.into(),
            source,
        })?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, files)?;
        } else if matches!(extension(&path).as_str(), "md" | "markdown" | "txt" | "html" | "htm") {
            files.push(path);
        }
    }
    Ok(())
}

fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

fn fingerprint_line(root: &Path, path: &Path, meta: &std::fs::Metadata) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let relative = path.strip_prefix(root).unwrap_or(path);
    format!("{}\t{}\t{modified}\n", relative.display(), meta.len())
}

fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        what: "offline search document",
        path: path.into(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| Error::Document {
        path: path.into(),
        reason: format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
    })
}

/// The document in `path` (`relative` to the root), or `None` if it holds no text.
fn parse_file(path: &Path, relative: &str) -> Result<Option<Document>> {
    let text = read(path)?;
    let stem =
        path.file_stem().and_then(|s| s.to_str()).unwrap_or(relative).replace(['-', '_'], " ");
    let mut document = Document {
        title: String::new(),
        body: String::new(),
        url: relative.to_owned(),
        date: None,
        source: DEFAULT_SOURCE.to_owned(),
    };
    match extension(path).as_str() {
        "html" | "htm" => {
            let page = html::extract(&text);
            document.title = page.title.unwrap_or(stem);
            document.body = page.text;
        }
        "txt" => {
            let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
            document.title = lines.next().unwrap_or("").trim().to_owned();
            document.body = lines.collect::<Vec<_>>().join("\n").trim().to_owned();
        }
        _ => {
            let body = front_matter(&text, &mut document);
            let mut heading = None;
            let mut lines = Vec::new();
            for line in body.lines() {
                let trimmed = line.trim_start();
                if heading.is_none() && trimmed.starts_with("# ") {
                    heading = Some(trimmed[2..].trim().to_owned());
                    continue;
                }
                lines.push(strip_markdown(line));
            }
            if document.title.is_empty() {
                document.title = heading.unwrap_or(stem);
            }
            document.body = lines.join("\n").trim().to_owned();
        }
    }
    if document.title.is_empty() && document.body.is_empty() {
        return Ok(None);
    }
    Ok(Some(document))
}

/// Applies the front matter of a Markdown file to `document`; returns the rest.
fn front_matter<'a>(text: &'a str, document: &mut Document) -> &'a str {
    let Some(rest) = text.strip_prefix("---\n").or_else(|| text.strip_prefix("---\r\n")) else {
        return text;
    };
    let Some(end) = rest.find("\n---") else { return text };
    for line in rest[..end].lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim().trim_matches('"').trim_matches('\'').to_owned();
        match key.trim() {
            "title" => document.title = value,
            "url" => document.url = value,
            "date" => document.date = Some(value),
            "source" => document.source = value,
            _ => {}
        }
    }
    let after = &rest[end + 4..];
    after.split_once('\n').map_or("", |(_, body)| body)
}

/// A Markdown line as plain text: heading marks, emphasis, inline code marks and link
/// syntax removed (`[text](url)` → `text`).
fn strip_markdown(line: &str) -> String {
    let line = line.trim_start().trim_start_matches('#').trim_start();
    let line = line.strip_prefix("> ").unwrap_or(line);
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let link = after
            .find("](")
            .and_then(|close| after[close + 2..].find(')').map(|end| (close, close + 2 + end + 1)));
        match link {
            Some((close, next)) => {
                out.push_str(&after[..close]);
                rest = &after[next..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("**", "").replace("__", "").replace('`', "")
}

#[derive(Deserialize)]
struct JsonDocument {
    #[serde(default)]
    title: String,
    #[serde(default, alias = "text", alias = "content")]
    body: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<Document>> {
    let mut documents = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let json: JsonDocument = serde_json::from_str(line).map_err(|e| Error::Document {
            path: path.into(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        if json.title.trim().is_empty() && json.body.trim().is_empty() {
            continue;
        }
        documents.push(Document {
            title: json.title,
            body: json.body,
            url: json.url.unwrap_or_else(|| format!("{}#{}", path.display(), i + 1)),
            date: json.date,
            source: json.source.unwrap_or_else(|| DEFAULT_SOURCE.to_owned()),
        });
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_front_matter_headings_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let md = "---\ntitle: \"Front title\"\ndate: 2025-08-28\nurl: https://x.test/a\n---\n\
                  # Ignored heading\nSee **the** [docs](https://x.test/docs) and `code`.\n";
        std::fs::write(dir.path().join("a-doc.md"), md).unwrap();
        std::fs::write(dir.path().join("b.md"), "# Heading title\nBody [1] text.\n").unwrap();
        std::fs::write(dir.path().join("c.txt"), "\nText title\nline one\nline two\n").unwrap();
        std::fs::write(dir.path().join("ignored.bin"), "x").unwrap();
        let (docs, fingerprint) = load(dir.path()).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].title, "Front title");
        assert_eq!(docs[0].url, "https://x.test/a");
        assert_eq!(docs[0].date.as_deref(), Some("2025-08-28"));
        assert_eq!(docs[0].body, "See the docs and code.");
        assert_eq!(docs[1].title, "Heading title");
        assert_eq!(docs[1].body, "Body [1] text.");
        assert_eq!(docs[1].url, "b.md");
        assert_eq!(docs[2].title, "Text title");
        assert_eq!(docs[2].body, "line one\nline two");
        assert_eq!(fingerprint.lines().count(), 3);
    }

    #[test]
    fn jsonl_lines_become_documents_and_bad_lines_name_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.jsonl");
        std::fs::write(&path, "{\"title\": \"T\", \"text\": \"B\", \"source\": \"wiki\"}\n\n")
            .unwrap();
        let (docs, _) = load(&path).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!((docs[0].body.as_str(), docs[0].source.as_str()), ("B", "wiki"));
        std::fs::write(&path, "{\"title\": \"T\"}\n{not json}\n").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
    }
}
