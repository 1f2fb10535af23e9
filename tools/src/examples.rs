//! `--help` examples for every command, kept in one table and attached to the clap commands at
//! start (so the files defining the commands stay about their arguments). A unit test checks
//! that every command has examples and that every example parses.

use clap::Command;

/// (command path below `strata`, examples). Each example line is a shell command line.
const EXAMPLES: &[(&[&str], &str)] = &[
    (
        &[],
        "strata topic create orders --partitions 4 --replication-factor 3\n\
         seq 1 5 | strata produce orders\n\
         strata consume orders --from -10 --format '%p/%o %k %v\\n'\n\
         strata --brokers 10.0.0.1:9092 cluster info\n\
         strata completion bash > ~/.local/share/bash-completion/completions/strata",
    ),
    (
        &["export"],
        "strata export orders --out orders.parquet\n\
         strata export orders --from time:2026-11-30T00:00:00Z --to time:2026-12-01T00:00:00Z --out day.parquet\n\
         strata export orders --partitions 0,2 --from offset:1000 --to offset:2000 --out part.jsonl\n\
         strata export orders --format csv --value-format text --out orders.txt",
    ),
    (
        &["topic"],
        "strata topic create orders --partitions 4 --replication-factor 3\n\
         strata topic list\n\
         strata topic describe orders --format json",
    ),
    (
        &["topic", "create"],
        "strata topic create orders --partitions 4 --replication-factor 3\n\
         strata topic create audit --retention-ms 604800000 --segment-bytes 67108864",
    ),
    (
        &["topic", "list"],
        "strata topic list\nstrata topic list --format json",
    ),
    (
        &["topic", "describe"],
        "strata topic describe orders\nstrata topic describe orders --format json",
    ),
    (&["topic", "delete"], "strata topic delete orders"),
    (
        &["topic", "alter"],
        "strata topic alter orders --retention-ms 7d\n\
         strata topic alter orders --retention-bytes 1GiB\n\
         strata topic alter orders --retention-ms unlimited",
    ),
    (
        &["topic", "add-partitions"],
        "strata topic add-partitions orders 8",
    ),
    (
        &["produce"],
        "seq 1 5 | strata produce orders\n\
         strata produce orders events.txt --key-separator : --on-error skip\n\
         strata produce orders events.jsonl --input-format json --print-acks\n\
         strata produce orders --input-format '%k\\t%v' --header source=cli < pairs.tsv\n\
         strata produce orders --delimiter '\\0' records.bin",
    ),
    (
        &["consume"],
        "strata consume orders\n\
         strata consume orders --from -10 --partitions 0,2\n\
         strata consume orders --from time:-1h --to time:-30m --format json\n\
         strata consume --topic-pattern 'orders-.*' --from latest --follow\n\
         strata consume orders --format '%t/%p@%o %k=%v %h\\n' --count 100\n\
         strata consume orders --group billing",
    ),
    (
        &["group"],
        "strata group list\n\
         strata group describe billing\n\
         strata group reset-offsets billing --topic orders --to earliest --dry-run",
    ),
    (
        &["group", "list"],
        "strata group list\nstrata group list --format json",
    ),
    (&["group", "describe"], "strata group describe billing"),
    (
        &["group", "reset-offsets"],
        "strata group reset-offsets billing --topic orders --to earliest --dry-run\n\
         strata group reset-offsets billing --topic orders --to time:2025-01-31T12:00:00Z\n\
         strata group reset-offsets billing --topic orders --to time:-1h\n\
         strata group reset-offsets billing --topic orders --to shift:-100",
    ),
    (&["group", "delete"], "strata group delete billing"),
    (
        &["cluster"],
        "strata cluster info\nstrata cluster add-node 4 10.0.0.4:9092",
    ),
    (
        &["cluster", "info"],
        "strata cluster info\nstrata cluster info --format json",
    ),
    (
        &["cluster", "add-node"],
        "strata cluster add-node 4 10.0.0.4:9092",
    ),
    (
        &["cluster", "remove-node"],
        "strata cluster remove-node 3\nstrata cluster remove-node 3 --wait 10m",
    ),
    (
        &["user"],
        "echo \"$PASSWORD\" | strata user create alice\nstrata user list",
    ),
    (
        &["user", "create"],
        "echo \"$PASSWORD\" | strata user create alice\n\
         STRATA_NEW_PASSWORD=... strata user create alice",
    ),
    (
        &["user", "set-password"],
        "echo \"$PASSWORD\" | strata user set-password alice",
    ),
    (&["user", "list"], "strata user list"),
    (&["user", "delete"], "strata user delete alice"),
    (
        &["acl"],
        "strata acl create --principal User:alice --topic orders --operation read,describe\n\
         strata acl list --topic orders --pattern match",
    ),
    (
        &["acl", "create"],
        "strata acl create --principal User:alice --topic orders --prefixed --operation read,describe\n\
         strata acl create --principal User:* --group billing --operation read --deny",
    ),
    (
        &["acl", "list"],
        "strata acl list\nstrata acl list --topic orders-eu --pattern match",
    ),
    (
        &["acl", "delete"],
        "strata acl delete --principal User:alice --operation read\nstrata acl delete --all",
    ),
    (
        &["bench"],
        "strata bench produce --count 100000\nstrata bench consume --count 100000",
    ),
    (
        &["bench", "produce"],
        "strata bench produce --count 100000 --record-size 1024\n\
         strata bench produce --duration 30s --rate 5000",
    ),
    (
        &["bench", "consume"],
        "strata bench consume --count 100000\nstrata bench consume --from latest --duration 30s",
    ),
    (
        &["playground"],
        "strata playground --nodes 3\nstrata playground --run-demo\nstrata playground --secure",
    ),
    (
        &["log"],
        "strata log dump /var/lib/strata/topics/1-orders/00000\nstrata log verify /var/lib/strata/topics/1-orders/00000",
    ),
    (
        &["log", "dump"],
        "strata log dump /var/lib/strata/topics/1-orders/00000",
    ),
    (
        &["log", "verify"],
        "strata log verify /var/lib/strata/topics/1-orders/00000",
    ),
    (&["tls"], "strata tls init certs --nodes 3"),
    (&["tls", "init"], "strata tls init certs --nodes 3"),
    (
        &["completion"],
        "strata completion bash > ~/.local/share/bash-completion/completions/strata\n\
         strata completion zsh > ~/.zfunc/_strata\n\
         strata completion fish > ~/.config/fish/completions/strata.fish",
    ),
];

/// `command` (the `strata` command) with each table entry's examples appended to the help of
/// the command it names; a path that names no command is skipped.
pub fn with_examples(mut command: Command) -> Command {
    for (path, examples) in EXAMPLES {
        command = attach(command, path, examples);
    }
    command
}

fn attach(command: Command, path: &[&str], examples: &str) -> Command {
    let Some((first, rest)) = path.split_first() else {
        let text = examples
            .lines()
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n");
        let help = match command.get_after_help() {
            Some(existing) => format!("{existing}\n\nExamples:\n{text}"),
            None => format!("Examples:\n{text}"),
        };
        return command.after_help(help);
    };
    if command.find_subcommand(first).is_none() {
        return command;
    }
    command.mut_subcommand(first, |sub| attach(sub, rest, examples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// Splits a shell command line into words (quotes and backslashes, no expansion).
    fn words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut quote = None;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some('"'), '\\') => word.extend(chars.next()),
                (Some(_), c) => word.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    in_word = true;
                }
                (None, '\\') => {
                    word.extend(chars.next());
                    in_word = true;
                }
                (None, c) if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                (None, c) => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(word);
        }
        words
    }

    fn walk(command: &Command, path: &mut Vec<String>, missing: &mut Vec<String>) {
        let has_examples = command
            .get_after_help()
            .is_some_and(|help| help.to_string().contains("Examples:"));
        if !has_examples {
            missing.push(format!("strata {}", path.join(" ")));
        }
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            path.push(sub.get_name().to_owned());
            walk(sub, path, missing);
            path.pop();
        }
    }

    /// Every command and subcommand has examples in its `--help`.
    #[test]
    fn every_command_has_examples() {
        let command = with_examples(crate::Cli::command());
        let mut missing = Vec::new();
        walk(&command, &mut Vec::new(), &mut missing);
        assert!(
            missing.is_empty(),
            "add examples to tools/src/examples.rs for: {missing:?}"
        );
    }

    /// The words of the `strata` command of a shell line: the part after the last pipe,
    /// before a redirection or comment, without environment assignments in front.
    fn strata_words(line: &str) -> Vec<String> {
        let command = line.rsplit(" | ").next().unwrap_or(line);
        let command = command.split(['<', '>']).next().unwrap_or(command);
        let command = command.split(" #").next().unwrap_or(command);
        let mut words = words(command);
        while words.first().is_some_and(|word| {
            word.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
        }) {
            words.remove(0);
        }
        words
    }

    /// Every example parses as the command it shows, so the examples cannot drift from the
    /// flags.
    #[test]
    fn every_example_parses() {
        for (path, examples) in EXAMPLES {
            for line in examples.lines() {
                let words = strata_words(line);
                assert_eq!(
                    words.first().map(String::as_str),
                    Some("strata"),
                    "{path:?}: {line}"
                );
                if let Err(error) = crate::Cli::try_parse_from(&words) {
                    panic!("{path:?}: {line}: {error}");
                }
            }
        }
        assert_eq!(
            words(r#"a 'b c' "d \" e" f\ g"#),
            ["a", "b c", "d \" e", "f g"]
        );
        assert_eq!(
            strata_words("X_Y=1 strata a 'b' > f # c"),
            ["strata", "a", "b"]
        );
    }

    /// Every `strata` command line of the README parses too (indented blocks, continuations
    /// joined), so the README cannot drift from the flags either.
    #[test]
    fn every_readme_command_parses() {
        let readme = include_str!("../../README.md");
        let mut line = String::new();
        let mut checked = 0;
        for text in readme.lines() {
            let Some(code) = text.strip_prefix("    ") else {
                continue;
            };
            if let Some(first) = code.trim_end().strip_suffix('\\') {
                line.push_str(first);
                continue;
            }
            line.push_str(code);
            let mut words = strata_words(&line);
            line.clear();
            let Some(first) = words.first() else {
                continue;
            };
            if !(first == "strata" || first.ends_with("/strata")) {
                continue;
            }
            words[0] = "strata".to_owned();
            if let Err(error) = crate::Cli::try_parse_from(&words) {
                panic!("README: {words:?}: {error}");
            }
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} README commands found");
    }
}
