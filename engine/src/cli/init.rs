//! `backflow init`: a working example workspace (the quickstart) with the first-party plugins.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The quickstart's configuration and data, built into the binary.
const EXAMPLE_WORKSPACE: &str = include_str!("../../../examples/quickstart/backflow.toml");
const EXAMPLE_CUSTOMERS: &str = include_str!("../../../examples/quickstart/data/customers.csv");
/// First-party plugins `init` copies into a new workspace: every one the README's examples
/// name (sources, destinations, the checks and the policies), so each example works there.
const FIRST_PARTY_PLUGINS: &[&str] = &[
    "file_source.wasm",
    "postgres.wasm",
    "postgres_destination.wasm",
    "webhook.wasm",
    "noop_destination.wasm",
    "checks.wasm",
    "policies.wasm",
];

/// Creates the example workspace in `dir`, copying the first-party plugins from `plugins`
/// (default: the `plugins` directory beside the binary's directory).
pub(crate) fn init(dir: &Path, plugins: Option<PathBuf>, force: bool) -> anyhow::Result<ExitCode> {
    let plugins_from = match plugins {
        Some(p) => p,
        None => {
            let exe = std::env::current_exe().context("locating the backflow binary")?;
            exe.parent()
                .and_then(|d| d.parent())
                .map(|d| d.join("plugins"))
                .context("locating the default plugins directory")?
        }
    };
    for name in FIRST_PARTY_PLUGINS {
        if !plugins_from.join(name).is_file() {
            bail!(
                "plugin {name} not found in {} (build the plugins with scripts/build-plugins, or pass --plugins DIR)",
                plugins_from.display()
            );
        }
    }
    let main_file = dir.join("backflow.toml");
    if main_file.exists() && !force {
        bail!(
            "{} already exists (use --force to overwrite)",
            main_file.display()
        );
    }
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::create_dir_all(dir.join("plugins"))?;
    std::fs::write(&main_file, EXAMPLE_WORKSPACE)?;
    std::fs::write(dir.join("data/customers.csv"), EXAMPLE_CUSTOMERS)?;
    std::fs::write(dir.join(".gitignore"), ".backflow/\n")?;
    for name in FIRST_PARTY_PLUGINS {
        std::fs::copy(plugins_from.join(name), dir.join("plugins").join(name))
            .with_context(|| format!("copying {name}"))?;
    }
    println!("created a workspace in {}", dir.display());
    println!("next:");
    println!("  backflow receiver --port 8085 &            # a local endpoint to sync into");
    println!(
        "  CRM_TOKEN=demo backflow --workspace {} sync run customers_to_crm",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
