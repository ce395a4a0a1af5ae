//! `fixsec_workspace._native`: the fixsec-workspace host as a Python
//! extension module (PyO3). The Python package (`fixsec_workspace/`) wraps
//! it with the guide's drop-in API and typed results.
//!
//! Every call that touches git or the disk releases the GIL, so other
//! threads (and `asyncio.to_thread`) keep running. Results cross as JSON
//! (the library's serde types, with the guide's keys); errors as the
//! Python exception of the error's kind, from `fixsec_workspace.errors`.

use fixsec_workspace::{
    Config, Error, Lease, PolicySource, PrepareRequest, PushRequest, WorkspaceManager,
};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;

/// The Python exception for a host error: the class `fixsec_workspace.errors`
/// gives its kind (`BY_KIND`, the one table of kind -> class), carrying the
/// host's message and kind.
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let kind = e.kind().as_str();
    let raised = py
        .import("fixsec_workspace.errors")
        .and_then(|m| m.getattr("BY_KIND"))
        .and_then(|table| table.get_item(kind))
        .and_then(|c| c.call1((e.to_string(), kind)));
    match raised {
        Ok(exception) => PyErr::from_value(exception),
        Err(lookup_failed) => lookup_failed,
    }
}

/// Run `f` without the GIL and turn its result into JSON or an exception.
fn json<T: serde::Serialize + Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> PyResult<String> {
    let result = py.allow_threads(f);
    let value = result.map_err(|e| to_py(py, e))?;
    serde_json::to_string(&value).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// The host, embedded.
#[pyclass(module = "fixsec_workspace._native", frozen)]
struct Manager {
    inner: WorkspaceManager,
}

#[pymethods]
impl Manager {
    /// Configuration comes from the environment (`WORKSPACE_*`, as the
    /// service reads it); arguments given here take precedence.
    #[new]
    #[pyo3(signature = (base_path=None, policy=None, settings=None, allow_local_urls=None, allow_private_networks=None))]
    fn new(
        py: Python<'_>,
        base_path: Option<PathBuf>,
        policy: Option<PathBuf>,
        settings: Option<HashMap<String, String>>,
        allow_local_urls: Option<bool>,
        allow_private_networks: Option<bool>,
    ) -> PyResult<Self> {
        let built = py.allow_threads(|| {
            let mut config = Config::from_env()?;
            if let Some(p) = base_path {
                config.base_path = p;
            }
            if let Some(p) = policy {
                config.policy = PolicySource::File(p);
            }
            if let Some(s) = settings {
                config.policy_settings.extend(s);
            }
            if let Some(a) = allow_local_urls {
                config.allow_local_urls = a;
            }
            if let Some(a) = allow_private_networks {
                config.allow_private_networks = a;
            }
            WorkspaceManager::from_config(config)
        });
        built
            .map(|inner| Manager { inner })
            .map_err(|e| to_py(py, e))
    }

    /// The base directory.
    fn base_path(&self) -> PathBuf {
        self.inner.base_path().to_path_buf()
    }

    /// The folder name the policy gives a repository.
    fn workspace_name(&self, py: Python<'_>, repo_full_name: &str) -> PyResult<String> {
        py.allow_threads(|| self.inner.workspace_name(repo_full_name))
            .map_err(|e| to_py(py, e))
    }

    /// Prepare (reuse or clone); the outcome as JSON.
    #[pyo3(signature = (repo_full_name, clone_url, git_ref=None, depth=None, lease_seconds=None, holder=None, submodules=false, lfs=false, network=None, serve_credential=false, filter=None, sparse=None, parallel=false))]
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        py: Python<'_>,
        repo_full_name: String,
        clone_url: String,
        git_ref: Option<String>,
        depth: Option<u32>,
        lease_seconds: Option<u64>,
        holder: Option<String>,
        submodules: bool,
        lfs: bool,
        network: Option<String>,
        serve_credential: bool,
        filter: Option<String>,
        sparse: Option<Vec<String>>,
        parallel: bool,
    ) -> PyResult<String> {
        let mut request = PrepareRequest::new(repo_full_name, clone_url);
        request.filter = filter;
        request.sparse = sparse;
        request.parallel = parallel;
        request.network = network;
        request.serve_credential = serve_credential;
        request.git_ref = git_ref;
        request.depth = depth;
        request.lease_seconds = lease_seconds;
        request.holder = holder;
        request.submodules = submodules;
        request.lfs = lfs;
        json(py, || self.inner.prepare(&request))
    }

    /// Push a branch of a workspace; the outcome as JSON.
    #[pyo3(signature = (name, branch, url, force=false))]
    fn push(
        &self,
        py: Python<'_>,
        name: &str,
        branch: String,
        url: String,
        force: bool,
    ) -> PyResult<String> {
        let request = PushRequest::new(branch, url).force(force);
        json(py, || self.inner.push(name, &request))
    }

    /// Every workspace, as JSON.
    fn list(&self, py: Python<'_>) -> PyResult<String> {
        json(py, || self.inner.list())
    }

    /// Totals and per-workspace sizes, as JSON with the guide's keys.
    fn stats(&self, py: Python<'_>) -> PyResult<String> {
        json(py, || self.inner.stats())
    }

    /// The health verdict, as JSON.
    fn health(&self, py: Python<'_>) -> PyResult<String> {
        json(py, || self.inner.health())
    }

    /// Remove workspaces unused for longer than the age; the report as JSON.
    #[pyo3(signature = (max_age_hours=None))]
    fn cleanup(&self, py: Python<'_>, max_age_hours: Option<f64>) -> PyResult<String> {
        json(py, || self.inner.cleanup(max_age_hours))
    }

    /// Remove one workspace; the report as JSON.
    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        json(py, || self.inner.remove(name))
    }

    /// Hold a workspace: cleanup and remove skip it until released.
    fn lease(&self, py: Python<'_>, name: &str) -> PyResult<LeaseHandle> {
        py.allow_threads(|| self.inner.lease(name))
            .map(|lease| LeaseHandle {
                inner: parking_lot::Mutex::new(Some(lease)),
            })
            .map_err(|e| to_py(py, e))
    }

    /// Release a timed lease taken by `prepare(lease_seconds=...)`.
    fn release_lease(&self, py: Python<'_>, id: u64) -> PyResult<String> {
        py.allow_threads(|| self.inner.release_lease(id))
            .map_err(|e| to_py(py, e))
    }

    /// The loaded policy (source, digest, contract), as JSON.
    fn policy_info(&self, py: Python<'_>) -> PyResult<String> {
        json(py, || Ok(self.inner.policy_info()))
    }

    /// Load the policy file again and swap it in.
    fn reload_policy(&self, py: Python<'_>) -> PyResult<String> {
        json(py, || self.inner.reload_policy())
    }
}

/// A lease; `release()` ends it (the Python wrapper is a context manager).
#[pyclass(module = "fixsec_workspace._native", frozen)]
struct LeaseHandle {
    inner: parking_lot::Mutex<Option<Lease>>,
}

#[pymethods]
impl LeaseHandle {
    /// The leased workspace, while held.
    fn name(&self) -> Option<String> {
        self.inner.lock().as_ref().map(|l| l.name().to_string())
    }

    /// End the lease (again: nothing).
    fn release(&self, py: Python<'_>) {
        let lease = self.inner.lock().take();
        py.allow_threads(move || drop(lease));
    }
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Manager>()?;
    m.add_class::<LeaseHandle>()?;
    m.add("CONTRACT", fixsec_workspace::CONTRACT)?;
    Ok(())
}
