//! Files read again when they change: the TLS certificate, key and client CA, the policy,
//! the bearer tokens.
//!
//! cert-manager rotates a certificate by replacing its Secret's files, and an operator
//! edits the policy's ConfigMap: neither should need a restart. A watcher reads its files
//! every `SECURITY_RELOAD_POLL_MS` (a few KiB each) and, when their bytes changed, parses
//! them again: a good new version replaces the current one for what comes next (a new
//! connection's handshake, a new call's check), a bad one is logged and the current one
//! stays. Polling the bytes, not watching inotify events, sees every way a file can be
//! replaced (Kubernetes swaps a symlink to a new folder) and needs no extra crate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::limits::SECURITY_RELOAD_POLL_MS;

/// The current version of what a set of files says, kept up to date while it lives.
pub struct Watched<T> {
    current: watch::Receiver<Arc<T>>,
    _poll: Arc<AbortOnDrop>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Watched {
            current: self.current.clone(),
            _poll: self._poll.clone(),
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Watched<T> {
    /// What the files said at their last good version.
    pub fn current(&self) -> Arc<T> {
        self.current.borrow().clone()
    }
}

/// Reads `paths` and parses their contents (in the same order) with `parse`; then keeps
/// doing so while the returned watcher lives. `what` names them in the log. A first
/// version that cannot be read or parsed is an error: the server does not start on it.
pub fn watch_files<T, P>(
    what: &'static str,
    paths: Vec<PathBuf>,
    parse: P,
) -> Result<Watched<T>, String>
where
    T: Send + Sync + 'static,
    P: Fn(&[Vec<u8>]) -> Result<T, String> + Send + 'static,
{
    let mut seen = read_all(&paths)?;
    let first = parse(&seen).map_err(|e| format!("{what}: {e}"))?;
    let (tx, current) = watch::channel(Arc::new(first));
    let poll = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(SECURITY_RELOAD_POLL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A file missing for a moment (being replaced) is read again next tick.
            let Ok(contents) = read_all(&paths) else {
                continue;
            };
            if contents == seen {
                continue;
            }
            match parse(&contents) {
                Ok(next) => {
                    tx.send_replace(Arc::new(next));
                    tracing::info!("{what} reloaded");
                }
                Err(e) => {
                    tracing::warn!("{what} changed but is refused, the previous one stays: {e}")
                }
            }
            seen = contents;
        }
    });
    Ok(Watched {
        current,
        _poll: Arc::new(AbortOnDrop(poll)),
    })
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())))
        .collect()
}
