//! Embedding the workspace manager in another program: no HTTP server, no
//! CLI. Built in CI with the default features off, so it shows what an
//! embedder links:
//!
//! ```sh
//! cargo run -p fixsec-workspace --no-default-features --example embed_manager -- \
//!     https://github.com/octocat/Hello-World.git octocat/Hello-World
//! ```
//!
//! It prepares the repository (a clone the first time, a reuse after),
//! holds a lease while "working" in it, and prints the totals. The base
//! directory is `WORKSPACE_BASE_PATH`, else a folder under the temporary
//! directory; every other setting comes from the environment as the
//! service reads it.

use fixsec_workspace::{PrepareRequest, WorkspaceManager};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: embed_manager <clone-url> [owner/repo]")?;
    let repo = args.next().unwrap_or_else(|| "example/repository".into());
    let base = std::env::var_os("WORKSPACE_BASE_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("fixsec-embed-example"));

    let manager = WorkspaceManager::builder()
        .base_path(&base)
        // A local path is a fine URL for trying the example.
        .allow_local_urls(true)
        .build()?;
    let ws = manager.prepare(&PrepareRequest::new(&repo, url))?;
    println!(
        "{} at {} ({}, head {})",
        ws.name,
        ws.path.display(),
        if ws.reused { "reused" } else { "cloned" },
        ws.head
    );
    {
        // While the lease lives, cleanup and remove leave the workspace be.
        let _lease = manager.lease(&ws.name)?;
        let files = std::fs::read_dir(&ws.path)?.count();
        println!("working in it: {files} entries at the top level");
    }
    let stats = manager.stats()?;
    println!(
        "{} workspace(s), {:.1} MB under {}",
        stats.total_workspaces, stats.total_size_mb, stats.base_path
    );
    Ok(())
}
