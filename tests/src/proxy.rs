//! A TCP proxy between two nodes that a test can cut and heal: a network partition without
//! privileges (no network namespaces or firewall rules), so it runs in CI.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections from its own address to `target` while not cut.
pub struct Proxy {
    pub address: String,
    cut: Arc<AtomicBool>,
    /// Raised on every cut: connections made before it close.
    generation: watch::Sender<u64>,
    /// Connections being forwarded.
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (an `IP:0` picks the port) and forwards to `target`.
    pub async fn start(listen: &str, target: String) -> Self {
        let listener = TcpListener::bind(listen).await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, generations) = watch::channel(0u64);
        let open = Arc::new(AtomicUsize::new(0));
        let (cut_flag, opened) = (cut.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if cut_flag.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let target = target.clone();
                let mut severed = generations.clone();
                severed.mark_unchanged();
                let opened = opened.clone();
                opened.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = severed.changed() => {}
                        }
                    }
                    opened.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            address,
            cut,
            generation,
            open,
            task,
        }
    }

    /// Refuses new connections and drops every open one; returns once they are closed
    /// (bounded), so nothing passes after it returns.
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "proxy connections did not close"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
