//! The README is tested (issue 37, item 1): every ```sh and ```toml block of README.md runs,
//! in order, in one temporary directory standing in for the reader's checkout, against the
//! workspace the README's own `backflow init my-syncs` creates there. The examples are read
//! from README.md itself, so the two cannot drift apart.
//!
//! - `sh` blocks: each command (a line, or lines joined by a trailing `\`) runs in its own
//!   `bash`, carrying the working directory and exported variables over from the command
//!   before (so `cd` and `export` work as in one shell). `backflow` and
//!   `target/release/backflow` are the binary under test; `init` copies the plugins from
//!   `BACKFLOW_PLUGINS`, set to the test's plugins directory. A command ending in `&` runs in
//!   the background (in its own process group, killed at the end) and the harness waits for
//!   the port it listens on. Every command must exit 0 unless an annotation says otherwise.
//! - `toml` blocks: merged into `my-syncs/backflow.toml` (tables merge key by key, a block's
//!   `[[array]]` entries are appended, other values replace), then the workspace must load
//!   (`sync list`) and every sync the block defines must plan (`sync plan`).
//! - The README's receiver and service ports (8085, 8080) are rewritten to free ports on
//!   127.0.0.1, consistently in commands and TOML.
//! - Other fences are not run: ```rust (the plugin SDK's example) and ```text (output samples).
//!   A fence without a language is an error: an output sample must say ```text.
//!
//! Annotations, each an HTML comment on a line of its own directly above a block (several
//! may stack):
//!
//! - `<!-- readme-test: skip: REASON -->`: the block is not run (the test prints the list).
//! - `<!-- readme-test: setup: SHELL -->`: runs before the block (for a skipped block, in its
//!   place: a stand-in producing what later blocks use).
//! - `<!-- readme-test: let NAME = SHELL -->`: the word NAME in the block (a placeholder such
//!   as `RUN_ID`) is replaced by what SHELL prints.
//! - `<!-- readme-test: expect-exit N: TEXT -->`: commands containing TEXT (every command of
//!   the block without `: TEXT`) must exit N.
//! - `<!-- readme-test: background: TEXT -->`: commands containing TEXT run in the background
//!   (a service the README runs in a terminal of its own).
//! - `<!-- readme-test: rewrite: FROM => TO -->`: replaces FROM by TO in the block (an
//!   address outside this machine by a loopback one).
//! - `<!-- readme-test: replace: TABLE -->` (toml): TABLE (dotted) replaces the workspace's
//!   table of that name instead of merging into it.
//!
//! The compiled plugins come from `$BACKFLOW_TEST_TARGET/plugins` (default `target/plugins`,
//! filled by `scripts/build-plugins`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports the README uses for the receiver and the service.
const README_PORTS: &[u16] = &[8085, 8080];

/// The workspace the README creates with `backflow init my-syncs`.
const WORKSPACE: &str = "my-syncs";

/// Where the build's outputs are: `$BACKFLOW_TEST_TARGET`, or the checkout's `target/`.
fn test_target() -> PathBuf {
    std::env::var_os("BACKFLOW_TEST_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn readme_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

#[derive(Debug, Clone)]
enum Directive {
    Skip(String),
    Setup(String),
    Let(String, String),
    ExpectExit(i32, Option<String>),
    Background(String),
    Rewrite(String, String),
    Replace(String),
}

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    text: String,
    directives: Vec<Directive>,
}

fn parse_directive(line: usize, body: &str) -> Directive {
    let body = body.trim();
    let bad = |what: &str| -> ! { panic!("README.md:{line}: {what} in annotation {body:?}") };
    if let Some(reason) = body.strip_prefix("skip:") {
        if reason.trim().is_empty() {
            bad("a skip without its reason");
        }
        Directive::Skip(reason.trim().to_string())
    } else if let Some(cmd) = body.strip_prefix("setup:") {
        Directive::Setup(cmd.trim().to_string())
    } else if let Some(rest) = body.strip_prefix("let ") {
        let (name, cmd) = rest.split_once('=').unwrap_or_else(|| bad("no `=`"));
        Directive::Let(name.trim().to_string(), cmd.trim().to_string())
    } else if let Some(rest) = body.strip_prefix("expect-exit ") {
        let (code, text) = match rest.split_once(':') {
            Some((code, text)) => (code, Some(text.trim().to_string())),
            None => (rest, None),
        };
        let code = code
            .trim()
            .parse()
            .unwrap_or_else(|_| bad("not an exit code"));
        Directive::ExpectExit(code, text)
    } else if let Some(text) = body.strip_prefix("background:") {
        Directive::Background(text.trim().to_string())
    } else if let Some(rest) = body.strip_prefix("rewrite:") {
        let (from, to) = rest.split_once("=>").unwrap_or_else(|| bad("no `=>`"));
        Directive::Rewrite(from.trim().to_string(), to.trim().to_string())
    } else if let Some(table) = body.strip_prefix("replace:") {
        Directive::Replace(table.trim().to_string())
    } else {
        bad("unknown directive")
    }
}

/// Every fenced block of the README, with the annotations above it.
fn blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut pending: Vec<Directive> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if let Some(body) = trimmed
            .strip_prefix("<!-- readme-test:")
            .and_then(|b| b.strip_suffix("-->"))
        {
            pending.push(parse_directive(i + 1, body));
            i += 1;
            continue;
        }
        if let Some(lang) = trimmed.strip_prefix("```") {
            let lang = lang.trim().to_string();
            assert!(
                !lang.is_empty(),
                "README.md:{}: a fence without a language (an output sample is ```text)",
                i + 1
            );
            let start = i;
            let mut text = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                text.push_str(lines[i]);
                text.push('\n');
                i += 1;
            }
            assert!(i < lines.len(), "README.md:{}: unclosed fence", start + 1);
            out.push(Block {
                line: start + 1,
                lang,
                text,
                directives: std::mem::take(&mut pending),
            });
            i += 1;
            continue;
        }
        assert!(
            pending.is_empty(),
            "README.md:{}: readme-test annotations must stand directly above a fenced block",
            i + 1
        );
        i += 1;
    }
    assert!(
        pending.is_empty(),
        "README.md: annotations after the last block"
    );
    out
}

/// Replaces `word` where it stands as a whole word (not inside a longer name or number).
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(word) {
        let before = rest[..pos].chars().next_back();
        let after = rest[pos + word.len()..].chars().next();
        out.push_str(&rest[..pos]);
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[pos + word.len()..];
    }
    out.push_str(rest);
    out
}

/// A command without its trailing `# comment` (a `#` outside quotes, after a blank).
fn strip_comment(cmd: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in cmd.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return cmd[..i].trim_end(),
            _ => {}
        }
        prev = c;
    }
    cmd.trim_end()
}

/// The block's commands: lines joined over trailing backslashes, without blanks and comments.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let cmd = std::mem::take(&mut current);
        let t = cmd.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push(t.to_string());
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a command printed, and its exit code.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// One reader's shell session: a checkout directory, a bin directory with `backflow`, and
/// the working directory and exported variables carried from command to command.
struct Session {
    root: tempfile::TempDir,
    _bin: tempfile::TempDir,
    state: tempfile::TempDir,
    path_var: String,
    ports: BTreeMap<u16, u16>,
    background: Vec<(String, Child, PathBuf)>,
}

impl Session {
    fn new() -> Session {
        let root = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_backflow"), bin.path().join("backflow"))
            .unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(
            state.path().join("cwd"),
            root.path().to_str().unwrap().as_bytes(),
        )
        .unwrap();
        std::fs::write(state.path().join("env"), "").unwrap();
        let path_var = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let ports = README_PORTS.iter().map(|&p| (p, free_port())).collect();
        Session {
            root,
            _bin: bin,
            state,
            path_var,
            ports,
            background: Vec::new(),
        }
    }

    fn workspace(&self) -> PathBuf {
        self.root.path().join(WORKSPACE)
    }

    /// The README's text as it runs here: the binary by name, free ports, the annotations'
    /// rewrites.
    fn rewrite(&self, text: &str, directives: &[Directive]) -> String {
        let mut text = text.replace("target/release/backflow", "backflow");
        for d in directives {
            if let Directive::Rewrite(from, to) = d {
                assert!(
                    text.contains(from.as_str()),
                    "rewrite: {from:?} not in the block"
                );
                text = text.replace(from.as_str(), to);
            }
        }
        for (from, to) in &self.ports {
            text = replace_word(&text, &from.to_string(), &to.to_string());
        }
        text
    }

    fn command(&self, script: &str) -> Command {
        let target = test_target();
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .env("PATH", &self.path_var)
            .env("BACKFLOW_PLUGINS", target.join("plugins"))
            .env("BACKFLOW_TEST_TARGET", &target)
            .env("XDG_CACHE_HOME", target.join("test-cache"))
            .env("RUST_LOG", "warn")
            .env_remove("BACKFLOW_USER")
            .env_remove("BACKFLOW_WORKSPACE")
            .env_remove("CRM_TOKEN")
            .env_remove("CARGO_TARGET_DIR")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` in the session's shell state and saves the state it leaves.
    fn run(&self, cmd: &str) -> Ran {
        let s = self.state.path().display();
        let script = format!(
            "cd \"$(cat '{s}/cwd')\" && . '{s}/env'\n{cmd}\n__rc=$?\npwd > '{s}/cwd'\nexport -p > '{s}/env'\nexit $__rc\n"
        );
        let out = self.command(&script).output().expect("running bash");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// Starts `cmd` in the background (its own process group) and waits for the README ports
    /// it names to accept connections.
    fn start(&mut self, cmd: &str) -> Result<(), String> {
        let s = self.state.path().display();
        let log = self
            .state
            .path()
            .join(format!("background-{}.log", self.background.len()));
        let script = format!("cd \"$(cat '{s}/cwd')\" && . '{s}/env'\nexec {cmd}\n");
        let mut command = self.command(&script);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .map_err(|e| format!("could not start: {e}"))?;
        let ports: Vec<u16> = self
            .ports
            .values()
            .copied()
            .filter(|p| cmd.contains(&p.to_string()))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(180);
        for port in &ports {
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok() {
                    break;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "exited ({status}) before listening on {port}\nstdout: {}\nstderr: {}",
                        std::fs::read_to_string(&log).unwrap_or_default(),
                        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!("not listening on {port} after 180 s"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if ports.is_empty() {
            std::thread::sleep(Duration::from_secs(1));
        }
        self.background.push((cmd.to_string(), child, log));
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.background {
            // The process group we created for it: the command and anything it started.
            unsafe {
                libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

/// Merges `block` into `into`: tables key by key, arrays of tables appended, other values
/// replaced; a table named in `replace` (dotted path) is replaced whole.
fn merge(into: &mut toml::Table, block: toml::Table, path: &str, replace: &[String]) {
    for (key, value) in block {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new))
                if !replace.contains(&here) =>
            {
                merge(old, new, &here, replace)
            }
            (Some(toml::Value::Array(old)), toml::Value::Array(new))
                if new.iter().all(|v| v.is_table()) && old.iter().all(|v| v.is_table()) =>
            {
                old.extend(new)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn report(failures: &mut Vec<String>, line: usize, cmd: &str, what: &str, ran: Option<&Ran>) {
    let mut msg = format!("README.md:{line}: `{cmd}`: {what}");
    if let Some(r) = ran {
        let _ = write!(
            msg,
            "\n  exit code {}\n  stdout: {}\n  stderr: {}",
            r.code,
            r.stdout.trim_end().replace('\n', "\n          "),
            r.stderr.trim_end().replace('\n', "\n          ")
        );
    }
    eprintln!("FAILED {msg}\n");
    failures.push(msg);
}

fn expected_exit(directives: &[Directive], cmd: &str) -> i32 {
    directives
        .iter()
        .find_map(|d| match d {
            Directive::ExpectExit(code, Some(text)) if cmd.contains(text.as_str()) => Some(*code),
            Directive::ExpectExit(code, None) => Some(*code),
            _ => None,
        })
        .unwrap_or(0)
}

/// Runs one command of a block, reporting an unexpected exit code.
fn step(s: &mut Session, failures: &mut Vec<String>, b: &Block, cmd: &str) {
    let background = strip_comment(cmd)
        .strip_suffix('&')
        .filter(|c| !c.ends_with('&'))
        .map(str::trim_end)
        .map(String::from)
        .or_else(|| {
            b.directives.iter().find_map(|d| match d {
                Directive::Background(text) if cmd.contains(text.as_str()) => {
                    Some(strip_comment(cmd).to_string())
                }
                _ => None,
            })
        });
    eprintln!("README.md:{}: $ {cmd}", b.line);
    if let Some(bg) = background {
        if let Err(e) = s.start(&bg) {
            report(
                failures,
                b.line,
                cmd,
                &format!("in the background: {e}"),
                None,
            );
        }
        return;
    }
    let ran = s.run(cmd);
    let want = expected_exit(&b.directives, cmd);
    if ran.code != want {
        report(
            failures,
            b.line,
            cmd,
            &format!("exit code {} (expected {want})", ran.code),
            Some(&ran),
        );
    }
}

fn run_toml(s: &mut Session, failures: &mut Vec<String>, b: &Block, text: &str) {
    let file = s.workspace().join("backflow.toml");
    let block: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => return report(failures, b.line, "(toml)", &format!("not TOML: {e}"), None),
    };
    let Ok(current) = std::fs::read_to_string(&file) else {
        return report(
            failures,
            b.line,
            "(toml)",
            &format!("no workspace to merge into: {} is missing", file.display()),
            None,
        );
    };
    let mut table: toml::Table = toml::from_str(&current).expect("the workspace's TOML");
    let replace: Vec<String> = b
        .directives
        .iter()
        .filter_map(|d| match d {
            Directive::Replace(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let syncs: Vec<String> = block
        .get("syncs")
        .and_then(|v| v.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    merge(&mut table, block, "", &replace);
    std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    // With [users], commands need a user, and runs (plans too) take the published
    // configuration: the block's edits are planned as the working copy (`--draft`).
    let admin = table.get("users").and_then(|u| u.as_table()).and_then(|u| {
        u.iter()
            .find(|(_, v)| v.get("role").and_then(|r| r.as_str()) == Some("admin"))
            .map(|(name, _)| name.clone())
    });
    let (as_user, draft) = match &admin {
        Some(user) => (format!(" --as {user}"), " --draft"),
        None => (String::new(), ""),
    };
    let ws = WORKSPACE;
    let mut checks = vec![format!("backflow --workspace {ws}{as_user} sync list")];
    checks.extend(
        syncs
            .iter()
            .map(|sync| format!("backflow --workspace {ws}{as_user} sync plan {sync}{draft}")),
    );
    for cmd in checks {
        let full = format!("(cd '{}' && {cmd})", s.root.path().display());
        eprintln!("README.md:{}: (toml merged) $ {cmd}", b.line);
        let ran = s.run(&full);
        let want = expected_exit(&b.directives, &cmd);
        if ran.code != want {
            report(
                failures,
                b.line,
                &cmd,
                &format!(
                    "after merging this block into {ws}/backflow.toml: exit code {} (expected {want})",
                    ran.code
                ),
                Some(&ran),
            );
            break;
        }
    }
}

/// `text` with the block's `let` placeholders it names replaced by their values (each
/// evaluated once per block, when first needed).
fn resolve(
    s: &Session,
    failures: &mut Vec<String>,
    b: &Block,
    values: &mut BTreeMap<String, String>,
    text: &str,
) -> String {
    let mut text = text.to_string();
    for d in &b.directives {
        let Directive::Let(name, cmd) = d else {
            continue;
        };
        if replace_word(&text, name, "\u{0}") == text {
            continue;
        }
        if !values.contains_key(name) {
            let cmd = s.rewrite(cmd, &[]);
            let r = s.run(&cmd);
            let value = r.stdout.trim().to_string();
            if r.code != 0 || value.is_empty() || value == "null" {
                report(
                    failures,
                    b.line,
                    &cmd,
                    &format!("let {name}: no value"),
                    Some(&r),
                );
            }
            values.insert(name.clone(), value);
        }
        text = replace_word(&text, name, &values[name]);
    }
    text
}

#[test]
fn readme_examples_work_on_a_fresh_init_workspace() {
    let plugins = test_target().join("plugins");
    assert!(
        plugins.join("webhook.wasm").is_file(),
        "{} has no plugins: run scripts/build-plugins (or set BACKFLOW_TEST_TARGET)",
        plugins.display()
    );
    let readme = std::fs::read_to_string(readme_path()).unwrap();
    let blocks = blocks(&readme);
    let mut s = Session::new();
    eprintln!(
        "README examples in {} (ports {:?})",
        s.root.path().display(),
        s.ports
    );
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    let mut ran = 0;
    for b in &blocks {
        if b.lang != "sh" && b.lang != "toml" {
            continue;
        }
        let skip = b.directives.iter().find_map(|d| match d {
            Directive::Skip(reason) => Some(reason.clone()),
            _ => None,
        });
        for d in &b.directives {
            if let Directive::Setup(cmd) = d {
                let cmd = s.rewrite(cmd, &[]);
                eprintln!("README.md:{}: (setup) $ {cmd}", b.line);
                let r = s.run(&cmd);
                if r.code != 0 {
                    report(&mut failures, b.line, &cmd, "setup failed", Some(&r));
                }
            }
        }
        if let Some(reason) = skip {
            let first = b.text.lines().next().unwrap_or_default().trim().to_string();
            skipped.push(format!(
                "README.md:{} ({}, `{first}`): {reason}",
                b.line, b.lang
            ));
            continue;
        }
        ran += 1;
        let text = s.rewrite(&b.text, &b.directives);
        let mut lets = BTreeMap::new();
        if b.lang == "toml" {
            let text = resolve(&s, &mut failures, b, &mut lets, &text);
            run_toml(&mut s, &mut failures, b, &text);
        } else {
            for cmd in commands(&text) {
                // Placeholders are resolved when the command naming them runs, after the
                // block's commands before it.
                let cmd = resolve(&s, &mut failures, b, &mut lets, &cmd);
                step(&mut s, &mut failures, b, &cmd);
            }
        }
    }
    eprintln!(
        "\n{ran} README blocks run, {} skipped:\n  {}",
        skipped.len(),
        skipped.join("\n  ")
    );
    for (cmd, child, log) in &mut s.background {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "background `{cmd}` ended early ({status}): {}",
                std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} README example(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn readme_annotations_parse_and_every_fence_has_a_language() {
    let readme = std::fs::read_to_string(readme_path()).unwrap();
    let blocks = blocks(&readme);
    assert!(blocks.iter().any(|b| b.lang == "sh"));
    assert!(blocks.iter().any(|b| b.lang == "toml"));
    for b in &blocks {
        assert!(
            ["sh", "toml", "rust", "text"].contains(&b.lang.as_str()),
            "README.md:{}: fence language {:?} (sh, toml, rust or text)",
            b.line,
            b.lang
        );
        for d in &b.directives {
            if matches!(d, Directive::Replace(_)) {
                assert_eq!(
                    b.lang, "toml",
                    "README.md:{}: replace: on a toml block",
                    b.line
                );
            }
        }
    }
}
