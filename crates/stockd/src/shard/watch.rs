//! What a shard panic does: the process exits, so that recovery runs on the restart.
//!
//! A shard whose task panicked holds an engine in an unknown state, and its keys would
//! fail from then on while health still says SERVING. Nothing in memory can be trusted
//! to repair it, but the disk can: everything acknowledged is in the write-ahead log.
//! So the watcher logs the panic and exits with [`SHARD_PANICKED_EXIT_CODE`]; Kubernetes
//! (or any supervisor) restarts the pod and recovery rebuilds the shard from disk.

use tokio::task::JoinHandle;

/// The exit status after a shard panicked (`EX_SOFTWARE` of sysexits.h: an internal
/// error). Non-zero, so a supervisor restarts the process.
pub const SHARD_PANICKED_EXIT_CODE: i32 = 70;

/// Watches a shard's task: if it panics, logs it and exits the process. The returned
/// task ends when the shard's does (normally, at shutdown).
pub fn exit_on_panic(shard: usize, task: JoinHandle<()>) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!(
                shard,
                error = %e,
                "a shard panicked: exiting so that recovery rebuilds it from disk on restart"
            );
            std::process::exit(SHARD_PANICKED_EXIT_CODE);
        }
    })
}

/// Re-raises a panic of a task the shard's task awaits (its releaser), so the watcher
/// sees it instead of a swallowed `JoinError`.
pub fn propagate_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child half of `a_panicking_shard_exits_the_process`: a shard task that panics.
    #[test]
    #[ignore = "run as a child process by a_panicking_shard_exits_the_process"]
    fn child_with_a_panicking_shard() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let releaser = tokio::spawn(async { panic!("releaser bug") });
            let shard = tokio::spawn(async move { propagate_panic(releaser.await) });
            let _ = exit_on_panic(3, shard).await;
        });
        // Reached only if the watcher did not exit.
        std::process::exit(0);
    }

    #[test]
    fn a_panicking_shard_exits_the_process() {
        let exe = std::env::current_exe().expect("test binary");
        let status = std::process::Command::new(exe)
            .args([
                "--exact",
                "shard::watch::tests::child_with_a_panicking_shard",
                "--ignored",
                "--nocapture",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run the child");
        assert_eq!(status.code(), Some(SHARD_PANICKED_EXIT_CODE));
    }

    #[tokio::test]
    async fn a_shard_that_ends_normally_is_not_an_exit() {
        let shard = tokio::spawn(async {});
        exit_on_panic(0, shard).await.expect("the watcher ends");
    }
}
