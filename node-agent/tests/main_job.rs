//! The README's main-job command is `cargo run --release -p nodemedic-agent
//! -- scan`; with two binaries in the package that only works while the
//! manifest names the default one.

#[test]
fn cargo_run_picks_the_agent_binary() {
    let manifest = include_str!("../Cargo.toml");
    assert!(
        manifest
            .lines()
            .any(|l| l.trim() == r#"default-run = "nodemedic-agent""#),
        "node-agent/Cargo.toml must keep default-run = \"nodemedic-agent\""
    );
}
