//! Capture's S3-compatible target (`capture.dir = s3://...`) against moto's S3 server: probes
//! that tell a missing bucket from a usable one, and uploads that appear whole or not at all.
//! Slots 160-161.

use std::time::Duration;

use strata_server::capture::bucket::Bucket;
use strata_tests::s3::S3Server;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("the test finished within its time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_is_probed_and_files_are_uploaded_whole() {
    bounded(async {
        let s3 = tokio::task::spawn_blocking(|| S3Server::start(160))
            .await
            .unwrap();
        s3.create_bucket("capture");
        let bucket = Bucket::parse_with_env("s3://capture/events/raw", s3.env()).unwrap();
        bucket
            .probe()
            .await
            .expect("an existing bucket is writable");
        assert_eq!(
            s3.keys("capture", ""),
            Vec::<String>::new(),
            "the probe cleans up"
        );

        let missing = Bucket::parse_with_env("s3://no-such-bucket", s3.env()).unwrap();
        let error = missing.probe().await.unwrap_err();
        assert!(
            error.contains("bucket \"no-such-bucket\" does not exist"),
            "{error}"
        );

        // A file of several parts: 20 MiB of varied bytes.
        let spool_dir = tempfile::tempdir().unwrap();
        let relative = "orders/partition=2/00000000000000000000-00000000000000000099.parquet";
        let spool = bucket.spool_path(relative, spool_dir.path());
        std::fs::create_dir_all(spool.parent().unwrap()).unwrap();
        let content: Vec<u8> = (0..20u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(&spool, &content).unwrap();
        bucket.publish(&spool, relative).await.expect("upload");
        assert!(!spool.exists(), "the spool file is removed once uploaded");
        let key = format!("events/raw/{relative}");
        assert_eq!(s3.keys("capture", "events/"), vec![key.clone()]);
        let stored = s3.get("capture", &key);
        assert!(
            stored == content,
            "the object holds the file's {} bytes ({} stored)",
            content.len(),
            stored.len()
        );

        // A spool file that cannot be read: an error, and no object.
        let error = bucket
            .publish(
                &spool_dir.path().join("absent.tmp"),
                "orders/partition=2/absent.parquet",
            )
            .await
            .unwrap_err();
        assert!(error.contains("absent.tmp"), "{error}");
        assert_eq!(s3.keys("capture", "events/"), vec![key]);
    })
    .await;
}
