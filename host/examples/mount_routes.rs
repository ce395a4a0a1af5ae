//! The workspace API mounted under a prefix of another warp service, next
//! to that service's own routes (needs the `server` feature, on by
//! default):
//!
//! ```sh
//! WORKSPACE_API_TOKEN=secret-token cargo run -p fixsec-workspace --example mount_routes
//! curl -H 'Authorization: Bearer secret-token' localhost:3030/workspaces/workspace/stats
//! curl localhost:3030/hello
//! ```
//!
//! `fixsec_workspace::http::routes` is a warp `Filter`: everything the
//! service answers (JSON errors, the token check, the dashboard under
//! `/ui/`) comes with it.

use fixsec_workspace::WorkspaceManager;
use fixsec_workspace::http::{self, ApiToken};
use warp::Filter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let token = std::env::var("WORKSPACE_API_TOKEN")
        .ok()
        .and_then(|t| ApiToken::new(&t))
        .ok_or("set WORKSPACE_API_TOKEN")?;
    let base = std::env::temp_dir().join("fixsec-mount-example");
    let manager = WorkspaceManager::builder().base_path(&base).build()?;

    let hello = warp::path!("hello").map(|| "the host service's own route\n");
    let workspaces = warp::path("workspaces").and(http::routes(manager, token, 64 * 1024));
    let app = hello.or(workspaces);

    let addr: std::net::SocketAddr = ([127, 0, 0, 1], 3030).into();
    println!("listening on http://{addr}: /hello, /workspaces/workspace/...");
    warp::serve(app).run(addr).await;
    Ok(())
}
