//! A client in another language, written from `proto/` alone: Python stubs generated with
//! grpcio-tools (installed by `.ci/run` from `tests/python/requirements.txt`) create a topic,
//! produce and consume decoded records against a real server.

use std::path::Path;
use std::process::Command;

use strata_tests::server::ServerProcess;

#[test]
fn python_client_generated_from_the_proto() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let generated = tempfile::tempdir().expect("tempdir");
    let status = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(repo.join("proto/proto"))
        .arg(format!("--python_out={}", generated.path().display()))
        .arg(format!("--grpc_python_out={}", generated.path().display()))
        .arg(repo.join("proto/proto/strata/v1/strata.proto"))
        .status()
        .expect("python3 with grpcio-tools (pip install -r tests/python/requirements.txt)");
    assert!(status.success(), "generating Python stubs failed");
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), 1);
    let output = Command::new("python3")
        .arg(repo.join("tests/python/client_from_proto.py"))
        .arg(&server.address)
        .env("PYTHONPATH", generated.path())
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
