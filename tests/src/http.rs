//! A small blocking HTTP/1.1 client for the HTTP listener's tests (`/healthz`, `/readyz`,
//! `/metrics`, the JSON API), over plain TCP or TLS (rustls, with an optional client
//! certificate). One request per connection (`Connection: close`); every read and write is
//! bounded by [`TIMEOUT`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How long a request may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {} {}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct HttpClient {
    address: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `user:password`, sent as `Authorization: Basic`.
    basic: Option<String>,
}

impl HttpClient {
    /// Plain HTTP to `address` (`host:port`).
    pub fn plain(address: &str) -> Self {
        Self {
            address: address.to_string(),
            tls: None,
            basic: None,
        }
    }

    /// HTTPS to `address`, trusting the CA in `ca_pem`; with `client` (certificate and key
    /// PEM files), presenting that certificate.
    pub fn tls(address: &str, ca_pem: &Path, client: Option<(&Path, &Path)>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(ca_pem).expect("CA file") {
            roots.add(certificate.expect("CA PEM")).expect("CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .expect("certificate file")
                        .map(|c| c.expect("certificate PEM"))
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).expect("key PEM"),
                )
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        Self {
            address: address.to_string(),
            tls: Some(Arc::new(config)),
            basic: None,
        }
    }

    /// The same client sending `user`'s `password`.
    pub fn with_password(mut self, user: &str, password: &str) -> Self {
        self.basic = Some(format!("{user}:{password}"));
        self
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    /// POSTs `body` as JSON.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.request("POST", path, Some(body.to_string().as_bytes()))
    }

    /// Calls `Service/Method` of the JSON API with `body`.
    pub fn api(&self, method: &str, body: serde_json::Value) -> Reply {
        self.post_json(&format!("/api/v1/{method}"), &body)
    }

    /// Sends one request; panics on a connection or protocol failure (a test's failure).
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.address))
    }

    /// [`HttpClient::request`] that returns connection failures instead of panicking.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<Reply> {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host);
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        if let Some(credentials) = &self.basic {
            head.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ));
        }
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body.unwrap_or_default());

        let address = self
            .address
            .parse()
            .map_err(|e| std::io::Error::other(format!("address: {e}")))?;
        let stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let mut raw = Vec::new();
        match &self.tls {
            None => {
                let mut stream = stream;
                stream.write_all(&request)?;
                stream.read_to_end(&mut raw)?;
            }
            Some(config) => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| std::io::Error::other(format!("server name: {e}")))?;
                let connection = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(std::io::Error::other)?;
                let mut stream = rustls::StreamOwned::new(connection, stream);
                stream.write_all(&request)?;
                stream.flush()?;
                // A peer that closes without close_notify ends the body too.
                match stream.read_to_end(&mut raw) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                    Err(e) => return Err(e),
                }
            }
        }
        parse(&raw)
    }
}

/// Parses a whole HTTP/1.1 response (Content-Length, chunked, or read to the close).
fn parse(raw: &[u8]) -> std::io::Result<Reply> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| invalid("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| invalid("chunk size line"))?;
            let size_text =
                std::str::from_utf8(&rest[at..at + line_end]).map_err(|_| invalid("chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| invalid("chunk size"))?;
            at += line_end + 2;
            if size == 0 {
                break;
            }
            body.extend_from_slice(rest.get(at..at + size).ok_or_else(|| invalid("chunk"))?);
            at += size + 2;
        }
        body
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}
