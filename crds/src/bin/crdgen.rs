//! Writes the CRD YAML for every kind (`crds/yaml/` and the Helm chart copy)
//! and the generated field reference `docs/api-reference.md`.
//! `crdgen --stdout` prints them as one multi-document stream instead.

use std::path::PathBuf;
use std::{env, fs, process::ExitCode};

use nodemedic_crds::{api_doc, crd_yaml};

fn main() -> ExitCode {
    let to_stdout = env::args().skip(1).any(|a| a == "--stdout");
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let targets = [
        crate_dir.join(crd_yaml::YAML_DIR),
        crate_dir.join("../charts/nodemedic/crds"),
    ];
    for (file, crd) in crd_yaml::all() {
        let text = match crd_yaml::render(&crd) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("crdgen: cannot render {file}: {err}");
                return ExitCode::FAILURE;
            }
        };
        if to_stdout {
            print!("---\n{text}");
            continue;
        }
        for dir in &targets {
            let path = dir.join(&file);
            if let Err(err) = fs::create_dir_all(dir).and_then(|()| fs::write(&path, &text)) {
                eprintln!("crdgen: cannot write {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
        }
    }
    let crds: Vec<_> = crd_yaml::all().into_iter().map(|(_, crd)| crd).collect();
    let reference = api_doc::render(&crds);
    if to_stdout {
        return ExitCode::SUCCESS;
    }
    let path = crate_dir.join("..").join(api_doc::REFERENCE_PATH);
    if let Err(err) = fs::write(&path, reference) {
        eprintln!("crdgen: cannot write {}: {err}", path.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}
