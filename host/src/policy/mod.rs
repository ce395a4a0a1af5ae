//! The policy engine: loads a policy component, checks it speaks our WIT
//! contract, and runs each call in a fresh, sandboxed instance.
//!
//! Like Spin's engine, one compiled component is pre-instantiated once
//! (`InstancePre`) and every call gets its own `Store` and instance, so no
//! state leaks between calls and a trap poisons nothing. The sandbox
//! (invariant 4): no preopened directories, no environment, no arguments, no
//! sockets, stderr captured into a bounded buffer; per-call fuel (CPU) and
//! memory limits. A trap, a limit or a broken contract is an error for that
//! call only.

pub mod conformance;
mod host;

use crate::config::{PolicyLimits, PolicySource};
use crate::error::{Error, Result};
use crate::manager::Services;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(crate) use host::{CallContext, from_wit_error};

/// Bindings generated from `wit/workspace.wit`.
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "workspace-policy",
        path: "../wit",
        imports: { default: trappable },
    });
}

use bindings::exports::fixsec::workspace::policy::Guest as PolicyExports;

/// The WIT package (with version) this host speaks.
pub const CONTRACT: &str = "fixsec:workspace@0.1.0";

/// The default policy (`guest/`), built by `build.rs` and embedded.
pub static DEFAULT_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_policy.wasm"));

/// Guest stderr kept for error messages (a panic message, say).
const STDERR_CAPTURE_BYTES: usize = 16 * 1024;

/// Per-call store state: the WASI sandbox, limits, and the host services
/// the imports act through.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    services: Arc<Services>,
    call: CallContext,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A loaded, checked, pre-instantiated policy.
pub struct PolicyEngine {
    engine: Engine,
    pre: bindings::WorkspacePolicyPre<HostState>,
    limits: PolicyLimits,
    label: String,
    digest: String,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("label", &self.label)
            .field("limits", &self.limits)
            .finish()
    }
}

impl PolicyEngine {
    /// Load the policy named by `source`, without a disk cache.
    pub fn load(source: &PolicySource, limits: PolicyLimits) -> Result<Self> {
        Self::load_cached(source, limits, None)
    }

    /// Load the policy named by `source`; compiled code is cached in
    /// `cache_dir` (when given) and reused by later starts.
    pub fn load_cached(
        source: &PolicySource,
        limits: PolicyLimits,
        cache_dir: Option<&Path>,
    ) -> Result<Self> {
        match source {
            PolicySource::Embedded => {
                Self::compile(DEFAULT_POLICY, "default policy", limits, cache_dir)
            }
            PolicySource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::Config(format!(
                        "cannot read policy file {}: {e}; check WORKSPACE_POLICY / --policy",
                        path.display()
                    ))
                })?;
                Self::compile(&bytes, &path.display().to_string(), limits, cache_dir)
            }
        }
    }

    /// Compile `bytes` and check it implements [`CONTRACT`].
    pub fn from_bytes(bytes: &[u8], label: &str, limits: PolicyLimits) -> Result<Self> {
        Self::compile(bytes, label, limits, None)
    }

    fn compile(
        bytes: &[u8],
        label: &str,
        limits: PolicyLimits,
        cache_dir: Option<&Path>,
    ) -> Result<Self> {
        let engine = shared_engine()?;
        let digest = md5_hex(bytes);
        let component = compiled(&engine, bytes, &digest, cache_dir).map_err(|e| {
            Error::Config(format!(
                "policy {label} is not a WebAssembly component: {e:#}; build it for wasm32-wasip2 (see docs/POLICIES.md)"
            ))
        })?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Config(format!("linking WASI: {e:#}")))?;
        bindings::WorkspacePolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| Error::Config(format!("linking host imports: {e:#}")))?;
        let incompatible = |e: wasmtime::Error| {
            Error::Config(format!(
                "policy {label} does not implement {CONTRACT}: {e:#}. It speaks {}; rebuild it against this host's wit/ (the host accepts {CONTRACT} and compatible 0.1.x versions)",
                contract_versions(&engine, &component)
            ))
        };
        let pre = linker.instantiate_pre(&component).map_err(incompatible)?;
        let pre = bindings::WorkspacePolicyPre::new(pre).map_err(incompatible)?;
        Ok(PolicyEngine {
            engine,
            pre,
            limits,
            label: label.to_string(),
            digest,
        })
    }

    /// What was loaded ("default policy" or the file path).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Which policy this is: its source and the MD5 of its bytes.
    pub fn info(&self) -> crate::model::PolicyInfo {
        crate::model::PolicyInfo {
            source: self.label.clone(),
            digest: self.digest.clone(),
        }
    }

    /// Run `f` against a fresh instance with `call` as its context. Returns
    /// the result and the context (with what the host recorded during the call).
    pub(crate) fn call<R>(
        &self,
        services: Arc<Services>,
        call: CallContext,
        what: &str,
        f: impl FnOnce(&PolicyExports, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<(R, CallContext)> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi,
                table: ResourceTable::new(),
                limits,
                services,
                call,
            },
        );
        store.limiter(|s| &mut s.limits);
        let fail = |e: wasmtime::Error| {
            let out = String::from_utf8_lossy(&stderr.contents())
                .trim()
                .to_string();
            let limit = match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::OutOfFuel) => {
                    " (it ran out of its CPU budget: an endless loop?)"
                }
                _ => "",
            };
            let out = if out.is_empty() {
                String::new()
            } else {
                format!("; policy stderr: {out}")
            };
            Error::Policy(format!(
                "{} failed in {what}{limit}: {e:#}{out}",
                self.label
            ))
        };
        store.set_fuel(self.limits.fuel).map_err(fail)?;
        let instance = self.pre.instantiate(&mut store).map_err(fail)?;
        let result = f(instance.fixsec_workspace_policy(), &mut store).map_err(fail)?;
        Ok((result, store.into_data().call))
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One engine for the process: compiled components can be shared between
/// managers and reloads only within one engine.
fn shared_engine() -> Result<Engine> {
    static ENGINE: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = wasmtime::Config::new();
            config.consume_fuel(true);
            Engine::new(&config).map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| Error::Config(format!("starting the wasm engine: {e}")))
}

/// The compiled component for `bytes`: from this process's memory, else
/// from the disk cache, else compiled now (and written to the cache).
///
/// Deserializing compiled code is `unsafe` in wasmtime because a tampered
/// file could run arbitrary native code. The cache lives in the host's own
/// base directory (`<base>/.cache/policies`), written only by this host,
/// and the file name binds the component digest and the engine's
/// compatibility hash, so a stale or foreign artefact is never picked up.
fn compiled(
    engine: &Engine,
    bytes: &[u8],
    digest: &str,
    cache_dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    static MEMORY: OnceLock<parking_lot::Mutex<HashMap<String, Component>>> = OnceLock::new();
    let memory = MEMORY.get_or_init(Default::default);
    let cached_file = cache_dir.map(|dir| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
    });
    let in_memory = memory.lock().get(digest).cloned();
    let component = match in_memory {
        Some(c) => c,
        None => {
            let from_disk = cached_file
                .as_ref()
                .filter(|f| f.is_file())
                // SAFETY: see above: our own file, named by content and engine.
                .and_then(|f| unsafe { Component::deserialize_file(engine, f) }.ok());
            let c = match from_disk {
                Some(c) => c,
                None => {
                    let c = Component::new(engine, bytes)?;
                    if let Some(file) = &cached_file {
                        write_cache(file, &c);
                    }
                    c
                }
            };
            memory.lock().insert(digest.to_string(), c.clone());
            c
        }
    };
    // Compiled earlier in this process for another base: cache it here too.
    if let Some(file) = cached_file.filter(|f| !f.is_file()) {
        write_cache(&file, &component);
    }
    Ok(component)
}

/// Best effort: a cache that cannot be written only costs the next start.
fn write_cache(file: &Path, component: &Component) {
    let result = component
        .serialize()
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            let dir = file.parent().expect("cache files live in a folder");
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, file).map_err(|e| {
                // Windows: another process may be reading the cache file.
                let _ = std::fs::remove_file(&tmp);
                e.to_string()
            })
        });
    if let Err(e) = result {
        tracing::warn!(file = %file.display(), error = %e, "could not cache the compiled policy");
    }
}

/// The `fixsec:workspace` interfaces a component imports and exports, for
/// error messages about versions.
fn contract_versions(engine: &Engine, component: &Component) -> String {
    let ty = component.component_type();
    let mut names: Vec<String> = ty
        .imports(engine)
        .map(|(n, _)| n.to_string())
        .chain(ty.exports(engine).map(|(n, _)| format!("export {n}")))
        .filter(|n| n.contains("fixsec:"))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        "no fixsec:workspace interface at all".to_string()
    } else {
        names.join(", ")
    }
}
