//! `strata user` and `strata acl` against a real `strata-server` process: a user created with
//! its password on stdin, an ACL create/list/delete round trip in text and JSON, and the
//! refusals (an unknown operation listing the valid ones, a delete without a filter).

mod common;

use common::{COMMAND_DEADLINE, Output, Server};
use serde_json::Value;

/// Runs `strata --brokers ADDRESS ARGS` with `stdin`.
fn strata(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["--brokers", server.address.as_str()];
    all.extend_from_slice(args);
    common::strata(&all, stdin, COMMAND_DEADLINE)
}

fn json(output: &Output) -> Value {
    assert!(output.success, "{}", output.stderr);
    serde_json::from_str(output.stdout.trim()).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", output.stdout);
    })
}

fn user_names(server: &Server) -> Vec<String> {
    let listed = json(&strata(server, &["--format", "json", "user", "list"], b""));
    listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|user| {
            assert_eq!(user["mechanism"], "SCRAM-SHA-256");
            assert!(user.get("stored_key").is_none(), "no key material: {user}");
            user["name"].as_str().expect("name").to_string()
        })
        .collect()
}

/// `user create` reads the password from stdin's first line (nothing on stdin is refused
/// before the broker is asked); the user lists; a second create is USER_ALREADY_EXISTS;
/// `set-password` of an unknown user is UNKNOWN_USER; delete removes it.
#[test]
fn user_create_reads_the_password_from_stdin() {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    if std::env::var_os("STRATA_NEW_PASSWORD").is_none() {
        let empty = strata(&server, &["user", "create", "alice"], b"");
        assert_eq!(empty.code, Some(2), "{}", empty.stderr);
        assert!(
            empty.stderr.contains("STRATA_NEW_PASSWORD"),
            "{}",
            empty.stderr
        );
        assert!(user_names(&server).is_empty());
    }
    let created = strata(
        &server,
        &["user", "create", "alice"],
        b"s3cret pw\nignored\n",
    );
    assert!(created.success, "{}", created.stderr);
    assert_eq!(created.stdout.trim(), "created user alice");
    assert!(!created.stdout.contains("s3cret"));
    assert_eq!(user_names(&server), ["alice"]);

    let again = strata(&server, &["user", "create", "alice"], b"other\n");
    assert_eq!(again.code, Some(1), "{}", again.stderr);
    assert!(
        again.stderr.contains("USER_ALREADY_EXISTS"),
        "{}",
        again.stderr
    );
    let changed = strata(&server, &["user", "set-password", "alice"], b"new pw\n");
    assert!(changed.success, "{}", changed.stderr);
    let unknown = strata(&server, &["user", "set-password", "bob"], b"pw\n");
    assert_eq!(unknown.code, Some(1), "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("UNKNOWN_USER"),
        "{}",
        unknown.stderr
    );

    let deleted = strata(&server, &["user", "delete", "alice"], b"");
    assert!(deleted.success, "{}", deleted.stderr);
    assert!(user_names(&server).is_empty());
}

/// `acl create` makes one ACL per operation; `acl list` shows them (all, by MATCH on a topic
/// the prefix covers, and not for another principal); `acl delete` refuses an empty filter
/// without `--all`, deletes what a filter selects and prints it; an unknown operation is
/// refused with the valid ones listed.
#[test]
fn acl_create_list_delete_round_trip() {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    let created = strata(
        &server,
        &[
            "acl",
            "create",
            "--principal",
            "User:alice",
            "--topic",
            "orders",
            "--prefixed",
            "--operation",
            "read,describe",
        ],
        b"",
    );
    assert!(created.success, "{}", created.stderr);
    assert!(
        created.stdout.starts_with("created 2 ACL(s)"),
        "{}",
        created.stdout
    );
    let denied = strata(
        &server,
        &[
            "acl",
            "create",
            "--principal",
            "User:*",
            "--group",
            "billing",
            "--operation",
            "read",
            "--deny",
        ],
        b"",
    );
    assert!(denied.success, "{}", denied.stderr);

    let all = json(&strata(&server, &["--format", "json", "acl", "list"], b""));
    assert_eq!(all.as_array().expect("array").len(), 3, "{all}");
    let matching = json(&strata(
        &server,
        &[
            "--format",
            "json",
            "acl",
            "list",
            "--topic",
            "orders-eu",
            "--pattern",
            "match",
        ],
        b"",
    ));
    let operations: Vec<&str> = matching
        .as_array()
        .expect("array")
        .iter()
        .map(|acl| {
            assert_eq!(acl["principal"], "User:alice");
            assert_eq!(acl["pattern_type"], "prefixed");
            assert_eq!(acl["resource_name"], "orders");
            acl["operation"].as_str().expect("operation")
        })
        .collect();
    assert_eq!(operations, ["read", "describe"]);
    let bob = json(&strata(
        &server,
        &["--format", "json", "acl", "list", "--principal", "User:bob"],
        b"",
    ));
    assert_eq!(bob, Value::Array(Vec::new()));

    let refused = strata(&server, &["acl", "delete"], b"");
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("--all"), "{}", refused.stderr);
    let deleted = json(&strata(
        &server,
        &[
            "--format",
            "json",
            "acl",
            "delete",
            "--principal",
            "User:alice",
            "--operation",
            "read",
        ],
        b"",
    ));
    assert_eq!(deleted.as_array().expect("array").len(), 1, "{deleted}");
    assert_eq!(deleted[0]["operation"], "read");
    let rest = strata(&server, &["acl", "list"], b"");
    assert!(rest.success, "{}", rest.stderr);
    assert_eq!(
        rest.stdout.lines().count(),
        3,
        "a header and two ACLs: {}",
        rest.stdout
    );
    assert!(rest.stdout.contains("describe") && rest.stdout.contains("deny"));
    let alice = json(&strata(
        &server,
        &[
            "--format",
            "json",
            "acl",
            "list",
            "--principal",
            "User:alice",
        ],
        b"",
    ));
    assert_eq!(alice.as_array().expect("array").len(), 1, "{alice}");
    assert_eq!(alice[0]["operation"], "describe");
    let everything = strata(&server, &["acl", "delete", "--all"], b"");
    assert!(everything.success, "{}", everything.stderr);
    assert!(
        everything.stdout.starts_with("deleted 2 ACL(s)"),
        "{}",
        everything.stdout
    );
    let none = json(&strata(&server, &["--format", "json", "acl", "list"], b""));
    assert_eq!(none, Value::Array(Vec::new()));
}

/// A misspelt operation is refused before the broker is asked, naming every valid one.
#[test]
fn acl_create_with_a_bad_operation_lists_the_valid_ones() {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    let bad = strata(
        &server,
        &[
            "acl",
            "create",
            "--principal",
            "User:alice",
            "--topic",
            "t",
            "--operation",
            "read,wrte",
        ],
        b"",
    );
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("unknown operation \"wrte\""),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains(
            "valid: all, read, write, create, delete, alter, describe, describe-configs, \
             alter-configs, idempotent-write, cluster-action"
        ),
        "{}",
        bad.stderr
    );
    let none = json(&strata(&server, &["--format", "json", "acl", "list"], b""));
    assert_eq!(none, Value::Array(Vec::new()), "nothing was created");
}
