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

mod calls;
mod compat;
mod convert;
mod host;

use crate::config::{PolicyLimits, PolicySource};
use crate::error::{Error, Result};
use crate::store::Store as WorkspaceStore;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use calls::PushQuestion;
pub(crate) use calls::{HealthFigures, PrepareCall, Verdict};
pub(crate) use compat::Instance;
pub use compat::default_push_rule;
pub(crate) use host::{CallContext, Export};

/// Bindings generated from `wit/workspace.wit` (the current contract):
/// the host's own business (`calls.rs` and `convert.rs` translate), never
/// part of the library's API.
#[allow(missing_docs)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "workspace-policy",
        path: "../wit",
        imports: { default: trappable },
    });
}

/// Bindings for the frozen 0.2.0 contract (`wit/v0.2/`). Its shared types
/// are the current ones (identical in both), so one implementation of the
/// imports serves every version (`compat.rs`).
#[allow(missing_docs)]
pub(crate) mod bindings_v0_2 {
    wasmtime::component::bindgen!({
        world: "workspace-policy",
        path: "../wit/v0.2",
        imports: { default: trappable },
        with: { "fixsec:workspace/types": super::bindings::fixsec::workspace::types },
    });
}

/// Bindings for the frozen 0.1.0 contract (`wit/v0.1/`), sharing the
/// current types as 0.2's do.
#[allow(missing_docs)]
pub(crate) mod bindings_v0_1 {
    wasmtime::component::bindgen!({
        world: "workspace-policy",
        path: "../wit/v0.1",
        imports: { default: trappable },
        with: { "fixsec:workspace/types": super::bindings::fixsec::workspace::types },
    });
}

/// The WIT package (with version) this host speaks.
pub const CONTRACT: &str = "fixsec:workspace@0.3.0";

/// The older contract versions this host still loads.
pub const OLDER_CONTRACTS: &[&str] = &["fixsec:workspace@0.2.x", "fixsec:workspace@0.1.x"];

/// A pre-instantiated policy of one contract version.
enum Pre {
    Current(bindings::WorkspacePolicyPre<HostState>),
    V0_2(bindings_v0_2::WorkspacePolicyPre<HostState>),
    V0_1(bindings_v0_1::WorkspacePolicyPre<HostState>),
}

/// The default policy (`guest/`), built by `build.rs` and embedded.
pub static DEFAULT_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_policy.wasm"));

/// Guest stderr kept for error messages (a panic message, say).
const STDERR_CAPTURE_BYTES: usize = 16 * 1024;

/// Per-call store state: the WASI sandbox, limits, and the workspace store
/// the imports act through.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    store: Arc<WorkspaceStore>,
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
    pre: Pre,
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
                    Error::config(format!(
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
            Error::config(format!(
                "policy {label} is not a WebAssembly component: {e:#}; build it for wasm32-wasip2 (see docs/POLICIES.md)"
            ))
        })?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::config(format!("linking WASI: {e:#}")))?;
        bindings::WorkspacePolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .and_then(|()| {
                bindings_v0_2::WorkspacePolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            })
            .and_then(|()| {
                bindings_v0_1::WorkspacePolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            })
            .map_err(|e| Error::config(format!("linking host imports: {e:#}")))?;
        let incompatible = |e: wasmtime::Error| {
            Error::config(format!(
                "policy {label} does not implement {CONTRACT}: {e:#}. It speaks {}; rebuild it against this host's wit/ (the host accepts {CONTRACT}, compatible 0.3.x versions, and {})",
                contract_versions(&engine, &component),
                OLDER_CONTRACTS.join(", ")
            ))
        };
        let pre = linker.instantiate_pre(&component).map_err(incompatible)?;
        let pre = match bindings::WorkspacePolicyPre::new(pre.clone()) {
            Ok(current) => Pre::Current(current),
            Err(e) => match bindings_v0_2::WorkspacePolicyPre::new(pre.clone()) {
                Ok(old) => Pre::V0_2(old),
                Err(_) => match bindings_v0_1::WorkspacePolicyPre::new(pre) {
                    Ok(older) => Pre::V0_1(older),
                    Err(_) => return Err(incompatible(e)),
                },
            },
        };
        Ok(PolicyEngine {
            engine,
            pre,
            limits,
            label: label.to_string(),
            digest,
        })
    }

    /// The contract version the component was built against.
    pub fn contract(&self) -> &'static str {
        match self.pre {
            Pre::Current(_) => CONTRACT,
            Pre::V0_2(_) => "fixsec:workspace@0.2.0",
            Pre::V0_1(_) => "fixsec:workspace@0.1.0",
        }
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
            contract: self.contract().to_string(),
        }
    }

    /// Run `f` against a fresh instance with `call` as its context. Returns
    /// the result and the context (with what the host recorded during the call).
    pub(crate) fn call<R>(
        &self,
        store: Arc<WorkspaceStore>,
        call: CallContext,
        what: &str,
        f: impl FnOnce(&Instance, &mut Store<HostState>) -> wasmtime::Result<R>,
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
                store,
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
            Error::policy(format!(
                "{} failed in {what}{limit}: {e:#}{out}",
                self.label
            ))
        };
        store.set_fuel(self.limits.fuel).map_err(fail)?;
        let instance = match &self.pre {
            Pre::Current(pre) => pre.instantiate(&mut store).map(Instance::Current),
            Pre::V0_2(pre) => pre.instantiate(&mut store).map(Instance::V0_2),
            Pre::V0_1(pre) => pre.instantiate(&mut store).map(Instance::V0_1),
        }
        .map_err(fail)?;
        let result = f(&instance, &mut store).map_err(fail)?;
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
        .map_err(|e| Error::config(format!("starting the wasm engine: {e}")))
}

/// The compiled component for `bytes`: from this process's memory, else
/// from the disk cache, else compiled now (and written to the cache).
///
/// Deserializing compiled code is `unsafe` in wasmtime: a tampered file
/// runs as native code. So the cache is trusted only when:
/// - it lives in the host's own base directory (`<base>/.cache/policies`),
///   a folder this host creates private (0700) and that no other user can
///   write (checked on every load);
/// - the file name binds the component's digest and the engine's
///   compatibility hash, and a sidecar `.sha256` holds the SHA-256 of the
///   component digest and the compiled bytes, checked before
///   deserializing: a damaged file, or another component's compiled code
///   copied over it, is recompiled, never run.
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
                .and_then(|f| load_cache(engine, f, digest));
            let c = match from_disk {
                Some(c) => c,
                None => {
                    let c = Component::new(engine, bytes)?;
                    if let Some(file) = &cached_file {
                        write_cache(file, digest, &c);
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
        write_cache(&file, digest, &component);
    }
    Ok(component)
}

/// The integrity record of a cache file: SHA-256 over the component's
/// digest and the compiled bytes, hex.
fn cache_seal(digest: &str, compiled: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(digest.as_bytes());
    h.update([0u8]);
    h.update(compiled);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn seal_path(file: &Path) -> std::path::PathBuf {
    file.with_extension("cwasm.sha256")
}

/// Whether others than the owner can write `path` (always false off Unix,
/// where the folder's ACL is inherited from the base directory).
fn writable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path)
            .map(|m| m.file_type().is_symlink() || m.permissions().mode() & 0o022 != 0)
            .unwrap_or(true)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// The cached compiled component in `file`, if it is there, private, and
/// its seal matches; `None` sends the caller to compile afresh.
fn load_cache(engine: &Engine, file: &Path, digest: &str) -> Option<Component> {
    if !file.is_file() {
        return None;
    }
    let dir = file.parent()?;
    if writable_by_others(dir) || writable_by_others(file) {
        tracing::warn!(dir = %dir.display(), "policy cache is writable by others; not trusted, recompiling");
        return None;
    }
    let compiled = std::fs::read(file).ok()?;
    let seal = std::fs::read_to_string(seal_path(file)).unwrap_or_default();
    if seal.trim() != cache_seal(digest, &compiled) {
        tracing::warn!(file = %file.display(), "policy cache does not match its seal; recompiling");
        return None;
    }
    // SAFETY: see `compiled`: our own private file, sealed to this component.
    unsafe { Component::deserialize(engine, &compiled) }.ok()
}

/// Best effort: a cache that cannot be written only costs the next start.
fn write_cache(file: &Path, digest: &str, component: &Component) {
    let result = component
        .serialize()
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            let dir = file.parent().expect("cache files live in a folder");
            create_private_dir(dir).map_err(|e| e.to_string())?;
            let nonce: u64 = rand::random();
            let write = |path: &Path, data: &[u8]| -> Result<(), String> {
                let tmp = path.with_extension(format!("tmp{}-{nonce:x}", std::process::id()));
                write_private(&tmp, data).map_err(|e| e.to_string())?;
                std::fs::rename(&tmp, path).map_err(|e| {
                    // Windows: another process may be reading the cache file.
                    let _ = std::fs::remove_file(&tmp);
                    e.to_string()
                })
            };
            // The seal first: a reader that sees the new code with the old
            // seal recompiles, never the reverse.
            write(&seal_path(file), cache_seal(digest, &bytes).as_bytes())?;
            write(file, &bytes)
        });
    if let Err(e) = result {
        tracing::warn!(file = %file.display(), error = %e, "could not cache the compiled policy");
    }
}

/// Create `dir` (and parents), readable and writable by this user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Write `data` to a new file only this user can read or write.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(data)
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
