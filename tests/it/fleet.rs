//! The fleet view (issue 24, part 2): three `serve` nodes that know each
//! other (`WORKSPACE_FLEET`) behind the shipped haproxy configuration, on
//! loopback. Any node, reached through the router without a shard key,
//! answers for every node; a killed node is named, never left out; the
//! actions reach the node that holds the workspace; the CLI shows it all.

use crate::router::{Cluster, TOKEN, cluster, prepare_request, wait_for_nodes};
use crate::support::{Upstream, cli_local};
use serde_json::{Value, json};

fn get(client: &reqwest::blocking::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).bearer_auth(TOKEN).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or_default())
}

fn send(r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = r.bearer_auth(TOKEN).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or_default())
}

/// `GET path` sent as written (no client normalising it), with the token;
/// the whole answer.
fn raw_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn every_node_answers_for_the_fleet_and_a_dead_node_is_named() {
    let up = Upstream::new();
    let Cluster {
        bases,
        ports: _,
        mut nodes,
        router,
    } = cluster();
    let client = reqwest::blocking::Client::new();
    let repos: Vec<String> = (0..9).map(|i| format!("acme/fleet-{i}")).collect();
    let placed = wait_for_nodes(&client, &router.url, &up, &repos, 3);
    let fleet = |path: &str| get(&client, &format!("{}{path}", router.url));

    // Every workspace, each with the node that served its prepare.
    let (status, list) = fleet("/fleet/workspaces");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["complete"], true, "{list}");
    let workspaces = list["workspaces"].as_array().unwrap();
    assert_eq!(workspaces.len(), repos.len(), "{list}");
    for w in workspaces {
        let repo = w["repo_full_name"].as_str().unwrap();
        assert_eq!(w["node"].as_str(), Some(placed[repo].as_str()), "{w}");
    }
    let counts: u64 = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["answer"].as_u64().unwrap())
        .sum();
    assert_eq!(counts, repos.len() as u64);

    let (_, stats) = fleet("/fleet/stats");
    assert_eq!(stats["totals"]["total_workspaces"], repos.len(), "{stats}");
    assert_eq!(stats["totals"]["nodes_answered"], 3);
    let (_, health) = fleet("/fleet/health");
    assert_eq!(health["complete"], true, "{health}");
    for n in health["nodes"].as_array().unwrap() {
        assert_eq!(n["answer"]["ready"], true, "{n}");
        assert!(n["answer"]["health"]["workspace_stats"]["free_space_bytes"].is_u64());
    }

    // Actions reach the node that holds the workspace, whatever node the
    // router picked for the request: a lease released, then the removal.
    let leased_repo = "acme/fleet-leased";
    let (status, prepared) = send(
        prepare_request(&client, &router.url, &up.url(), leased_repo).json(&json!({
            "repo_full_name": leased_repo,
            "clone_url": up.url(),
            "lease_seconds": 600,
            "holder": "scan-1",
        })),
    );
    assert_eq!(status, 200, "{prepared}");
    let (name, lease) = (
        prepared["name"].as_str().unwrap().to_string(),
        prepared["lease"]["id"].as_u64().unwrap(),
    );
    let (_, list) = fleet("/fleet/workspaces");
    let holder = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name.as_str())
        .map(|w| w["node"].as_str().unwrap().to_string())
        .expect("the leased workspace is listed");
    let base = bases[holder.trim_start_matches("node").parse::<usize>().unwrap() - 1].path();
    let at_holder = format!("{}/fleet/nodes/{holder}", router.url);
    let (status, found) = fleet(&format!("/fleet/nodes/{holder}/workspaces/{name}"));
    assert_eq!((status, found["name"].as_str()), (200, Some(name.as_str())));
    let other = if holder == "node1" { "node2" } else { "node1" };
    let (status, _) = fleet(&format!("/fleet/nodes/{other}/workspaces/{name}"));
    assert_eq!(status, 404, "{other} does not hold {name}");
    let (status, refused) = send(client.delete(format!("{at_holder}/workspaces/{name}")));
    assert_eq!(status, 409, "a leased workspace is not removed: {refused}");
    let (status, released) = send(client.delete(format!("{at_holder}/leases/{lease}")));
    assert_eq!(status, 200, "{released}");
    assert_eq!(released["name"], name.as_str());
    let (status, removed) = send(client.delete(format!("{at_holder}/workspaces/{name}")));
    assert_eq!(status, 200, "{removed}");
    assert!(!base.join(&name).exists());
    let (status, unknown) = fleet("/fleet/nodes/node9/workspaces/x");
    assert_eq!(
        (status, unknown["error"].as_str()),
        (404, Some("unknown_node"))
    );
    // `..` spelt so that a client does not resolve it (reqwest would):
    // refused, never a path on the node.
    let raw = raw_get(
        router.url.trim_start_matches("http://"),
        &format!("/fleet/nodes/{holder}/workspaces/%2e%2e"),
    );
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");

    // The token is the caller's: a wrong one is refused before any node
    // is asked.
    let wrong = client
        .get(format!("{}/fleet/stats", router.url))
        .bearer_auth("not-the-token")
        .send()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);

    // node3 dies: every answer names it, none leaves it out silently.
    let _ = nodes[2].child.kill();
    let on_node3 = placed.values().filter(|n| *n == "node3").count();
    let (status, list) = fleet("/fleet/workspaces");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["complete"], false);
    assert_eq!(list["unreachable"], json!(["node3"]));
    let node3 = &list["nodes"][2];
    assert_eq!(node3["node"], "node3");
    assert_eq!(node3["reachable"], false);
    assert!(
        node3["error"].as_str().unwrap().contains("did not answer"),
        "{node3}"
    );
    assert_eq!(
        list["workspaces"].as_array().unwrap().len(),
        repos.len() - on_node3
    );
    let (_, health) = fleet("/fleet/health");
    assert_eq!(health["status"], "critical", "{health}");
    assert_eq!(health["unreachable"], json!(["node3"]));
    let (status, cleanup) = send(
        client
            .post(format!("{}/fleet/cleanup", router.url))
            .json(&json!({"max_age_hours": 1000})),
    );
    assert_eq!(status, 200, "{cleanup}");
    assert_eq!(cleanup["unreachable"], json!(["node3"]));
    assert_eq!(cleanup["nodes"][0]["answer"]["max_age_hours"], 1000.0);

    // The CLI: the same view, exit code 1 while a node is missing.
    let scratch = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut cmd = cli_local(scratch.path(), &["--server", &router.url]);
        cmd.args(args).env("WORKSPACE_API_TOKEN", TOKEN);
        cmd.output().unwrap()
    };
    let out = cli(&["fleet", "health"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("fleet: critical"), "{text}");
    assert!(text.contains("node3: NO ANSWER"), "{text}");
    assert!(text.contains("node1: "), "{text}");
    let out = cli(&["--json", "fleet", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["unreachable"], json!(["node3"]));
    let out = cli(&["fleet", "stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("on 2 of 3 node(s)"), "{text}");
    let local = cli_local(scratch.path(), &["fleet", "list"])
        .output()
        .unwrap();
    assert_eq!(local.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&local.stderr).contains("--server"));
}

/// A node without `WORKSPACE_FLEET` says so, and how to set it.
#[test]
fn a_node_outside_a_fleet_says_how_to_join_one() {
    let base = tempfile::tempdir().unwrap();
    let served = crate::support::serve_local(base.path(), TOKEN);
    let client = reqwest::blocking::Client::new();
    let (status, body) = get(&client, &format!("http://{}/fleet/health", served.addr));
    assert_eq!(status, 404);
    assert_eq!(body["error"], "fleet_not_configured");
    assert!(body["detail"].as_str().unwrap().contains("WORKSPACE_FLEET"));
}

/// The dashboard through the router, in chromium: every node with its
/// figures, every workspace with its node, a removal that reaches the
/// node holding the workspace, and a killed node shown as such.
#[test]
fn the_dashboard_through_the_router_shows_and_acts_on_every_node() {
    use crate::support::webdriver::Browser;
    let up = Upstream::new();
    let Cluster {
        bases,
        ports: _,
        mut nodes,
        router,
    } = cluster();
    let client = reqwest::blocking::Client::new();
    let repos: Vec<String> = (0..6).map(|i| format!("acme/ui-{i}")).collect();
    let placed = wait_for_nodes(&client, &router.url, &up, &repos, 3);
    let (_, list) = get(&client, &format!("{}/fleet/workspaces", router.url));

    let browser = Browser::start();
    browser.goto(&format!("{}/ui", router.url));
    let field = browser.find("#token").expect("the sign-in form");
    browser.type_into(&field, TOKEN);
    browser.click(&browser.find("#sign-in-form button").unwrap());
    for node in ["node1", "node2", "node3"] {
        browser.wait_for_text("#node-rows", node);
    }
    browser.wait_for_text("#node-count", "3");
    browser.wait_for_text("#health-status", "healthy");
    for repo in &repos {
        browser.wait_for_text("#workspace-rows", repo);
    }
    // Each row names the node that holds the workspace.
    for w in list["workspaces"].as_array().unwrap() {
        let name = w["name"].as_str().unwrap();
        let row = browser.find(&format!("tr[data-name='{name}'] td")).unwrap();
        assert_eq!(browser.text(&row), w["node"].as_str().unwrap());
    }

    // Remove one held by node2 (or node3): the removal reaches that node.
    let (repo, holder) = placed
        .iter()
        .find(|(_, n)| *n != "node1")
        .map(|(r, n)| (r.clone(), n.clone()))
        .unwrap();
    let w = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["repo_full_name"] == repo.as_str())
        .unwrap();
    let name = w["name"].as_str().unwrap();
    let base = bases[holder.trim_start_matches("node").parse::<usize>().unwrap() - 1].path();
    assert!(base.join(name).exists());
    browser.click(
        &browser
            .find(&format!("tr[data-name='{name}'] button.remove"))
            .unwrap(),
    );
    browser.accept_dialog();
    browser.wait_for_text("#action-result", &format!("Removed {repo} from {holder}"));
    browser.wait_gone(&format!("tr[data-name='{name}']"));
    assert!(!base.join(name).exists());

    // node3 dies: its row says so and the fleet is critical.
    let _ = nodes[2].child.kill();
    browser.wait_for_text("tr[data-node='node3']", "no answer");
    browser.wait_for_text("#health-status", "critical");
    browser.wait_for_text("#warnings", "node3: no answer");
    let shot = browser.screenshot();
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("fleet.png"), &shot).unwrap();
}

/// A push event reaches whatever node the router picks; that node asks
/// the fleet, and the node holding the workspace prefetches it.
#[test]
fn a_push_event_through_the_router_reaches_the_node_holding_the_workspace() {
    use crate::prefetch::{push_event_of, signed_with};
    use crate::router::HOOK_SECRET;
    let up = Upstream::new();
    let Cluster {
        bases,
        ports: _,
        nodes: _nodes,
        router,
    } = cluster();
    let client = reqwest::blocking::Client::new();
    let repos: Vec<String> = (0..9).map(|i| format!("acme/hook-{i}")).collect();
    let placed = wait_for_nodes(&client, &router.url, &up, &repos, 3);
    let (_, list) = get(&client, &format!("{}/fleet/workspaces", router.url));
    let pushed = up.commit("src/lib.rs", "pub fn pushed() {}\n", "a push");
    for repo in &repos {
        let body = push_event_of(repo, &up.url(), "refs/heads/main");
        let r = client
            .post(format!("{}/hooks/github", router.url))
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", signed_with(HOOK_SECRET, &body))
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let answer: Value = r.json().unwrap();
        assert_eq!(
            answer["nodes"],
            json!(["node1", "node2", "node3"]),
            "{answer}"
        );
        assert_eq!(answer["unreachable"], json!([]));
    }
    for repo in &repos {
        let name = list["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["repo_full_name"] == repo.as_str())
            .map(|w| w["name"].as_str().unwrap().to_string())
            .unwrap();
        let node: usize = placed[repo].trim_start_matches("node").parse().unwrap();
        let checkout = bases[node - 1].path().join(&name).join("repo");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while crate::support::forge::git(&checkout, &["rev-parse", "HEAD"]) != pushed {
            assert!(
                std::time::Instant::now() < deadline,
                "{repo} on {} was not prefetched",
                placed[repo]
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
