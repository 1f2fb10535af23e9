//! A client in another language, written from `proto/` alone: Python stubs generated with
//! grpcio-tools create a topic, produce and consume decoded records against a real server.
//! grpcio-tools comes from the system when it is installed; otherwise the test installs the
//! pinned `tests/python/requirements.txt` into `target/python-deps` (once) from PyPI, so
//! `cargo test --workspace` needs nothing installed by hand.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_tests::server::ServerProcess;

/// Where grpcio-tools can be imported from: `None` for the system's, else a directory the
/// pinned requirements were installed into.
fn grpc_tools_path(repo: &Path) -> Option<PathBuf> {
    let importable = |path: Option<&Path>| {
        let mut check = Command::new("python3");
        check.args(["-c", "import grpc, grpc_tools"]);
        if let Some(path) = path {
            check.env("PYTHONPATH", path);
        }
        check.output().is_ok_and(|output| output.status.success())
    };
    if importable(None) {
        return None;
    }
    let deps = repo.join("target/python-deps");
    if !importable(Some(&deps)) {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&deps)
            .arg("-r")
            .arg(repo.join("tests/python/requirements.txt"))
            .status()
            .expect("running python3 -m pip");
        assert!(
            status.success(),
            "installing tests/python/requirements.txt failed"
        );
    }
    Some(deps)
}

fn python(generated: &Path, deps: Option<&Path>) -> Command {
    let mut path = OsString::from(generated);
    if let Some(deps) = deps {
        path.push(":");
        path.push(deps);
    }
    let mut command = Command::new("python3");
    command.env("PYTHONPATH", path);
    command
}

#[test]
fn python_client_generated_from_the_proto() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let deps = grpc_tools_path(repo);
    let generated = tempfile::tempdir().expect("tempdir");
    let status = python(generated.path(), deps.as_deref())
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(repo.join("proto/proto"))
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()))
        .arg(repo.join("proto/proto/strata/v1/strata.proto"))
        .status()
        .expect("running python3 -m grpc_tools.protoc");
    assert!(status.success(), "generating Python stubs failed");
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), 1);
    let output = python(generated.path(), deps.as_deref())
        .arg(repo.join("tests/python/client_from_proto.py"))
        .arg(&server.address)
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("50 records produced and consumed"),
        "{stdout}"
    );
}
