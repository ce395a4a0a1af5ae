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
use std::sync::Arc;
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
    /// Load the policy named by `source`.
    pub fn load(source: &PolicySource, limits: PolicyLimits) -> Result<Self> {
        match source {
            PolicySource::Embedded => Self::from_bytes(DEFAULT_POLICY, "default policy", limits),
            PolicySource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::Config(format!(
                        "cannot read policy file {}: {e}; check WORKSPACE_POLICY / --policy",
                        path.display()
                    ))
                })?;
                Self::from_bytes(&bytes, &path.display().to_string(), limits)
            }
        }
    }

    /// Compile `bytes` and check it implements [`CONTRACT`].
    pub fn from_bytes(bytes: &[u8], label: &str, limits: PolicyLimits) -> Result<Self> {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config)
            .map_err(|e| Error::Config(format!("starting the wasm engine: {e:#}")))?;
        let component = Component::new(&engine, bytes).map_err(|e| {
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
        use md5::Digest;
        let digest = md5::Md5::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
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
