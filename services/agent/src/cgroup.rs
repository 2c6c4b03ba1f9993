//! Which container or systemd service a process belongs to, from
//! `/proc/<pid>/cgroup`: cgroup v2 (`0::/path`) or v1 (the `name=systemd`,
//! `cpu` or `memory` hierarchy), with the path formats of Docker,
//! containerd (Kubernetes) and CRI-O, under cgroupfs or systemd drivers.
//! (`bpf_get_current_cgroup_id()` is no help on hybrid hosts: it is 1 for
//! every process there.)

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A container: its runtime, its id (64 hex), and its pod's uid when
    /// Kubernetes made it.
    Container {
        runtime: &'static str,
        id: String,
        pod_uid: Option<String>,
    },
    /// A systemd service (`nginx.service` → `nginx`).
    Service(String),
}

impl Owner {
    /// The label pair this owner adds to a process's series.
    pub fn label(&self) -> (&'static str, String) {
        match self {
            Self::Container { id, .. } => ("container_id", id.chars().take(12).collect()),
            Self::Service(name) => ("systemd_service", name.clone()),
        }
    }
}

/// The cgroup path that says who owns a process: the v2 path when there is
/// one, else a v1 hierarchy.
pub fn path_of(cgroup_file: &str) -> Option<&str> {
    let mut v1 = None;
    for line in cgroup_file.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() && path != "/" {
            return Some(path);
        }
        if controllers
            .split(',')
            .any(|c| matches!(c, "name=systemd" | "cpu" | "memory"))
            && path != "/"
            && v1.is_none()
        {
            v1 = Some(path);
        }
    }
    v1
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The owner a cgroup path names, if it names one.
pub fn owner_of(path: &str) -> Option<Owner> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let pod_uid = segments.iter().find_map(|s| {
        let s = s.strip_suffix(".slice").unwrap_or(s);
        let uid = s
            .rsplit_once("-pod")
            .map(|(_, u)| u)
            .or_else(|| s.strip_prefix("pod"))?;
        (uid.len() >= 32).then(|| uid.replace('_', "-"))
    });
    for segment in segments.iter().rev() {
        let scope = segment.strip_suffix(".scope").unwrap_or(segment);
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("containerd-", "containerd"),
        ] {
            if let Some(id) = scope.strip_prefix(prefix).filter(|id| is_id(id)) {
                return Some(Owner::Container {
                    runtime,
                    id: id.to_owned(),
                    pod_uid,
                });
            }
        }
        if is_id(segment) {
            let runtime = if segments.contains(&"docker") {
                "docker"
            } else {
                "containerd"
            };
            return Some(Owner::Container {
                runtime,
                id: (*segment).to_owned(),
                pod_uid,
            });
        }
    }
    segments
        .iter()
        .rev()
        .find_map(|s| s.strip_suffix(".service"))
        .map(|name| Owner::Service(name.to_owned()))
}

/// The owner of a running process, from `<proc_root>/<pid>/cgroup`.
pub fn owner_of_pid(proc_root: &Path, pid: u32) -> Option<Owner> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    owner_of(path_of(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170605f4e3";

    #[test]
    fn container_runtimes_and_drivers() {
        let cases = [
            (format!("/docker/{ID}"), "docker", None),
            (format!("/system.slice/docker-{ID}.scope"), "docker", None),
            (
                format!("/kubepods/burstable/pod0b8f1c0e-7d3a-4c55-9a61-5f2e8d7c9b10/{ID}"),
                "containerd",
                Some("0b8f1c0e-7d3a-4c55-9a61-5f2e8d7c9b10"),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b8f1c0e_7d3a_4c55_9a61_5f2e8d7c9b10.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                Some("0b8f1c0e-7d3a-4c55-9a61-5f2e8d7c9b10"),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b8f1c0e_7d3a_4c55_9a61_5f2e8d7c9b10.slice/crio-{ID}.scope"
                ),
                "cri-o",
                Some("0b8f1c0e-7d3a-4c55-9a61-5f2e8d7c9b10"),
            ),
        ];
        for (path, runtime, pod) in cases {
            assert_eq!(
                owner_of(&path),
                Some(Owner::Container {
                    runtime,
                    id: ID.to_owned(),
                    pod_uid: pod.map(str::to_owned),
                }),
                "{path}"
            );
        }
        let owner = owner_of(&format!("/docker/{ID}")).unwrap();
        assert_eq!(owner.label(), ("container_id", ID[..12].to_owned()));
    }

    #[test]
    fn services_v1_v2_and_nothing() {
        assert_eq!(
            owner_of("/system.slice/nginx.service"),
            Some(Owner::Service("nginx".into()))
        );
        assert_eq!(owner_of("/user.slice/user-0.slice/session-3.scope"), None);
        assert_eq!(owner_of("/"), None);
        let v2 = "0::/system.slice/redis-server.service\n";
        assert_eq!(path_of(v2), Some("/system.slice/redis-server.service"));
        let hybrid = "12:memory:/system.slice/cron.service\n9:name=systemd:/system.slice/cron.service\n0::/\n";
        assert_eq!(path_of(hybrid), Some("/system.slice/cron.service"));
        let root_only = "9:name=systemd:/\n8:pids:/\n";
        assert_eq!(path_of(root_only), None);
    }

    #[test]
    fn owners_are_read_from_a_proc_tree() {
        let root = tempfile::tempdir().unwrap();
        let write = |pid: u32, text: &str| {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup"), text).unwrap();
        };
        write(
            10,
            &format!("9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n0::/\n"),
        );
        write(11, "0::/system.slice/ssh.service\n");
        write(12, "9:name=systemd:/\n");
        let owner = |pid| owner_of_pid(root.path(), pid);
        assert!(matches!(
            owner(10),
            Some(Owner::Container {
                runtime: "docker",
                ..
            })
        ));
        assert_eq!(owner(11), Some(Owner::Service("ssh".into())));
        assert_eq!(owner(12), None, "the root cgroup names no owner");
        assert_eq!(owner(13), None, "a process that is gone has none");
    }
}
