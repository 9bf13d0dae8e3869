//! `--help` of the real binary: every command, subcommand, argument and option says what it
//! does (clap prints a bare name when an item has no help text), found by walking the
//! command tree from `backflow --help`.

use std::process::Command;

/// Variables that clap shows in help (`[env: NAME=value]`) or that would change it.
const ENV_VARS: &[&str] = &[
    "BACKFLOW_WORKSPACE",
    "BACKFLOW_USER",
    "BACKFLOW_PLUGINS",
    "BACKFLOW_SDK",
    "BACKFLOW_RECEIVER_HMAC_SECRET",
];

/// `backflow PATH... FLAG` (FLAG: `-h` for the short help, `--help` for the long one).
fn help_text(path: &[String], flag: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backflow"));
    cmd.args(path).arg(flag).env("RUST_LOG", "warn");
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("running backflow");
    assert!(
        out.status.success(),
        "backflow {} {flag} failed: {}",
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// One line of a help page's "Commands:", "Arguments:" or "Options:" section.
#[derive(Debug)]
struct Item {
    section: String,
    /// As clap prints it: `sync`, `<NAME>`, `[NAMES]...`, `-m, --message <MESSAGE>`.
    name: String,
    /// Everything after the name: on the same line, or on the indented lines below it
    /// (clap's layout for long help or long names), spec values (`[default: …]`) included.
    description: String,
}

/// The items of a help page, in both of clap's layouts: `  NAME  help` on one line, or
/// `  NAME` with the help indented on the lines below.
fn items(page: &str) -> Vec<Item> {
    let mut section: Option<String> = None;
    let mut items: Vec<Item> = Vec::new();
    for line in page.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent == 0 {
            section = match line.trim_end() {
                "Commands:" | "Arguments:" | "Options:" => {
                    Some(line.trim_end().trim_end_matches(':').to_string())
                }
                _ => None,
            };
            continue;
        }
        let Some(section) = &section else { continue };
        // Options without a short flag are indented to line up with `-h, --help`.
        if indent == 2 || (indent == 6 && trimmed.starts_with("--")) {
            let (name, description) = match trimmed.split_once("  ") {
                Some((name, rest)) => (name, rest.trim()),
                None => (trimmed.trim_end(), ""),
            };
            items.push(Item {
                section: section.clone(),
                name: name.to_string(),
                description: description.to_string(),
            });
        } else if indent >= 8 && !items.is_empty() {
            let item = items.last_mut().unwrap();
            item.description.push(' ');
            item.description.push_str(trimmed.trim_end());
        } else {
            panic!("a help line laid out in a way this test does not know: {line:?}\n{page}");
        }
    }
    items
}

/// A description without what clap adds to any item (`[default: …]`, `[env: …]`,
/// `[possible values: …]`, a "Possible values:" list): the item's own help text.
fn prose(description: &str) -> String {
    let mut text = description.to_string();
    if let Some(at) = text.find("Possible values:") {
        text.truncate(at);
    }
    for spec in [
        "[default: ",
        "[env: ",
        "[possible values: ",
        "[aliases: ",
        "[alias: ",
        "[short aliases: ",
        "[short alias: ",
    ] {
        while let Some(start) = text.find(spec) {
            let end = text[start..]
                .find(']')
                .map(|e| start + e + 1)
                .unwrap_or(text.len());
            text.replace_range(start..end, "");
        }
    }
    text.trim().to_string()
}

/// The complaints about one page: items whose help text is missing.
fn missing_help(page_name: &str, page: &str) -> Vec<String> {
    items(page)
        .iter()
        .filter(|item| prose(&item.description).is_empty())
        .map(|item| {
            format!(
                "`{page_name}`: {} `{}` has no help text",
                item.section, item.name
            )
        })
        .collect()
}

#[test]
fn every_command_argument_and_option_has_help_text() {
    let mut problems = Vec::new();
    let mut visited: Vec<String> = Vec::new();
    let mut checked_items = 0;
    let mut queue: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = queue.pop() {
        let shown = format!("backflow {}", path.join(" "));
        visited.push(path.join(" "));
        for flag in ["-h", "--help"] {
            let page = help_text(&path, flag);
            let page_name = format!("{} {flag}", shown.trim_end());
            problems.extend(missing_help(&page_name, &page));
            let page_items = items(&page);
            checked_items += page_items.len();
            // `--as` is global: wherever it shows, it says where else the user can come from.
            for item in page_items.iter().filter(|i| i.name.starts_with("--as ")) {
                if !prose(&item.description).contains("BACKFLOW_USER")
                    || !item.description.contains("[env: BACKFLOW_USER")
                {
                    problems.push(format!(
                        "`{page_name}`: --as does not name BACKFLOW_USER: {:?}",
                        item.description
                    ));
                }
            }
            if path.is_empty() {
                assert!(
                    page_items.iter().any(|i| i.name.starts_with("--as ")),
                    "`{page_name}` lists no --as option:\n{page}"
                );
            }
            if flag == "--help" {
                for item in page_items.iter().filter(|i| i.section == "Commands") {
                    // `help` is clap's own; its help pages say nothing of backflow.
                    if item.name != "help" {
                        let mut sub = path.clone();
                        sub.push(item.name.clone());
                        queue.push(sub);
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "help text missing or incomplete:\n{}",
        problems.join("\n")
    );
    // The walk found the tree, not just the top (so an empty parse cannot pass).
    for expected in [
        "change list",
        "change show",
        "change approve",
        "change reject",
        "sync run",
        "runs undo",
        "rows history",
        "plugin conformance",
        "token revoke",
        "receiver",
    ] {
        assert!(
            visited.iter().any(|v| v == expected),
            "the walk never reached `backflow {expected}` (visited: {visited:?})"
        );
    }
    assert!(checked_items > 200, "only {checked_items} items checked");
}

/// The checker itself: an item without help is caught in either of clap's layouts, and
/// spec values alone do not count as help.
#[test]
fn help_checker_catches_an_item_without_text() {
    let one_line = "About\n\nUsage: backflow x [OPTIONS] <NAME>\n\nArguments:\n  <NAME>  The name\n\n\
                    Options:\n      --json                   \n      --limit <LIMIT>          [default: 20]\n  \
                    -h, --help                   Print help\n";
    let problems = missing_help("x", one_line);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("`--json`"), "{problems:?}");
    assert!(problems[1].contains("`--limit <LIMIT>`"), "{problems:?}");

    let next_line = "About\n\nUsage: backflow x [OPTIONS]\n\nCommands:\n  run   Run it\n  help  Print this message\n\n\
                     Options:\n      --offline-config <OFFLINE_CONFIG>\n          A config whose remote cannot be reached\n\n\
                     \x20     --json\n\n      --lang <LANG>\n          [possible values: rust, js]\n\n  \
                     -h, --help\n          Print help (see a summary with '-h')\n";
    let problems = missing_help("x", next_line);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("`--json`"), "{problems:?}");
    assert!(problems[1].contains("`--lang <LANG>`"), "{problems:?}");
    assert_eq!(items(next_line).len(), 6);
}
