//! What each command prints: JSON with the guide's keys under `--json`,
//! else a few lines for a person; and whether the answer means failure
//! (the exit code).

use crate::model::{
    CleanupReport, HealthReport, PrepareOutcome, PushOutcome, RemovalReport, Stats,
    WorkspaceSummary, to_mb,
};
use serde::Serialize;
use std::process::ExitCode;

/// An answer a command prints.
pub(super) trait Answer: Serialize {
    /// Print it for a person; `location` is where the workspaces live.
    fn print_human(&self, location: &str);

    /// Whether the command failed although it ran (a removal that left
    /// files, a cleanup with failures).
    fn failed(&self) -> bool {
        false
    }
}

/// Print `answer` as asked, and the exit code it means.
pub(super) fn show<A: Answer>(answer: &A, json: bool, location: &str) -> ExitCode {
    if json {
        print_json(answer);
    } else {
        answer.print_human(location);
    }
    if answer.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `value` as pretty JSON on stdout.
pub(super) fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("reports serialize")
    );
}

/// The first 12 hex digits of a commit id.
fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// A workspace's name, for `name`.
#[derive(Serialize)]
pub(super) struct NameAnswer {
    /// The repository asked about.
    pub repo_full_name: String,
    /// Its workspace folder name.
    pub name: String,
}

impl Answer for NameAnswer {
    fn print_human(&self, _: &str) {
        println!("{}", self.name);
    }
}

impl Answer for PrepareOutcome {
    fn print_human(&self, _: &str) {
        println!(
            "{} {} at {} (head {}, {} ms)",
            if self.reused { "reused" } else { "cloned" },
            self.name,
            self.path.display(),
            short(&self.head),
            self.duration_ms
        );
        for note in &self.notes {
            println!("  note: {note}");
        }
    }
}

impl Answer for PushOutcome {
    fn print_human(&self, _: &str) {
        println!(
            "pushed {} of {} to {} (commit {}{}, {} ms)",
            self.branch,
            self.name,
            self.url,
            short(&self.commit),
            if self.forced { ", forced" } else { "" },
            self.duration_ms
        );
    }
}

impl Answer for Vec<WorkspaceSummary> {
    fn print_human(&self, location: &str) {
        if self.is_empty() {
            println!("no workspaces in {location}");
            return;
        }
        println!(
            "{:<40} {:>10} {:<20} {:<6} REPOSITORY",
            "NAME", "SIZE MB", "LAST USED", "IN USE"
        );
        for w in self {
            println!(
                "{:<40} {:>10.1} {:<20} {:<6} {}",
                w.name,
                w.size_mb,
                w.last_used
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "unknown".into()),
                if w.in_use { "yes" } else { "no" },
                w.repo_full_name.as_deref().unwrap_or_default()
            );
        }
    }
}

impl Answer for Stats {
    fn print_human(&self, _: &str) {
        println!(
            "{} workspaces, {:.1} MB in {}",
            self.total_workspaces, self.total_size_mb, self.base_path
        );
        if self.mirrors.count > 0 {
            println!(
                "{} object mirror(s), {:.1} MB ({} not borrowed from)",
                self.mirrors.count, self.mirrors.size_mb, self.mirrors.unreferenced
            );
        }
        for w in &self.workspaces {
            println!("  {:<40} {:>10.1} MB", w.name, w.size_mb);
        }
    }
}

impl Answer for CleanupReport {
    fn print_human(&self, _: &str) {
        println!(
            "removed {} workspace(s) older than {} hours, {:.1} MB freed",
            self.cleaned_workspaces,
            self.max_age_hours,
            to_mb(self.bytes_freed)
        );
        for f in &self.failed {
            println!(
                "  FAILED {}: {}",
                f.name,
                f.error.as_deref().unwrap_or("unknown error")
            );
        }
        for s in &self.skipped {
            println!("  skipped {}: {}", s.name, s.reason);
        }
        for m in &self.mirrors_maintained {
            match &m.error {
                None => println!(
                    "  mirror {} repacked: {:.1} MB -> {:.1} MB",
                    m.name,
                    to_mb(m.bytes_before),
                    to_mb(m.bytes_after)
                ),
                Some(e) => println!("  mirror {} not maintained: {e}", m.name),
            }
        }
    }

    fn failed(&self) -> bool {
        !self.failed.is_empty()
    }
}

impl Answer for HealthReport {
    fn print_human(&self, _: &str) {
        println!(
            "status: {} ({} workspaces, {:.1} MB)",
            self.status.as_str(),
            self.workspace_stats.total_workspaces,
            self.workspace_stats.total_size_mb
        );
        for w in &self.warnings {
            println!("  warning: {w}");
        }
        for r in &self.recommendations {
            println!("  recommendation: {r}");
        }
    }
}

impl Answer for RemovalReport {
    fn print_human(&self, _: &str) {
        if self.removed {
            println!(
                "removed {} ({:.1} MB freed, {} attempt(s))",
                self.name,
                to_mb(self.bytes_freed),
                self.attempts
            );
        } else {
            eprintln!(
                "could not remove {} after {} attempt(s): {}; still on disk: {}",
                self.name,
                self.attempts,
                self.error.as_deref().unwrap_or("unknown error"),
                self.remaining.join(", ")
            );
        }
    }

    fn failed(&self) -> bool {
        !self.removed
    }
}

/// One line per node that gave no answer, for every fleet answer.
fn print_unanswered<T>(nodes: &[crate::fleet::NodeReply<T>]) {
    for n in nodes.iter().filter(|n| !n.answered()) {
        println!(
            "  {}: NO ANSWER ({})",
            n.node,
            n.error.as_deref().unwrap_or("unknown error")
        );
    }
}

impl Answer for crate::fleet::FleetHealth {
    fn print_human(&self, _: &str) {
        println!(
            "fleet: {} ({} node(s), {} without an answer)",
            self.status.as_str(),
            self.nodes.len(),
            self.unreachable.len()
        );
        for n in &self.nodes {
            let Some(a) = &n.answer else { continue };
            let s = &a.health.workspace_stats;
            println!(
                "  {}: {}{}, {} workspaces ({} in use), {:.1} MB, {} mirror(s), free {}",
                n.node,
                a.health.status.as_str(),
                if a.ready { "" } else { ", NOT READY" },
                s.total_workspaces,
                s.in_use,
                s.total_size_mb,
                s.mirrors.count,
                s.free_space_bytes
                    .map(|b| format!("{:.1} MB", to_mb(b)))
                    .unwrap_or_else(|| "unknown".into())
            );
            for w in &a.health.warnings {
                println!("    warning: {w}");
            }
        }
        print_unanswered(&self.nodes);
    }

    fn failed(&self) -> bool {
        !self.complete || self.status == crate::model::HealthStatus::Critical
    }
}

impl Answer for crate::fleet::FleetStats {
    fn print_human(&self, _: &str) {
        let t = &self.totals;
        println!(
            "{} workspaces ({} in use), {:.1} MB, {} mirror(s) of {:.1} MB on {} of {} node(s)",
            t.total_workspaces,
            t.in_use,
            to_mb(t.total_size_bytes),
            t.mirrors,
            to_mb(t.mirrors_size_bytes),
            t.nodes_answered,
            t.nodes
        );
        for n in &self.nodes {
            if let Some(s) = &n.answer {
                println!(
                    "  {}: {} workspaces, {:.1} MB",
                    n.node, s.total_workspaces, s.total_size_mb
                );
            }
        }
        print_unanswered(&self.nodes);
    }

    fn failed(&self) -> bool {
        !self.complete
    }
}

impl Answer for crate::fleet::FleetList {
    fn print_human(&self, _: &str) {
        println!(
            "{:<16} {:<40} {:>10} {:<6} REPOSITORY",
            "NODE", "NAME", "SIZE MB", "IN USE"
        );
        for w in &self.workspaces {
            let ws = &w.workspace;
            println!(
                "{:<16} {:<40} {:>10.1} {:<6} {}",
                w.node,
                ws.name,
                ws.size_mb,
                if ws.in_use { "yes" } else { "no" },
                ws.repo_full_name.as_deref().unwrap_or_default()
            );
        }
        print_unanswered(&self.nodes);
    }

    fn failed(&self) -> bool {
        !self.complete
    }
}

impl Answer for crate::fleet::FleetCleanup {
    fn print_human(&self, _: &str) {
        println!(
            "removed {} workspace(s) on {} node(s), {} removal(s) failed",
            self.cleaned_workspaces,
            self.nodes.len() - self.unreachable.len(),
            self.failed_workspaces
        );
        for n in &self.nodes {
            if let Some(r) = &n.answer {
                println!(
                    "  {}: removed {}, {:.1} MB freed",
                    n.node,
                    r.cleaned_workspaces,
                    to_mb(r.bytes_freed)
                );
            }
        }
        print_unanswered(&self.nodes);
    }

    fn failed(&self) -> bool {
        !self.complete || self.failed_workspaces > 0
    }
}
