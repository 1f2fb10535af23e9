//! An S3-compatible bucket as a capture target: `capture.dir = s3://BUCKET[/PREFIX]`.
//!
//! The store is reached with object_store's S3 client, configured from the node's environment
//! the way AWS's own tools read it: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`; us-east-1 when absent),
//! `AWS_ENDPOINT_URL` for a store that is not AWS (MinIO, Ceph, moto...) and `AWS_ALLOW_HTTP=true`
//! for one reached without TLS. Requests are path-style unless
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
//!
//! A window's file is written to a local spool file under the data directory first (the
//! Parquet writer is synchronous, the upload is not, and a failed upload can be tried again
//! without reading the log again), then uploaded in parts of [`PART_BYTES`]. S3 makes an object visible only when its
//! upload completes, so a reader never sees half a file; a failed upload is aborted (its parts
//! discarded) and the spool file removed. The store acknowledges an upload once it is durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use tokio::io::AsyncReadExt;

/// Bytes of one uploaded part (S3's minimum part size is 5 MiB, except the last).
pub const PART_BYTES: usize = 8 << 20;
/// Parts uploading at once for one file: with [`PART_BYTES`], the memory an upload holds.
const PARTS_IN_FLIGHT_MAX: usize = 2;
/// How long a probe of the bucket may take before the target is reported unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one request (with its retries) may take.
const REQUEST_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// A bucket (and a prefix in it) that capture writes files to.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<AmazonS3>,
    /// The bucket's name, for messages.
    name: String,
    /// Where files go inside the bucket, without slashes at either end (may be empty).
    prefix: String,
    url: String,
}

/// Two buckets are the same target when they were named by the same URL.
impl PartialEq for Bucket {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
    }
}

impl Eq for Bucket {}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("url", &self.url).finish()
    }
}

impl Bucket {
    /// The bucket of `url`, `s3://BUCKET[/PREFIX]`, with the node's AWS settings.
    ///
    /// # Errors
    /// What is wrong with the URL or the settings, and what is valid.
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::parse_with_env(url, std::env::vars())
    }

    /// [`parse`](Bucket::parse) with the `AWS_*` settings taken from `env` instead of the
    /// process's environment.
    ///
    /// # Errors
    /// As [`parse`](Bucket::parse).
    pub fn parse_with_env(
        url: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            format!("capture.dir {url:?} is not an s3:// URL (s3://BUCKET or s3://BUCKET/PREFIX)")
        })?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if !valid_bucket_name(name) {
            return Err(format!(
                "capture.dir {url:?}: {name:?} is not a bucket name (3 to 63 characters of \
                 a-z, 0-9, '.' and '-', starting and ending with a letter or digit)"
            ));
        }
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(format!(
                "capture.dir {url:?}: the prefix {prefix:?} has an empty, '.' or '..' part"
            ));
        }
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: REQUEST_RETRY_TIMEOUT,
            ..RetryConfig::default()
        };
        // reqwest's rustls takes the process's default provider: ring, the one Strata's TLS
        // uses (installing it again when it is already there changes nothing).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new();
        for (key, value) in env {
            // As AmazonS3Builder::from_env: every AWS_ variable object_store knows.
            if key.starts_with("AWS_")
                && let Ok(config) = key.to_ascii_lowercase().parse()
            {
                builder = builder.with_config(config, value);
            }
        }
        let store = builder
            .with_bucket_name(name)
            .with_retry(retry)
            .build()
            .map_err(|error| format!("capture.dir {url:?}: {error}"))?;
        Ok(Self {
            store: Arc::new(store),
            name: name.to_string(),
            prefix: prefix.to_string(),
            url: url.to_string(),
        })
    }

    /// The URL the bucket was named by.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn object(&self, relative: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(relative)
        } else {
            ObjectPath::from(format!("{}/{relative}", self.prefix))
        }
    }

    /// Checks that files can be written to the bucket: writes and removes a small probe object
    /// (named so engines skip it: it starts with `_`).
    ///
    /// # Errors
    /// Why not, in words: the bucket does not exist, access is denied, the store cannot be
    /// reached.
    pub async fn probe(&self) -> Result<(), String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let probe = self.object(&format!("_strata-probe-{nanos}"));
        let attempt = async {
            self.store
                .put(&probe, PutPayload::from_static(b"strata capture probe"))
                .await
                .map_err(|error| self.explain("cannot write to", &error))?;
            self.store
                .delete(&probe)
                .await
                .map_err(|error| self.explain("cannot delete a probe object from", &error))
        };
        tokio::time::timeout(PROBE_TIMEOUT, attempt)
            .await
            .map_err(|_| {
                format!(
                    "{}: no answer from the store within {PROBE_TIMEOUT:?} (AWS_ENDPOINT_URL, \
                     AWS_ALLOW_HTTP and the network)",
                    self.url
                )
            })?
    }

    fn explain(&self, what: &str, error: &object_store::Error) -> String {
        let text = error.to_string();
        let hint = if text.contains("NoSuchBucket") || text.contains("does not exist") {
            format!(" (bucket {:?} does not exist)", self.name)
        } else if text.contains("AccessDenied") || text.contains("Forbidden") {
            " (access denied: check AWS_ACCESS_KEY_ID and the bucket's policy)".to_string()
        } else {
            String::new()
        };
        format!("{what} {}{hint}: {text}", self.url)
    }

    /// Where a window's file is written before its upload: under `data_dir/capture-spool/`,
    /// named after the file (the node's own directory, never read by engines).
    pub fn spool_path(&self, relative: &str, data_dir: &Path) -> PathBuf {
        data_dir
            .join("capture-spool")
            .join(format!("{}.tmp", relative.replace('/', "__")))
    }

    /// Uploads the spool file as `relative` inside the prefix, then removes the spool file.
    /// The object appears whole or not at all; a failed upload is aborted.
    ///
    /// # Errors
    /// The read or the upload's error, in words; the spool file is left for the caller to
    /// discard.
    pub async fn publish(&self, spool: &Path, relative: &str) -> Result<(), String> {
        let location = self.object(relative);
        let mut file = tokio::fs::File::open(spool)
            .await
            .map_err(|error| format!("opening {}: {error}", spool.display()))?;
        let upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|error| self.explain("cannot start an upload to", &error))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = match file.read(&mut buffer).await {
                Ok(read) => read,
                Err(error) => {
                    let _ = writer.abort().await;
                    return Err(format!("reading {}: {error}", spool.display()));
                }
            };
            if read == 0 {
                break;
            }
            if let Err(error) = writer.wait_for_capacity(PARTS_IN_FLIGHT_MAX).await {
                let _ = writer.abort().await;
                return Err(self.explain("cannot upload to", &error));
            }
            writer.write(&buffer[..read]);
        }
        writer
            .finish()
            .await
            .map_err(|error| self.explain("cannot complete an upload to", &error))?;
        tokio::fs::remove_file(spool)
            .await
            .map_err(|error| format!("removing {}: {error}", spool.display()))
    }
}

/// S3's bucket naming rules (the common subset every S3-compatible store accepts).
fn valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        let bucket = Bucket::parse("s3://events-archive/capture/strata/").unwrap();
        assert_eq!(bucket.name, "events-archive");
        assert_eq!(bucket.prefix, "capture/strata");
        assert_eq!(
            bucket.object("t/partition=0/x.parquet").as_ref(),
            "capture/strata/t/partition=0/x.parquet"
        );
        let bare = Bucket::parse("s3://events").unwrap();
        assert_eq!(bare.object("t/x").as_ref(), "t/x");
    }

    #[test]
    fn bad_urls_say_what_is_valid() {
        for (url, says) in [
            ("/tmp/dir", "not an s3:// URL"),
            ("s3://", "not a bucket name"),
            ("s3://Upper", "not a bucket name"),
            ("s3://ab", "not a bucket name"),
            ("s3://a..b", "not a bucket name"),
            ("s3://bucket/a//b", "empty, '.' or '..' part"),
            ("s3://bucket/../etc", "empty, '.' or '..' part"),
        ] {
            let error = Bucket::parse(url).unwrap_err();
            assert!(error.contains(says), "{url}: {error}");
        }
    }

    #[test]
    fn spool_files_stay_flat_under_the_data_directory() {
        let bucket = Bucket::parse("s3://bucket").unwrap();
        let spool = bucket.spool_path("t/partition=3/1-2.parquet", Path::new("/data"));
        assert_eq!(
            spool,
            Path::new("/data/capture-spool/t__partition=3__1-2.parquet.tmp")
        );
    }
}
