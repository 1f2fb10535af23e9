//! `strata user create|set-password|list|delete`: the cluster's users. A new password is read
//! from `STRATA_NEW_PASSWORD` or, when that is unset, from the first line of standard input;
//! never from an argument, which `ps` would show to every user of the machine.

use std::io::BufRead;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use strata_client::Client;

use crate::format::Format;
use crate::output::column_width;

/// Where a new password comes from first.
pub const NEW_PASSWORD_ENV: &str = "STRATA_NEW_PASSWORD";

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from STRATA_NEW_PASSWORD or the first line of stdin.
    Create {
        /// The user's name.
        name: String,
    },
    /// Give a user a new password, read like `create`'s.
    SetPassword {
        /// The user's name.
        name: String,
    },
    /// List the users (names and credential mechanism; never keys).
    List,
    /// Delete a user (its ACLs stay).
    Delete {
        /// The user's name.
        name: String,
    },
}

/// The new password: `STRATA_NEW_PASSWORD`, or the first line of `stdin` without its line end.
///
/// # Errors
/// Unreadable stdin, or an empty password.
fn new_password(from_env: Option<String>, stdin: impl BufRead) -> Result<String> {
    let password = match from_env {
        Some(password) => password,
        None => {
            let mut line = String::new();
            stdin
                .take(64 << 10)
                .read_line(&mut line)
                .context("reading the new password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if password.is_empty() {
        bail!("no password: set {NEW_PASSWORD_ENV} or give it as the first line of standard input");
    }
    Ok(password)
}

fn read_new_password() -> Result<String> {
    new_password(
        std::env::var(NEW_PASSWORD_ENV).ok(),
        std::io::stdin().lock(),
    )
}

fn print_done(format: Format, verb: &str, name: &str) {
    match format {
        Format::Json => println!("{}", json!({ verb: name })),
        Format::Text => println!("{verb} user {name}"),
    }
}

pub async fn run(client: &Client, command: UserCommand, format: Format) -> Result<()> {
    let admin = client.admin();
    match command {
        UserCommand::Create { name } => {
            let password = read_new_password()?;
            admin
                .create_user(&name, &password)
                .await
                .with_context(|| format!("create user {name}"))?;
            print_done(format, "created", &name);
        }
        UserCommand::SetPassword { name } => {
            let password = read_new_password()?;
            admin
                .set_password(&name, &password)
                .await
                .with_context(|| format!("set the password of user {name}"))?;
            print_done(format, "changed the password of", &name);
        }
        UserCommand::List => {
            let mut users = admin.list_users().await.context("list users")?;
            users.sort_by(|a, b| a.name.cmp(&b.name));
            match format {
                Format::Json => {
                    let list: Vec<Value> = users
                        .iter()
                        .map(|u| {
                            json!({
                                "name": u.name,
                                "mechanism": u.mechanism,
                                "iterations": u.iterations,
                            })
                        })
                        .collect();
                    println!("{}", Value::Array(list));
                }
                Format::Text => {
                    let width = column_width(users.iter().map(|u| u.name.as_str()), "user");
                    println!("{:width$}  mechanism      iterations", "user");
                    for user in &users {
                        println!(
                            "{:width$}  {:13}  {:>10}",
                            user.name, user.mechanism, user.iterations
                        );
                    }
                }
            }
        }
        UserCommand::Delete { name } => {
            admin
                .delete_user(&name)
                .await
                .with_context(|| format!("delete user {name}"))?;
            print_done(format, "deleted", &name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_from_the_environment_first_then_stdin() {
        assert_eq!(
            new_password(Some("env-pw".into()), &b"stdin-pw\n"[..]).expect("env"),
            "env-pw"
        );
        assert_eq!(
            new_password(None, &b"stdin pw\r\nsecond line\n"[..]).expect("stdin"),
            "stdin pw"
        );
        assert!(new_password(None, &b""[..]).is_err());
        assert!(new_password(None, &b"\n"[..]).is_err());
        assert!(new_password(Some(String::new()), &b"x\n"[..]).is_err());
    }
}
