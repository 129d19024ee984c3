//! The README and the pages of docs/ are all a newcomer with a clone has: every link in them
//! resolves inside the repository (the file exists, and a `#anchor` names a heading of its
//! target, as GitHub makes anchors), and none points at files outside it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The workspace root: this test crate lives in `tests/`.
fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .expect("the workspace root")
}

/// The pages checked: README.md, every docs/*.md, and deploy/README.md.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md"), root.join("deploy/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines of a Markdown text outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(*m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => lines.push((index + 1, line)),
            _ => {}
        }
    }
    lines
}

/// A line with its inline code spans (`...`) removed: what they hold is not a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let from_ticks = &rest[start..];
        let ticks = from_ticks.len() - from_ticks.trim_start_matches('`').len();
        let delimiter = &from_ticks[..ticks];
        let body = &from_ticks[ticks..];
        rest = match body.find(delimiter) {
            Some(end) => &body[end + ticks..],
            // An unmatched backtick is plain text.
            None => body,
        };
    }
    out.push_str(rest);
    out
}

/// The targets of the links of one line: `[text](target)`, `[name]: target`, and the
/// `src="..."` and `href="..."` of HTML such as `<img>`.
fn link_targets(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find("](") {
        let after = &rest[open + 2..];
        // Up to the closing parenthesis, allowing balanced ones inside the target.
        let mut depth = 0usize;
        let mut close = None;
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    close = Some(i);
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        let Some(close) = close else { break };
        let inside = after[..close].trim();
        // `(<target>)` or `(target "title")`.
        let target = match inside.strip_prefix('<').and_then(|r| r.split_once('>')) {
            Some((target, _)) => target,
            None => inside.split_whitespace().next().unwrap_or_default(),
        };
        found.push(target.to_owned());
        rest = &after[close..];
    }
    for attribute in ["src=\"", "href=\""] {
        let mut rest = line;
        while let Some(at) = rest.find(attribute) {
            let after = &rest[at + attribute.len()..];
            let Some(end) = after.find('"') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') && !trimmed.starts_with("[!") {
        if let Some((_, definition)) = trimmed.split_once("]:") {
            if let Some(target) = definition.split_whitespace().next() {
                found.push(target.to_owned());
            }
        }
    }
    found
}

/// GitHub's anchor for a heading: lower case, spaces become `-`, and every other character
/// but letters, digits, `-` and `_` is dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a Markdown text has: one per heading (a repeated one gets `-1`, `-2`, ...),
/// plus any HTML `id="..."` or `name="..."`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        let level = trimmed.len() - trimmed.trim_start_matches('#').len();
        let heading = &trimmed[level..];
        if (1..=6).contains(&level) && (heading.is_empty() || heading.starts_with(' ')) {
            let base = slug(heading.trim().trim_end_matches('#'));
            let count = seen.entry(base.clone()).or_insert(0);
            anchors.insert(if *count == 0 {
                base.clone()
            } else {
                format!("{base}-{count}")
            });
            *count += 1;
        }
        for attribute in ["id=\"", "name=\""] {
            let mut rest = line;
            while let Some(at) = rest.find(attribute) {
                let after = &rest[at + attribute.len()..];
                let Some(end) = after.find('"') else { break };
                anchors.insert(after[..end].to_owned());
                rest = &after[end..];
            }
        }
    }
    anchors
}

/// What is wrong with one link of `page`, if anything.
fn check_link(root: &Path, page: &Path, text: &str, target: &str) -> Option<String> {
    if target.starts_with("http://")
        || target.starts_with("https://")
        || target.starts_with("mailto:")
    {
        return None;
    }
    if target.is_empty() {
        return Some("an empty link".into());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let (file, file_text) = if path.is_empty() {
        (page.to_path_buf(), text.to_owned())
    } else {
        if path.starts_with('/') {
            return Some("an absolute path: write it relative to the page".into());
        }
        let dir = page.parent().unwrap_or(root);
        let Ok(file) = dir.join(path).canonicalize() else {
            return Some(format!("{path} does not exist"));
        };
        if !file.starts_with(root) {
            return Some(format!("{path} is outside the repository"));
        }
        let file_text = if file.extension().is_some_and(|ext| ext == "md") {
            std::fs::read_to_string(&file).unwrap_or_default()
        } else {
            String::new()
        };
        (file, file_text)
    };
    let anchor = anchor.filter(|a| !a.is_empty())?;
    if file.extension().is_none_or(|ext| ext != "md") {
        return Some(format!("#{anchor} on a file that is not Markdown"));
    }
    if anchors(&file_text).contains(anchor) {
        None
    } else {
        Some(format!(
            "no heading of {} has the anchor #{anchor}",
            file.display()
        ))
    }
}

#[test]
fn every_link_in_the_readme_and_docs_resolves() {
    let root = root();
    let pages = pages(&root);
    let mut broken = Vec::new();
    let mut links = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", page.display()));
        let name = page
            .strip_prefix(&root)
            .unwrap_or(page)
            .display()
            .to_string();
        for outside in ["../shared", "CONTRACT.md", "DESIGN.md"] {
            if text.contains(outside) {
                broken.push(format!(
                    "{name}: mentions {outside}, which a clone of the repository does not have"
                ));
            }
        }
        for (number, line) in prose_lines(&text) {
            for target in link_targets(&without_code_spans(line)) {
                links += 1;
                if let Some(why) = check_link(&root, page, &text, &target) {
                    broken.push(format!("{name}:{number}: ({target}) {why}"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links in the README and docs/:\n{}",
        broken.join("\n")
    );
    assert!(links > 0, "no link found at all: is the parser broken?");
}

#[test]
fn the_link_checker_reads_links_and_anchors_as_github_does() {
    assert_eq!(slug("Retries and delay tiers"), "retries-and-delay-tiers");
    assert_eq!(
        slug("`queue_type = quorum` on a cluster"),
        "queue_type--quorum-on-a-cluster"
    );
    assert_eq!(slug("What it costs (per 1 000)"), "what-it-costs-per-1-000");
    let text = "# Title\n\n## Same\n\n```\n## Not a heading\n```\n\n## Same\n";
    let found = anchors(text);
    assert!(found.contains("title") && found.contains("same") && found.contains("same-1"));
    assert!(!found.contains("not-a-heading"));
    assert_eq!(
        link_targets(&without_code_spans(
            "see [a](docs/a.md#x) and `[b](not/a/link)`, ![c](<d e.png> \"t\") <img src=\"f.png\">"
        )),
        vec!["docs/a.md#x", "d e.png", "f.png"]
    );
    assert_eq!(link_targets("[ref]: ../x.md \"title\""), vec!["../x.md"]);
}
