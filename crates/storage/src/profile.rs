//! CPU profiles: stack samples aggregated per window by the agent (a stack
//! is its frames, root first; its value the samples seen in the window), and
//! Kubernetes events and inventory changes. Both are listed by time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{Labels, StorageError, trace::MAX_TIMESTAMP_NS};

/// Most stacks in one profile, frames in one stack, bytes in one frame.
pub const MAX_STACKS: usize = 50_000;
pub const MAX_FRAMES: usize = 256;
pub const MAX_FRAME_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSample {
    /// Frames, root first.
    pub frames: Vec<String>,
    pub value: u64,
}

/// The stacks one process (or container) spent its time in over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Start of the window.
    pub time_ns: i64,
    pub duration_ns: i64,
    /// E.g. `cpu`.
    pub profile_type: String,
    pub service: String,
    pub resource: Labels,
    pub stacks: Vec<StackSample>,
}

impl Profile {
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |what: String| {
            Err(StorageError::InvalidData(format!(
                "profile at {} ns: {what}",
                self.time_ns
            )))
        };
        if !(0..MAX_TIMESTAMP_NS).contains(&self.time_ns) {
            return bad("time is outside 1970..2149".into());
        }
        if self.duration_ns <= 0 {
            return bad("duration must be positive".into());
        }
        if self.profile_type.is_empty() || self.profile_type.len() > 64 {
            return bad("profile type must be 1-64 bytes".into());
        }
        if self.stacks.len() > MAX_STACKS {
            return bad(format!("more than {MAX_STACKS} stacks"));
        }
        for stack in &self.stacks {
            if stack.frames.is_empty() || stack.frames.len() > MAX_FRAMES {
                return bad(format!("a stack needs 1-{MAX_FRAMES} frames"));
            }
            if stack.frames.iter().any(|f| f.len() > MAX_FRAME_BYTES) {
                return bad(format!("a frame is longer than {MAX_FRAME_BYTES} bytes"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileBatch {
    pub project: String,
    pub batch_id: String,
    pub profiles: Vec<Profile>,
}

/// Which profiles to merge: windows starting in `[start_ns, end_ns]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileQuery {
    pub start_ns: i64,
    pub end_ns: i64,
    pub profile_type: String,
    pub service: Option<String>,
    /// Resource attributes that must be present with these values.
    pub resource: Vec<(String, String)>,
}

impl ProfileQuery {
    pub fn matches(&self, profile: &Profile) -> bool {
        profile.time_ns >= self.start_ns
            && profile.time_ns <= self.end_ns
            && profile.profile_type == self.profile_type
            && self.service.as_ref().is_none_or(|s| *s == profile.service)
            && self
                .resource
                .iter()
                .all(|(k, v)| profile.resource.get(k) == Some(v))
    }
}

/// Sums the values of equal stacks: the merged profile, largest first
/// (then by frames, so that both backends give the same order).
pub fn merge_stacks(stacks: impl IntoIterator<Item = StackSample>) -> Vec<StackSample> {
    let mut totals: HashMap<Vec<String>, u64> = HashMap::new();
    for stack in stacks {
        *totals.entry(stack.frames).or_default() += stack.value;
    }
    let mut out: Vec<StackSample> = totals
        .into_iter()
        .map(|(frames, value)| StackSample { frames, value })
        .collect();
    out.sort_by(|a, b| b.value.cmp(&a.value).then_with(|| a.frames.cmp(&b.frames)));
    out
}

/// A Kubernetes event or inventory change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time_ns: i64,
    /// `Normal`, `Warning`, or `Inventory` for inventory changes.
    pub kind: String,
    /// E.g. `OOMKilling`, `BackOff`, `ScalingReplicaSet`, `Created`.
    pub reason: String,
    /// The object it is about, e.g. `Pod/shop/web-7d9f`.
    pub object: String,
    pub message: String,
    pub resource: Labels,
}

impl Event {
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |what: String| {
            Err(StorageError::InvalidData(format!(
                "event at {} ns: {what}",
                self.time_ns
            )))
        };
        if !(0..MAX_TIMESTAMP_NS).contains(&self.time_ns) {
            return bad("time is outside 1970..2149".into());
        }
        if self.kind.is_empty() || self.reason.len() > 256 || self.object.len() > 1024 {
            return bad("kind is required; reason and object have length limits".into());
        }
        if self.message.len() > crate::log::MAX_BODY_BYTES {
            return bad("message too long".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    pub project: String,
    pub batch_id: String,
    pub events: Vec<Event>,
}

/// Events in `[start_ns, end_ns]`, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub start_ns: i64,
    pub end_ns: i64,
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub resource: Vec<(String, String)>,
    /// Most events (0: 100).
    pub limit: usize,
}

impl EventQuery {
    pub fn matches(&self, event: &Event) -> bool {
        event.time_ns >= self.start_ns
            && event.time_ns <= self.end_ns
            && self.kind.as_ref().is_none_or(|k| *k == event.kind)
            && self.reason.as_ref().is_none_or(|r| *r == event.reason)
            && self
                .resource
                .iter()
                .all(|(k, v)| event.resource.get(k) == Some(v))
    }

    pub fn page_size(&self) -> usize {
        if self.limit == 0 { 100 } else { self.limit }
    }
}

/// Newest first, then by object and reason, as both backends order events.
pub fn sort_events(events: &mut [Event]) {
    events.sort_by(|a, b| {
        b.time_ns
            .cmp(&a.time_ns)
            .then_with(|| a.object.cmp(&b.object))
            .then_with(|| a.reason.cmp(&b.reason))
            .then_with(|| a.message.cmp(&b.message))
    });
}
