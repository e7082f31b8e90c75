//! The product binaries (`nodemedic-agent`, `nodemedic-operator`) for tests
//! of this crate that run them.
//!
//! Cargo builds a package's plain executables only for that package's own
//! integration tests (`CARGO_BIN_EXE_*`). `cargo test --workspace` (what
//! `make test` runs) therefore builds them, into the folder above the running
//! test executable's `deps/`; that build is used when it is newer than every
//! source it comes from. Otherwise — `cargo test -p nodemedic-tests` on a
//! fresh tree, or sources changed since — [`workspace_binary`] runs `cargo
//! build` for it (as `nodemedic_testkit::workload_exe` does for the workload
//! generator), so a test never runs a missing or stale binary.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};

/// The folder of the profile's binaries (`<target>/<profile>`), found from
/// the running executable (`<target>/<profile>/deps/<test>-<hash>`).
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("locate the test executable", e))?;
    let deps = exe
        .parent()
        .ok_or_else(|| Error::Other(format!("{} has no parent folder", exe.display())))?;
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// Binary `name` of the workspace package `package` (in folder
/// `package_dir`, e.g. `node-agent`), current with every source it is built
/// from: its package's `src/` and `Cargo.toml`, `crds/src/` and `Cargo.lock`.
/// Built with `cargo build` for this profile and target directory when it is
/// missing or older than those.
pub fn workspace_binary(package_dir: &str, package: &str, name: &str) -> Result<PathBuf> {
    let profile_dir = profile_dir()?;
    let binary = profile_dir.join(name);
    let err = |reason: String| Error::WorkspaceBinary {
        binary: binary.clone(),
        package: package.to_owned(),
        reason,
    };
    let root = crate::repo_root();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for src in [
        root.join(package_dir).join("src"),
        root.join(package_dir).join("Cargo.toml"),
        root.join("crds").join("src"),
        root.join("crds").join("Cargo.toml"),
        root.join("Cargo.lock"),
    ] {
        newest_file(&src, &mut newest)?;
    }
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let current = match (built, &newest) {
        (Some(b), Some((n, _))) => b >= *n,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if current && crate::assets::is_executable(&binary) {
        return Ok(binary);
    }
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| err(format!("{} has no target directory", profile_dir.display())))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Err(err(format!("no profile in {}", profile_dir.display()))),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            name,
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::io(format!("run {}", cargo.to_string_lossy()), e))?;
    if !status.success() {
        return Err(err(format!(
            "`cargo build -p {package} --bin {name} --profile {profile}` failed ({status}); see its output above"
        )));
    }
    if crate::assets::is_executable(&binary) {
        Ok(binary)
    } else {
        Err(err("cargo built it, but it is not there".into()))
    }
}

fn newest_file(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) -> Result<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| Error::io(format!("list {}", path.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("list {}", path.display()), e))?;
            newest_file(&entry.path(), newest)?;
        }
    } else if let Ok(t) = meta.modified()
        && newest.as_ref().is_none_or(|(n, _)| t > *n)
    {
        *newest = Some((t, path.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_is_above_deps() {
        let dir = profile_dir().expect("profile dir");
        let exe = std::env::current_exe().expect("exe");
        assert!(
            exe.starts_with(&dir),
            "{} not under {}",
            exe.display(),
            dir.display()
        );
        assert_ne!(dir.file_name().and_then(|n| n.to_str()), Some("deps"));
    }

    #[test]
    fn an_unknown_binary_is_an_error_naming_the_build() {
        let msg = workspace_binary("node-agent", "nodemedic-agent", "no-such-binary")
            .expect_err("no such binary")
            .to_string();
        assert!(msg.contains("cargo build -p nodemedic-agent"), "{msg}");
    }
}
