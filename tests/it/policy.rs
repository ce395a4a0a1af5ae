//! The policy as a component: the default one through wasmtime agrees with
//! the same code compiled natively; loading refuses what is not a policy;
//! per-call limits hold.

use crate::support;

use fixsec_policy_default::naming;
use fixsec_workspace::DEFAULT_POLICY;
use fixsec_workspace::WorkspaceName;
use fixsec_workspace::{ErrorKind, PolicyLimits, WorkspaceManager};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::OnceLock;

fn shared() -> &'static WorkspaceManager {
    static M: OnceLock<(tempfile::TempDir, WorkspaceManager)> = OnceLock::new();
    &M.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let m = support::manager(dir.path());
        (dir, m)
    })
    .1
}

/// The conformance suite's corpus of tricky inputs, shared with `policy check`.
use fixsec_workspace::testing::NAME_CORPUS as TRICKY;

#[test]
fn the_component_names_like_the_original() {
    let m = shared();
    assert_eq!(
        m.workspace_name("facebook/react").unwrap(),
        "facebook_react_4f32b4cf"
    );
}

#[test]
fn tricky_names_are_safe_unique_and_match_native() {
    let m = shared();
    let long = "x".repeat(10_000);
    let mut seen = HashMap::new();
    for input in TRICKY.iter().copied().chain([long.as_str()]) {
        let name = m.workspace_name(input).unwrap();
        assert_eq!(name, naming::workspace_name(input).unwrap(), "{input:?}");
        WorkspaceName::parse(&name).unwrap();
        assert!(
            name.len() <= naming::MAX_NAME_LEN,
            "{input:?} -> {} bytes",
            name.len()
        );
        if let Some(prev) = seen.insert(name.clone(), input) {
            panic!("{prev:?} and {input:?} both map to {name}");
        }
    }
    for empty in ["", "   "] {
        let err = m.workspace_name(empty).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("empty"), "{err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_input_gets_a_valid_name_that_matches_native(input in "\\PC{1,300}") {
        prop_assume!(!input.trim().is_empty());
        let name = shared().workspace_name(&input).unwrap();
        prop_assert_eq!(&name, &naming::workspace_name(&input).unwrap());
        prop_assert!(WorkspaceName::parse(&name).is_ok());
    }

    #[test]
    fn github_names_keep_the_original_scheme(
        owner in "[A-Za-z0-9][A-Za-z0-9-]{0,38}",
        repo in "[A-Za-z0-9._-]{1,100}",
    ) {
        prop_assume!(repo != "." && repo != "..");
        let full = format!("{owner}/{repo}");
        let name = shared().workspace_name(&full).unwrap();
        let digest = format!("{:032x}", md5_of(&full));
        // The original's name, where it fits in the Windows-friendly bound.
        let stem: String = full.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|s| !s.is_empty()).collect::<Vec<_>>().join("_");
        let original = format!("{stem}_{}", &digest[..8]);
        if original.len() <= naming::MAX_NAME_LEN {
            prop_assert_eq!(&name, &original);
        } else {
            prop_assert!(name.len() <= naming::MAX_NAME_LEN);
            prop_assert!(name.ends_with(&format!("_{}", &digest[..16])), "{} -> {}", full, name);
        }
    }
}

fn md5_of(s: &str) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(s.as_bytes()).into())
}

#[test]
fn a_policy_file_is_loaded_instead_of_the_embedded_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.wasm");
    std::fs::write(&file, DEFAULT_POLICY).unwrap();
    let m = WorkspaceManager::builder()
        .base_path(dir.path().join("ws"))
        .policy_file(&file)
        .build()
        .unwrap();
    assert_eq!(m.policy_label(), file.display().to_string());
    assert_eq!(
        m.workspace_name("facebook/react").unwrap(),
        "facebook_react_4f32b4cf"
    );
}

#[test]
fn what_is_not_a_compatible_policy_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "garbage.wasm",
            b"definitely not wasm",
            "not a WebAssembly component",
        ),
        // A valid core module, not a component.
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "not a WebAssembly component",
        ),
        // A valid, empty component: exports nothing of the contract.
        (
            "empty.wasm",
            b"\0asm\x0d\0\x01\0",
            "does not implement fixsec:workspace@0.3.0",
        ),
    ];
    for (file, bytes, expected) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let err = WorkspaceManager::builder()
            .base_path(dir.path().join("ws"))
            .policy_file(&path)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{file}");
        let msg = err.to_string();
        assert!(msg.contains(expected), "{file}: {msg}");
        assert!(msg.contains(file), "{file}: names the file: {msg}");
    }
    let err = WorkspaceManager::builder()
        .base_path(dir.path().join("ws"))
        .policy_file(dir.path().join("missing.wasm"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("cannot read policy file"), "{err}");
}

#[test]
fn a_call_over_its_cpu_budget_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let m = WorkspaceManager::builder()
        .base_path(dir.path())
        .policy_limits(PolicyLimits {
            fuel: 1_000,
            ..PolicyLimits::default()
        })
        .build()
        .unwrap();
    let err = m.workspace_name(&"a".repeat(5_000)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert!(err.to_string().contains("CPU budget"), "{err}");
    // The trap poisoned nothing: the next call reaches a fresh instance of
    // the policy and fails the same way, not with a broken store.
    let again = m.workspace_name(&"a".repeat(5_000)).unwrap_err();
    assert!(again.to_string().contains("CPU budget"), "{again}");
    // And a budget that fits a short name but not a long one answers the
    // short one after the long one trapped.
    let fitted = WorkspaceManager::builder()
        .base_path(dir.path())
        .policy_limits(PolicyLimits {
            fuel: FITTED_FUEL,
            ..PolicyLimits::default()
        })
        .build()
        .unwrap();
    let long = fitted.workspace_name(&"a/".repeat(200_000)).unwrap_err();
    assert!(long.to_string().contains("CPU budget"), "{long}");
    assert_eq!(
        fitted.workspace_name("facebook/react").unwrap(),
        "facebook_react_4f32b4cf"
    );
}

/// Enough fuel to name `facebook/react`, far too little for 400,000 bytes.
const FITTED_FUEL: u64 = 2_000_000;

#[test]
fn a_policy_over_its_memory_limit_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let m = WorkspaceManager::builder()
        .base_path(dir.path())
        .policy_limits(PolicyLimits {
            memory_bytes: 64 * 1024,
            ..PolicyLimits::default()
        })
        .build()
        .unwrap();
    let err = m.workspace_name("facebook/react").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
}
