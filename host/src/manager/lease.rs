//! Leases: a caller's hold on a workspace.

use super::WorkspaceManager;
use crate::error::{Error, Result};
use crate::metadata::WorkspaceMetadata;
use crate::names::WorkspaceName;
use crate::store::Store;
use chrono::Utc;
use std::sync::Arc;

/// A caller's hold on a workspace: while it lives, cleanup and remove skip
/// the workspace. Dropping it records the use in `workspace.json`.
#[derive(Debug)]
pub struct Lease {
    store: Arc<Store>,
    name: WorkspaceName,
    id: u64,
}

impl Lease {
    /// The leased workspace.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        touch_last_used(&self.store, &self.name);
        self.store.locks().release_lease(self.id);
        self.store.snapshots().invalidate();
    }
}

fn touch_last_used(store: &Store, name: &WorkspaceName) {
    let path = store.layout().metadata_path(name);
    if let Some(mut meta) = WorkspaceMetadata::read(&path) {
        meta.last_used = Utc::now();
        if let Err(e) = meta.write(&path) {
            tracing::warn!(workspace = %name, error = %e, "could not record last use");
        }
    }
}

impl WorkspaceManager {
    /// Hold a workspace while working in it; cleanup and remove skip it
    /// until the lease is dropped.
    pub fn lease(&self, name: &str) -> Result<Lease> {
        let name = WorkspaceName::parse(name)?;
        // Wait out a prepare or removal in progress, then mark it leased.
        let guard = self
            .store
            .locks()
            .lock(&name, self.store.config().lock_wait)?;
        if self.store.summary(&name).is_none() {
            return Err(Error::not_found(format!("no workspace named {name}")));
        }
        let (id, _) = self.store.locks().add_lease(
            &name,
            &format!("a library lease (process {})", std::process::id()),
            None,
        );
        self.store.snapshots().invalidate();
        drop(guard);
        touch_last_used(&self.store, &name);
        Ok(Lease {
            store: self.store.clone(),
            name,
            id,
        })
    }

    /// Release a timed lease taken by a prepare with `lease_seconds`.
    /// `NotFound` when the id is unknown or the lease has lapsed.
    pub fn release_lease(&self, id: u64) -> Result<String> {
        // A credential served for the lease stops first (the daemon exits).
        self.store.stop_serving(id);
        let name = self
            .store
            .locks()
            .release_lease(id)
            .ok_or_else(|| Error::not_found(format!("no live lease with id {id}")))?;
        self.store.snapshots().invalidate();
        touch_last_used(&self.store, &name);
        self.remove_released_copy(&name);
        Ok(name.to_string())
    }
}
