//! Start a throw-away control plane (etcd + kube-apiserver, CRDs installed) for manual
//! poking or for running the product binaries against it:
//!
//! ```text
//! cargo run -p nodemedic-tests --bin nodemedic-control-plane
//! ```
//!
//! It prints `export KUBECONFIG=...` and stays up until Ctrl-C or EOF on stdin; then
//! it stops etcd and kube-apiserver and removes the temp dir. `--no-crds` skips the
//! CRD installation; `--keep` keeps the temp dir (logs) after stopping.

use std::io::Write as _;

use nodemedic_tests::{ControlPlane, ControlPlaneOptions};
use tokio::io::AsyncReadExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = ControlPlaneOptions::from_env()?;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--no-crds" => opts.crd_files.clear(),
            "--keep" => opts.keep_dir = true,
            "-h" | "--help" => {
                println!("usage: nodemedic-control-plane [--no-crds] [--keep]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let cp = ControlPlane::start(opts).await?;
    let (etcd, api) = cp.pids();
    let mut out = std::io::stdout().lock();
    writeln!(out, "export KUBECONFIG={}", cp.admin_kubeconfig().display())?;
    writeln!(out, "NODEMEDIC_CONTROL_PLANE_SERVER={}", cp.server_url())?;
    writeln!(out, "NODEMEDIC_CONTROL_PLANE_DIR={}", cp.dir().display())?;
    writeln!(out, "NODEMEDIC_CONTROL_PLANE_PIDS={etcd},{api}")?;
    writeln!(
        out,
        "NODEMEDIC_CONTROL_PLANE_CRDS={}",
        cp.installed_crds().join(",")
    )?;
    out.flush()?;
    drop(out);

    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    tokio::select! {
        _ = stdin.read_to_end(&mut sink) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    cp.shutdown();
    Ok(())
}
