//! Strict YAML: one document, no tags, no merge keys, no duplicate keys,
//! bounded size, depth and alias expansion; every node's position indexed.
//!
//! A first pass walks the parser's events (granit-parser, the parser under
//! serde-saphyr) to close the traps that YAML libraries leave open and to
//! build a [`SpanIndex`] from value paths such as `opt_in.upgrades` to their
//! line and column. A second pass deserializes with serde-saphyr in its
//! strictest settings, so both layers refuse what the other might miss.

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, Span};
use serde::de::DeserializeOwned;
use serde_saphyr::MessageFormatter;

use super::diag::{Diagnostic, Location};

/// Largest YAML file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 32;
/// Most nodes a document's aliases may repeat; a billion laughs fails at
/// this count, long before it costs memory or time. The nodes written out
/// are bounded by [`MAX_FILE_BYTES`] instead: a list of 10,000 sites is
/// more than 100,000 nodes and no bomb.
pub const MAX_EXPANDED_NODES: usize = 100_000;

/// Where a node is: the value's position and, for a mapping value, its key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePos {
    /// 1-based line and column of the key, for mapping values.
    pub key: Option<(usize, usize)>,
    /// 1-based line and column of the value.
    pub value: (usize, usize),
}

/// Positions of every node of a document, by path (`a.b[2].c`; the root is `""`).
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    by_path: HashMap<String, NodePos>,
    /// Position → (path, whether it is a key), to name the field of a serde error.
    by_pos: HashMap<(usize, usize), (String, bool)>,
    root_is_sequence: bool,
}

impl SpanIndex {
    /// The position of the node at `path`.
    pub fn get(&self, path: &str) -> Option<NodePos> {
        self.by_path.get(path).copied()
    }

    /// The position of `path`'s value, else of its nearest indexed ancestor,
    /// so that a problem with a defaulted field points at its parent.
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(pos) = self.by_path.get(p) {
                return pos.value;
            }
            match p.rfind(['.', '[']) {
                Some(cut) => p = &p[..cut],
                None if !p.is_empty() => p = "",
                None => return (1, 1),
            }
        }
    }

    /// The position of the key of `path`, else of its value (or ancestor).
    pub fn locate_key(&self, path: &str) -> (usize, usize) {
        match self.by_path.get(path) {
            Some(NodePos { key: Some(k), .. }) => *k,
            _ => self.locate(path),
        }
    }

    /// Whether the document's root is a sequence (a site file with a list).
    pub fn root_is_sequence(&self) -> bool {
        self.root_is_sequence
    }

    fn record(&mut self, path: String, pos: NodePos) {
        if let Some(k) = pos.key {
            self.by_pos.entry(k).or_insert_with(|| (path.clone(), true));
        }
        self.by_pos
            .entry(pos.value)
            .or_insert_with(|| (path.clone(), false));
        self.by_path.entry(path).or_insert(pos);
    }
}

/// Parses one YAML document into `T`, refusing every trap, and returns the
/// value with the positions of its nodes. `file` names the file in errors.
pub fn parse<T: DeserializeOwned>(file: &str, bytes: &[u8]) -> Result<(T, SpanIndex), Diagnostic> {
    parse_shaped(file, bytes, MAPPING)
}

/// What most files hold, for messages about an empty or scalar file.
const MAPPING: &str = "a mapping of fields (key: value)";

/// Like [`parse`], with `shape` describing what the file should hold, for
/// the messages about an empty file or a file holding a plain value.
pub fn parse_shaped<T: DeserializeOwned>(
    file: &str,
    bytes: &[u8],
    shape: &str,
) -> Result<(T, SpanIndex), Diagnostic> {
    let text = check_text(file, bytes)?;
    let index = scan(file, text, shape)?;
    let value = deserialize(file, text, &index)?;
    Ok((value, index))
}

/// Scans without deserializing: the traps and the index only.
pub fn scan_only(file: &str, bytes: &[u8], shape: &str) -> Result<SpanIndex, Diagnostic> {
    scan(file, check_text(file, bytes)?, shape)
}

fn at(file: &str, (line, column): (usize, usize)) -> Location {
    Location {
        file: file.to_owned(),
        line,
        column,
    }
}

fn check_text<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, Diagnostic> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::new(
            at(file, (1, 1)),
            format!(
                "the file is {} bytes, over the 1 MiB limit for sitekeeper files",
                bytes.len()
            ),
        )
        .with_hint(
            "split it into several files, or move large content into the catalog's fixes/files/",
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = good.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        Diagnostic::new(at(file, (line, column)), "the file is not valid UTF-8")
            .with_hint("save it as UTF-8")
    })
}

fn start(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

/// An open collection, with what its children need to be placed and sized.
enum Frame {
    Map {
        path: String,
        /// The key whose value comes next, with its position; `None` while a key is expected.
        key: Option<(String, (usize, usize))>,
        seen: HashMap<String, (usize, usize)>,
        anchor: usize,
        nodes_at_start: usize,
    },
    Seq {
        path: String,
        next: usize,
        anchor: usize,
        nodes_at_start: usize,
    },
}

impl Frame {
    /// The collection's anchor (0 if none) and the node count where it began.
    fn anchor(&self) -> (usize, usize) {
        match self {
            Frame::Map {
                anchor,
                nodes_at_start,
                ..
            }
            | Frame::Seq {
                anchor,
                nodes_at_start,
                ..
            } => (*anchor, *nodes_at_start),
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn tag_text(tag: &granit_parser::Tag) -> String {
    if tag.handle() == "tag:yaml.org,2002:" {
        format!("!!{}", tag.suffix())
    } else {
        format!("{}{}", tag.original_handle(), tag.suffix())
    }
}

/// The first pass: traps and positions. Each event is refused or placed in
/// the order the traps matter: a tag before anything (serde layers drop
/// it silently), then the document count, then the node count (an alias
/// bomb must stop before it is walked), then the node's place in the
/// document, which is where keys are checked, then the nesting depth.
fn scan(file: &str, text: &str, shape: &str) -> Result<SpanIndex, Diagnostic> {
    let mut scanner = Scanner::new(file);
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| syntax_error(file, text, &e, &scanner.opens))?;
        scanner.step(&event, &span)?;
    }
    scanner.finish(shape)
}

/// What the first pass knows between two events.
struct Scanner<'f> {
    file: &'f str,
    index: SpanIndex,
    /// The collections around the next event, innermost last.
    stack: Vec<Frame>,
    documents: usize,
    root_is_scalar: bool,
    /// Nodes so far, an alias counting as the nodes it repeats.
    nodes: usize,
    /// The nodes aliases repeated so far: what [`MAX_EXPANDED_NODES`] bounds.
    repeated: usize,
    /// How many nodes each closed anchored node holds, for its aliases.
    anchor_sizes: HashMap<usize, usize>,
    /// Open collections (flow style?, mapping?, start), to explain syntax errors.
    opens: Vec<(bool, bool, (usize, usize))>,
}

impl<'f> Scanner<'f> {
    fn new(file: &'f str) -> Self {
        Scanner {
            file,
            index: SpanIndex::default(),
            stack: Vec::new(),
            documents: 0,
            root_is_scalar: false,
            nodes: 0,
            repeated: 0,
            anchor_sizes: HashMap::new(),
            opens: Vec::new(),
        }
    }

    /// One parser event: refused, or counted and placed. Only nodes go past
    /// the second step; the stream's and documents' other events say nothing
    /// about the traps.
    fn step(&mut self, event: &Event<'_>, span: &Span) -> Result<(), Diagnostic> {
        let pos = start(span);
        let anchor = refuse_tag(self.file, event, span, pos)?;
        match event {
            Event::DocumentStart(..) => return self.document_start(pos),
            Event::SequenceEnd | Event::MappingEnd => {
                self.close();
                return Ok(());
            }
            Event::Scalar(..)
            | Event::SequenceStart(..)
            | Event::MappingStart(..)
            | Event::Alias(_) => {}
            _ => return Ok(()),
        }
        let nodes_before = self.count(event, pos)?;
        let Some(path) = self.place(event, pos)? else {
            // A key: its value is the node that places it.
            return Ok(());
        };
        match event {
            Event::MappingStart(style, ..) | Event::SequenceStart(style, ..) => {
                let flow = *style == granit_parser::StructureStyle::Flow;
                let map = matches!(event, Event::MappingStart(..));
                self.open(flow, map, path, anchor, nodes_before, pos)
            }
            _ => {
                if anchor != 0 {
                    self.anchor_sizes.insert(anchor, 1);
                }
                Ok(())
            }
        }
    }

    /// Refuses a second document: serde layers read only the first, so the
    /// rest of the file would be silently ignored.
    fn document_start(&mut self, pos: (usize, usize)) -> Result<(), Diagnostic> {
        self.documents += 1;
        if self.documents > 1 {
            return Err(refuse(
                self.file,
                pos,
                "this file holds more than one YAML document".into(),
                "keep one document per file; a site file may hold a list of sites instead",
            ));
        }
        Ok(())
    }

    /// Closes the innermost collection and, if it is anchored, remembers
    /// how many nodes it holds: an alias to it counts that many.
    fn close(&mut self) {
        self.opens.pop();
        if let Some(frame) = self.stack.pop() {
            let (anchor, nodes_at_start) = frame.anchor();
            if anchor != 0 {
                self.anchor_sizes
                    .insert(anchor, self.nodes - nodes_at_start);
            }
        }
    }

    /// Counts the node, an alias as what it expands to, and refuses a file
    /// whose aliases repeat more than [`MAX_EXPANDED_NODES`] nodes: a
    /// billion laughs stops here, by arithmetic, before any layer expands
    /// it. Returns the count before the node, where an anchored collection
    /// starts its own count.
    fn count(&mut self, event: &Event<'_>, pos: (usize, usize)) -> Result<usize, Diagnostic> {
        let nodes_before = self.nodes;
        match event {
            // An anchor is sized when its collection closes, so an alias
            // to an open one is inside it.
            Event::Alias(id) => match self.anchor_sizes.get(id) {
                Some(size) => {
                    self.nodes += *size;
                    self.repeated += *size;
                }
                None => {
                    return Err(refuse(
                        self.file,
                        pos,
                        "this alias refers to a collection that contains it".into(),
                        "remove the recursive alias",
                    ));
                }
            },
            _ => self.nodes += 1,
        }
        if self.repeated > MAX_EXPANDED_NODES {
            return Err(refuse(
                self.file,
                pos,
                format!(
                    "aliases expand this file to more than {MAX_EXPANDED_NODES} values (an alias bomb?)"
                ),
                "write the values out, or use fewer anchors and aliases",
            ));
        }
        Ok(nodes_before)
    }

    /// Places the node: a key (checked, and held for its value), a mapping
    /// value, a sequence item, or the root. Every node but a key is indexed
    /// by its path, which it returns.
    fn place(
        &mut self,
        event: &Event<'_>,
        pos: (usize, usize),
    ) -> Result<Option<String>, Diagnostic> {
        let (path, key) = match self.stack.last_mut() {
            Some(Frame::Map { key, seen, .. }) if key.is_none() => {
                *key = Some(admit_key(self.file, event, pos, seen)?);
                return Ok(None);
            }
            Some(Frame::Map { path, key, .. }) => {
                let (name, key_pos) = key.take().unwrap_or_default();
                (join(path, &name), Some(key_pos))
            }
            Some(Frame::Seq { path, next, .. }) => {
                let child = format!("{path}[{next}]");
                *next += 1;
                (child, None)
            }
            None => {
                self.index.root_is_sequence = matches!(event, Event::SequenceStart(..));
                self.root_is_scalar =
                    !matches!(event, Event::SequenceStart(..) | Event::MappingStart(..));
                (String::new(), None)
            }
        };
        self.index.record(path.clone(), NodePos { key, value: pos });
        Ok(Some(path))
    }

    /// Opens a collection at `path`, refusing one past [`MAX_DEPTH`]: deep
    /// nesting is never meant in a sitekeeper file, and it costs every layer
    /// stack.
    fn open(
        &mut self,
        flow: bool,
        map: bool,
        path: String,
        anchor: usize,
        nodes_at_start: usize,
        pos: (usize, usize),
    ) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(refuse(
                self.file,
                pos,
                format!("the values nest deeper than {MAX_DEPTH} levels"),
                "flatten the structure; no sitekeeper file needs this depth",
            ));
        }
        self.opens.push((flow, map, pos));
        self.stack.push(if map {
            Frame::Map {
                path,
                key: None,
                seen: HashMap::new(),
                anchor,
                nodes_at_start,
            }
        } else {
            Frame::Seq {
                path,
                next: 0,
                anchor,
                nodes_at_start,
            }
        });
        Ok(())
    }

    /// The index, once the whole stream was read; an empty file and a
    /// plain value are refused here, with `shape` saying what was expected,
    /// since serde's words for them name types, not files.
    fn finish(self, shape: &str) -> Result<SpanIndex, Diagnostic> {
        match self.index.get("") {
            None => Err(refuse(
                self.file,
                (1, 1),
                "the file is empty".into(),
                &format!("it must hold {shape}"),
            )),
            Some(root) if self.root_is_scalar => Err(refuse(
                self.file,
                root.value,
                format!("the file holds a plain value, not {shape}"),
                "write the fields as key: value lines",
            )),
            Some(_) => Ok(self.index),
        }
    }
}

/// A refusal at `pos`, with the hint that says what to write instead.
fn refuse(file: &str, pos: (usize, usize), message: String, hint: &str) -> Diagnostic {
    Diagnostic::new(at(file, pos), message).with_hint(hint)
}

/// Refuses any tag, checked before anything else: serde layers drop tags
/// silently or reinterpret the value. Returns the node's anchor (0 if none).
fn refuse_tag(
    file: &str,
    event: &Event<'_>,
    span: &Span,
    pos: (usize, usize),
) -> Result<usize, Diagnostic> {
    let (tag, anchor) = match event {
        Event::Scalar(_, _, anchor, tag) => (tag.as_ref(), *anchor),
        Event::SequenceStart(_, anchor, tag) | Event::MappingStart(_, anchor, tag) => {
            (tag.as_ref(), *anchor)
        }
        _ => (None, 0),
    };
    if let Some(tag) = tag {
        let tag_pos = span.tag_start().map_or(pos, |m| (m.line(), m.col() + 1));
        return Err(refuse(
            file,
            tag_pos,
            format!("the YAML tag `{}` is not supported", tag_text(tag)),
            "remove the tag; sitekeeper reads plain values only, and quoting a value makes it text",
        ));
    }
    Ok(anchor)
}

/// Checks a mapping key and returns it with its position, for its value.
/// Refused: a key that is not text, a merge key (`<<`, which YAML 1.2
/// dropped and serde layers do not expand), and a repeated key (libraries
/// keep the last silently, so one of the two settings would be ignored).
fn admit_key(
    file: &str,
    event: &Event<'_>,
    pos: (usize, usize),
    seen: &mut HashMap<String, (usize, usize)>,
) -> Result<(String, (usize, usize)), Diagnostic> {
    let Event::Scalar(text, style, ..) = event else {
        return Err(refuse(
            file,
            pos,
            "a mapping key here is not plain text".into(),
            "use a plain word as the key",
        ));
    };
    if *style == ScalarStyle::Plain && text == "<<" {
        return Err(refuse(
            file,
            pos,
            "merge keys (`<<`) are not supported".into(),
            "write the keys out in full; YAML merge keys are not part of YAML 1.2",
        ));
    }
    if let Some(first) = seen.get(text.as_ref()) {
        return Err(refuse(
            file,
            pos,
            format!(
                "the key `{text}` appears twice (first at line {}, column {})",
                first.0, first.1
            ),
            "keep one of them; YAML libraries silently keep only the last",
        ));
    }
    seen.insert(text.to_string(), pos);
    Ok((text.to_string(), pos))
}

/// A parser error in a site owner's words, pointing at the unclosed
/// bracket where that is the cause.
fn syntax_error(
    file: &str,
    text: &str,
    e: &granit_parser::ScanError,
    opens: &[(bool, bool, (usize, usize))],
) -> Diagnostic {
    let m = e.marker();
    let mut pos = (m.line(), m.col() + 1);
    let info = e.info();
    let unclosed = opens.iter().rev().find(|(flow, ..)| *flow);
    let (message, hint) = if info.contains("tabs disallowed")
        || info.contains("tab") && info.contains("indent")
    {
        // Point at the tab itself; the parser reports the position after it.
        if let Some(col) = text
            .lines()
            .nth(pos.0.saturating_sub(1))
            .and_then(|l| l.find('\t'))
        {
            pos.1 = col + 1;
        }
        (
            "a tab is used for indentation".to_owned(),
            "indent with spaces; YAML does not allow tabs there".to_owned(),
        )
    } else if let (Some((_, map, (line, col))), true) = (unclosed, info.contains("flow")) {
        let (open, close) = if *map { ('{', '}') } else { ('[', ']') };
        (
            format!(
                "expected `,` or `{close}` here: the `{open}` at line {line}, column {col} is not closed"
            ),
            format!("add the missing `{close}`, or separate the items with commas"),
        )
    } else {
        (
            format!("this is not valid YAML: {info}"),
            "check the indentation and quoting around this position".to_owned(),
        )
    };
    Diagnostic::new(at(file, pos), format!("YAML syntax: {message}")).with_hint(hint)
}

/// The second pass: serde-saphyr in its strictest settings.
fn deserialize<T: DeserializeOwned>(
    file: &str,
    text: &str,
    index: &SpanIndex,
) -> Result<T, Diagnostic> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        merge_keys: serde_saphyr::MergeKeyPolicy::Error,
        reject_unsupported_tags: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        let pos = err
            .location()
            .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
        let raw = serde_saphyr::UserMessageFormatter
            .format_message(&err)
            .into_owned();
        let (message, hint) = humanize(&raw, text, pos);
        // serde reports a missing field at the last key it saw; point at the
        // mapping that lacks it instead.
        let pos = if raw.starts_with("missing field `") {
            match index.by_pos.get(&pos) {
                Some((path, true)) => index.locate(parent_path(path)),
                Some((path, false)) => index.locate(path),
                None => pos,
            }
        } else {
            pos
        };
        let field = match index.by_pos.get(&pos) {
            // At a key (an unknown field): name the mapping that holds it.
            Some((path, true)) => parent_name(path),
            Some((path, false)) => last_name(path),
            None => None,
        };
        let message = match field {
            Some(field) => format!("{field}: {message}"),
            None => message,
        };
        let mut d = Diagnostic::new(at(file, pos), message);
        if let Some(hint) = hint {
            d = d.with_hint(hint);
        }
        d
    })
}

/// The last key of a path, skipping list indexes: `ops[0].replace.files[1]` → `files`.
fn last_name(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches(|c: char| c == ']' || c.is_ascii_digit());
    let trimmed = trimmed.strip_suffix('[').unwrap_or(trimmed);
    let name = trimmed.rsplit('.').next().unwrap_or("");
    (!name.is_empty()).then(|| name.to_owned())
}

/// `a.b[1].c` → `a.b[1]`; a top-level key's parent is the root `""`.
fn parent_path(path: &str) -> &str {
    path.rfind('.').map_or("", |cut| &path[..cut])
}

fn parent_name(path: &str) -> Option<String> {
    path.rfind('.').and_then(|cut| last_name(&path[..cut]))
}

/// The scalar token that starts at `pos`, for messages that do not quote it.
fn token_at(text: &str, (line, column): (usize, usize)) -> String {
    let Some(row) = text.lines().nth(line.saturating_sub(1)) else {
        return String::new();
    };
    row.chars()
        .skip(column.saturating_sub(1))
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}' | '#'))
        .collect()
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d > 0 && *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The range of an integer type named in serde's "invalid u8" wording.
fn integer_range(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "u8" => "0 to 255",
        "u16" => "0 to 65535",
        "u32" => "0 to 4294967295",
        "u64" | "usize" => "0 to 18446744073709551615",
        _ => return None,
    })
}

/// Rewrites serde's developer wording into a site owner's, with a hint.
fn humanize(raw: &str, text: &str, pos: (usize, usize)) -> (String, Option<String>) {
    let ticked = |s: &str| s.split('`').nth(1).unwrap_or("").to_owned();
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        let allowed = raw
            .split_once("expected one of ")
            .map(|(_, list)| list.replace('`', ""))
            .or_else(|| {
                raw.split_once("expected ")
                    .map(|(_, one)| one.replace('`', ""))
            });
        let hint = match allowed {
            Some(list) => match closest(name, list.split(", ")) {
                Some(near) => format!("did you mean `{near}`? The fields allowed here are {list}"),
                None => format!("the fields allowed here are {list}"),
            },
            None => "this mapping takes no fields".to_owned(),
        };
        return (format!("unknown field {name:?}"), Some(hint));
    }
    if raw.starts_with("missing field `") {
        return (
            format!("the field {:?} is required here", ticked(raw)),
            None,
        );
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let name = rest.split('`').next().unwrap_or("");
        let allowed = raw
            .split_once("expected one of ")
            .map(|(_, list)| list.replace('`', ""))
            .unwrap_or_default();
        return (format!("{name:?} is not one of {allowed}"), None);
    }
    if raw.starts_with("invalid boolean") {
        let token = token_at(text, pos);
        return (
            format!("{token:?} is not a boolean"),
            Some("write true or false; yes, no, on and off are not booleans here".to_owned()),
        );
    }
    if let Some(kind) = raw.strip_prefix("invalid ")
        && let Some(range) = integer_range(kind)
    {
        let token = token_at(text, pos);
        let shown = if token.parse::<i128>().is_ok() {
            token
        } else {
            format!("{token:?}")
        };
        return (
            format!("{shown} is not a whole number from {range}"),
            Some("write a whole number, without quotes or units".to_owned()),
        );
    }
    if raw == "null is not allowed here" {
        return (
            "is empty, but a value is required here".to_owned(),
            Some("write a value after the colon, or remove the line".to_owned()),
        );
    }
    if raw == "expected string scalar" {
        return (
            "expected text here, not a list or a mapping".to_owned(),
            None,
        );
    }
    if raw == "expected end of mapping after enum variant value" {
        return (
            "this item holds more than one op".to_owned(),
            Some("one op per list item: start the next op on a new item with `- `".to_owned()),
        );
    }
    if raw == "expected mapping start" {
        return (
            "expected fields (key: value) here, not a single value or a list".to_owned(),
            None,
        );
    }
    if raw.contains("duplicate mapping key") {
        return (
            "a key appears twice".to_owned(),
            Some("keep one of them".to_owned()),
        );
    }
    (raw.to_owned(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        a: Option<Inner>,
        list: Option<Vec<String>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        b: Option<bool>,
    }

    #[test]
    fn index_names_paths() {
        let (doc, index) = parse::<Doc>("t.yaml", b"a:\n  b: true\nlist:\n  - x\n  - y\n").unwrap();
        assert_eq!(doc.a.and_then(|a| a.b), Some(true));
        assert_eq!(doc.list.map(|l| l.len()), Some(2));
        assert_eq!(index.get("a.b").unwrap().value, (2, 6));
        assert_eq!(index.get("a.b").unwrap().key, Some((2, 3)));
        assert_eq!(index.get("list[1]").unwrap().value, (5, 5));
        // A block sequence starts at its first `-`; a missing item locates there.
        assert_eq!(index.locate("list[7]"), (4, 3));
        assert_eq!(index.locate_key("list"), (3, 1));
    }

    #[test]
    fn last_and_parent_names_skip_indexes() {
        assert_eq!(
            last_name("ops[0].replace.files[1]").as_deref(),
            Some("files")
        );
        assert_eq!(parent_name("opt_in.bogus").as_deref(), Some("opt_in"));
        assert_eq!(parent_name("bogus"), None);
    }
}
