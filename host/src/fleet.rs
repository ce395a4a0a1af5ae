//! The fleet: every node of a deployment seen from any one of them.
//!
//! Nodes share no state (docs/SCALING.md); a router sends each repository
//! to the node that holds it. The fleet view asks every node, from the
//! same node list the router and the StatefulSet use
//! (`WORKSPACE_FLEET`), and answers for all of them: health, stats,
//! workspaces, cleanup. A node that does not answer is in the answer as
//! such (`reachable: false`, the error, its id in `unreachable`), never
//! left out. The fan-out itself is the HTTP service's (`http/fleet.rs`);
//! the answers' shapes are here, for the CLI and embedders to read.

use crate::error::{Error, Result};
use crate::model::{CleanupReport, HealthReport, HealthStatus, Stats, WorkspaceSummary};
use serde::{Deserialize, Serialize};

/// One node of the fleet: its id (what it sends in `X-Served-By`) and
/// the base URL of its API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetNode {
    /// The node's id (`WORKSPACE_NODE_ID`).
    pub id: String,
    /// Its API's base URL, `http://host:port` (no path, no credentials).
    pub url: String,
}

/// Nodes a fleet holds, at most.
pub const MAX_NODES: usize = 256;

/// Parse `WORKSPACE_FLEET`: `id=url` entries separated by commas or
/// whitespace (`node1=http://10.0.0.1:8080,node2=http://10.0.0.2:8080`).
pub fn parse_nodes(text: &str) -> Result<Vec<FleetNode>> {
    let mut nodes: Vec<FleetNode> = Vec::new();
    for entry in text.split([',', ' ', '\n', '\t']).filter(|e| !e.is_empty()) {
        let refuse = |why: &str| {
            Error::config(format!(
                "WORKSPACE_FLEET entry {entry:?} {why}; write id=http://host:port entries, e.g. \
                 node1=http://10.0.0.1:8080,node2=http://10.0.0.2:8080"
            ))
        };
        let (id, url) = entry
            .split_once('=')
            .ok_or_else(|| refuse("is not id=url"))?;
        if id.is_empty() || id.len() > 253 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse(
                "has an id that is not printable ASCII of at most 253 characters",
            ));
        }
        let parsed =
            url::Url::parse(url).map_err(|e| refuse(&format!("has no valid URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(refuse("needs an http or https URL with a host"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(refuse(
                "has a credential in its URL (the caller's bearer token is forwarded)",
            ));
        }
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(refuse(
                "has a path, query or fragment (give the API's root)",
            ));
        }
        if nodes.iter().any(|n| n.id == id) {
            return Err(refuse("repeats an id"));
        }
        nodes.push(FleetNode {
            id: id.to_string(),
            url: parsed.as_str().trim_end_matches('/').to_string(),
        });
    }
    if nodes.len() > MAX_NODES {
        return Err(Error::config(format!(
            "WORKSPACE_FLEET names {} nodes; at most {MAX_NODES}",
            nodes.len()
        )));
    }
    Ok(nodes)
}

/// One node's answer to a fleet question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReply<T> {
    /// The node's id.
    pub node: String,
    /// Its API's base URL.
    pub url: String,
    /// It answered (any HTTP status but a gateway's).
    pub reachable: bool,
    /// What went wrong: not reachable, a timeout, an error status.
    pub error: Option<String>,
    /// Its answer, when it gave one.
    pub answer: Option<T>,
}

impl<T> NodeReply<T> {
    /// Whether the node gave its answer.
    pub fn answered(&self) -> bool {
        self.answer.is_some()
    }
}

/// The ids of the nodes in `replies` that gave no answer.
pub fn unanswered<T>(replies: &[NodeReply<T>]) -> Vec<String> {
    replies
        .iter()
        .filter(|r| !r.answered())
        .map(|r| r.node.clone())
        .collect()
}

/// One node's health and readiness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// `/readyz` answered 200 (false while the node drains).
    pub ready: bool,
    /// Its health report.
    pub health: HealthReport,
}

/// `GET /fleet/health`: every node's verdict, readiness and figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetHealth {
    /// The worst node's verdict; `critical` when a node gave no answer.
    pub status: HealthStatus,
    /// Every node answered.
    pub complete: bool,
    /// The nodes that gave no answer.
    pub unreachable: Vec<String>,
    /// Each node, in the fleet's order.
    pub nodes: Vec<NodeReply<NodeHealth>>,
}

impl FleetHealth {
    /// The fleet's answer from its nodes'.
    pub fn from_replies(nodes: Vec<NodeReply<NodeHealth>>) -> Self {
        let unreachable = unanswered(&nodes);
        let worst = nodes
            .iter()
            .filter_map(|n| n.answer.as_ref())
            .map(|a| a.health.status)
            .max_by_key(|s| severity(*s))
            .unwrap_or(HealthStatus::Critical);
        FleetHealth {
            status: if unreachable.is_empty() {
                worst
            } else {
                HealthStatus::Critical
            },
            complete: unreachable.is_empty(),
            unreachable,
            nodes,
        }
    }
}

fn severity(s: HealthStatus) -> u8 {
    match s {
        HealthStatus::Healthy => 0,
        HealthStatus::Warning => 1,
        HealthStatus::Critical => 2,
    }
}

/// Sums over the nodes that answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetTotals {
    /// Nodes in the fleet.
    pub nodes: usize,
    /// Nodes that answered.
    pub nodes_answered: usize,
    /// Workspaces.
    pub total_workspaces: usize,
    /// Their bytes.
    pub total_size_bytes: u64,
    /// Workspaces in use.
    pub in_use: usize,
    /// Deletions not finished.
    pub pending_deletions: usize,
    /// Object mirrors.
    pub mirrors: usize,
    /// Their bytes.
    pub mirrors_size_bytes: u64,
}

/// `GET /fleet/stats`: every node's figures, and their sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetStats {
    /// Sums over the nodes that answered.
    pub totals: FleetTotals,
    /// Every node answered.
    pub complete: bool,
    /// The nodes that gave no answer.
    pub unreachable: Vec<String>,
    /// Each node.
    pub nodes: Vec<NodeReply<Stats>>,
}

impl FleetStats {
    /// The fleet's answer from its nodes'.
    pub fn from_replies(nodes: Vec<NodeReply<Stats>>) -> Self {
        let mut totals = FleetTotals {
            nodes: nodes.len(),
            ..FleetTotals::default()
        };
        for s in nodes.iter().filter_map(|n| n.answer.as_ref()) {
            totals.nodes_answered += 1;
            totals.total_workspaces += s.total_workspaces;
            totals.total_size_bytes += s.total_size_bytes;
            totals.in_use += s.in_use;
            totals.pending_deletions += s.pending_deletions;
            totals.mirrors += s.mirrors.count;
            totals.mirrors_size_bytes += s.mirrors.size_bytes;
        }
        let unreachable = unanswered(&nodes);
        FleetStats {
            totals,
            complete: unreachable.is_empty(),
            unreachable,
            nodes,
        }
    }
}

/// A workspace and the node that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetWorkspace {
    /// The node's id.
    pub node: String,
    /// The workspace, as that node lists it.
    #[serde(flatten)]
    pub workspace: WorkspaceSummary,
}

/// `GET /fleet/workspaces`: every workspace of every node that answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetList {
    /// The workspaces, node by node.
    pub workspaces: Vec<FleetWorkspace>,
    /// Every node answered.
    pub complete: bool,
    /// The nodes that gave no answer (their workspaces are not listed).
    pub unreachable: Vec<String>,
    /// Each node with its count of workspaces.
    pub nodes: Vec<NodeReply<usize>>,
}

impl FleetList {
    /// The fleet's answer from its nodes' lists.
    pub fn from_replies(replies: Vec<NodeReply<Vec<WorkspaceSummary>>>) -> Self {
        let mut workspaces = Vec::new();
        let mut nodes = Vec::with_capacity(replies.len());
        for r in replies {
            let count = r.answer.as_ref().map(Vec::len);
            for w in r.answer.into_iter().flatten() {
                workspaces.push(FleetWorkspace {
                    node: r.node.clone(),
                    workspace: w,
                });
            }
            nodes.push(NodeReply {
                node: r.node,
                url: r.url,
                reachable: r.reachable,
                error: r.error,
                answer: count,
            });
        }
        let unreachable = unanswered(&nodes);
        FleetList {
            workspaces,
            complete: unreachable.is_empty(),
            unreachable,
            nodes,
        }
    }
}

/// `POST /fleet/cleanup`: every node's cleanup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetCleanup {
    /// Workspaces removed on all nodes.
    pub cleaned_workspaces: usize,
    /// Removals that failed on all nodes.
    pub failed_workspaces: usize,
    /// Every node answered.
    pub complete: bool,
    /// The nodes that gave no answer (nothing is known of their cleanup).
    pub unreachable: Vec<String>,
    /// Each node's report.
    pub nodes: Vec<NodeReply<CleanupReport>>,
}

impl FleetCleanup {
    /// The fleet's answer from its nodes' reports.
    pub fn from_replies(nodes: Vec<NodeReply<CleanupReport>>) -> Self {
        let reports = || nodes.iter().filter_map(|n| n.answer.as_ref());
        let cleaned_workspaces = reports().map(|r| r.cleaned_workspaces).sum();
        let failed_workspaces = reports().map(|r| r.failed.len()).sum();
        let unreachable = unanswered(&nodes);
        FleetCleanup {
            cleaned_workspaces,
            failed_workspaces,
            complete: unreachable.is_empty(),
            unreachable,
            nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_and_bad_entries_say_what_is_wrong() {
        let nodes =
            parse_nodes("node1=http://10.0.0.1:8080/, node2=https://n2.example:8443").unwrap();
        assert_eq!(
            nodes,
            [
                FleetNode {
                    id: "node1".into(),
                    url: "http://10.0.0.1:8080".into()
                },
                FleetNode {
                    id: "node2".into(),
                    url: "https://n2.example:8443".into()
                },
            ]
        );
        assert!(parse_nodes("").unwrap().is_empty());
        for (bad, why) in [
            ("node1", "not id=url"),
            ("=http://a:1", "printable ASCII"),
            ("n=ftp://a:1", "http or https"),
            ("n=http://u:p@a:1", "credential"),
            ("n=http://a:1/api", "path"),
            ("n=http://a:1,n=http://b:1", "repeats"),
            ("n=notaurl", "no valid URL"),
        ] {
            let err = parse_nodes(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    fn reply<T>(node: &str, answer: Option<T>) -> NodeReply<T> {
        NodeReply {
            node: node.into(),
            url: format!("http://{node}"),
            reachable: answer.is_some(),
            error: answer.is_none().then(|| "connection refused".into()),
            answer,
        }
    }

    #[test]
    fn a_node_without_an_answer_is_named_and_makes_the_fleet_incomplete() {
        let list = FleetList::from_replies(vec![
            reply("node1", Some(vec![])),
            reply::<Vec<WorkspaceSummary>>("node2", None),
        ]);
        assert!(!list.complete);
        assert_eq!(list.unreachable, ["node2"]);
        assert_eq!(list.nodes.len(), 2);
        assert_eq!(list.nodes[0].answer, Some(0));
        let cleanup = FleetCleanup::from_replies(vec![reply("node1", None)]);
        assert_eq!(cleanup.unreachable, ["node1"]);
        let health = FleetHealth::from_replies(vec![reply("node1", None)]);
        assert_eq!(health.status, HealthStatus::Critical);
    }
}
