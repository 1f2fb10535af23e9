//! An S3-compatible store for the capture tests: moto's server (`python3 -m moto.server`, from
//! tests/kafka/requirements.txt, installed on first use) on a loopback address of the test's
//! own, killed when dropped.

use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::http::HttpClient;

/// How long moto may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto S3 server.
pub struct S3Server {
    child: Child,
    /// `http://HOST:PORT`.
    pub endpoint: String,
    address: String,
}

impl S3Server {
    /// Starts moto on `127.0.<slot>.1:9000` and waits until it answers.
    pub fn start(slot: u8) -> Self {
        let address = format!("127.0.{slot}.1:9000");
        let mut command = crate::kafka::python_script("tests/analytics/moto_server.py");
        command
            .args([format!("127.0.{slot}.1"), "9000".to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("starting moto's server");
        let mut server = Self {
            child,
            endpoint: format!("http://{address}"),
            address,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait().expect("moto's status") {
                panic!(
                    "moto's server exited at start ({status}); is {} free?",
                    server.address
                );
            }
            let answers = TcpStream::connect_timeout(
                &server.address.parse().expect("address"),
                Duration::from_millis(200),
            )
            .is_ok()
                && server.client().try_request("GET", "/", None).is_ok();
            if answers {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "moto's server did not answer within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn client(&self) -> HttpClient {
        HttpClient::plain(&self.address)
    }

    /// Creates a bucket (moto accepts any credentials).
    pub fn create_bucket(&self, name: &str) {
        let reply = self.client().request("PUT", &format!("/{name}"), None);
        assert_eq!(
            reply.status,
            200,
            "creating bucket {name}: {}",
            reply.text()
        );
    }

    /// The keys in `bucket` under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={prefix}");
            if let Some(token) = &token {
                path.push_str(&format!("&continuation-token={token}"));
            }
            let reply = self.client().get(&path);
            assert_eq!(reply.status, 200, "listing {bucket}: {}", reply.text());
            let text = reply.text();
            keys.extend(between_all(&text, "<Key>", "</Key>"));
            token = between_all(&text, "<NextContinuationToken>", "</NextContinuationToken>")
                .into_iter()
                .next();
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// The bytes of the object `key` in `bucket`.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let reply = self.client().get(&format!("/{bucket}/{key}"));
        assert_eq!(
            reply.status,
            200,
            "reading {bucket}/{key}: {}",
            reply.text()
        );
        reply.body
    }

    /// The environment a `strata-server` needs to reach this store.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "strata-test"),
            ("AWS_SECRET_ACCESS_KEY", "strata-test-secret"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every text between `open` and `close` in `text`, in order.
fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(close) else { break };
        found.push(rest[..end].to_string());
        rest = &rest[end + close.len()..];
    }
    found
}
