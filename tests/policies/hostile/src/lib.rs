//! Hostile and broken policies for the host's tests. The behaviour is
//! chosen by a cargo feature; the tests build each one as a component.

#[cfg(not(any(feature = "future", feature = "v0-2")))]
mod v1 {
    // The frozen 0.1.0 contract: these tests also show that the host still
    // loads and confines 0.1.x components (their pushes follow the host's
    // default rule).
    wit_bindgen::generate!({
        world: "workspace-policy",
        path: "../../../wit/v0.1",
    });

    use exports::fixsec::workspace::policy::{
        CleanupOutcome, CleanupRequest, Guest, HealthReport, HealthStats, HealthStatus,
        PrepareOutcome, PrepareRequest, Thresholds,
    };
    use fixsec::workspace::git::{self, FetchOptions};
    use fixsec::workspace::types::Error;
    use fixsec::workspace::{removal, workspace_fs};

    /// What every export does first: misbehave, if that is this build's feature.
    fn misbehave() {
        if cfg!(feature = "spin") {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        if cfg!(feature = "hog") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        if cfg!(feature = "panic") {
            panic!("hostile policy panics on purpose");
        }
    }

    pub struct Hostile;

    impl Guest for Hostile {
        fn workspace_name(repo_full_name: String) -> Result<String, Error> {
            misbehave();
            if cfg!(feature = "escape") {
                return Ok("../escape".into());
            }
            if cfg!(feature = "absolute") {
                return Ok("/etc".into());
            }
            Ok(format!(
                "hostile_{}",
                repo_full_name
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
            ))
        }

        fn prepare(request: PrepareRequest) -> Result<PrepareOutcome, Error> {
            misbehave();
            let options = FetchOptions { depth: None };
            let (name, url) = if cfg!(feature = "other-workspace") {
                ("someone_else".to_string(), request.clone_url.clone())
            } else if cfg!(feature = "steal-url") {
                (
                    request.name.clone(),
                    "https://attacker.invalid/loot.git".to_string(),
                )
            } else {
                (request.name.clone(), request.clone_url.clone())
            };
            if cfg!(feature = "import-escape") {
                git::inspect("../../etc");
            }
            let head = git::clone(&name, &url, request.branch.as_deref(), options)?;
            Ok(PrepareOutcome {
                reused: false,
                head,
                notes: vec![],
            })
        }

        fn cleanup(request: CleanupRequest) -> Result<CleanupOutcome, Error> {
            misbehave();
            if cfg!(feature = "remove-all") {
                for ws in workspace_fs::list_workspaces()? {
                    removal::remove_workspace(&ws.name);
                }
            }
            if cfg!(feature = "slow-cleanup") {
                // Decide on a listing, then act on it 1.5 s later: a prepare
                // in between makes the decision stale.
                let now = workspace_fs::now();
                let cutoff = now - (request.max_age_hours * 3600.0) as i64;
                let old: Vec<String> = workspace_fs::list_workspaces()?
                    .into_iter()
                    .filter(|ws| ws.last_used.is_some_and(|t| t < cutoff))
                    .map(|ws| ws.name)
                    .collect();
                std::thread::sleep(std::time::Duration::from_millis(1500));
                for name in old {
                    removal::remove_workspace(&name);
                }
            }
            Ok(CleanupOutcome {
                skipped: vec![],
                kept: 0,
            })
        }

        fn assess_health(stats: HealthStats, _thresholds: Thresholds) -> HealthReport {
            misbehave();
            if cfg!(feature = "health-remove") {
                // Reached without a token: tries to delete what it can name.
                for (name, _) in &stats.largest {
                    removal::remove_workspace(name);
                }
                if let Ok(all) = workspace_fs::list_workspaces() {
                    for ws in all {
                        removal::remove_workspace(&ws.name);
                    }
                }
            }
            let _ = &stats;
            HealthReport {
                status: HealthStatus::Healthy,
                warnings: vec![],
                recommendations: vec![],
            }
        }
    }

    #[cfg(target_arch = "wasm32")]
    export!(Hostile);
}

#[cfg(feature = "future")]
mod future {
    wit_bindgen::generate!({
        world: "workspace-policy",
        path: "wit-future",
    });

    pub struct FromTheFuture;

    impl exports::fixsec::workspace::policy::Guest for FromTheFuture {
        fn workspace_name(repo_full_name: String) -> String {
            repo_full_name
        }
    }

    #[cfg(target_arch = "wasm32")]
    export!(FromTheFuture);
}

/// A plain policy on the frozen 0.2.0 contract (feature `v0-2`): it reuses
/// a healthy clone through `update`, as most policies do. It shows a 0.2.x
/// component still loads and keeps its behaviour (an update keeps no
/// ignored path).
#[cfg(feature = "v0-2")]
mod v2 {
    wit_bindgen::generate!({
        world: "workspace-policy",
        path: "../../../wit/v0.2",
    });

    use exports::fixsec::workspace::policy::{
        CleanupOutcome, CleanupRequest, Guest, HealthReport, HealthStats, HealthStatus,
        PrepareOutcome, PrepareRequest, PushRequest, Thresholds,
    };
    use fixsec::workspace::git::{self, FetchOptions};
    use fixsec::workspace::types::Error;

    pub struct Plain;

    impl Guest for Plain {
        fn workspace_name(repo_full_name: String) -> Result<String, Error> {
            Ok(format!(
                "plain_{}",
                repo_full_name
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
            ))
        }

        fn prepare(request: PrepareRequest) -> Result<PrepareOutcome, Error> {
            let options = FetchOptions {
                depth: request.depth,
            };
            let state = git::inspect(&request.name);
            let reused = state.healthy;
            let git_ref = request.git_ref.as_deref();
            let head = if reused {
                git::update(&request.name, &request.clone_url, git_ref, options)?
            } else {
                git::clone(&request.name, &request.clone_url, git_ref, options)?
            };
            Ok(PrepareOutcome {
                reused,
                head,
                notes: vec![],
            })
        }

        fn cleanup(_: CleanupRequest) -> Result<CleanupOutcome, Error> {
            Ok(CleanupOutcome {
                skipped: vec![],
                kept: 0,
            })
        }

        fn assess_health(_: HealthStats, _: Thresholds) -> HealthReport {
            HealthReport {
                status: HealthStatus::Healthy,
                warnings: vec![],
                recommendations: vec![],
            }
        }

        fn authorize_push(_: PushRequest) -> Result<(), Error> {
            Ok(())
        }
    }

    #[cfg(target_arch = "wasm32")]
    export!(Plain);
}
