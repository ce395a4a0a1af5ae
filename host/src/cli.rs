//! The `fixsec-workspace` command line: parsing (clap), output (human or
//! `--json` with the guide's keys), progress bars, exit codes.

use crate::adapter::git::Progress;
use crate::{Config, Error, ErrorKind, PolicySource, PrepareRequest, WorkspaceManager};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Persistent, named git workspaces, one per repository.
#[derive(Debug, Parser)]
#[command(name = "fixsec-workspace", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// Base directory of the workspaces [env: WORKSPACE_BASE_PATH, default: backend/workspace]
    #[arg(long, global = true)]
    base_path: Option<PathBuf>,
    /// Policy component (.wasm) instead of the embedded default [env: WORKSPACE_POLICY]
    #[arg(long, global = true)]
    policy: Option<PathBuf>,
    /// Accept local paths and file:// clone URLs [env: WORKSPACE_ALLOW_LOCAL_URLS]
    #[arg(long, global = true)]
    allow_local_urls: bool,
    /// Machine-readable JSON output
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the workspace folder name for a repository
    Name {
        /// Full repository name, e.g. facebook/react
        repo: String,
    },
    /// Prepare (reuse or clone) the workspace of a repository
    Prepare {
        /// Full repository name, e.g. facebook/react
        repo: String,
        /// Clone URL (https, ssh, git; local paths with --allow-local-urls)
        url: String,
        /// Branch to check out (default: the remote's default branch)
        #[arg(long)]
        branch: Option<String>,
        /// Fetch only the last N commits
        #[arg(long)]
        depth: Option<u32>,
    },
    /// List workspaces
    List,
    /// Totals and per-workspace sizes
    Stats,
    /// Remove workspaces unused for longer than the age
    Cleanup {
        /// Age limit in hours [env: WORKSPACE_MAX_AGE_HOURS, default: 24]
        #[arg(long)]
        max_age_hours: Option<f64>,
    },
    /// Health verdict with warnings and recommendations
    Health,
    /// Remove one workspace by name
    Remove {
        /// Workspace folder name, as `list` shows it
        name: String,
    },
    /// Policy components: check one against the contract
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Run the HTTP service
    Serve {
        /// Listen address [env: WORKSPACE_BIND, default: 127.0.0.1:8080]
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Load a policy component, tell whether it speaks this host's contract,
    /// and run the conformance suite against it
    Check {
        /// The component (.wasm), or `default` for the embedded policy
        file: PathBuf,
        /// Also require the default policy's workspace names, input for
        /// input (a policy that replaces the default must, or swapping
        /// orphans every workspace)
        #[arg(long)]
        same_names_as_default: bool,
    },
}

/// Parse the command line, run it, and map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    });
    let json = cli.global.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if json {
                print_json(&ErrorBody {
                    error: e.kind(),
                    detail: e.to_string(),
                });
            } else {
                eprintln!("error: {e}");
            }
            exit_code(e.kind())
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorKind,
    detail: String,
}

/// Exit codes: 2 bad input or configuration, 3 not found, 4 in use, 5 busy
/// (retry later), 6 insufficient storage, 1 other failures.
fn exit_code(kind: ErrorKind) -> ExitCode {
    ExitCode::from(match kind {
        ErrorKind::InvalidInput | ErrorKind::Refused | ErrorKind::Config => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::InUse => 4,
        ErrorKind::Busy => 5,
        ErrorKind::InsufficientStorage => 6,
        _ => 1,
    })
}

/// Logs to stderr: human on a terminal, JSON with `WORKSPACE_LOG_FORMAT=json`;
/// `RUST_LOG` overrides the level.
fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("WORKSPACE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn manager(global: &GlobalArgs) -> Result<WorkspaceManager, Error> {
    let mut config = Config::from_env()?;
    if let Some(p) = &global.base_path {
        config.base_path = p.clone();
    }
    if let Some(p) = &global.policy {
        config.policy = PolicySource::File(p.clone());
    }
    config.allow_local_urls |= global.allow_local_urls;
    WorkspaceManager::from_config(config)
}

fn print_json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("reports serialize")
    );
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    let json = cli.global.json;
    if let Command::Policy {
        command:
            PolicyCommand::Check {
                file,
                same_names_as_default,
            },
    } = &cli.command
    {
        let options = crate::conformance::Options {
            same_names_as_default: *same_names_as_default,
        };
        return Ok(policy_check(file, options, json));
    }
    let m = manager(&cli.global)?;
    match cli.command {
        Command::Policy { .. } => unreachable!("handled above"),
        Command::Serve { bind } => serve(m, bind)?,
        Command::Name { repo } => {
            let name = m.workspace_name(&repo)?;
            if json {
                print_json(&serde_json::json!({ "repo_full_name": repo, "name": name }));
            } else {
                println!("{name}");
            }
        }
        Command::Prepare {
            repo,
            url,
            branch,
            depth,
        } => {
            let request = PrepareRequest {
                repo_full_name: repo,
                clone_url: url,
                branch,
                depth,
                lease_seconds: None,
                holder: None,
            };
            let bar = (!json && std::io::stderr().is_terminal()).then(progress_bar);
            let progress = bar.clone().map(|bar| {
                Arc::new(move |p: Progress| {
                    bar.set_length(p.total_objects as u64);
                    bar.set_position(p.received_objects as u64);
                    bar.set_message(indicatif::HumanBytes(p.received_bytes as u64).to_string());
                }) as Arc<crate::adapter::git::ProgressFn>
            });
            let result = m.prepare_with_progress(&request, progress);
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let outcome = result?;
            if json {
                print_json(&outcome);
            } else {
                println!(
                    "{} {} at {} (head {}, {} ms)",
                    if outcome.reused { "reused" } else { "cloned" },
                    outcome.name,
                    outcome.path.display(),
                    &outcome.head[..outcome.head.len().min(12)],
                    outcome.duration_ms
                );
                for note in &outcome.notes {
                    println!("  note: {note}");
                }
            }
        }
        Command::List => {
            let list = m.list()?;
            if json {
                print_json(&list);
            } else if list.is_empty() {
                println!("no workspaces in {}", m.base_path().display());
            } else {
                println!(
                    "{:<40} {:>10} {:<20} {:<6} REPOSITORY",
                    "NAME", "SIZE MB", "LAST USED", "IN USE"
                );
                for w in list {
                    println!(
                        "{:<40} {:>10.1} {:<20} {:<6} {}",
                        w.name,
                        w.size_mb,
                        w.last_used
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "unknown".into()),
                        if w.in_use { "yes" } else { "no" },
                        w.repo_full_name.unwrap_or_default()
                    );
                }
            }
        }
        Command::Stats => {
            let stats = m.stats()?;
            if json {
                print_json(&stats);
            } else {
                println!(
                    "{} workspaces, {:.1} MB in {}",
                    stats.total_workspaces, stats.total_size_mb, stats.base_path
                );
                for w in &stats.workspaces {
                    println!("  {:<40} {:>10.1} MB", w.name, w.size_mb);
                }
            }
        }
        Command::Cleanup { max_age_hours } => {
            let report = m.cleanup(max_age_hours)?;
            if json {
                print_json(&report);
            } else {
                println!(
                    "removed {} workspace(s) older than {} hours, {:.1} MB freed",
                    report.cleaned_workspaces,
                    report.max_age_hours,
                    crate::model::to_mb(report.bytes_freed)
                );
                for f in &report.failed {
                    println!(
                        "  FAILED {}: {}",
                        f.name,
                        f.error.as_deref().unwrap_or("unknown error")
                    );
                }
                for s in &report.skipped {
                    println!("  skipped {}: {}", s.name, s.reason);
                }
            }
            if !report.failed.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Health => {
            let health = m.health()?;
            if json {
                print_json(&health);
            } else {
                println!(
                    "status: {} ({} workspaces, {:.1} MB)",
                    health.status.as_str(),
                    health.workspace_stats.total_workspaces,
                    health.workspace_stats.total_size_mb
                );
                for w in &health.warnings {
                    println!("  warning: {w}");
                }
                for r in &health.recommendations {
                    println!("  recommendation: {r}");
                }
            }
        }
        Command::Remove { name } => {
            let report = m.remove(&name)?;
            if json {
                print_json(&report);
            } else if report.removed {
                println!(
                    "removed {} ({:.1} MB freed, {} attempt(s))",
                    report.name,
                    crate::model::to_mb(report.bytes_freed),
                    report.attempts
                );
            } else {
                eprintln!(
                    "could not remove {} after {} attempt(s): {}; still on disk: {}",
                    report.name,
                    report.attempts,
                    report.error.as_deref().unwrap_or("unknown error"),
                    report.remaining.join(", ")
                );
            }
            if !report.removed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "cloning {bar:30} {pos}/{len} objects, {msg} received",
        )
        .expect("valid template"),
    );
    bar
}

/// Run the HTTP service until SIGINT or SIGTERM.
fn serve(manager: WorkspaceManager, bind: Option<std::net::SocketAddr>) -> Result<(), Error> {
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
        .map_err(|e| Error::Config(format!("starting the async runtime: {e}")))?;
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
            Error::Config(format!(
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

/// `policy check`: exit 0 when every check passes, 1 otherwise.
fn policy_check(
    file: &std::path::Path,
    options: crate::conformance::Options,
    json: bool,
) -> ExitCode {
    // `default`: the embedded policy, written out for the suite to load.
    let embedded = tempfile::tempdir().expect("a temporary directory");
    let file = if file == std::path::Path::new("default") && !file.exists() {
        let path = embedded.path().join("default-policy.wasm");
        std::fs::write(&path, crate::policy::DEFAULT_POLICY).expect("writing the default policy");
        path
    } else {
        file.to_path_buf()
    };
    let report = crate::conformance::run_with(&file, options);
    if json {
        print_json(&report);
    } else {
        println!("{} against {}", report.policy, report.contract);
        for c in &report.checks {
            println!(
                "  {} {}: {}",
                if c.passed { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        println!(
            "{}",
            if report.passed {
                "all checks passed"
            } else {
                "some checks failed"
            }
        );
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
