//! Vigil's own gRPC contracts. Services meet only through these packages:
//! `vigil.telemetry.v1` (agent → ingest), `vigil.query.v1` (readers → query),
//! `vigil.alerting.v1` and `vigil.heartbeat.v1`.
//!
//! Generated at build time from `proto/` by `tonic-prost-build` fed with the
//! pure-Rust `protox` compiler, so no system `protoc` is needed.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Encoded `FileDescriptorSet` of every Vigil package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vigil_descriptor.bin"));

pub mod telemetry {
    pub mod v1 {
        tonic::include_proto!("vigil.telemetry.v1");
    }
}

pub mod query {
    pub mod v1 {
        tonic::include_proto!("vigil.query.v1");
        include!(concat!(env!("OUT_DIR"), "/vigil.query.v1.serde.rs"));
    }
}

pub mod alerting {
    pub mod v1 {
        tonic::include_proto!("vigil.alerting.v1");
        include!(concat!(env!("OUT_DIR"), "/vigil.alerting.v1.serde.rs"));
    }
}

pub mod heartbeat {
    pub mod v1 {
        tonic::include_proto!("vigil.heartbeat.v1");
        include!(concat!(env!("OUT_DIR"), "/vigil.heartbeat.v1.serde.rs"));
    }
}

/// Names of the metrics and labels that Vigil's agent writes and its readers
/// rely on: part of the contract, like the messages above.
pub mod names {
    /// Busy share of all CPUs of a host over the last interval, 0..1.
    pub const HOST_CPU_USAGE_RATIO: &str = "host_cpu_usage_ratio";
    pub const HOST_CPU_CORES: &str = "host_cpu_cores";
    pub const HOST_MEMORY_TOTAL_BYTES: &str = "host_memory_total_bytes";
    pub const HOST_MEMORY_AVAILABLE_BYTES: &str = "host_memory_available_bytes";
    pub const HOST_LOAD1: &str = "host_load1";
    /// CPU seconds per second used by a process (1.0 = one core busy).
    pub const PROCESS_CPU_USAGE_CORES: &str = "process_cpu_usage_cores";
    pub const PROCESS_MEMORY_RSS_BYTES: &str = "process_memory_rss_bytes";
    /// TCP connects a process made to a destination that succeeded.
    pub const TCP_SUCCESSFUL_CONNECTS_TOTAL: &str = "process_net_tcp_successful_connects_total";
    /// ... that failed (refused, timed out, unreachable).
    pub const TCP_FAILED_CONNECTS_TOTAL: &str = "process_net_tcp_failed_connects_total";
    /// Summed TCP handshake time of the successful connects, in seconds.
    pub const TCP_CONNECT_SECONDS_TOTAL: &str = "process_net_tcp_connect_seconds_total";
    pub const TCP_ACTIVE_CONNECTIONS: &str = "process_net_tcp_active_connections";
    pub const TCP_RETRANSMITS_TOTAL: &str = "process_net_tcp_retransmits_total";
    /// Requests a process sent (side=client) or answered (side=server), by
    /// protocol (http, redis, memcached, postgres, mysql, dns), operation
    /// and status.
    pub const L7_REQUESTS_TOTAL: &str = "process_l7_requests_total";
    /// Their summed latency (request sent/read to response read/sent).
    pub const L7_REQUEST_SECONDS_TOTAL: &str = "process_l7_request_seconds_total";
    /// Their latency as a cumulative histogram (`le`), per process, side,
    /// destination and protocol (not per operation or status).
    pub const L7_REQUEST_DURATION_BUCKET: &str = "process_l7_request_duration_seconds_bucket";
    /// Processes the kernel's OOM killer killed on the node.
    pub const NODE_OOM_KILLS_TOTAL: &str = "node_oom_kills_total";
    /// Connections accepted on a listening address of the node.
    pub const TCP_ACCEPTS_TOTAL: &str = "node_net_tcp_accepts_total";
    /// A process listens on an address (value 1).
    pub const TCP_LISTEN_INFO: &str = "process_net_tcp_listen_info";

    // Per container or systemd service, from its cgroup.
    pub const CONTAINER_CPU_USAGE_SECONDS_TOTAL: &str = "container_cpu_usage_seconds_total";
    pub const CONTAINER_CPU_THROTTLED_SECONDS_TOTAL: &str = "container_cpu_throttled_seconds_total";
    /// CPU quota in cores (absent without a limit).
    pub const CONTAINER_CPU_LIMIT_CORES: &str = "container_cpu_limit_cores";
    pub const CONTAINER_MEMORY_RSS_BYTES: &str = "container_memory_rss_bytes";
    pub const CONTAINER_MEMORY_CACHE_BYTES: &str = "container_memory_cache_bytes";
    pub const CONTAINER_MEMORY_LIMIT_BYTES: &str = "container_memory_limit_bytes";
    pub const CONTAINER_OOM_KILLS_TOTAL: &str = "container_oom_kills_total";
    pub const CONTAINER_RESTARTS_TOTAL: &str = "container_restarts_total";
    pub const CONTAINER_DISK_READ_BYTES_TOTAL: &str = "container_disk_read_bytes_total";
    pub const CONTAINER_DISK_WRITTEN_BYTES_TOTAL: &str = "container_disk_written_bytes_total";
    /// Time some (or all) of its tasks stalled on a resource (PSI).
    pub const CONTAINER_PRESSURE_SECONDS_TOTAL: &str = "container_pressure_waiting_seconds_total";
    /// Log messages read by the agent, by source, `level` and `pattern_id`.
    pub const LOG_MESSAGES_TOTAL: &str = "log_messages_total";
    // The node's disks, filesystems, interfaces and pressure.
    pub const NODE_DISK_READ_BYTES_TOTAL: &str = "node_disk_read_bytes_total";
    pub const NODE_DISK_WRITTEN_BYTES_TOTAL: &str = "node_disk_written_bytes_total";
    pub const NODE_DISK_IO_SECONDS_TOTAL: &str = "node_disk_io_time_seconds_total";
    pub const NODE_FILESYSTEM_SIZE_BYTES: &str = "node_filesystem_size_bytes";
    pub const NODE_FILESYSTEM_AVAILABLE_BYTES: &str = "node_filesystem_available_bytes";
    pub const NODE_NET_RECEIVED_BYTES_TOTAL: &str = "node_net_received_bytes_total";
    pub const NODE_NET_TRANSMITTED_BYTES_TOTAL: &str = "node_net_transmitted_bytes_total";
    pub const NODE_NET_RECEIVE_ERRORS_TOTAL: &str = "node_net_receive_errors_total";
    pub const NODE_NET_TRANSMIT_ERRORS_TOTAL: &str = "node_net_transmit_errors_total";
    pub const NODE_PRESSURE_SECONDS_TOTAL: &str = "node_pressure_waiting_seconds_total";

    pub const LABEL_CLUSTER: &str = "cluster";
    pub const LABEL_NODE: &str = "node";
    pub const LABEL_NAMESPACE: &str = "namespace";
    pub const LABEL_APPLICATION: &str = "application";
    pub const LABEL_CONTAINER: &str = "container";
    pub const LABEL_PID: &str = "pid";
    pub const LABEL_PROCESS: &str = "process";
    /// `ip:port` a connection went to.
    pub const LABEL_DESTINATION: &str = "destination";
    /// The application listening at the destination, when it is on the
    /// same node.
    pub const LABEL_DESTINATION_APPLICATION: &str = "destination_application";
    pub const LABEL_SIDE: &str = "side";
    pub const LABEL_PROTOCOL: &str = "protocol";
    /// HTTP method, Redis or Memcached command.
    pub const LABEL_OPERATION: &str = "operation";
    pub const LABEL_STATUS: &str = "status";
    /// `ip:port` a connection was accepted on.
    pub const LABEL_LISTEN: &str = "listen";
    pub const LABEL_DEVICE: &str = "device";
    pub const LABEL_MOUNT_POINT: &str = "mount_point";
    pub const LABEL_INTERFACE: &str = "interface";
    /// cpu, memory or io (pressure).
    pub const LABEL_RESOURCE: &str = "resource";
    /// some or full (pressure).
    pub const LABEL_KIND: &str = "kind";
}
