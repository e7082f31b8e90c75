//! The kind tier's runc wrapper for the private Docker engine
//! (`tests/kind/docker-runc.sh`): a privileged container's capabilities are
//! cut down to the host's bounding set, and runc gets the same arguments.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// linux/capability.h, index = capability number.
const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn wrapper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kind/docker-runc.sh")
}

fn last_cap() -> usize {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap()
        .min(CAPS.len() - 1)
}

/// Every capability the kernel knows, as Docker 20.10 asks for a
/// privileged container.
fn all_caps() -> Vec<&'static str> {
    CAPS[..=last_cap()].to_vec()
}

fn caps_in(mask: u64) -> Vec<&'static str> {
    all_caps()
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, c)| c)
        .collect()
}

const SETS: [&str; 5] = [
    "bounding",
    "effective",
    "permitted",
    "inheritable",
    "ambient",
];

/// Each capability set holds exactly `want`, in the kernel's order.
fn assert_sets(got: &Value, want: &[&str], what: &str) {
    for set in SETS {
        let have: Vec<&str> = got[set]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no {set} set in {got}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let kept: Vec<_> = have.iter().filter(|c| !want.contains(c)).collect();
        let dropped: Vec<_> = want.iter().filter(|c| !have.contains(c)).collect();
        assert!(
            kept.is_empty() && dropped.is_empty(),
            "{what}: {set}: kept {kept:?} beyond the bounding set, dropped {dropped:?} within it"
        );
        assert_eq!(have, want, "{what}: {set}: order");
    }
}

fn cap_sets(caps: &[&str]) -> Value {
    json!({"bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps})
}

/// Runs the wrapper with a fake `runc` (it records its arguments) and the
/// given bounding set; returns the arguments runc got.
fn run(dir: &Path, bounding: Option<u64>, args: &[&str]) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("runc");
    std::fs::write(&fake, "#!/bin/sh\necho \"$@\" >\"$FAKE_RUNC_ARGS\"\n").unwrap();
    std::fs::set_permissions(
        &fake,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let record = dir.join("runc-args");
    let mut cmd = Command::new(wrapper());
    cmd.args(args)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("FAKE_RUNC_ARGS", &record);
    if let Some(mask) = bounding {
        cmd.env("NODEMEDIC_RUNC_CAP_BOUNDING", format!("{mask:016x}"));
    }
    let out = cmd.output().expect("run docker-runc.sh");
    assert!(
        out.status.success(),
        "docker-runc.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(record).unwrap().trim().to_owned()
}

#[test]
fn a_privileged_containers_capabilities_are_cut_to_the_hosts_bounding_set() {
    let all = all_caps();
    let full: u64 = (1u64 << all.len()) - 1;
    // A host lacking CAP_SYS_RESOURCE (as this project's VM) and CAP_BPF.
    let lacking = full & !(1 << 24) & !(1 << 39);
    let own = u64::from_str_radix(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .unwrap()
            .trim(),
        16,
    )
    .unwrap();
    for (what, bounding) in [
        ("a host lacking two", Some(lacking)),
        ("this host", None),
        ("a full set", Some(full)),
    ] {
        let mask = bounding.unwrap_or(own) & full;
        let dir = tempfile::tempdir().unwrap();
        // create: the bundle's config.json
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        let config = json!({"ociVersion": "1.0.2", "process": {"args": ["/sbin/init"], "capabilities": cap_sets(&all)}});
        std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
        let args = [
            "--root",
            "/run/x",
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "node",
        ];
        assert_eq!(run(dir.path(), bounding, &args), args.join(" "), "{what}");
        let after: Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_sets(
            &after["process"]["capabilities"],
            &caps_in(mask),
            &format!("{what}: create"),
        );
        assert_eq!(after["process"]["args"], json!(["/sbin/init"]), "{what}");
        // exec: the process file, given as --process=FILE
        let process = dir.path().join("process.json");
        std::fs::write(
            &process,
            json!({"args": ["sh"], "capabilities": cap_sets(&all)}).to_string(),
        )
        .unwrap();
        let flag = format!("--process={}", process.display());
        let args = ["exec", flag.as_str(), "node"];
        assert_eq!(run(dir.path(), bounding, &args), args.join(" "), "{what}");
        let after: Value = serde_json::from_slice(&std::fs::read(&process).unwrap()).unwrap();
        assert_sets(
            &after["capabilities"],
            &caps_in(mask),
            &format!("{what}: exec"),
        );
    }
}
