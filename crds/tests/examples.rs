//! Every policy in `examples/` must pass the API's CEL rules (client-side, with
//! the same rules the API server runs); every policy in `examples/invalid/`
//! must fail with the message its `# expect-error:` header names.

use std::fs;
use std::path::{Path, PathBuf};

use nodemedic_crds::EffectiveThresholds;
use nodemedic_crds::policy_document::{PolicyDocumentError, parse_policy};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn expected_errors(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect-error:"))
        .map(|m| m.trim().to_owned())
        .collect()
}

fn load(path: &Path) -> String {
    fs::read_to_string(path).expect("readable example")
}

#[test]
fn valid_examples_pass_validation() {
    let files = yaml_files(&examples_dir());
    assert!(
        files.len() >= 4,
        "want at least 4 valid examples, found {}",
        files.len()
    );
    for path in files {
        let text = load(&path);
        assert!(
            text.starts_with('#'),
            "{} needs a comment header",
            path.display()
        );
        assert!(
            expected_errors(&text).is_empty(),
            "{} is valid but has expect-error",
            path.display()
        );
        let policy =
            parse_policy(&text).unwrap_or_else(|e| panic!("{} is rejected: {e}", path.display()));
        EffectiveThresholds::from_spec(&policy.spec)
            .unwrap_or_else(|e| panic!("{}: thresholds: {e}", path.display()));
    }
}

#[test]
fn invalid_examples_fail_with_their_message() {
    let files = yaml_files(&examples_dir().join("invalid"));
    assert!(
        files.len() >= 6,
        "want at least 6 invalid examples, found {}",
        files.len()
    );
    for path in files {
        let text = load(&path);
        let expected = expected_errors(&text);
        assert!(
            !expected.is_empty(),
            "{} has no # expect-error: line",
            path.display()
        );
        let messages = match parse_policy(&text) {
            Ok(_) => panic!(
                "{} passed validation but must fail with {expected:?}",
                path.display()
            ),
            Err(PolicyDocumentError::Rejected(lines)) => lines,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        // Each invalid example breaks exactly the rules it names, so a rule
        // that starts rejecting valid input shows up here too. (Schema errors
        // keep the CEL rules from running, which the API server notes.)
        for actual in messages
            .iter()
            .filter(|m| m.as_str() != nodemedic_crds::policy_document::CEL_NOT_CHECKED)
        {
            assert!(
                expected.iter().any(|m| actual.contains(m.as_str())),
                "{}: unexpected extra error {actual:?}",
                path.display()
            );
        }
        for message in &expected {
            assert!(
                messages.iter().any(|m| m.contains(message.as_str())),
                "{}: expected {message:?} among {messages:?}",
                path.display()
            );
        }
    }
}
