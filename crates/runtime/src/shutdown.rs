//! Graceful shutdown: one token per process, triggered by SIGTERM or SIGINT
//! (or by a test). Servers stop accepting, drain in-flight calls, then return.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding this signal to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown was asked for.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// An owned future that completes on shutdown, for servers' graceful-shutdown hooks.
    pub fn signalled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Triggers this signal on SIGTERM or SIGINT (Ctrl-C).
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let name = wait_for_signal().await;
            tracing::info!(signal = name, "shutting down: draining in-flight work");
            this.trigger();
        });
    }

    /// Sleeps `period`, returning early (false) when shutdown is asked for.
    pub async fn sleep(&self, period: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(period) => true,
            () = self.wait() => false,
        }
    }
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleep_returns_early_on_trigger() {
        let s = Shutdown::new();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.sleep(Duration::from_secs(60)).await })
        };
        s.trigger();
        assert!(!waiter.await.unwrap());
        assert!(s.is_triggered());
        assert!(!s.sleep(Duration::from_secs(60)).await);
    }
}
