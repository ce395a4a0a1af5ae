//! `fixsec-workspace serve`: the HTTP service until SIGINT or SIGTERM, its
//! generated token, and policy reloads on SIGHUP.

use crate::{Error, WorkspaceManager};

/// Run the HTTP service until SIGINT or SIGTERM.
pub(super) fn serve(
    manager: WorkspaceManager,
    bind: Option<std::net::SocketAddr>,
) -> Result<(), Error> {
    let mut config = crate::http::ServerConfig::from_env()?;
    if let Some(bind) = bind {
        config.bind = bind;
    }
    let token = match config.token.clone() {
        Some(t) => t,
        None => {
            let t = crate::http::ApiToken::generate();
            // Never printed: stderr is the log. Written where only this
            // user can read it, and the path printed instead.
            let file = manager.base_path().join(GENERATED_TOKEN_FILE);
            write_token_file(&file, t.expose())?;
            eprintln!(
                "No WORKSPACE_API_TOKEN set; this run's token is in {} (readable by this user only).\n\
                 e.g. curl -H \"Authorization: Bearer $(cat {})\" http://{}/workspace/stats\n",
                file.display(),
                file.display(),
                config.bind
            );
            t
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::config(format!("starting the async runtime: {e}")))?;
    let result = runtime.block_on(async move {
        let server = crate::http::start(manager.clone(), &config, token).await?;
        tracing::info!(
            addr = %server.addr(),
            base_path = %manager.base_path().display(),
            policy = manager.policy_label(),
            "fixsec-workspace listening"
        );
        #[cfg(unix)]
        let reloader = tokio::spawn(reload_on_sighup(manager.clone()));
        shutdown_signal().await;
        #[cfg(unix)]
        reloader.abort();
        if !config.drain.is_zero() {
            // Readiness fails first, so the load balancer stops sending new
            // work; what it already sent is still served.
            manager.begin_draining();
            tracing::info!(drain = ?config.drain, "draining");
            tokio::time::sleep(config.drain).await;
        }
        tracing::info!(grace = ?config.shutdown_grace, "shutting down");
        server.shutdown(config.shutdown_grace).await;
        Ok::<(), Error>(())
    });
    // A git call blocked in the network (a tarpit) would keep the default
    // runtime drop waiting for ever: the grace period is over, leave it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Where `serve` writes the token it generates, under the base directory.
pub const GENERATED_TOKEN_FILE: &str = ".api-token";

/// Write `token` to `file`, readable and writable by this user only.
fn write_token_file(file: &std::path::Path, token: &str) -> Result<(), Error> {
    use std::io::Write;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{token}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::config(format!(
                "cannot write the generated API token to {}: {e}; set WORKSPACE_API_TOKEN instead",
                file.display()
            ))
        })
}

/// SIGHUP reloads the policy file; a broken one is refused and logged.
#[cfg(unix)]
async fn reload_on_sighup(manager: WorkspaceManager) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let m = manager.clone();
        match tokio::task::spawn_blocking(move || m.reload_policy()).await {
            Ok(Ok(info)) => {
                tracing::info!(source = %info.source, digest = %info.digest, "policy reloaded on SIGHUP")
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "policy reload refused; the old policy stays")
            }
            Err(e) => tracing::error!(error = %e, "policy reload did not finish"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
