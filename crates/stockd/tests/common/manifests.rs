//! The deployment files under `k8s/` as the manifest tests read them: the workspace
//! root, every YAML document, the base StatefulSet and its stockd container, the
//! Containerfile's exec lines, and what `stockd serve --help` accepts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::yaml::{Yaml, parse_yaml};

/// The workspace root: manifests, the Containerfile and the dashboard live there.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn read(rel: &str) -> String {
    let path = root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
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
pub fn k8s_docs() -> Vec<(String, Yaml)> {
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

pub fn kind(doc: &Yaml) -> &str {
    doc.get("kind").str().unwrap_or("")
}

pub const STATEFULSET_FILE: &str = "k8s/base/statefulset.yaml";
pub const CONTAINERFILE: &str = "k8s/Containerfile";

/// The base StatefulSet (the complete one, not an overlay patch).
pub fn statefulset() -> Yaml {
    let docs = parse_yaml(&read(STATEFULSET_FILE), STATEFULSET_FILE);
    docs.into_iter()
        .find(|d| kind(d) == "StatefulSet")
        .unwrap_or_else(|| panic!("{STATEFULSET_FILE} has no StatefulSet"))
}

pub fn stockd_container(sts: &Yaml) -> Yaml {
    sts.at(&["spec", "template", "spec", "containers"])
        .seq()
        .iter()
        .find(|c| c.get("name").str() == Some("stockd"))
        .cloned()
        .unwrap_or_else(|| panic!("{STATEFULSET_FILE}: no container named `stockd`"))
}

pub fn str_list(node: &Yaml) -> Vec<String> {
    node.seq()
        .iter()
        .filter_map(|v| v.str().map(str::to_string))
        .collect()
}

/// `--flag=value` / `--flag value` pairs of an argument list.
pub fn flags(args: &[String]) -> Vec<(String, Option<String>)> {
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

pub fn flag_value(args: &[String], flag: &str) -> Option<String> {
    flags(args)
        .into_iter()
        .find(|(f, _)| f == flag)
        .and_then(|(_, v)| v)
}

/// The JSON string arrays of the Containerfile's `INSTRUCTION [..]` lines
/// (exec form), e.g. CMD or ENTRYPOINT. Continuation lines are joined.
pub fn containerfile_exec(instruction: &str) -> Vec<String> {
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

pub fn containerfile_logical_lines(src: &str) -> Vec<String> {
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

pub fn stockd_serve_help() -> String {
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
pub fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The values clap lists for `flag` in its help block, if it lists any
/// (`[possible values: a, b]` or a `Possible values:` bullet list).
pub fn possible_values(help: &str, flag: &str) -> Option<Vec<String>> {
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
