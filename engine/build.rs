//! Embeds the plugin templates and the JS/Python SDKs for `backflow plugin new`, so the
//! binary scaffolds a project wherever it is installed. Generates `$OUT_DIR/templates.rs`:
//! one `(path, bytes)` per file, paths relative to the repository root. Build output and
//! installed packages inside those directories (a developer may have built a template in
//! place) are left out.

use std::path::{Path, PathBuf};

const ROOTS: &[&str] = &[
    "templates",
    "plugin-sdk/js",
    "plugin-sdk/python/backflow_sdk",
    "wit/v0.2.0",
];
const SKIPPED: &[&str] = &[
    "node_modules",
    "dist",
    "target",
    ".venv",
    ".bindings",
    "__pycache__",
    "types",
    "test-results",
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let repo = manifest
        .parent()
        .expect("the engine lives in the repository")
        .to_path_buf();
    let mut files = Vec::new();
    for root in ROOTS {
        let dir = repo.join(root);
        if collect(&dir, &mut files) {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
    }
    files.sort();
    let mut out = String::from("/// Embedded by build.rs: (path from the repository root, contents).\npub static FILES: &[(&str, &[u8])] = &[\n");
    for file in &files {
        let relative = file
            .strip_prefix(&repo)
            .expect("under the repository")
            .to_string_lossy()
            .replace('\\', "/");
        out.push_str(&format!(
            "    ({relative:?}, include_bytes!({:?})),\n",
            file.display().to_string()
        ));
    }
    out.push_str("];\n");
    let target =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("templates.rs");
    std::fs::write(target, out).expect("writing templates.rs");
}

/// Adds the files under `dir` to `files`. Returns whether nothing under it was left out: such
/// a directory is watched whole (Cargo then also sees new files in it). A directory holding
/// build output is not (Cargo would scan `node_modules` on every build); its files and clean
/// subdirectories are watched one by one instead. Symbolic links are never followed.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    let mut clean = true;
    let mut watched = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink()
            || SKIPPED.contains(&name.as_str())
            || name.ends_with(".wasm")
            || name.ends_with(".pyc")
            || name == ".DS_Store"
        {
            clean = false;
            continue;
        }
        if kind.is_dir() {
            if collect(&path, files) {
                watched.push(path);
            } else {
                clean = false;
            }
        } else {
            watched.push(path.clone());
            files.push(path);
        }
    }
    if !clean {
        for path in watched {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    clean
}
