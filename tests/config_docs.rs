//! The configuration has one source of truth, the clap declaration in
//! `src/config.rs`: the README's configuration table, `webhook-broker serve
//! --help` and (once it exists) `contrib/broker.env` must agree with it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_webhook-broker");

/// `webhook-broker serve --help` in an empty directory (no `.env`), with
/// only PATH and `env` set.
fn serve_help(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--help"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the binary runs");
    assert!(
        out.status.success(),
        "serve --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The text between `open` and the next `]` in `text`, for each occurrence.
fn brackets<'a>(text: &'a str, open: &str) -> Vec<&'a str> {
    text.match_indices(open)
        .map(|(i, _)| {
            let rest = &text[i + open.len()..];
            &rest[..rest.find(']').expect("a closing bracket")]
        })
        .collect()
}

/// Each option of the help text with a variable: the variable and the
/// default the help shows for it (`None` when it shows none).
fn help_variables(help: &str) -> BTreeMap<String, Option<String>> {
    // An option's entry starts at a line `  -x, --name` or `      --name`;
    // its help (on the same line, or the indented lines after it in the
    // long form) runs until the next entry or heading.
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            continue; // between paragraphs of one entry, or between entries
        } else if indent >= 2 && trimmed.starts_with('-') {
            entries.push(line.to_owned());
        } else if indent == 0 {
            entries.push(String::new()); // a heading or the usage: no option
        } else if let Some(entry) = entries.last_mut() {
            entry.push('\n');
            entry.push_str(line);
        }
    }
    let mut variables = BTreeMap::new();
    for entry in &entries {
        let envs = brackets(entry, "[env: ");
        let defaults = brackets(entry, "[default: ");
        match envs[..] {
            [] => continue,
            [env] => {
                assert!(
                    !env.contains('='),
                    "--help shows a value for {env}: [env: {env}]"
                );
                assert!(defaults.len() <= 1, "several defaults in {entry}");
                let previous = variables.insert(
                    env.to_owned(),
                    defaults.first().map(|d| d.trim().to_owned()),
                );
                assert!(previous.is_none(), "{env} is listed twice in --help");
            }
            _ => panic!("several variables in one entry: {entry}"),
        }
    }
    variables
}

/// The README's "## Configuration" table: variable and default, in order.
fn readme_table() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Configuration\n"))
        .expect("README.md has a \"## Configuration\" section");
    let mut lines = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'));
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let header = cells(lines.next().expect("the section has a table"));
    assert_eq!(
        header,
        ["Variable", "Default", "Meaning"],
        "the table's columns"
    );
    assert!(
        lines.next().is_some_and(|l| l.contains("---")),
        "the header is followed by its separator"
    );
    let unquote = |cell: &str| -> String {
        match cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
            Some(inner) if !inner.contains('`') => inner.to_owned(),
            _ => cell.to_owned(),
        }
    };
    let rows: Vec<(String, String)> = lines
        .map(|line| {
            let row = cells(line);
            assert!(row.len() >= 3, "a short row: {line}");
            (unquote(&row[0]), unquote(&row[1]))
        })
        .collect();
    assert!(!rows.is_empty(), "the table has rows");
    rows
}

#[test]
fn the_readme_table_and_serve_help_agree() {
    let help = serve_help(&[]);
    let documented = help_variables(&help);
    let table = readme_table();

    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for (var, default) in &table {
        if seen.insert(var.clone(), ()).is_some() {
            problems.push(format!("{var} has two rows in the README"));
        }
        match documented.get(var) {
            None => problems.push(format!("{var} is in the README but not in serve --help")),
            Some(None) => problems.push(format!("serve --help shows no default for {var}")),
            Some(Some(shown)) if shown != default => problems.push(format!(
                "{var}: the README's default is `{default}`, serve --help shows `{shown}`"
            )),
            Some(Some(_)) => {}
        }
    }
    for var in documented.keys() {
        if !table.iter().any(|(v, _)| v == var) {
            problems.push(format!("{var} is in serve --help but not in the README"));
        }
    }
    assert!(
        problems.is_empty(),
        "README.md's configuration table and `webhook-broker serve --help` disagree:\n  {}\n\n{help}",
        problems.join("\n  ")
    );
}

#[test]
fn serve_help_shows_no_value_from_the_environment() {
    let clean = serve_help(&[]);
    let variables = help_variables(&clean);
    assert!(variables.contains_key("BROKER_ADMIN_TOKEN"), "{clean}");
    let secrets: Vec<(String, String)> = variables
        .keys()
        .map(|var| (var.clone(), format!("sekrit-{var}-value")))
        .collect();
    let env: Vec<(&str, &str)> = secrets
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let with_env = serve_help(&env);
    assert!(!with_env.contains("sekrit"), "{with_env}");
    assert_eq!(with_env, clean, "the help depends on the environment");
}

#[test]
fn contrib_broker_env_names_every_variable() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/broker.env");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("note: {} does not exist yet; not checked", path.display());
            return;
        }
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    // `NAME=value`, or commented out as `# NAME=value`.
    let named: Vec<&str> = text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix('#').unwrap_or(line).trim_start();
            let (name, _) = line.split_once('=')?;
            let name = name.trim();
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .then_some(name)
        })
        .collect();
    let variables = help_variables(&serve_help(&[]));
    let missing: Vec<&String> = variables
        .keys()
        .filter(|v| !named.contains(&v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lacks {missing:?} (as `NAME=value` or `# NAME=value`)",
        path.display()
    );
    let unknown: Vec<&&str> = named
        .iter()
        .filter(|n| n.starts_with("BROKER_") && !variables.contains_key(**n))
        .collect();
    assert!(
        unknown.is_empty(),
        "{} names variables the broker does not read: {unknown:?}",
        path.display()
    );
}

#[test]
fn the_help_parser_reads_both_layouts_of_clap() {
    // The one-line layout, and the long one clap uses once an option's
    // help has several paragraphs.
    let help = "\
Usage: webhook-broker serve [OPTIONS]

Options:
  -h, --help  Print help

Configuration:
      --bind <HOST:PORT>      Where [env: BROKER_BIND] [default: 127.0.0.1:8080]
      --workers <N>           Threads [default: number of CPUs] [env: BROKER_DELIVERY_WORKERS]
      --lease <DURATION>
          How long a claim lasts.

          Renewed every third of it.

          [env: BROKER_LEASE]
          [default: 30s]
      --token <TOKEN>         The token [env: BROKER_ADMIN_TOKEN]
";
    let expected: BTreeMap<String, Option<String>> = [
        ("BROKER_BIND", Some("127.0.0.1:8080")),
        ("BROKER_DELIVERY_WORKERS", Some("number of CPUs")),
        ("BROKER_LEASE", Some("30s")),
        ("BROKER_ADMIN_TOKEN", None),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
    .collect();
    assert_eq!(help_variables(help), expected);
}
