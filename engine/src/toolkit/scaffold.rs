//! `backflow plugin new`: writes a buildable plugin project from the templates embedded in
//! the binary (`templates/<lang>/<kind>/` laid over `templates/<lang>/common/`, see `build.rs`).
//!
//! Rust projects depend on this repository's SDK crate (contract 0.3.0, MessagePack rows).
//! JavaScript and Python projects get their own copy of the thin SDK (`lib/backflow.js`,
//! `backflow_sdk/`) and of the contract they build against (`wit/plugin.wit`, 0.2.0, JSON
//! rows), so they build offline and never change under the author's feet.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/templates.rs"));
}

/// The language of a new plugin project: `rust`, `js` or `python`.
// Variant doc comments would become `--lang`'s help text in the command line.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    fn dir(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }
}

/// The kind of a new plugin: `source`, `destination`, `check` (a quality check) or `policy`
/// (an approval policy).
// Variant doc comments would become `--kind`'s help text in the command line.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Source,
    Destination,
    Check,
    Policy,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Destination => "destination",
            Kind::Check => "check",
            Kind::Policy => "policy",
        }
    }

    /// The contract's world a plugin of this kind implements (`wit/v*/plugin.wit`).
    fn world(self) -> &'static str {
        match self {
            Kind::Source => "source-plugin",
            Kind::Destination => "destination-plugin",
            Kind::Check => "quality-check-plugin",
            Kind::Policy => "approval-policy-plugin",
        }
    }
}

/// Where the Rust SDK crate is when none is given: this repository's, if the binary was
/// built from a checkout that still exists.
pub fn default_sdk_path() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    path.join("Cargo.toml")
        .is_file()
        .then(|| path.canonicalize().unwrap_or(path))
}

/// Whether `name` can name a plugin, a directory, an npm package and a Cargo package.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!("plugin name {name:?}: use lowercase letters, digits and '-', starting with a letter (e.g. my-crm)");
    }
    Ok(())
}

/// The files of a new project, as (path inside the project, contents).
pub fn render(
    lang: Lang,
    kind: Kind,
    name: &str,
    sdk_path: Option<&Path>,
) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    check_name(name)?;
    let crate_name = name.replace('-', "_");
    let sdk = match (lang, sdk_path) {
        // Written into Cargo.toml as a TOML string: backslashes and quotes escaped.
        (Lang::Rust, Some(p)) => p.display().to_string().replace('\\', "\\\\").replace('"', "\\\""),
        (Lang::Rust, None) => bail!("a Rust plugin depends on the backflow-plugin-sdk crate: pass --sdk PATH (the plugin-sdk directory of a backflow checkout)"),
        _ => String::new(),
    };
    let substitute = |bytes: &[u8]| -> Vec<u8> {
        match std::str::from_utf8(bytes) {
            Ok(text) => text
                .replace("{{name}}", name)
                .replace("{{crate_name}}", &crate_name)
                .replace("{{sdk_path}}", &sdk)
                .replace("{{world}}", kind.world())
                .into_bytes(),
            Err(_) => bytes.to_vec(),
        }
    };
    let prefix = format!("templates/{}/{}/", lang.dir(), kind.dir());
    let mut files: Vec<(PathBuf, Vec<u8>)> = embedded::FILES
        .iter()
        .filter_map(|(path, bytes)| {
            path.strip_prefix(&prefix)
                .map(|rest| (PathBuf::from(rest), substitute(bytes)))
        })
        .collect();
    if files.is_empty() {
        bail!(
            "this backflow binary has no {} template for a {} plugin",
            lang.dir(),
            kind.dir()
        );
    }
    // Files every kind of a language shares (`templates/LANG/common/`), unless the kind has
    // its own.
    let common = format!("templates/{}/common/", lang.dir());
    for (path, bytes) in embedded::FILES {
        if let Some(rest) = path.strip_prefix(&common) {
            if !files.iter().any(|(p, _)| p == Path::new(rest)) {
                files.push((PathBuf::from(rest), substitute(bytes)));
            }
        }
    }
    let copy = |from: &str, to: &str, files: &mut Vec<(PathBuf, Vec<u8>)>| {
        for (path, bytes) in embedded::FILES {
            // `from` is a file (copied to `to`) or a directory (its files go under `to`).
            match path
                .strip_prefix(from)
                .map(|rest| rest.trim_start_matches('/'))
            {
                Some("") => files.push((PathBuf::from(to), bytes.to_vec())),
                Some(rest) if from.ends_with('/') => {
                    files.push((Path::new(to).join(rest), bytes.to_vec()))
                }
                _ => {}
            }
        }
    };
    match lang {
        Lang::Rust => {}
        Lang::Js => {
            copy("plugin-sdk/js/backflow.js", "lib/backflow.js", &mut files);
            copy("plugin-sdk/js/testing.js", "lib/testing.js", &mut files);
            copy(
                "plugin-sdk/js/backflow.d.ts",
                "lib/backflow.d.ts",
                &mut files,
            );
            copy("wit/v0.2.0/plugin.wit", "wit/plugin.wit", &mut files);
        }
        Lang::Python => {
            copy(
                "plugin-sdk/python/backflow_sdk/",
                "backflow_sdk",
                &mut files,
            );
            copy("wit/v0.2.0/plugin.wit", "wit/plugin.wit", &mut files);
        }
    }
    Ok(files)
}

/// Writes a new project into `parent/name`, which must not exist yet. Returns its path.
/// `sdk_path` (Rust) may be relative to the current directory; it must hold the SDK crate.
pub fn create(
    lang: Lang,
    kind: Kind,
    name: &str,
    parent: &Path,
    sdk_path: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    // Cargo reads a path dependency relative to the new project, so it is made absolute.
    let sdk_path = match sdk_path.filter(|_| lang == Lang::Rust) {
        Some(p) => {
            let absolute = p
                .canonicalize()
                .with_context(|| format!("--sdk {}", p.display()))?;
            if !absolute.join("Cargo.toml").is_file() {
                bail!("--sdk {}: no Cargo.toml there; pass the plugin-sdk directory of a backflow checkout", p.display());
            }
            Some(absolute)
        }
        None => None,
    };
    let files = render(lang, kind, name, sdk_path.as_deref())?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let root = parent.join(name);
    // Creating the directory is the claim: it fails if it exists, even if it appeared
    // just now.
    if let Err(e) = std::fs::create_dir(&root) {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bail!(
                "{} already exists; choose another name or --dir",
                root.display()
            );
        }
        return Err(e).with_context(|| format!("creating {}", root.display()));
    }
    write_files(&root, files).inspect_err(|_| {
        // No half-written project left behind.
        let _ = std::fs::remove_dir_all(&root);
    })?;
    Ok(root)
}

fn write_files(root: &Path, files: Vec<(PathBuf, Vec<u8>)>) -> anyhow::Result<()> {
    for (path, bytes) in files {
        let target = root.join(&path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&target, &bytes).with_context(|| format!("writing {}", target.display()))?;
        #[cfg(unix)]
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", target.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_kind() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            for kind in [Kind::Source, Kind::Destination, Kind::Check, Kind::Policy] {
                let files = render(lang, kind, "my-plugin", Some(Path::new("/sdk"))).unwrap();
                assert!(
                    files.iter().any(|(p, _)| p == Path::new("README.md")),
                    "{lang:?} {kind:?} has no README"
                );
                let build_file = match lang {
                    Lang::Rust => "Cargo.toml",
                    Lang::Js => "package.json",
                    Lang::Python => "build.sh",
                };
                assert!(
                    files.iter().any(|(p, _)| p == Path::new(build_file)),
                    "{lang:?} {kind:?} has no {build_file}"
                );
                if lang == Lang::Python {
                    let (_, build) = files
                        .iter()
                        .find(|(p, _)| p == Path::new("build.sh"))
                        .unwrap();
                    assert!(
                        String::from_utf8_lossy(build)
                            .contains(&format!("WORLD={}\n", kind.world())),
                        "{lang:?} {kind:?}: build.sh builds another world"
                    );
                }
                for (path, bytes) in &files {
                    if let Ok(text) = std::str::from_utf8(bytes) {
                        for placeholder in
                            ["{{name}}", "{{crate_name}}", "{{sdk_path}}", "{{world}}"]
                        {
                            assert!(
                                !text.contains(placeholder),
                                "{} keeps {placeholder}",
                                path.display()
                            );
                        }
                    }
                }
                if lang != Lang::Rust {
                    assert!(files.iter().any(|(p, b)| p == Path::new("wit/plugin.wit")
                        && String::from_utf8_lossy(b).contains("package backflow:plugin@0.2.0")));
                }
            }
        }
    }

    #[test]
    fn names_must_suit_every_package_manager() {
        for bad in [
            "",
            "My-Plugin",
            "1st",
            "a b",
            "a/b",
            "trailing-",
            "x".repeat(65).as_str(),
        ] {
            assert!(
                render(Lang::Js, Kind::Check, bad, None).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(render(Lang::Rust, Kind::Check, "ok-name", None)
            .unwrap_err()
            .to_string()
            .contains("--sdk"));
    }

    #[test]
    fn an_existing_directory_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("backflow-scaffold-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("taken")).unwrap();
        let e = create(Lang::Python, Kind::Check, "taken", &dir, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = create(Lang::Rust, Kind::Destination, "fresh", &dir, Some(&dir))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Cargo.toml there"), "{e}");
        assert!(!dir.join("fresh").exists(), "nothing is left behind");
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        let root = create(Lang::Rust, Kind::Destination, "fresh", &dir, Some(&sdk)).unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!(
                "path = \"{}\"",
                sdk.canonicalize().unwrap().display()
            )),
            "{manifest}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
