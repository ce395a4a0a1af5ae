//! Beyond one process and one node (issue 15): leases every process on a
//! node sees, and three `serve` processes behind Debian's real haproxy with
//! the configuration we ship (`deploy/haproxy/haproxy.cfg`), on loopback.
//! Repositories keep landing on the node that holds their workspace; losing
//! a node moves only its repositories, and they return when it does.

use crate::support::{Upstream, cli_local, serve_at};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The push webhooks' secret on every node.
pub(crate) const HOOK_SECRET: &str = "router-hook-secret-4e1";
pub(crate) const TOKEN: &str = "router-token-0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node(base: &Path, id: &str, port: u16) -> crate::support::Served {
    node_in(base, id, port, "")
}

/// [`node`] as a member of `fleet` (`WORKSPACE_FLEET`; empty: none).
pub(crate) fn node_in(base: &Path, id: &str, port: u16, fleet: &str) -> crate::support::Served {
    let mut cmd = cli_local(base, &[]);
    cmd.env("WORKSPACE_API_TOKEN", TOKEN)
        .env("WORKSPACE_NODE_ID", id)
        .env("WORKSPACE_LEASE_WAIT_SECONDS", "0")
        .env("WORKSPACE_FLEET", fleet)
        .env("WORKSPACE_WEBHOOK_SECRET", HOOK_SECRET);
    serve_at(cmd, &format!("127.0.0.1:{port}"))
}

pub(crate) struct Router {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn router(nodes: &[u16]) -> Router {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy/haproxy.cfg");
    let port = free_port();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db")
        .arg("-f")
        .arg(&cfg)
        .env("LISTEN", format!("127.0.0.1:{port}"));
    for (i, p) in nodes.iter().enumerate() {
        cmd.env(format!("NODE{}", i + 1), format!("127.0.0.1:{p}"));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (Debian: haproxy; scripts/setup --test installs it)");
    Router {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Three nodes (`node1`..`node3`, each on its own base directory) behind
/// the router.
pub(crate) struct Cluster {
    pub(crate) bases: Vec<tempfile::TempDir>,
    pub(crate) ports: Vec<u16>,
    pub(crate) nodes: Vec<crate::support::Served>,
    pub(crate) router: Router,
}

pub(crate) fn cluster() -> Cluster {
    let bases: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    // Each node knows the fleet (the router's node list), for /fleet/.
    let fleet: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("node{}=http://127.0.0.1:{p}", i + 1))
        .collect();
    let nodes = (0..3)
        .map(|i| {
            node_in(
                bases[i].path(),
                &format!("node{}", i + 1),
                ports[i],
                &fleet.join(","),
            )
        })
        .collect();
    let router = router(&ports);
    Cluster {
        bases,
        ports,
        nodes,
        router,
    }
}

/// Prepare `repo` through the router; the node that served it, or none
/// while the router still sends it to a node that is gone.
fn try_prepare(
    client: &reqwest::blocking::Client,
    router: &str,
    up: &Upstream,
    repo: &str,
) -> Option<String> {
    let r = prepare_request(client, router, &up.url(), repo)
        .send()
        .ok()?;
    let node = r.headers().get("x-served-by")?.to_str().ok()?.to_string();
    let status = r.status();
    let body: Value = r.json().unwrap_or_default();
    assert!(status.is_success(), "{repo} on {node}: {body}");
    Some(node)
}

/// A prepare of `repo` from `clone_url` through the router, with its
/// shard key.
pub(crate) fn prepare_request(
    client: &reqwest::blocking::Client,
    router: &str,
    clone_url: &str,
    repo: &str,
) -> reqwest::blocking::RequestBuilder {
    client
        .post(format!("{router}/workspace/prepare"))
        .bearer_auth(TOKEN)
        .header("X-Fixsec-Shard", repo)
        .json(&json!({"repo_full_name": repo, "clone_url": clone_url}))
}

fn prepare(client: &reqwest::blocking::Client, router: &str, up: &Upstream, repo: &str) -> String {
    try_prepare(client, router, up, repo).unwrap_or_else(|| panic!("{repo} was not served"))
}

/// Where each repository lands once `expected` nodes serve and the
/// placement has settled (two passes in a row agree: a node coming up or
/// going down mid-pass gives a mixed one).
pub(crate) fn wait_for_nodes(
    client: &reqwest::blocking::Client,
    router: &str,
    up: &Upstream,
    repos: &[String],
    expected: usize,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<BTreeMap<String, String>> = None;
    loop {
        let placed: Option<BTreeMap<String, String>> = repos
            .iter()
            .map(|r| try_prepare(client, router, up, r).map(|n| (r.clone(), n)))
            .collect();
        let nodes: std::collections::BTreeSet<String> =
            placed.iter().flat_map(|p| p.values().cloned()).collect();
        let placed = placed.filter(|_| nodes.len() == expected);
        if let Some(settled) = placed.as_ref().filter(|_| placed == last) {
            return settled.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no settled placement on {expected} nodes; last {nodes:?}"
        );
        last = placed;
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn repositories_stay_on_their_node_and_only_a_lost_nodes_move() {
    let up = Upstream::new();
    let Cluster {
        bases,
        ports,
        mut nodes,
        router,
    } = cluster();
    let client = reqwest::blocking::Client::new();
    let repos: Vec<String> = (0..12).map(|i| format!("acme/repo-{i}")).collect();

    // A request without the shard key is the router's 400.
    let deadline = Instant::now() + Duration::from_secs(10);
    let missing = loop {
        match client
            .post(format!("{}/workspace/prepare", router.url))
            .bearer_auth(TOKEN)
            .json(&json!({"repo_full_name": "acme/x", "clone_url": up.url()}))
            .send()
        {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("the router never listened: {e}"),
        }
    };
    assert_eq!(missing.status().as_u16(), 400);
    assert_eq!(missing.json::<Value>().unwrap()["error"], "missing_shard");

    // Prepared twice, each repository lands on the same node both times.
    let first = wait_for_nodes(&client, &router.url, &up, &repos, 3);
    let second: BTreeMap<String, String> = repos
        .iter()
        .map(|r| (r.clone(), prepare(&client, &router.url, &up, r)))
        .collect();
    assert_eq!(first, second);
    for (repo, node) in &first {
        let i: usize = node.trim_start_matches("node").parse::<usize>().unwrap() - 1;
        let m = fixsec_workspace::WorkspaceManager::builder()
            .base_path(bases[i].path())
            .build()
            .unwrap();
        assert!(
            m.get(&m.workspace_name(repo).unwrap()).unwrap().is_some(),
            "{repo} not on {node}"
        );
    }

    // Lose node2: only its repositories move, to the other two.
    let _ = nodes[1].child.kill();
    let _ = nodes[1].child.wait();
    let moved = wait_for_nodes(&client, &router.url, &up, &repos, 2);
    for repo in &repos {
        if first[repo] == "node2" {
            assert_ne!(moved[repo], "node2", "{repo}");
        } else {
            assert_eq!(
                moved[repo], first[repo],
                "{repo} moved though its node lives"
            );
        }
    }
    assert!(
        first.values().any(|n| n == "node2"),
        "node2 held nothing: {first:?}"
    );

    // Back again: the original mapping returns.
    nodes[1] = node(bases[1].path(), "node2", ports[1]);
    let back = wait_for_nodes(&client, &router.url, &up, &repos, 3);
    assert_eq!(back, first);
    for n in &mut nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
}

/// Issue 24: under concurrent load a repository never moves between live
/// nodes. 32 prepares at once (12 repositories, several of each) through
/// the router, five rounds: every repository is served by one node only.
/// (With bounded-load hashing, `hash-balance-factor`, a busy node's keys
/// spilled to the next node, which cloned them again.)
#[test]
fn concurrent_prepares_never_move_a_repository_between_live_nodes() {
    let up = Upstream::new();
    let Cluster {
        bases: _bases,
        ports: _,
        nodes: _nodes,
        router,
    } = cluster();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let repos: Vec<String> = (0..12).map(|i| format!("acme/busy-{i}")).collect();
    let first = wait_for_nodes(&client, &router.url, &up, &repos, 3);
    let clone_url = up.url();
    let mut served: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for round in 0..5 {
        let seen: Vec<(String, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32)
                .map(|i| {
                    let repo = repos[(i + round) % repos.len()].clone();
                    let (client, url, clone_url) = (&client, &router.url, &clone_url);
                    s.spawn(move || {
                        let node = prepare_waiting(client, url, clone_url, &repo);
                        (repo, node)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (repo, node) in seen {
            served.entry(repo).or_default().insert(node);
        }
    }
    for (repo, nodes_seen) in &served {
        assert_eq!(
            nodes_seen.iter().collect::<Vec<_>>(),
            vec![&first[repo]],
            "{repo} was served by more than its own node"
        );
    }
}

/// Issue 24: what a failover does to a lease and to the interim copy. The
/// owner of a repository goes down; the repository is prepared (and
/// leased) on the interim node; the owner returns. New prepares go to the
/// owner again; the interim copy stays while leased (its node's cleanup
/// skips it) and is removed by that cleanup once the lease is released.
#[test]
fn the_interim_copy_keeps_its_lease_and_ages_out_when_the_owner_returns() {
    let up = Upstream::new();
    let Cluster {
        bases,
        ports,
        mut nodes,
        router,
    } = cluster();
    let client = reqwest::blocking::Client::new();
    let repos: Vec<String> = (0..12).map(|i| format!("acme/failover-{i}")).collect();
    let first = wait_for_nodes(&client, &router.url, &up, &repos, 3);
    let repo = repos
        .iter()
        .find(|r| first[*r] == "node2")
        .expect("node2 holds a repository")
        .clone();

    let _ = nodes[1].child.kill();
    let _ = nodes[1].child.wait();
    let moved = wait_for_nodes(&client, &router.url, &up, &repos, 2);
    let interim = moved[&repo].clone();
    let interim_port = ports[interim.trim_start_matches("node").parse::<usize>().unwrap() - 1];
    let leased: Value = client
        .post(format!("{}/workspace/prepare", router.url))
        .bearer_auth(TOKEN)
        .header("X-Fixsec-Shard", &repo)
        .json(&json!({"repo_full_name": repo, "clone_url": up.url(), "lease_seconds": 600}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let lease_id = leased["lease"]["id"].as_u64().expect("a lease");

    // The owner returns: it serves the repository again, from its own copy.
    // (The others settle first: the leased one would answer 409 on the
    // interim node until node2 is back in the ring.)
    nodes[1] = node(bases[1].path(), "node2", ports[1]);
    let others: Vec<String> = repos.iter().filter(|r| **r != repo).cloned().collect();
    wait_for_nodes(&client, &router.url, &up, &others, 3);
    assert_eq!(prepare(&client, &router.url, &up, &repo), "node2");

    // The interim copy: kept while leased, removed by its node's cleanup after.
    let direct = |path: &str| format!("http://127.0.0.1:{interim_port}{path}");
    let cleanup = || -> Value {
        client
            .post(direct("/workspace/cleanup"))
            .bearer_auth(TOKEN)
            .json(&json!({"max_age_hours": 0}))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let name = leased["name"].as_str().unwrap().to_string();
    let kept = cleanup();
    let skipped: Vec<&str> = kept["report"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(skipped.contains(&name.as_str()), "{kept}");
    let interim_base =
        bases[interim.trim_start_matches("node").parse::<usize>().unwrap() - 1].path();
    assert!(interim_base.join(&name).exists());
    let released = client
        .delete(direct(&format!("/workspace/leases/{lease_id}")))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert!(released.status().is_success());
    let gone = cleanup();
    assert!(!interim_base.join(&name).exists(), "{gone}");
}

/// [`prepare`], waiting out the workspace being in use by a concurrent
/// prepare of the same repository (409 or 503 from its node).
fn prepare_waiting(
    client: &reqwest::blocking::Client,
    router: &str,
    clone_url: &str,
    repo: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = prepare_request(client, router, clone_url, repo)
            .send()
            .unwrap();
        let node = r
            .headers()
            .get("x-served-by")
            .map(|v| v.to_str().unwrap().to_string());
        let status = r.status().as_u16();
        if let (true, Some(node)) = (r.status().is_success(), node.clone()) {
            return node;
        }
        assert!(
            matches!(status, 409 | 503) && Instant::now() < deadline,
            "{repo}: {status} from {node:?}: {}",
            r.text().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_lease_taken_through_the_server_holds_for_the_cli_and_across_a_restart() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = node(base.path(), "node1", port);
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let prepare = |holder: &str| {
        let r = client
            .post(format!("{url}/workspace/prepare"))
            .bearer_auth(TOKEN)
            .json(
                &json!({"repo_full_name": "acme/held", "clone_url": up.url(),
                          "lease_seconds": 600, "holder": holder}),
            )
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (status, held) = prepare("scan-9");
    assert_eq!(status, 200, "{held}");
    let name = held["name"].as_str().unwrap().to_string();
    let id = held["lease"]["id"].as_u64().unwrap();

    // The CLI, another process, sees the server's lease.
    let cli = |args: &[&str]| cli_local(base.path(), args).output().unwrap();
    let out = cli(&["remove", &name]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scan-9"),
        "{out:?}"
    );
    let out = cli(&["--json", "cleanup", "--max-age-hours", "0"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        base.path().join(&name).join("repo").is_dir(),
        "cleanup removed a leased workspace"
    );
    let listed: Value = serde_json::from_slice(&cli(&["--json", "list"]).stdout).unwrap();
    assert_eq!(listed[0]["leased_by"], "scan-9");

    // A timed lease outlives a restart of the server that granted it.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let mut server = node(base.path(), "node1", port);
    let (status, busy) = prepare("fix-1");
    assert_eq!(status, 409, "{busy}");
    assert!(
        busy["detail"].as_str().unwrap().contains("scan-9"),
        "{busy}"
    );
    let released = client
        .delete(format!("{url}/workspace/leases/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(released.status().as_u16(), 200);
    let out = cli(&["remove", &name]);
    assert!(out.status.success(), "{out:?}");
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// After SIGTERM a node drains: `/readyz` answers 503 (the router and
/// Kubernetes stop sending it work) while requests are still served, then
/// it exits. `/healthz` (liveness) stays 200 throughout.
#[test]
fn a_draining_node_fails_readiness_but_keeps_serving() {
    let base = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = cli_local(base.path(), &[]);
    cmd.env("WORKSPACE_API_TOKEN", TOKEN)
        .env("WORKSPACE_DRAIN_SECONDS", "3")
        .env("WORKSPACE_SHUTDOWN_GRACE_SECONDS", "1");
    let mut served = serve_at(cmd, &format!("127.0.0.1:{port}"));
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| {
        client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .map(|r| r.status().as_u16())
    };
    assert_eq!(get("/readyz").unwrap(), 200);
    assert_eq!(get("/healthz").unwrap(), 200);
    let term = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(2);
    while get("/readyz").unwrap() != 503 {
        assert!(Instant::now() < deadline, "readiness never failed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get("/healthz").unwrap(), 200);
    assert_eq!(
        get("/workspace/stats").unwrap(),
        200,
        "work is still served"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the node did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The CLI's `--server` through the router: a prepare sends its
/// repository's network as the shard key (a fork lands with its root),
/// other commands send `--shard`; without one the router's 400 reaches the
/// user as a clear error, and a wrong token likewise.
#[test]
fn the_cli_through_the_router_sends_the_shard_key() {
    let up = Upstream::new();
    let Cluster {
        bases,
        ports: _,
        mut nodes,
        router,
    } = cluster();
    let client = reqwest::blocking::Client::new();
    // Roots and forks, each placed under its own key first.
    let repos: Vec<String> = (0..6)
        .flat_map(|i| [format!("acme/cli-{i}"), format!("someone/cli-{i}")])
        .collect();
    let placed = wait_for_nodes(&client, &router.url, &up, &repos, 3);
    let base_of = |repo: &str| {
        let i: usize = placed[repo]
            .trim_start_matches("node")
            .parse::<usize>()
            .unwrap()
            - 1;
        bases[i].path().canonicalize().unwrap()
    };
    // A fork whose own key would take it to another node than its root's.
    let k = (0..6)
        .find(|k| placed[&format!("acme/cli-{k}")] != placed[&format!("someone/cli-{k}")])
        .expect("some fork hashes elsewhere than its root");
    let (root, fork_repo) = (format!("acme/cli-{k}"), format!("someone/cli-{k}"));
    let scratch = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut cmd = cli_local(scratch.path(), &["--server", &router.url]);
        cmd.args(args).env("WORKSPACE_API_TOKEN", TOKEN);
        cmd.output().unwrap()
    };

    // A fork names its root: it lands on the root's node.
    for (repo, network) in [(&root, None), (&fork_repo, Some(root.as_str()))] {
        let mut args = vec![
            "--json",
            "prepare",
            repo.as_str(),
            up.path.to_str().unwrap(),
        ];
        if let Some(n) = network {
            args.extend(["--network", n]);
        }
        let out = cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let path = Path::new(v["path"].as_str().unwrap())
            .canonicalize()
            .unwrap();
        assert!(
            path.starts_with(base_of(&root)),
            "{repo} at {} is not on {}",
            path.display(),
            placed[&root]
        );
    }

    // Commands that name no repository: the router's 400 without --shard.
    let out = cli(&["list"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("X-Fixsec-Shard"), "{stderr}");
    // With it, the node that holds the repository answers.
    let out = cli(&["--shard", &root, "--json", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .iter()
        .filter_map(|w| w["repo_full_name"].as_str())
        .collect();
    assert!(
        names.contains(&&*fork_repo) && names.contains(&&*root),
        "{names:?}"
    );
    let fork = list
        .iter()
        .find(|w| w["repo_full_name"] == fork_repo.as_str())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = cli(&["--shard", &root, "remove", &fork]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!base_of(&root).join(&fork).exists());
    // Errors keep their kind and message across the wire: a second remove
    // is not found, said once.
    let out = cli(&["--shard", &root, "remove", &fork]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("not found: ").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("no workspace named {fork}")),
        "{stderr}"
    );
    // `name` asks a node (the repository is its own shard key) for the
    // name the policy gives, the same on every node.
    let out = cli(&["name", &fork_repo]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fork);

    // A wrong token is refused, with what to do.
    let mut wrong = cli_local(
        scratch.path(),
        &["--server", &router.url, "--shard", &root, "stats"],
    );
    let out = wrong
        .env("WORKSPACE_API_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WORKSPACE_API_TOKEN"));
    for n in &mut nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
}
