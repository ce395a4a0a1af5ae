//! Builds the default policy (`guest/`) as a wasm32-wasip2 component and
//! puts it in OUT_DIR, where `policy::DEFAULT_POLICY` embeds it.
//!
//! The nested cargo uses its own target directory (`<target>/policy-build`):
//! sharing the outer one would deadlock on its lock.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let dest = out_dir.join("default_policy.wasm");

    for path in ["guest/src", "guest/Cargo.toml", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=FIXSEC_DEFAULT_POLICY_WASM");

    // A prebuilt component (e.g. for a cross build on a machine without the
    // wasm target) can be supplied instead of building one.
    if let Ok(prebuilt) = std::env::var("FIXSEC_DEFAULT_POLICY_WASM") {
        std::fs::copy(&prebuilt, &dest)
            .unwrap_or_else(|e| panic!("copying FIXSEC_DEFAULT_POLICY_WASM={prebuilt}: {e}"));
        return;
    }

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("policy-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "rustc",
            "--package",
            "fixsec-policy-default",
            "--lib",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--crate-type",
            "cdylib",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        // Flags and wrappers of the outer build (coverage, clippy) are not for the guest.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .expect("running cargo to build the default policy");
    if !status.success() {
        panic!(
            "building the default policy (guest/) for wasm32-wasip2 failed; \
             if the target is missing, run `rustup target add wasm32-wasip2`"
        );
    }
    let built = target_dir.join("wasm32-wasip2/release/fixsec_policy_default.wasm");
    std::fs::copy(&built, &dest)
        .unwrap_or_else(|e| panic!("copying {} to OUT_DIR: {e}", built.display()));
}
