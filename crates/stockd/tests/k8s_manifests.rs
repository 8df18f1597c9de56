//! Consistency checks between the deployment files under `k8s/` and the stockd
//! binary and code:
//!
//! (a) every `--flag` the manifests and the Containerfile pass to stockd (and
//!     every `STOCKD_*` variable they set) is known to `stockd serve --help`,
//!     and values of flags with a fixed set of values are among them;
//! (b) container ports are 50051 (gRPC), 50052 (admin) and 9464 (metrics), agree with
//!     `--grpc-addr`/`--admin-addr`/`--metrics-addr`, EXPOSE, the probes, the Services'
//!     targetPorts, the NetworkPolicy and the ServiceMonitor;
//! (c) the data volume is mounted at the `--data-dir` of the manifests, which is
//!     the data directory the Containerfile creates, owns and passes;
//! (d) every metric used by the Grafana dashboard starts with `stockd_` and is
//!     registered in `src/metrics.rs`.
//!
//! No YAML crate: `common/yaml.rs` reads the block-style YAML subset the manifests
//! use; `common/manifests.rs` finds the files and asks the binary for its options.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use common::manifests::*;
use common::yaml::{Yaml, parse_yaml};

const GRPC_PORT: i64 = 50051;
const ADMIN_PORT: i64 = 50052;
const METRICS_PORT: i64 = 9464;

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
        BTreeSet::from([GRPC_PORT, ADMIN_PORT, METRICS_PORT]),
        "{STATEFULSET_FILE}: container ports"
    );
    assert_eq!(
        by_name.get("grpc"),
        Some(&GRPC_PORT),
        "container port `grpc`"
    );
    assert_eq!(
        by_name.get("admin"),
        Some(&ADMIN_PORT),
        "container port `admin`"
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
        for (flag, want) in [
            ("--grpc-addr", GRPC_PORT),
            ("--admin-addr", ADMIN_PORT),
            ("--metrics-addr", METRICS_PORT),
        ] {
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
    // Keywords other than the label-list ones (`LABEL_LIST`, checked first).
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end",
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
