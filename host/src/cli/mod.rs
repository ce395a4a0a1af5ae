//! The `fixsec-workspace` command line: parsing (clap), output (human or
//! `--json` with the guide's keys), progress bars, exit codes.

mod backend;
mod remote;
mod render;
mod serve;

pub use remote::SHARD_HEADER;

pub use serve::GENERATED_TOKEN_FILE;

use crate::adapter::git::Progress;
use crate::{
    Config, Error, ErrorKind, PolicySource, PrepareRequest, PushRequest, WorkspaceManager,
};
use clap::{Args, Parser, Subcommand};
use render::print_json;
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
    /// Act through a running service (a node, or the router in front of
    /// several) instead of this machine's base directory; the token comes
    /// from WORKSPACE_API_TOKEN or WORKSPACE_API_TOKEN_FILE
    #[arg(long, global = true, env = "WORKSPACE_SERVER", value_name = "URL")]
    server: Option<String>,
    /// With --server: the routing key (X-Fixsec-Shard) for commands that
    /// name no repository (push, remove, list, ...): the repository's full
    /// name, or its fork network's root. A prepare sends its own.
    #[arg(long, global = true, value_name = "OWNER/REPO", requires = "server")]
    shard: Option<String>,
    /// With --server: allow a plain http:// URL to a host that is not
    /// loopback (the token then travels in clear text)
    #[arg(long, global = true, requires = "server")]
    allow_insecure_http: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the workspace folder name for a repository
    Name {
        /// Full repository name, e.g. facebook/react
        repo: String,
    },
    /// Prepare (reuse or clone) the workspace of a repository
    Prepare(PrepareArgs),
    /// Push a branch of a workspace with a credential that is never stored
    Push(PushArgs),
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
    /// Every node of a fleet at once, through --server (the router or any
    /// node with WORKSPACE_FLEET); a node that does not answer is named
    /// and the exit code is 1 (also for a critical fleet's health and a
    /// cleanup with failed removals)
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
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

/// `prepare`'s arguments.
#[derive(Debug, Args)]
struct PrepareArgs {
    /// Full repository name, e.g. facebook/react
    repo: String,
    /// Clone URL (https, ssh, git; local paths with --allow-local-urls)
    url: String,
    /// What to check out: a branch, tag, full commit id,
    /// refs/pull/N/head or a refspec src:dst (default: the remote's
    /// default branch)
    #[arg(long = "ref", alias = "branch", value_name = "REF")]
    git_ref: Option<String>,
    /// Fetch only the last N commits
    #[arg(long)]
    depth: Option<u32>,
    /// Check out submodules too, recursively
    #[arg(long)]
    submodules: bool,
    /// Fetch Git LFS objects (the host's own client, from the clone URL's LFS endpoint)
    #[arg(long)]
    lfs: bool,
    /// The fork network's root (owner/repo), when REPO is a fork: forks
    /// share one object mirror
    #[arg(long, value_name = "OWNER/REPO")]
    network: Option<String>,
    /// A partial clone: blob:none (no file contents until needed), tree:0
    /// or blob:limit=<n>[k|m|g] (needs git 2.39.4+ on the PATH)
    #[arg(long, value_name = "FILTER")]
    filter: Option<String>,
    /// Only these directories on disk (cone mode); repeat, or separate
    /// with commas (needs git 2.39.4+ on the PATH)
    #[arg(long, value_name = "DIR", value_delimiter = ',')]
    sparse: Vec<String>,
}

/// `push`'s arguments.
#[derive(Debug, Args)]
struct PushArgs {
    /// Workspace folder name, as `prepare` and `list` show it
    name: String,
    /// The branch to push (to the branch of the same name)
    branch: String,
    /// Where to, with the credential (https://x-access-token:TOKEN@host/o/r.git);
    /// prefer --url-env so the token stays out of the process list
    #[arg(long, required_unless_present = "url_env", conflicts_with = "url_env")]
    url: Option<String>,
    /// Read the URL from this environment variable instead
    #[arg(long)]
    url_env: Option<String>,
    /// Overwrite the remote branch if it is not a fast-forward (if the policy allows)
    #[arg(long)]
    force: bool,
}

impl PushArgs {
    /// The workspace, and the push with its URL (from `--url-env` when
    /// asked).
    fn into_request(self) -> Result<(String, PushRequest), Error> {
        let url = match (self.url, self.url_env) {
            (Some(url), _) => url,
            (None, Some(var)) => std::env::var(&var).map_err(|_| {
                Error::invalid_input(format!("--url-env {var}: the variable is not set"))
            })?,
            (None, None) => unreachable!("clap requires one"),
        };
        let request = PushRequest {
            branch: self.branch,
            url,
            force: self.force,
        };
        Ok((self.name, request))
    }
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Each node's health, readiness, disk and counts
    Health,
    /// Totals over the nodes, and each node's
    Stats,
    /// Every workspace with the node that holds it
    List,
    /// Run the cleanup on every node
    Cleanup {
        /// Age limit in hours (default: each node's WORKSPACE_MAX_AGE_HOURS)
        #[arg(long)]
        max_age_hours: Option<f64>,
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
/// (retry later), 6 insufficient storage, 7 push rejected by the remote,
/// 1 other failures.
fn exit_code(kind: ErrorKind) -> ExitCode {
    ExitCode::from(match kind {
        ErrorKind::InvalidInput | ErrorKind::Refused | ErrorKind::Config => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::InUse => 4,
        ErrorKind::Busy => 5,
        ErrorKind::InsufficientStorage => 6,
        ErrorKind::Rejected => 7,
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
    if let Command::Serve { bind } = cli.command {
        if cli.global.server.is_some() {
            return Err(Error::invalid_input(
                "serve runs the service here; drop --server",
            ));
        }
        serve::serve(manager(&cli.global)?, bind)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Fleet { command } = &cli.command {
        let Some(server) = &cli.global.server else {
            return Err(Error::invalid_input(
                "fleet asks a running fleet: pass --server URL (the router, or any node with \
                 WORKSPACE_FLEET)",
            ));
        };
        let remote = remote::Remote::new(server, None, cli.global.allow_insecure_http)?;
        let location = server.as_str();
        return Ok(match command {
            FleetCommand::Health => remote.fleet_health()?.show(json, location),
            FleetCommand::Stats => remote.fleet_stats()?.show(json, location),
            FleetCommand::List => remote.fleet_list()?.show(json, location),
            FleetCommand::Cleanup { max_age_hours } => {
                remote.fleet_cleanup(*max_age_hours)?.show(json, location)
            }
        });
    }
    let m: Box<dyn backend::Backend> = match &cli.global.server {
        Some(server) => Box::new(remote::Remote::new(
            server,
            cli.global.shard.clone(),
            cli.global.allow_insecure_http,
        )?),
        None => Box::new(manager(&cli.global)?),
    };
    let location = m.location();
    let show = |answer: &dyn ShowAnswer| answer.show(json, &location);
    Ok(match cli.command {
        Command::Policy { .. } | Command::Serve { .. } | Command::Fleet { .. } => {
            unreachable!("handled above")
        }
        Command::Name { repo } => show(&render::NameAnswer {
            name: m.workspace_name(&repo)?,
            repo_full_name: repo,
        }),
        Command::Prepare(args) => show(&prepare(&*m, args, json)?),
        Command::Push(args) => {
            let (name, request) = args.into_request()?;
            show(&m.push(&name, &request)?)
        }
        Command::List => show(&m.list()?),
        Command::Stats => show(&m.stats()?),
        Command::Cleanup { max_age_hours } => show(&m.cleanup(max_age_hours)?),
        Command::Health => show(&m.health()?),
        Command::Remove { name } => show(&m.remove(&name)?),
    })
}

/// [`render::show`] for any answer, so one closure prints them all.
trait ShowAnswer {
    fn show(&self, json: bool, location: &str) -> ExitCode;
}

impl<A: render::Answer> ShowAnswer for A {
    fn show(&self, json: bool, location: &str) -> ExitCode {
        render::show(self, json, location)
    }
}

/// `prepare`, with a progress bar on a terminal.
fn prepare(
    m: &dyn backend::Backend,
    args: PrepareArgs,
    json: bool,
) -> Result<crate::PrepareOutcome, Error> {
    let request = PrepareRequest {
        repo_full_name: args.repo,
        clone_url: args.url,
        git_ref: args.git_ref,
        depth: args.depth,
        lease_seconds: None,
        holder: None,
        submodules: args.submodules,
        lfs: args.lfs,
        network: args.network,
        // Served for a lease's lifetime, which a one-shot CLI process does
        // not outlive: the library and the service offer it.
        serve_credential: false,
        filter: args.filter,
        sparse: (!args.sparse.is_empty()).then_some(args.sparse),
        // A copy for a second job lives as long as its lease: not for a
        // one-shot process either.
        parallel: false,
    };
    let bar = (!json && std::io::stderr().is_terminal()).then(progress_bar);
    let progress = bar.clone().map(|bar| {
        Arc::new(move |p: Progress| {
            bar.set_length(p.total_objects as u64);
            bar.set_position(p.received_objects as u64);
            bar.set_message(indicatif::HumanBytes(p.received_bytes as u64).to_string());
        }) as Arc<crate::adapter::git::ProgressFn>
    });
    let result = m.prepare(&request, progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
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
