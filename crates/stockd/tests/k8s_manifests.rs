//! Consistency checks between the deployment files under `k8s/` and the stockd
//! binary and code:
//!
//! (a) every `--flag` the manifests and the Containerfile pass to stockd (and
//!     every `STOCKD_*` variable they set) is known to `stockd serve --help`,
//!     and values of flags with a fixed set of values are among them;
//! (b) container ports are 50051 (gRPC) and 9464 (metrics), agree with
//!     `--grpc-addr`/`--metrics-addr`, EXPOSE, the probes, the Services'
//!     targetPorts, the NetworkPolicy and the ServiceMonitor;
//! (c) the data volume is mounted at the `--data-dir` of the manifests, which is
//!     the data directory the Containerfile creates, owns and passes;
//! (d) every metric used by the Grafana dashboard starts with `stockd_` and is
//!     registered in `src/metrics.rs`.
//!
//! No YAML crate: a small parser below reads the block-style YAML subset the
//! manifests use (block maps and sequences, single-line flow `[..]`/`{..}`,
//! quoted and plain scalars, `|`/`>` block scalars, comments, `---`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const GRPC_PORT: i64 = 50051;
const METRICS_PORT: i64 = 9464;

// ============================================================== tiny YAML

#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
    Str(String),
    Null,
}

static NULL: Yaml = Yaml::Null;

impl Yaml {
    fn get(&self, key: &str) -> &Yaml {
        match self {
            Yaml::Map(entries) => entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    fn at(&self, path: &[&str]) -> &Yaml {
        path.iter().fold(self, |node, key| node.get(key))
    }

    fn str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        self.str().and_then(|s| s.parse().ok())
    }

    fn seq(&self) -> &[Yaml] {
        match self {
            Yaml::Seq(items) => items,
            _ => &[],
        }
    }

    fn is_null(&self) -> bool {
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
    fn value(chars: &[char], i: &mut usize, file: &str) -> Yaml {
        while *i < chars.len() && chars[*i] == ' ' {
            *i += 1;
        }
        match chars.get(*i) {
            Some('[') => {
                *i += 1;
                let mut items = Vec::new();
                loop {
                    while *i < chars.len() && chars[*i] == ' ' {
                        *i += 1;
                    }
                    match chars.get(*i) {
                        Some(']') => {
                            *i += 1;
                            return Yaml::Seq(items);
                        }
                        Some(',') => *i += 1,
                        Some(_) => items.push(value(chars, i, file)),
                        None => panic!("{file}: unterminated flow sequence"),
                    }
                }
            }
            Some('{') => {
                *i += 1;
                let mut entries = Vec::new();
                loop {
                    while *i < chars.len() && chars[*i] == ' ' {
                        *i += 1;
                    }
                    match chars.get(*i) {
                        Some('}') => {
                            *i += 1;
                            return Yaml::Map(entries);
                        }
                        Some(',') => *i += 1,
                        Some(_) => {
                            let key = match value(chars, i, file) {
                                Yaml::Str(k) => k,
                                other => panic!("{file}: bad flow map key {other:?}"),
                            };
                            while *i < chars.len() && chars[*i] == ' ' {
                                *i += 1;
                            }
                            if chars.get(*i) == Some(&':') {
                                *i += 1;
                                let v = value(chars, i, file);
                                entries.push((key, v));
                            } else {
                                entries.push((key, Yaml::Null));
                            }
                        }
                        None => panic!("{file}: unterminated flow map"),
                    }
                }
            }
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
fn parse_yaml(src: &str, file: &str) -> Vec<Yaml> {
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

// ============================================================== repository

/// The workspace root: manifests, the Containerfile and the dashboard live there.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

/// Every YAML document under k8s/, with the file it came from (relative).
fn k8s_docs() -> Vec<(String, Yaml)> {
    let mut files = Vec::new();
    yaml_files(&root().join("k8s"), &mut files);
    assert!(!files.is_empty(), "no YAML files under k8s/");
    let mut docs = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        let src = fs::read_to_string(&file).unwrap();
        for doc in parse_yaml(&src, &rel) {
            docs.push((rel.clone(), doc));
        }
    }
    docs
}

fn kind(doc: &Yaml) -> &str {
    doc.get("kind").str().unwrap_or("")
}

const STATEFULSET_FILE: &str = "k8s/base/statefulset.yaml";
const CONTAINERFILE: &str = "k8s/Containerfile";

/// The base StatefulSet (the complete one, not an overlay patch).
fn statefulset() -> Yaml {
    let docs = parse_yaml(&read(STATEFULSET_FILE), STATEFULSET_FILE);
    docs.into_iter()
        .find(|d| kind(d) == "StatefulSet")
        .unwrap_or_else(|| panic!("{STATEFULSET_FILE} has no StatefulSet"))
}

fn stockd_container(sts: &Yaml) -> Yaml {
    sts.at(&["spec", "template", "spec", "containers"])
        .seq()
        .iter()
        .find(|c| c.get("name").str() == Some("stockd"))
        .cloned()
        .unwrap_or_else(|| panic!("{STATEFULSET_FILE}: no container named `stockd`"))
}

fn str_list(node: &Yaml) -> Vec<String> {
    node.seq()
        .iter()
        .filter_map(|v| v.str().map(str::to_string))
        .collect()
}

/// `--flag=value` / `--flag value` pairs of an argument list.
fn flags(args: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        if !arg.starts_with("--") {
            continue;
        }
        match arg.split_once('=') {
            Some((name, value)) => out.push((name.to_string(), Some(value.to_string()))),
            None => {
                let value = iter.next_if(|next| !next.starts_with('-')).cloned();
                out.push((arg.clone(), value));
            }
        }
    }
    out
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    flags(args)
        .into_iter()
        .find(|(f, _)| f == flag)
        .and_then(|(_, v)| v)
}

/// The JSON string arrays of the Containerfile's `INSTRUCTION [..]` lines
/// (exec form), e.g. CMD or ENTRYPOINT. Continuation lines are joined.
fn containerfile_exec(instruction: &str) -> Vec<String> {
    let src = read(CONTAINERFILE);
    let logical = containerfile_logical_lines(&src);
    let line = logical
        .iter()
        .rev()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(instruction))
        })
        .unwrap_or_else(|| panic!("{CONTAINERFILE} has no {instruction}"));
    let json = line[instruction.len()..].trim();
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| {
        panic!("{CONTAINERFILE}: {instruction} must use the exec (JSON) form: {e}")
    });
    value
        .as_array()
        .unwrap_or_else(|| panic!("{CONTAINERFILE}: {instruction} is not a JSON array"))
        .iter()
        .map(|v| {
            v.as_str()
                .expect("CMD/ENTRYPOINT items are strings")
                .to_string()
        })
        .collect()
}

fn containerfile_logical_lines(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with('#') && cur.is_empty() {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_string());
            }
            cur.clear();
        }
    }
    out
}

fn stockd_serve_help() -> String {
    let bin = env!("CARGO_BIN_EXE_stockd");
    let out = Command::new(bin)
        .args(["serve", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} serve --help: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`stockd serve --help` failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("--"),
        "`stockd serve --help` lists no options:\n{stdout}"
    );
    stdout
}

/// Whether `word` occurs in `text` not as part of a longer flag/identifier.
fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The values clap lists for `flag` in its help block, if it lists any
/// (`[possible values: a, b]` or a `Possible values:` bullet list).
fn possible_values(help: &str, flag: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = help.lines().collect();
    let start = lines.iter().position(|l| {
        let t = l.trim_start();
        (t.starts_with('-')) && contains_word(t.split("  ").next().unwrap_or(t), flag)
    })?;
    let mut block = vec![lines[start]];
    for l in &lines[start + 1..] {
        let t = l.trim_start();
        if t.starts_with("-") && !t.starts_with("- ") {
            break; // next option
        }
        if !l.starts_with(' ') && !t.is_empty() {
            break; // next section
        }
        block.push(l);
    }
    let text = block.join("\n");
    if let Some(i) = text.find("[possible values: ") {
        let rest = &text[i + "[possible values: ".len()..];
        let list = &rest[..rest.find(']')?];
        return Some(list.split(',').map(|v| v.trim().to_string()).collect());
    }
    if let Some(i) = text.find("Possible values:") {
        let vals: Vec<String> = text[i..]
            .lines()
            .skip(1)
            .filter_map(|l| l.trim_start().strip_prefix("- "))
            .map(|v| v.split(':').next().unwrap().trim().to_string())
            .collect();
        if !vals.is_empty() {
            return Some(vals);
        }
    }
    None
}

// ============================================================== (a) flags

#[test]
fn flags_in_manifests_and_containerfile_are_accepted_by_stockd_serve() {
    // Every args/command list of every container in every document under k8s/
    // (base and overlay patches), plus the Containerfile's ENTRYPOINT and CMD.
    let mut arg_lists: Vec<(String, Vec<String>)> = Vec::new();
    let mut env_names: Vec<(String, String)> = Vec::new();
    for (file, doc) in k8s_docs() {
        let pod = doc.at(&["spec", "template", "spec"]);
        for list in ["containers", "initContainers"] {
            for c in pod.get(list).seq() {
                for key in ["command", "args"] {
                    let items = str_list(c.get(key));
                    if !items.is_empty() {
                        arg_lists.push((format!("{file} {key}"), items));
                    }
                }
                for e in c.get("env").seq() {
                    if let Some(name) = e.get("name").str() {
                        env_names.push((file.clone(), name.to_string()));
                    }
                }
            }
        }
    }
    let sts_args = str_list(stockd_container(&statefulset()).get("args"));
    assert!(
        !sts_args.is_empty(),
        "{STATEFULSET_FILE}: the stockd container has no args"
    );
    assert_eq!(
        sts_args[0], "serve",
        "{STATEFULSET_FILE}: args must start with the `serve` subcommand"
    );

    let entrypoint = containerfile_exec("ENTRYPOINT");
    assert_eq!(
        entrypoint,
        ["/usr/local/bin/stockd"],
        "{CONTAINERFILE}: ENTRYPOINT"
    );
    let cmd = containerfile_exec("CMD");
    assert_eq!(
        cmd.first().map(String::as_str),
        Some("serve"),
        "{CONTAINERFILE}: CMD must start with `serve`"
    );
    arg_lists.push((format!("{CONTAINERFILE} CMD"), cmd));

    for line in containerfile_logical_lines(&read(CONTAINERFILE)) {
        if line
            .split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("ENV"))
        {
            for word in line.split_whitespace().skip(1) {
                if let Some((name, _)) = word.split_once('=') {
                    env_names.push((CONTAINERFILE.to_string(), name.to_string()));
                }
            }
        }
    }

    let help = stockd_serve_help();
    let mut checked = 0;
    let mut problems = Vec::new();
    for (origin, args) in &arg_lists {
        for (flag, value) in flags(args) {
            checked += 1;
            if !contains_word(&help, &flag) {
                problems.push(format!(
                    "{origin}: {flag} is not an option of `stockd serve`"
                ));
                continue;
            }
            if let (Some(value), Some(allowed)) = (&value, possible_values(&help, &flag))
                && !allowed.contains(value)
            {
                problems.push(format!("{origin}: {flag}={value}: not one of {allowed:?}"));
            }
        }
    }
    for (origin, name) in &env_names {
        if name.starts_with("STOCKD_") && !contains_word(&help, name) {
            problems.push(format!(
                "{origin}: env {name} is not shown by `stockd serve --help` (clap `env = \"{name}\"`)"
            ));
        }
    }
    assert!(
        checked >= 3,
        "found only {checked} flags in the manifests: parsing problem?"
    );
    assert!(
        problems.is_empty(),
        "{}\n\n`stockd serve --help`:\n{help}",
        problems.join("\n")
    );
}

// ============================================================== (b) ports

fn addr_port(addr: &str) -> i64 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("address {addr:?} has no port"))
}

#[test]
fn ports_agree_across_container_probes_services_and_policies() {
    let sts = statefulset();
    let c = stockd_container(&sts);
    let mut by_name: BTreeMap<String, i64> = BTreeMap::new();
    for p in c.get("ports").seq() {
        let port = p
            .get("containerPort")
            .int()
            .expect("containerPort is a number");
        let name = p
            .get("name")
            .str()
            .expect("container ports are named")
            .to_string();
        by_name.insert(name, port);
    }
    let ports: BTreeSet<i64> = by_name.values().copied().collect();
    assert_eq!(
        ports,
        BTreeSet::from([GRPC_PORT, METRICS_PORT]),
        "{STATEFULSET_FILE}: container ports"
    );
    assert_eq!(
        by_name.get("grpc"),
        Some(&GRPC_PORT),
        "container port `grpc`"
    );
    assert_eq!(
        by_name.get("metrics"),
        Some(&METRICS_PORT),
        "container port `metrics`"
    );

    // The listen addresses passed to stockd (manifest and image) use these ports.
    let args = str_list(c.get("args"));
    let cmd = containerfile_exec("CMD");
    for (origin, list) in [(STATEFULSET_FILE, &args), (CONTAINERFILE, &cmd)] {
        for (flag, want) in [("--grpc-addr", GRPC_PORT), ("--metrics-addr", METRICS_PORT)] {
            if let Some(addr) = flag_value(list, flag) {
                assert_eq!(addr_port(&addr), want, "{origin}: {flag}={addr}");
            }
        }
    }

    // EXPOSE in the Containerfile.
    let exposed: BTreeSet<i64> = containerfile_logical_lines(&read(CONTAINERFILE))
        .iter()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("EXPOSE"))
        })
        .flat_map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|p| p.split('/').next().unwrap().parse().expect("EXPOSE port"))
        .collect();
    assert_eq!(exposed, ports, "{CONTAINERFILE}: EXPOSE");

    // gRPC probes.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let port = c.at(&[probe, "grpc", "port"]).int();
        assert_eq!(
            port,
            Some(GRPC_PORT),
            "{STATEFULSET_FILE}: {probe}.grpc.port"
        );
    }

    let resolve = |target: &Yaml| -> i64 {
        match target.int() {
            Some(n) => n,
            None => {
                let name = target.str().expect("targetPort");
                *by_name
                    .get(name)
                    .unwrap_or_else(|| panic!("targetPort {name:?} names no container port"))
            }
        }
    };

    let docs = k8s_docs();
    let mut service_ports: BTreeSet<String> = BTreeSet::new();
    let mut services = 0;
    for (file, doc) in docs.iter().filter(|(_, d)| kind(d) == "Service") {
        services += 1;
        for p in doc.at(&["spec", "ports"]).seq() {
            let port = p.get("port").int().expect("Service port is a number");
            let target_node = p.get("targetPort");
            let target = if target_node.is_null() {
                port
            } else {
                resolve(target_node)
            };
            assert!(
                ports.contains(&target),
                "{file}: Service port {port} targets {target}, not a container port"
            );
            if let Some(name) = p.get("name").str() {
                service_ports.insert(name.to_string());
                if let Some(want) = by_name.get(name) {
                    assert_eq!(
                        target, *want,
                        "{file}: Service port {name:?} must target container port {name:?}"
                    );
                }
            }
        }
    }
    assert!(
        services >= 2,
        "expected a headless and a ClusterIP Service under k8s/, found {services}"
    );

    for (file, doc) in &docs {
        match kind(doc) {
            "NetworkPolicy" => {
                for rule in doc.at(&["spec", "ingress"]).seq() {
                    for p in rule.get("ports").seq() {
                        let port = resolve(p.get("port"));
                        assert!(
                            ports.contains(&port),
                            "{file}: NetworkPolicy admits port {port}, not a container port"
                        );
                    }
                }
            }
            "ServiceMonitor" => {
                for ep in doc.at(&["spec", "endpoints"]).seq() {
                    if let Some(name) = ep.get("port").str() {
                        assert!(
                            service_ports.contains(name),
                            "{file}: ServiceMonitor port {name:?} is no Service port"
                        );
                        assert_eq!(
                            by_name.get(name),
                            Some(&METRICS_PORT),
                            "{file}: ServiceMonitor must scrape metrics"
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

// ============================================================== (c) data dir

#[test]
fn data_dir_is_the_mounted_volume_and_the_image_directory() {
    let sts = statefulset();
    let c = stockd_container(&sts);
    let args = str_list(c.get("args"));
    let data_dir = flag_value(&args, "--data-dir").expect("StatefulSet args pass --data-dir");

    // The volume mounted there comes from the volumeClaimTemplates (one PVC per pod).
    let claims: Vec<&str> = sts
        .at(&["spec", "volumeClaimTemplates"])
        .seq()
        .iter()
        .filter_map(|t| t.at(&["metadata", "name"]).str())
        .collect();
    assert!(
        !claims.is_empty(),
        "{STATEFULSET_FILE}: no volumeClaimTemplates"
    );
    let mounts: Vec<(&str, &str)> = c
        .get("volumeMounts")
        .seq()
        .iter()
        .map(|m| {
            (
                m.get("name").str().unwrap_or(""),
                m.get("mountPath").str().unwrap_or(""),
            )
        })
        .collect();
    let data_mount = mounts
        .iter()
        .find(|(name, _)| claims.contains(name))
        .unwrap_or_else(|| {
            panic!("{STATEFULSET_FILE}: no volumeMount of a volumeClaimTemplate ({claims:?})")
        });
    assert_eq!(
        data_mount.1.trim_end_matches('/'),
        data_dir.trim_end_matches('/'),
        "{STATEFULSET_FILE}: PVC mountPath vs --data-dir"
    );

    // --config points into the mounted ConfigMap.
    if let Some(config) = flag_value(&args, "--config") {
        let dir = Path::new(&config)
            .parent()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            mounts.iter().any(|(_, p)| p.trim_end_matches('/') == dir),
            "--config={config}: {dir} is not mounted"
        );
    }

    // The image passes the same --data-dir, creates it owned by the runtime user,
    // and declares it a volume.
    let cmd = containerfile_exec("CMD");
    assert_eq!(
        flag_value(&cmd, "--data-dir").as_deref(),
        Some(data_dir.as_str()),
        "{CONTAINERFILE}: CMD --data-dir"
    );
    let lines = containerfile_logical_lines(&read(CONTAINERFILE));
    let owned_dests: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && l.contains("--chown=65532"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert!(
        owned_dests
            .iter()
            .any(|d| d.trim_end_matches('/') == data_dir),
        "{CONTAINERFILE}: no `COPY --chown=65532...` creating {data_dir} (found {owned_dests:?})"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("VOLUME") && l.contains(&format!("\"{data_dir}\""))),
        "{CONTAINERFILE}: VOLUME [\"{data_dir}\"] missing"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("USER 65532")),
        "{CONTAINERFILE}: the runtime stage must run as USER 65532"
    );

    // The pod is given time to drain and flush before SIGKILL.
    let grace = sts
        .at(&["spec", "template", "spec", "terminationGracePeriodSeconds"])
        .int()
        .unwrap_or(30);
    if let Some(drain) = flag_value(&args, "--drain-timeout-secs") {
        let drain: i64 = drain.parse().expect("--drain-timeout-secs is a number");
        assert!(
            grace > drain,
            "terminationGracePeriodSeconds {grace} must exceed --drain-timeout-secs {drain}"
        );
    }

    // Shards follow the CPU limit.
    let shards = c
        .get("env")
        .seq()
        .iter()
        .find(|e| e.get("name").str() == Some("STOCKD_SHARDS"))
        .cloned();
    if let Some(shards) = shards {
        assert_eq!(
            shards
                .at(&["valueFrom", "resourceFieldRef", "resource"])
                .str(),
            Some("limits.cpu")
        );
    }
}

// ============================================================== (d) metrics

/// Metric names registered in src/metrics.rs: string literals starting with `stockd_`.
fn registered_metrics() -> BTreeSet<String> {
    let path = root().join("crates/stockd/src/metrics.rs");
    let src = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): the dashboard's metric names are checked against the \
             \"stockd_...\" string literals in that file",
            path.display()
        )
    });
    let mut names = BTreeSet::new();
    for (i, _) in src.match_indices("\"stockd_") {
        let name: String = src[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        if src[i + 1 + name.len()..].starts_with('"') {
            names.insert(name);
        }
    }
    assert!(
        !names.is_empty(),
        "{} has no \"stockd_...\" string literals",
        path.display()
    );
    names
}

/// Metric names referenced by a PromQL expression (identifiers that are not
/// functions, aggregations, keywords, label names, numbers or durations).
fn promql_metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "atan2",
        "inf",
        "nan",
        "start",
        "end",
    ];
    const LABEL_LIST: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let skip_until = |mut j: usize, open: char, close: char| {
        let mut depth = 0;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            let ch = chars[j];
            match quote {
                Some(q) => {
                    if ch == '\\' {
                        j += 1;
                    } else if ch == q {
                        quote = None;
                    }
                }
                None if ch == '"' || ch == '\'' || ch == '`' => quote = Some(ch),
                None if ch == open => depth += 1,
                None if ch == close => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                None => {}
            }
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let ch = chars[i];
        if ch == '"' || ch == '\'' || ch == '`' {
            i += 1;
            while i < chars.len() && chars[i] != ch {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if ch == '{' {
            i = skip_until(i, '{', '}');
        } else if ch == '[' {
            i = skip_until(i, '[', ']');
        } else if ch.is_ascii_digit() || ch == '.' || ch == '$' {
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_' | '{' | '}'))
            {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = ident.to_ascii_lowercase();
            if LABEL_LIST.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = skip_until(next, '(', ')');
                }
            } else if KEYWORDS.contains(&lower.as_str()) || chars.get(next) == Some(&'(') {
                // keyword, or function / aggregation call
            } else if ["by", "without"].iter().any(|kw| {
                let word: String = chars[next..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                word.eq_ignore_ascii_case(kw)
            }) {
                // aggregation with a leading grouping clause: `sum by (le) (...)`
            } else {
                names.push(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

fn dashboard_exprs(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
    for p in panels {
        let title = p
            .get("title")
            .and_then(|t| t.as_str())
            .unwrap_or("?")
            .to_string();
        if let Some(nested) = p.get("panels").and_then(|n| n.as_array()) {
            dashboard_exprs(nested, out);
        }
        for t in p
            .get("targets")
            .and_then(|t| t.as_array())
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            if let Some(expr) = t.get("expr").and_then(|e| e.as_str()) {
                out.push((title.clone(), expr.to_string()));
            }
        }
    }
}

#[test]
fn promql_metric_name_extraction() {
    assert_eq!(
        promql_metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(stockd_rpc_duration_seconds_bucket{method=\"Reserve\"}[5m])))"
        ),
        ["stockd_rpc_duration_seconds_bucket"]
    );
    assert_eq!(
        promql_metric_names(
            "sum by (channel) (rate(a_total{event=\"x\"}[1h])) / on (channel) (b > 0) or vector(0)"
        ),
        ["a_total", "b"]
    );
    assert_eq!(promql_metric_names("max(up offset 5m) * 1e3"), ["up"]);
}

#[test]
fn yaml_subset_parser() {
    let docs = parse_yaml(
        "a: 1 # c\nb:\n  - x\n  - k: v\n    l: [\"p\", q]\n  -\n    m: {}\nc:\n- d\ns: |\n  line1\n\n  # kept\n---\ne: 'it''s'\n",
        "inline",
    );
    assert_eq!(docs.len(), 2);
    let d = &docs[0];
    assert_eq!(d.get("a").int(), Some(1));
    assert_eq!(d.get("b").seq()[0].str(), Some("x"));
    assert_eq!(d.get("b").seq()[1].get("l").seq()[0].str(), Some("p"));
    assert_eq!(d.get("b").seq()[1].get("l").seq()[1].str(), Some("q"));
    assert_eq!(d.get("b").seq()[2].get("m"), &Yaml::Map(vec![]));
    assert_eq!(d.get("c").seq()[0].str(), Some("d"));
    assert_eq!(d.get("s").str(), Some("line1\n\n# kept\n"));
    assert_eq!(docs[1].get("e").str(), Some("it's"));
}

#[test]
fn dashboard_metrics_are_registered_stockd_metrics() {
    const DASHBOARD: &str = "k8s/grafana/stockd-dashboard.json";
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD}: invalid JSON: {e}"));
    let mut exprs = Vec::new();
    dashboard_exprs(
        dashboard["panels"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]),
        &mut exprs,
    );
    assert!(!exprs.is_empty(), "{DASHBOARD}: no PromQL expressions");

    let known = registered_metrics();
    let mut problems = Vec::new();
    for (title, expr) in &exprs {
        let names = promql_metric_names(expr);
        if names.is_empty() {
            problems.push(format!("panel {title:?}: no metric in {expr}"));
        }
        for name in names {
            if !name.starts_with("stockd_") {
                problems.push(format!(
                    "panel {title:?}: {name} does not start with stockd_"
                ));
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|b| known.contains(*b)))
                .unwrap_or(&name);
            if !known.contains(base) {
                problems.push(format!(
                    "panel {title:?}: {name} is not registered in src/metrics.rs"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nregistered: {known:?}",
        problems.join("\n")
    );
}
