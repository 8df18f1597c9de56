//! A reader for the block-style YAML subset the deployment manifests use: block maps and
//! sequences, single-line flow `[..]`/`{..}`, quoted and plain scalars, `|`/`>` block
//! scalars, comments, `---`. No YAML crate: the manifests need no more than this, and a
//! shape this parser does not know fails the test loudly instead of being misread.

#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
    Str(String),
    Null,
}

static NULL: Yaml = Yaml::Null;

impl Yaml {
    pub fn get(&self, key: &str) -> &Yaml {
        match self {
            Yaml::Map(entries) => entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    pub fn at(&self, path: &[&str]) -> &Yaml {
        path.iter().fold(self, |node, key| node.get(key))
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        self.str().and_then(|s| s.parse().ok())
    }

    pub fn seq(&self) -> &[Yaml] {
        match self {
            Yaml::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Yaml::Null)
    }
}

struct Line {
    indent: usize,
    /// Content without indentation and trailing comment; empty for blank or
    /// comment-only lines.
    text: String,
    raw: String,
}

/// Removes a trailing `# comment` (a `#` at the start or after whitespace,
/// outside quotes).
fn strip_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    let (mut in_single, mut in_double) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_double => i += 1,
            b'"' if !in_single => in_double = !in_double,
            b'\'' if !in_double => in_single = !in_single,
            b'#' if !in_single && !in_double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return s[..i].trim_end();
            }
            _ => {}
        }
        i += 1;
    }
    s.trim_end()
}

struct Parser {
    lines: Vec<Line>,
    pos: usize,
    file: String,
}

impl Parser {
    fn fail(&self, msg: &str) -> ! {
        let line = self
            .lines
            .get(self.pos)
            .map(|l| l.raw.as_str())
            .unwrap_or("<eof>");
        panic!("{}: YAML line {}: {msg}: {line:?}", self.file, self.pos + 1)
    }

    fn skip_blank(&mut self) {
        while self.pos < self.lines.len() && self.lines[self.pos].text.is_empty() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<(usize, &str)> {
        self.skip_blank();
        self.lines
            .get(self.pos)
            .map(|l| (l.indent, l.text.as_str()))
    }

    fn is_seq_item(text: &str) -> bool {
        text == "-" || text.starts_with("- ")
    }

    fn node(&mut self, indent: usize) -> Yaml {
        match self.peek() {
            Some((ind, text)) if ind == indent => {
                if Self::is_seq_item(text) {
                    self.seq(indent)
                } else {
                    self.map(indent)
                }
            }
            _ => Yaml::Null,
        }
    }

    fn seq(&mut self, indent: usize) -> Yaml {
        let mut items = Vec::new();
        while let Some((ind, text)) = self.peek() {
            if ind != indent || !Self::is_seq_item(text) {
                break;
            }
            let rest = text[1..].trim_start().to_string();
            if rest.is_empty() {
                self.pos += 1;
                match self.peek() {
                    Some((next, _)) if next > indent => items.push(self.node(next)),
                    _ => items.push(Yaml::Null),
                }
            } else if rest.starts_with('[') || rest.starts_with('{') || split_key(&rest).is_none() {
                items.push(parse_flow(&rest, &self.file));
                self.pos += 1;
            } else {
                // `- key: value`: the item is a map whose first line starts
                // after the dash; re-read this line at that column.
                let text_len = self.lines[self.pos].text.len();
                let col = indent + (text_len - rest.len());
                self.lines[self.pos].indent = col;
                self.lines[self.pos].text = rest;
                items.push(self.map(col));
            }
        }
        Yaml::Seq(items)
    }

    fn map(&mut self, indent: usize) -> Yaml {
        let mut entries = Vec::new();
        while let Some((ind, text)) = self.peek() {
            if ind < indent {
                break;
            }
            if ind > indent {
                self.fail("unexpected indentation");
            }
            if Self::is_seq_item(text) {
                break;
            }
            let Some((key, rest)) = split_key(text) else {
                self.fail("expected `key: value`");
            };
            let (key, rest) = (unquote(&key), rest.to_string());
            self.pos += 1;
            let value = if rest.is_empty() {
                match self.peek() {
                    Some((next, _)) if next > indent => self.node(next),
                    // A sequence may sit at the same column as its key.
                    Some((next, t)) if next == indent && Self::is_seq_item(t) => self.seq(indent),
                    _ => Yaml::Null,
                }
            } else if rest.starts_with('|') || rest.starts_with('>') {
                self.block_scalar(indent, rest.starts_with('>'))
            } else {
                parse_flow(&rest, &self.file)
            };
            entries.push((key, value));
        }
        Yaml::Map(entries)
    }

    fn block_scalar(&mut self, parent_indent: usize, folded: bool) -> Yaml {
        let mut body: Vec<&str> = Vec::new();
        let mut block_indent = None;
        while self.pos < self.lines.len() {
            let line = &self.lines[self.pos];
            let raw = line.raw.as_str();
            if raw.trim().is_empty() {
                body.push("");
                self.pos += 1;
                continue;
            }
            let ind = raw.len() - raw.trim_start().len();
            if ind <= parent_indent {
                break;
            }
            let bi = *block_indent.get_or_insert(ind);
            body.push(raw.get(bi..).unwrap_or(raw.trim_start()));
            self.pos += 1;
        }
        while body.last() == Some(&"") {
            body.pop();
        }
        let joined = body.join(if folded { " " } else { "\n" });
        Yaml::Str(joined + "\n")
    }
}

/// Splits `key: value` / `key:` at the first `:` followed by a space or the end,
/// outside quotes and brackets.
fn split_key(text: &str) -> Option<(String, &str)> {
    let bytes = text.as_bytes();
    let (mut in_single, mut in_double, mut depth) = (false, false, 0i32);
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' if !in_single => in_double = !in_double,
            b'\'' if !in_double => in_single = !in_single,
            b'[' | b'{' if !in_single && !in_double => depth += 1,
            b']' | b'}' if !in_single && !in_double => depth -= 1,
            b':' if !in_single
                && !in_double
                && depth == 0
                && (i + 1 == bytes.len() || bytes[i + 1] == b' ') =>
            {
                return Some((text[..i].trim().to_string(), text[i + 1..].trim()));
            }
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        let inner = &s[1..s.len() - 1];
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    } else if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        s[1..s.len() - 1].replace("''", "'")
    } else {
        s.to_string()
    }
}

/// Parses a single-line scalar or flow collection (`[a, "b"]`, `{k: v}`).
fn parse_flow(text: &str, file: &str) -> Yaml {
    fn skip_spaces(chars: &[char], i: &mut usize) {
        while *i < chars.len() && chars[*i] == ' ' {
            *i += 1;
        }
    }
    /// The comma-separated items of a flow collection opened at `i`, up to `close`.
    fn flow_items<T>(
        chars: &[char],
        i: &mut usize,
        close: char,
        kind: &str,
        file: &str,
        mut item: impl FnMut(&[char], &mut usize) -> T,
    ) -> Vec<T> {
        *i += 1;
        let mut items = Vec::new();
        loop {
            skip_spaces(chars, i);
            match chars.get(*i) {
                Some(&c) if c == close => {
                    *i += 1;
                    return items;
                }
                Some(',') => *i += 1,
                Some(_) => items.push(item(chars, i)),
                None => panic!("{file}: unterminated flow {kind}"),
            }
        }
    }
    fn value(chars: &[char], i: &mut usize, file: &str) -> Yaml {
        skip_spaces(chars, i);
        match chars.get(*i) {
            Some('[') => Yaml::Seq(flow_items(chars, i, ']', "sequence", file, |chars, i| {
                value(chars, i, file)
            })),
            Some('{') => Yaml::Map(flow_items(chars, i, '}', "map", file, |chars, i| {
                let key = match value(chars, i, file) {
                    Yaml::Str(k) => k,
                    other => panic!("{file}: bad flow map key {other:?}"),
                };
                skip_spaces(chars, i);
                if chars.get(*i) == Some(&':') {
                    *i += 1;
                    (key, value(chars, i, file))
                } else {
                    (key, Yaml::Null)
                }
            })),
            Some(&q) if q == '"' || q == '\'' => {
                let start = *i;
                *i += 1;
                while *i < chars.len() && chars[*i] != q {
                    if q == '"' && chars[*i] == '\\' {
                        *i += 1;
                    }
                    *i += 1;
                }
                *i += 1;
                let s: String = chars[start..(*i).min(chars.len())].iter().collect();
                Yaml::Str(unquote(&s))
            }
            _ => {
                let start = *i;
                while *i < chars.len()
                    && !matches!(chars[*i], ',' | ']' | '}')
                    && !(chars[*i] == ':' && chars.get(*i + 1).is_none_or(|c| *c == ' '))
                {
                    *i += 1;
                }
                let s: String = chars[start..*i].iter().collect();
                let s = s.trim();
                if s.is_empty() || s == "~" || s == "null" {
                    Yaml::Null
                } else {
                    Yaml::Str(s.to_string())
                }
            }
        }
    }
    let text = text.trim();
    if !(text.starts_with('[') || text.starts_with('{')) {
        // A plain or quoted scalar: take the whole rest of the line.
        if text.is_empty() || text == "~" || text == "null" {
            return Yaml::Null;
        }
        return Yaml::Str(unquote(text));
    }
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    value(&chars, &mut i, file)
}

/// Parses every document of a YAML stream.
pub fn parse_yaml(src: &str, file: &str) -> Vec<Yaml> {
    let mut docs = Vec::new();
    let mut current: Vec<Line> = Vec::new();
    let mut flush = |lines: &mut Vec<Line>| {
        let mut parser = Parser {
            lines: std::mem::take(lines),
            pos: 0,
            file: file.to_string(),
        };
        if let Some((indent, _)) = parser.peek() {
            let doc = parser.node(indent);
            if parser.peek().is_some() {
                parser.fail("trailing content after document");
            }
            docs.push(doc);
        }
    };
    for raw in src.lines() {
        if raw.trim_end() == "---" || raw.starts_with("--- ") {
            flush(&mut current);
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if raw[..indent].contains('\t') {
            panic!("{file}: tab in indentation: {raw:?}");
        }
        let text = strip_comment(raw.trim_start()).to_string();
        current.push(Line {
            indent,
            text,
            raw: raw.to_string(),
        });
    }
    flush(&mut current);
    docs
}
