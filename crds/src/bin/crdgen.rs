//! `sessionizer-crdgen`: writes the CRD YAML of `sessionizer-crds` to `crds/generated/` and
//! `charts/sessionizer-operator/crds/`. Run it after changing an API type; CI fails until you do.

use std::process::ExitCode;

use sessionizer_crds::crdgen;

fn main() -> ExitCode {
    let root = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(crdgen::workspace_root);
    match crdgen::write_all(&root) {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("sessionizer-crdgen: {err}");
            ExitCode::FAILURE
        }
    }
}
