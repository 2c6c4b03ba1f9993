//! Notifications, shared by the alerting worker and the heartbeat monitor:
//! Slack (Block Kit), PagerDuty Events API v2, Microsoft Teams workflow
//! webhooks (Adaptive Card), Opsgenie, email over SMTP, and a generic
//! webhook whose body is a minijinja template. Routing by category and
//! severity, a rate limit per integration, a durable outbox with retries
//! and backoff, and a test call. Secrets stay out of logs and errors.

pub mod config;
pub mod integration;
pub mod message;
pub mod outbox;
pub mod payload;

pub use config::{IntegrationConfig, validate_all};
pub use integration::{Integration, Notifier, SendError};
pub use message::{Field, Kind, Notification, Severity};
pub use outbox::{Dispatcher, Outbox, RetryPolicy};
