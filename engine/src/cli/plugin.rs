//! `backflow plugin …`: list and inspect plugins, create a plugin project from a template
//! (`new`), and run the conformance suite on a plugin file.

use super::args::PluginCommand;
use super::session::open_app;
use anyhow::Context as _;
use backflow::host::{Plugin, PluginHost};
use backflow::toolkit::{conformance, scaffold};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs one `plugin` subcommand.
pub(crate) async fn run(
    workspace: &Path,
    user: Option<&str>,
    command: PluginCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Inspect { file, json } => {
            // Compiled code is cached (a large component takes 10-30 s to compile): in the
            // workspace's state directory when there is a workspace, else the user's cache.
            let host = PluginHost::new(compile_cache_dir(workspace))?;
            let plugin = host.load(&file).await?;
            print_plugin(&plugin, json)?;
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::New {
            name,
            lang,
            kind,
            dir,
            sdk,
        } => new(&name, lang, kind, &dir, sdk),
        PluginCommand::Conformance {
            file,
            config,
            query,
            offline_config,
            grant_network,
            grant_env,
            rows,
            fault_config,
            json,
        } => {
            let options = conformance::Options {
                config: read_config(&config, "config")?,
                query,
                offline_config: offline_config
                    .as_deref()
                    .map(|c| read_config(c, "offline-config"))
                    .transpose()?,
                grants: backflow::domain::Grants {
                    files: vec![],
                    network: grant_network,
                    env: grant_env,
                },
                limits: backflow::domain::Limits::default(),
                rows: rows.as_deref().map(conformance::read_rows).transpose()?,
                fault_config: fault_config
                    .as_deref()
                    .map(|c| read_config(c, "fault-config"))
                    .transpose()?,
            };
            let host = PluginHost::new(compile_cache_dir(workspace))?;
            let report = conformance::run(&host, &file, &options).await;
            print_conformance(&report, json)?;
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PluginCommand::List { json } => {
            let (app, actor) = open_app(workspace, user)?;
            let scan = app.list_plugins(&actor).await?;
            print_plugin_list(&scan, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `plugin new`: writes the project and says how to build and test it.
fn new(
    name: &str,
    lang: scaffold::Lang,
    kind: scaffold::Kind,
    dir: &Path,
    sdk: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let sdk = sdk.or_else(scaffold::default_sdk_path);
    let root = scaffold::create(lang, kind, name, dir, sdk.as_deref())?;
    println!("created {}", root.display());
    let steps = match lang {
        scaffold::Lang::Rust => "./test.sh (it builds, then runs the conformance suite)",
        scaffold::Lang::Js => "npm install && npm run build, then npm test",
        scaffold::Lang::Python => "./build.sh, then ./test.sh",
    };
    println!(
        "next: cd {} && {steps}; its README.md says more",
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A config flag's JSON text: given inline, or `@FILE` to read it from a file. `what` names
/// the flag in errors.
fn read_config(text: &str, what: &str) -> anyhow::Result<String> {
    let text = match text.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("--{what}: reading {path}"))?
        }
        None => text.to_string(),
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .with_context(|| format!("--{what}: not JSON"))?;
    Ok(text)
}

/// Where `plugin inspect` and `plugin conformance` cache compiled plugins: the per-user
/// cache every workspace shares (`host::user_cache_dir`), else the workspace's state
/// directory, else nowhere.
fn compile_cache_dir(workspace: &Path) -> Option<PathBuf> {
    backflow::host::user_cache_dir().or_else(|| {
        backflow::workspace::Workspace::load(workspace)
            .ok()
            .map(|ws| ws.state_dir.join("cache"))
    })
}

/// `plugin inspect`: a plugin's spec, contract, hash and config schema.
fn print_plugin(plugin: &Plugin, json: bool) -> anyhow::Result<()> {
    let schema: serde_json::Value = serde_json::from_str(&plugin.spec.config_schema)
        .unwrap_or(serde_json::Value::String(plugin.spec.config_schema.clone()));
    let info = serde_json::json!({
        "file": plugin.path,
        "name": plugin.spec.name,
        "version": plugin.spec.version,
        "kind": plugin.spec.kind,
        "description": plugin.spec.description,
        "wit": format!("backflow:plugin@{}", plugin.contract),
        "row_encoding": plugin.row_encoding.as_str(),
        "capabilities": plugin.capabilities,
        "sha256": plugin.hash,
        "operations": plugin.spec.operations,
        "max_batch_size": plugin.spec.max_batch_size,
        "default_rate_limit": plugin.spec.default_rate_limit,
        "config_schema": schema,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!(
            "{} {} ({} plugin)",
            plugin.spec.name, plugin.spec.version, plugin.spec.kind
        );
        println!("  {}", plugin.spec.description);
        println!("  file:      {}", plugin.path.display());
        println!(
            "  contract:  backflow:plugin@{} ({} rows)",
            plugin.contract,
            plugin.row_encoding.as_str()
        );
        if !plugin.capabilities.is_empty() {
            let capabilities: Vec<&str> = plugin.capabilities.iter().map(|c| c.as_str()).collect();
            println!("  capabilities: {}", capabilities.join(", "));
        }
        println!("  sha256:    {}", plugin.hash);
        if plugin.spec.kind == backflow_plugin_sdk::PluginKind::Destination {
            println!(
                "  operations: {}",
                plugin
                    .spec
                    .operations
                    .iter()
                    .map(|o| o.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let max = if plugin.spec.max_batch_size == 0 {
                "unlimited".to_string()
            } else {
                plugin.spec.max_batch_size.to_string()
            };
            println!("  max batch:  {max}");
        }
        println!(
            "  config schema:\n{}",
            indent(&serde_json::to_string_pretty(&schema)?, 4)
        );
    }
    Ok(())
}

/// `plugin conformance`: one line per check, then whether the plugin conforms.
fn print_conformance(report: &conformance::Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    match (&report.plugin, report.kind, &report.contract) {
        (Some(name), Some(kind), Some(contract)) => {
            println!(
                "{name} ({} plugin, contract {contract}, {} rows): {}",
                kind.as_str(),
                report.row_encoding.as_deref().unwrap_or("?"),
                report.file
            )
        }
        _ => println!("{}", report.file),
    }
    for check in &report.checks {
        if check.detail.is_empty() {
            println!("  {:<4} {}", check.outcome.label(), check.name);
        } else {
            println!(
                "  {:<4} {}: {}",
                check.outcome.label(),
                check.name,
                check.detail
            );
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.outcome == conformance::Outcome::Fail)
        .count();
    if failed == 0 {
        println!("conforms: {} checks, none failed", report.checks.len());
    } else {
        println!(
            "does not conform: {failed} of {} checks failed",
            report.checks.len()
        );
    }
    Ok(())
}

/// `plugin list`: the plugins found, and (on stderr) the files skipped and why.
fn print_plugin_list(scan: &backflow::plugins::Scan, json: bool) -> anyhow::Result<()> {
    if json {
        let plugins: Vec<_> = scan
            .plugins
            .iter()
            .map(|p| serde_json::json!({"name": p.spec.name, "version": p.spec.version, "kind": p.spec.kind, "contract": p.contract.to_string(), "row_encoding": p.row_encoding.as_str(), "file": p.path, "sha256": p.hash}))
            .collect();
        let problems: Vec<_> = scan
            .problems
            .iter()
            .map(|(f, m)| serde_json::json!({"file": f, "error": m}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"plugins": plugins, "problems": problems})
            )?
        );
    } else {
        println!(
            "{:<20} {:<16} {:<9} {:<9} FILE",
            "NAME", "KIND", "VERSION", "CONTRACT"
        );
        for p in &scan.plugins {
            println!(
                "{:<20} {:<16} {:<9} {:<9} {}",
                p.spec.name,
                p.spec.kind.as_str(),
                p.spec.version,
                p.contract.to_string(),
                p.path.display()
            );
        }
        for (file, problem) in &scan.problems {
            eprintln!("skipped {}: {problem}", file.display());
        }
    }
    Ok(())
}

/// `text` with every line indented by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
