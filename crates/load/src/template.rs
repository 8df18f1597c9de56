//! ghz's template variables in `-d` request data.
//!
//! ghz runs the data through Go's `text/template` before parsing it as JSON. This module
//! supports the actions ghz documents: `{{.RequestNumber}}`, `{{.WorkerID}}`,
//! `{{.UUID}}`, `{{.FullyQualifiedName}}`, `{{.MethodName}}`, `{{.ServiceName}}`,
//! `{{.InputName}}`, `{{.OutputName}}`, `{{.Timestamp}}`, `{{.TimestampUnix}}`,
//! `{{.TimestampUnixMilli}}`, `{{.TimestampUnixNano}}`, `{{randomInt a b}}`,
//! `{{randomString n}}` and `{{newUUID}}`, with `{{-`/`-}}` whitespace trimming.
//!
//! The text is parsed once; a request renders it into a reused buffer. Data without any
//! action is detected up front so it is parsed and encoded only once for the whole run.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    RequestNumber,
    WorkerId,
    Uuid,
    FullyQualifiedName,
    MethodName,
    ServiceName,
    InputName,
    OutputName,
    Timestamp,
    TimestampUnix,
    TimestampUnixMilli,
    TimestampUnixNano,
    /// ghz: `rand.Intn(max-min) + min`, so `[min, max)`.
    RandomInt(i64, i64),
    RandomString(usize),
}

/// What a request's template can refer to.
pub struct Context<'a> {
    pub request_number: u64,
    pub worker_id: &'a str,
    pub method: &'a MethodNames,
}

/// The names of the called method, as ghz exposes them to templates.
#[derive(Debug, Clone, Default)]
pub struct MethodNames {
    /// `inventory.v1.InventoryService.Reserve`
    pub fully_qualified: String,
    /// `Reserve`
    pub method: String,
    /// `InventoryService`
    pub service: String,
    /// `inventory.v1.ReserveRequest`
    pub input: String,
    /// `inventory.v1.ReserveResponse`
    pub output: String,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut rest = text;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut literal = &rest[..open];
            if trim_next {
                literal = literal.trim_start();
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                format!("template: unclosed action at {:?}", excerpt(&rest[open..]))
            })?;
            let mut action = &after[..close];
            if let Some(a) = action.strip_prefix('-') {
                literal = literal.trim_end();
                action = a;
            }
            trim_next = false;
            if let Some(a) = action.strip_suffix('-') {
                trim_next = true;
                action = a;
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(literal.to_string()));
            }
            pieces.push(parse_action(action.trim())?);
            rest = &after[close + 2..];
        }
        let tail = if trim_next { rest.trim_start() } else { rest };
        if !tail.is_empty() {
            pieces.push(Piece::Text(tail.to_string()));
        }
        Ok(Template { pieces })
    }

    /// True when the text has no action: it renders to the same string every time.
    pub fn is_static(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Text(_)))
    }

    /// Renders into `out` (cleared first).
    pub fn render(&self, ctx: &Context<'_>, rng: &mut impl Rng, out: &mut String) {
        out.clear();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::RequestNumber => {
                    let _ = write!(out, "{}", ctx.request_number);
                }
                Piece::WorkerId => out.push_str(ctx.worker_id),
                Piece::Uuid => {
                    let _ = write!(out, "{}", uuid::Uuid::new_v4());
                }
                Piece::FullyQualifiedName => out.push_str(&ctx.method.fully_qualified),
                Piece::MethodName => out.push_str(&ctx.method.method),
                Piece::ServiceName => out.push_str(&ctx.method.service),
                Piece::InputName => out.push_str(&ctx.method.input),
                Piece::OutputName => out.push_str(&ctx.method.output),
                Piece::Timestamp => {
                    // Go's `time.RFC3339` in UTC: `2006-01-02T15:04:05Z`.
                    let _ = write!(out, "{}", humantime::format_rfc3339_seconds(now()));
                }
                Piece::TimestampUnix => {
                    let _ = write!(out, "{}", unix(now()).as_secs());
                }
                Piece::TimestampUnixMilli => {
                    let _ = write!(out, "{}", unix(now()).as_millis());
                }
                Piece::TimestampUnixNano => {
                    let _ = write!(out, "{}", unix(now()).as_nanos());
                }
                Piece::RandomInt(min, max) => {
                    let v = if max > min {
                        rng.random_range(*min..*max)
                    } else {
                        *min
                    };
                    let _ = write!(out, "{v}");
                }
                Piece::RandomString(n) => {
                    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
                    for _ in 0..*n {
                        out.push(LETTERS[rng.random_range(0..LETTERS.len())] as char);
                    }
                }
            }
        }
    }
}

fn excerpt(s: &str) -> &str {
    let end = s.char_indices().nth(24).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

fn parse_action(action: &str) -> Result<Piece, String> {
    let words: Vec<&str> = action.split_whitespace().collect();
    let piece = match words.as_slice() {
        [".RequestNumber"] => Piece::RequestNumber,
        [".WorkerID"] => Piece::WorkerId,
        [".UUID"] | ["newUUID"] => Piece::Uuid,
        [".FullyQualifiedName"] => Piece::FullyQualifiedName,
        [".MethodName"] => Piece::MethodName,
        [".ServiceName"] => Piece::ServiceName,
        [".InputName"] => Piece::InputName,
        [".OutputName"] => Piece::OutputName,
        [".Timestamp"] => Piece::Timestamp,
        [".TimestampUnix"] => Piece::TimestampUnix,
        [".TimestampUnixMilli"] => Piece::TimestampUnixMilli,
        [".TimestampUnixNano"] => Piece::TimestampUnixNano,
        ["randomInt", a, b] => {
            let min = int_arg(a, action)?;
            let max = int_arg(b, action)?;
            if max < min {
                return Err(format!(
                    "template: {{{{{action}}}}}: max must not be below min"
                ));
            }
            Piece::RandomInt(min, max)
        }
        ["randomString", n] => {
            let n = int_arg(n, action)?;
            Piece::RandomString(n.clamp(0, 1 << 16) as usize)
        }
        _ => {
            return Err(format!(
                "template: unsupported action {{{{{action}}}}} (supported: .RequestNumber, .WorkerID, \
                 .UUID, .FullyQualifiedName, .MethodName, .ServiceName, .InputName, .OutputName, \
                 .Timestamp, .TimestampUnix, .TimestampUnixMilli, .TimestampUnixNano, \
                 randomInt a b, randomString n, newUUID)"
            ));
        }
    };
    Ok(piece)
}

fn int_arg(word: &str, action: &str) -> Result<i64, String> {
    word.parse()
        .map_err(|_| format!("template: {{{{{action}}}}}: {word:?} is not an integer"))
}

fn unix(t: SystemTime) -> std::time::Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The wall clock, never before 1970 (humantime formats only times after the epoch).
pub fn now() -> SystemTime {
    SystemTime::now().max(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn render(text: &str, n: u64) -> String {
        let names = MethodNames {
            fully_qualified: "inventory.v1.InventoryService.Reserve".into(),
            method: "Reserve".into(),
            service: "InventoryService".into(),
            input: "inventory.v1.ReserveRequest".into(),
            output: "inventory.v1.ReserveResponse".into(),
        };
        let ctx = Context {
            request_number: n,
            worker_id: "g3c1",
            method: &names,
        };
        let mut out = String::new();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        Template::parse(text)
            .unwrap()
            .render(&ctx, &mut rng, &mut out);
        out
    }

    #[test]
    fn static_text_is_detected() {
        assert!(Template::parse(r#"{"a": "b"}"#).unwrap().is_static());
        assert!(
            !Template::parse(r#"{"a": "{{.UUID}}"}"#)
                .unwrap()
                .is_static()
        );
    }

    #[test]
    fn variables() {
        assert_eq!(
            render(r#"{"h":"h-{{.RequestNumber}}"}"#, 42),
            r#"{"h":"h-42"}"#
        );
        assert_eq!(render("{{ .WorkerID }}/{{.MethodName}}", 0), "g3c1/Reserve");
        assert_eq!(
            render("{{.FullyQualifiedName}}", 0),
            "inventory.v1.InventoryService.Reserve"
        );
        assert_eq!(render("{{.UUID}}", 0).len(), 36);
        let r: i64 = render("{{randomInt 5 8}}", 0).parse().unwrap();
        assert!((5..8).contains(&r));
        assert_eq!(render("{{randomString 6}}", 0).len(), 6);
        assert_eq!(render("a  {{- .RequestNumber -}}  b", 1), "a1b");
    }

    #[test]
    fn errors() {
        assert!(Template::parse("{{.Nope}}").is_err());
        assert!(Template::parse("{{.UUID").is_err());
        assert!(Template::parse("{{randomInt 9 1}}").is_err());
        assert!(Template::parse("{{randomInt a 1}}").is_err());
    }

    #[test]
    fn timestamps() {
        let t = render("{{.Timestamp}}", 0);
        assert_eq!(t.len(), "2023-11-14T22:13:20Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        let secs: u64 = render("{{.TimestampUnix}}", 0).parse().unwrap();
        assert!(secs > 1_700_000_000);
        assert_eq!(
            humantime::format_rfc3339_seconds(
                UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)
            )
            .to_string(),
            "2023-11-14T22:13:20Z"
        );
    }
}
