//! The deployment files: Kubernetes manifests parse and wire storage,
//! probes and the token; alert rules only name metrics the server exports;
//! the Dockerfile is multi-stage with the guide's volume.

use crate::support;

use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_manifests() -> Vec<Yaml> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(deploy_dir().join("k8s")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            for doc in load(&path) {
                assert!(doc["apiVersion"].as_str().is_some(), "{}", path.display());
                assert!(doc["kind"].as_str().is_some(), "{}", path.display());
                docs.push(doc);
            }
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// Every environment variable a manifest sets is one the server reads:
/// documented in the README's configuration table.
fn assert_documented(env: &[Yaml]) {
    let readme = std::fs::read_to_string(deploy_dir().join("../README.md")).unwrap();
    for e in env {
        let name = e["name"].as_str().unwrap();
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not documented in the README"
        );
    }
}

#[test]
fn manifests_wire_storage_probes_and_the_secret() {
    let docs = all_manifests();
    let pvc = of_kind(&docs, "PersistentVolumeClaim");
    assert_eq!(
        pvc["spec"]["resources"]["requests"]["storage"].as_str(),
        Some("10Gi")
    );
    assert_eq!(
        pvc["spec"]["accessModes"][0].as_str(),
        Some("ReadWriteOnce")
    );
    let pvc_name = pvc["metadata"]["name"].as_str().unwrap();

    let deployment = of_kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = &pod["volumes"][0];
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"].as_str(),
        Some(pvc_name)
    );
    let container = &pod["containers"][0];
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["name"], volume["name"]);
    assert_eq!(mount["mountPath"].as_str(), Some("/app/backend/workspace"));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["path"].as_str(),
            Some("/workspace/health"),
            "{probe}"
        );
    }
    let env = container["env"].as_vec().unwrap();
    let token = env
        .iter()
        .find(|e| e["name"].as_str() == Some("WORKSPACE_API_TOKEN"))
        .expect("the token comes from the environment");
    let secret_ref = &token["valueFrom"]["secretKeyRef"];
    let secret = of_kind(&docs, "Secret");
    assert_eq!(secret_ref["name"], secret["metadata"]["name"]);
    assert!(
        secret["stringData"][secret_ref["key"].as_str().unwrap()]
            .as_str()
            .is_some()
    );
    // Bound to all interfaces inside the pod, and the base path is the mount.
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str())
    };
    assert_eq!(value("WORKSPACE_BIND"), Some("0.0.0.0:8080"));
    assert_eq!(value("WORKSPACE_BASE_PATH"), Some("/app/backend/workspace"));
    assert_documented(env);
}

/// Metric names (`fixsec_workspace_*`) in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("fixsec_workspace_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn alert_rules_name_only_metrics_the_server_exports() {
    let base = tempfile::tempdir().unwrap();
    let exposition = support::manager(base.path()).encode_metrics().unwrap();
    let exported: Vec<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split([' ', '{']).next())
        .collect();
    let rules = load(&deploy_dir().join("prometheus/alerts.yaml"));
    let mut alerts = Vec::new();
    for group in rules[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{name}: {expr}");
            for metric in names {
                assert!(
                    exported.contains(&metric.as_str()),
                    "{name} uses {metric}, which is not exported:\n{exposition}"
                );
            }
            alerts.push(name.to_string());
        }
    }
    for wanted in [
        "HighDiskUsage",
        "TooManyWorkspaces",
        "CleanupFailures",
        "LongRunningOperation",
    ] {
        assert!(
            alerts.iter().any(|a| a.contains(wanted)),
            "{wanted} in {alerts:?}"
        );
    }
}

#[test]
fn the_dockerfile_is_multi_stage_with_the_guides_volume() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage");
    assert!(text.contains(r#"VOLUME ["/app/backend/workspace"]"#));
    assert!(
        text.contains("rustup target add wasm32-wasip2"),
        "the policy's target is installed"
    );
    assert!(
        text.lines().any(|l| l.starts_with("USER ")),
        "runs as a non-root user"
    );
}

/// The multi-node option (`deploy/k8s/nodes/`): the StatefulSet, its
/// headless Service and the router agree on names, ports, probes and
/// server ids, and the router's configuration is the shipped one's.
#[test]
fn the_node_manifests_agree_with_each_other_and_the_router() {
    let dir = deploy_dir().join("k8s/nodes");
    let mut docs = Vec::new();
    for file in ["statefulset.yaml", "router.yaml"] {
        docs.extend(load(&dir.join(file)));
    }
    let set = of_kind(&docs, "StatefulSet");
    let set_name = set["metadata"]["name"].as_str().unwrap();
    let service_name = set["spec"]["serviceName"].as_str().unwrap();
    let headless = docs
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("Service")
                && d["metadata"]["name"].as_str() == Some(service_name)
        })
        .expect("the StatefulSet's headless Service");
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let port = container["ports"][0]["containerPort"].as_i64().unwrap();
    let port_name = container["ports"][0]["name"].as_str().unwrap();
    let claim = &set["spec"]["volumeClaimTemplates"][0];
    assert_eq!(
        container["volumeMounts"][0]["name"],
        claim["metadata"]["name"]
    );
    assert_eq!(
        claim["spec"]["accessModes"][0].as_str(),
        Some("ReadWriteOnce")
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            container[probe]["httpGet"]["path"].as_str(),
            Some(path),
            "{probe}"
        );
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some(port_name),
            "{probe}"
        );
    }
    let env = container["env"].as_vec().unwrap();
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap()
    };
    assert_eq!(
        var("WORKSPACE_NODE_ID")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name")
    );
    assert_eq!(
        var("WORKSPACE_BIND")["value"].as_str(),
        Some(format!("0.0.0.0:{port}").as_str())
    );
    assert_documented(env);

    // The router: two replicas of one configuration.
    let router = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    assert_eq!(router["spec"]["replicas"].as_i64(), Some(2));
    let config = of_kind(&docs, "ConfigMap");
    assert_eq!(
        router["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
        config["metadata"]["name"]
    );
    let cfg = config["data"]["haproxy.cfg"].as_str().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for (slot, line) in cfg
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .enumerate()
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words[2],
            format!("{set_name}-{slot}.{service_name}:{port}"),
            "{line}"
        );
        let id = words[words.iter().position(|w| *w == "id").unwrap() + 1];
        assert!(ids.insert(id.to_string()), "duplicate server id {id}");
        assert_eq!(id, (slot + 1).to_string(), "ids are fixed by slot: {line}");
    }
    let replicas = set["spec"]["replicas"].as_i64().unwrap() as usize;
    assert!(ids.len() >= replicas, "fewer slots than replicas");
    // The fleet view asks the pods the router's first `replicas` slots
    // name, each by its pod name (its WORKSPACE_NODE_ID).
    let fleet =
        fixsec_workspace::fleet::parse_nodes(var("WORKSPACE_FLEET")["value"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        fleet.len(),
        replicas,
        "one WORKSPACE_FLEET entry per replica"
    );
    for (slot, node) in fleet.iter().enumerate() {
        assert_eq!(node.id, format!("{set_name}-{slot}"));
        assert_eq!(
            node.url,
            format!("http://{set_name}-{slot}.{service_name}:{port}")
        );
    }
    // The routing rules are the shipped configuration's, line for line.
    let shipped = std::fs::read_to_string(deploy_dir().join("haproxy/haproxy.cfg")).unwrap();
    let rules = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| {
                [
                    "balance ",
                    "hash-type ",
                    "hash-balance-factor ",
                    "option httpchk ",
                    "http-check ",
                    "retries ",
                    "option redispatch",
                    "acl ",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(rules(cfg), rules(&shipped));
    assert!(cfg.contains(&format!(
        "option httpchk GET {}",
        container["readinessProbe"]["httpGet"]["path"].as_str().unwrap()
    )));
}

/// `program args` must succeed; its output on failure. Missing programs
/// are named with the package that brings them.
fn check_with(program: &str, package: &str, args: &[&str], env: &[(&str, &str)]) {
    let out = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} ({e}): install Debian's {package} (scripts/setup --test does)")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 24: the alert rules pass `promtool check rules` (Debian's
/// prometheus), and both router configurations (the file, and the one in
/// the Kubernetes ConfigMap) pass `haproxy -c`.
#[test]
fn the_alert_rules_and_router_configs_pass_their_tools_checks() {
    let rules = deploy_dir().join("prometheus/alerts.yaml");
    check_with(
        "promtool",
        "prometheus",
        &["check", "rules", rules.to_str().unwrap()],
        &[],
    );
    let shipped = deploy_dir().join("haproxy/haproxy.cfg");
    check_with(
        "haproxy",
        "haproxy",
        &["-c", "-q", "-f", shipped.to_str().unwrap()],
        &[
            ("LISTEN", "127.0.0.1:8080"),
            ("NODE1", "127.0.0.1:9001"),
            ("NODE2", "127.0.0.1:9002"),
            ("NODE3", "127.0.0.1:9003"),
        ],
    );
    let docs = load(&deploy_dir().join("k8s/nodes/router.yaml"));
    let config = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k8s = dir.path().join("haproxy.cfg");
    std::fs::write(&k8s, config["data"]["haproxy.cfg"].as_str().unwrap()).unwrap();
    check_with(
        "haproxy",
        "haproxy",
        &["-c", "-q", "-f", k8s.to_str().unwrap()],
        &[],
    );
}

/// Issue 24: every query of the Grafana dashboard names only metrics a
/// live node exposes on `/metrics` (after a prepare, a refused prepare and
/// a cleanup, so the labelled families have samples).
#[test]
fn the_grafana_dashboard_queries_only_metrics_a_live_node_exposes() {
    let up = support::Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let node = support::serve_local(base.path(), "grafana-token-0123456789");
    let client = reqwest::blocking::Client::new();
    let url = |path: &str| format!("http://{}{path}", node.addr);
    for body in [
        serde_json::json!({"repo_full_name": "acme/app", "clone_url": up.url()}),
        serde_json::json!({"repo_full_name": "acme/bad", "clone_url": "ftp://x/y"}),
    ] {
        client
            .post(url("/workspace/prepare"))
            .bearer_auth("grafana-token-0123456789")
            .json(&body)
            .send()
            .unwrap();
    }
    client
        .post(url("/workspace/cleanup"))
        .bearer_auth("grafana-token-0123456789")
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    let exposition = client.get(url("/metrics")).send().unwrap().text().unwrap();
    let exported: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split([' ', '{']).next())
        .collect();
    let text = std::fs::read_to_string(deploy_dir().join("grafana/fixsec-workspace.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "a dashboard of {} panels", panels.len());
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr}");
            for metric in names {
                assert!(
                    exported.contains(metric.as_str()),
                    "panel {title:?} queries {metric}, which the node does not expose:\n{exposition}"
                );
            }
        }
    }
}
