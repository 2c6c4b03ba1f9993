//! Resources per container and systemd service, from their cgroups (v1,
//! v2 or hybrid): CPU used, throttled and allowed; memory in use (RSS and
//! page cache) and allowed; OOM kills; restarts; disk bytes per device;
//! pressure stall time where the kernel keeps it. And the node's disks,
//! filesystems, network interfaces and pressure, from /proc and /sys.
//!
//! Every figure comes straight from a kernel counter; counters are shipped
//! as totals (Prometheus counters), not rates.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use crate::cgroup::{self, Owner};

/// Where one process's cgroups are, per hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths {
    /// The unified (v2) hierarchy.
    pub unified: Option<String>,
    pub cpu: Option<String>,
    pub cpuacct: Option<String>,
    pub memory: Option<String>,
    pub blkio: Option<String>,
}

impl Paths {
    /// Parses `/proc/<pid>/cgroup`.
    pub fn parse(cgroup_file: &str) -> Self {
        let mut paths = Self::default();
        for line in cgroup_file.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = Some(path.to_owned());
            if controllers.is_empty() {
                paths.unified = path;
                continue;
            }
            for controller in controllers.split(',') {
                match controller {
                    "cpu" => paths.cpu.clone_from(&path),
                    "cpuacct" => paths.cpuacct.clone_from(&path),
                    "memory" => paths.memory.clone_from(&path),
                    "blkio" => paths.blkio.clone_from(&path),
                    _ => {}
                }
            }
        }
        paths
    }
}

/// A cgroup path cut after the segment that names `owner`, so that every
/// process of a service or container (some in sub-cgroups: `Delegate=`,
/// a container's own children) is read at the owner's own cgroup.
fn cut(path: &str, owner: &Owner) -> String {
    let service = match owner {
        Owner::Service(name) => Some(format!("{name}.service")),
        Owner::Container { .. } => None,
    };
    let mut out = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
        let names_owner = match (owner, &service) {
            (Owner::Container { id, .. }, _) => segment.contains(id.as_str()),
            (_, Some(service)) => segment == service,
            _ => false,
        };
        if names_owner {
            return out;
        }
    }
    path.to_owned()
}

impl Paths {
    /// Every path cut at the owner's own cgroup.
    pub fn cut_at(self, owner: &Owner) -> Self {
        let c = |p: Option<String>| p.map(|p| cut(&p, owner));
        Self {
            unified: c(self.unified),
            cpu: c(self.cpu),
            cpuacct: c(self.cpuacct),
            memory: c(self.memory),
            blkio: c(self.blkio),
        }
    }
}

/// One cgroup's figures; `None` where the kernel does not keep one (or
/// no limit is set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: Option<f64>,
    pub throttled_seconds: Option<f64>,
    pub cpu_limit_cores: Option<f64>,
    pub memory_rss_bytes: Option<f64>,
    pub memory_cache_bytes: Option<f64>,
    pub memory_limit_bytes: Option<f64>,
    pub oom_kills: Option<f64>,
    /// (device name, bytes read, bytes written).
    pub disk: Vec<(String, f64, f64)>,
    /// (resource: cpu, memory or io; kind: some or full; seconds stalled).
    pub pressure: Vec<(&'static str, &'static str, f64)>,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `key value` lines (cpu.stat, memory.stat, memory.events, …).
fn keyed(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `some avg10=… total=<µs>` / `full …` lines of a pressure file.
fn pressure(text: &str, resource: &'static str, out: &mut Vec<(&'static str, &'static str, f64)>) {
    for line in text.lines() {
        let Some((kind, rest)) = line.split_once(' ') else {
            continue;
        };
        let kind = match kind {
            "some" => "some",
            "full" => "full",
            _ => continue,
        };
        if let Some(total) = rest
            .split(' ')
            .find_map(|f| f.strip_prefix("total="))
            .and_then(|t| t.parse::<f64>().ok())
        {
            out.push((resource, kind, total / 1e6));
        }
    }
}

/// v1 memory limits without a limit read as a huge number.
const UNLIMITED: f64 = (1u64 << 62) as f64;

/// The cgroup filesystem: v2 at its root, or hybrid (v1 controllers,
/// v2 at `unified/`).
#[derive(Debug, Clone)]
pub struct CgroupFs {
    root: PathBuf,
    /// Where the unified hierarchy is mounted, if anywhere.
    unified: Option<PathBuf>,
}

impl CgroupFs {
    pub fn new(root: &Path) -> Self {
        let unified = if root.join("cgroup.controllers").exists() {
            Some(root.to_owned())
        } else if root.join("unified/cgroup.controllers").exists() {
            Some(root.join("unified"))
        } else {
            None
        };
        Self {
            root: root.to_owned(),
            unified,
        }
    }

    fn dir(base: &Path, path: &str) -> PathBuf {
        base.join(path.trim_start_matches('/'))
    }

    /// The figures of the cgroups in `paths`. Device names come from
    /// `devices` (major:minor → name).
    pub fn usage(&self, paths: &Paths, devices: &HashMap<String, String>) -> Usage {
        let mut u = Usage::default();
        let v2 = match (&self.unified, &paths.unified) {
            (Some(base), Some(path)) if path != "/" => Some(Self::dir(base, path)),
            _ => None,
        };
        // cgroup v2 files, where the controllers are enabled there.
        if let Some(dir) = &v2 {
            if let Some(stat) = read(&dir.join("cpu.stat")) {
                u.cpu_seconds = keyed(&stat, "usage_usec").map(|v| v / 1e6);
                u.throttled_seconds = keyed(&stat, "throttled_usec").map(|v| v / 1e6);
            }
            if let Some(max) = read(&dir.join("cpu.max")) {
                let mut f = max.split_whitespace();
                if let (Some(Ok(quota)), Some(Ok(period))) = (
                    f.next().map(str::parse::<f64>),
                    f.next().map(str::parse::<f64>),
                ) && period > 0.0
                {
                    u.cpu_limit_cores = Some(quota / period);
                }
            }
            if let Some(stat) = read(&dir.join("memory.stat")) {
                u.memory_rss_bytes = keyed(&stat, "anon");
                u.memory_cache_bytes = keyed(&stat, "file");
            }
            u.memory_limit_bytes =
                read(&dir.join("memory.max")).and_then(|m| m.trim().parse().ok());
            u.oom_kills = read(&dir.join("memory.events")).and_then(|e| keyed(&e, "oom_kill"));
            if let Some(io) = read(&dir.join("io.stat")) {
                for line in io.lines() {
                    let mut fields = line.split_whitespace();
                    let Some(device) = fields.next() else {
                        continue;
                    };
                    let field = |name: &str| {
                        line.split_whitespace()
                            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                            .and_then(|v| v.parse::<f64>().ok())
                            .unwrap_or(0.0)
                    };
                    let name = devices
                        .get(device)
                        .cloned()
                        .unwrap_or_else(|| device.to_owned());
                    u.disk.push((name, field("rbytes"), field("wbytes")));
                }
            }
            for resource in ["cpu", "memory", "io"] {
                if let Some(text) = read(&dir.join(format!("{resource}.pressure"))) {
                    pressure(&text, resource, &mut u.pressure);
                }
            }
        }
        // cgroup v1 controllers, for what v2 did not give.
        if u.cpu_seconds.is_none()
            && let Some(path) = &paths.cpuacct
        {
            u.cpu_seconds =
                read(&Self::dir(&self.root.join("cpuacct"), path).join("cpuacct.usage"))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(|ns| ns / 1e9);
        }
        if let Some(path) = paths.cpu.as_ref().filter(|_| u.throttled_seconds.is_none()) {
            let dir = Self::dir(&self.root.join("cpu"), path);
            u.throttled_seconds = read(&dir.join("cpu.stat"))
                .and_then(|s| keyed(&s, "throttled_time"))
                .map(|ns| ns / 1e9);
            let number =
                |file: &str| read(&dir.join(file)).and_then(|v| v.trim().parse::<f64>().ok());
            if let (Some(quota), Some(period)) =
                (number("cpu.cfs_quota_us"), number("cpu.cfs_period_us"))
                && quota > 0.0
                && period > 0.0
            {
                u.cpu_limit_cores = Some(quota / period);
            }
        }
        if let Some(path) = paths
            .memory
            .as_ref()
            .filter(|_| u.memory_rss_bytes.is_none())
        {
            let dir = Self::dir(&self.root.join("memory"), path);
            if let Some(stat) = read(&dir.join("memory.stat")) {
                u.memory_rss_bytes = keyed(&stat, "total_rss").or_else(|| keyed(&stat, "rss"));
                u.memory_cache_bytes =
                    keyed(&stat, "total_cache").or_else(|| keyed(&stat, "cache"));
            }
            u.memory_limit_bytes = read(&dir.join("memory.limit_in_bytes"))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|l| *l < UNLIMITED);
            u.oom_kills = read(&dir.join("memory.oom_control")).and_then(|c| keyed(&c, "oom_kill"));
        }
        if let Some(path) = paths.blkio.as_ref().filter(|_| u.disk.is_empty()) {
            let dir = Self::dir(&self.root.join("blkio"), path);
            if let Some(text) = read(&dir.join("blkio.throttle.io_service_bytes_recursive"))
                .or_else(|| read(&dir.join("blkio.throttle.io_service_bytes")))
            {
                let mut per_device: HashMap<&str, (f64, f64)> = HashMap::new();
                for line in text.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let [device, op, bytes] = f[..] else { continue };
                    let Ok(bytes) = bytes.parse::<f64>() else {
                        continue;
                    };
                    let entry = per_device.entry(device).or_default();
                    match op {
                        "Read" => entry.0 += bytes,
                        "Write" => entry.1 += bytes,
                        _ => {}
                    }
                }
                let mut disk: Vec<_> = per_device
                    .into_iter()
                    .filter(|(_, (r, w))| *r > 0.0 || *w > 0.0)
                    .map(|(d, (r, w))| {
                        (
                            devices.get(d).cloned().unwrap_or_else(|| d.to_owned()),
                            r,
                            w,
                        )
                    })
                    .collect();
                disk.sort_by(|a, b| a.0.cmp(&b.0));
                u.disk = disk;
            }
        }
        u
    }
}

/// `major:minor` → device name, from `/proc/diskstats`.
pub fn block_devices(proc_root: &Path) -> HashMap<String, String> {
    read(&proc_root.join("diskstats"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                format!("{}:{}", f.first()?, f.get(1)?),
                (*f.get(2)?).to_owned(),
            ))
        })
        .collect()
}

/// One owner's figures in a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerUsage {
    pub owner: Owner,
    pub usage: Usage,
    /// Times every process of the owner was replaced by new ones since the
    /// agent started.
    pub restarts: u64,
}

/// Finds the containers and services running now and reads their
/// cgroups; remembers who ran before, to count restarts.
#[derive(Debug)]
pub struct ResourceCollector {
    proc_root: PathBuf,
    cgroups: CgroupFs,
    /// pid → its owner and cgroups (None: owned by no container/service).
    known: HashMap<u32, Option<(Owner, Paths)>>,
    /// Each owner's processes when last seen, and in which collection.
    previous_pids: HashMap<Owner, (HashSet<u32>, u64)>,
    restarts: HashMap<Owner, u64>,
    collections: u64,
}

/// Owners not seen for this many collections are forgotten (an hour at
/// the default 10 s interval): containers come and go.
const FORGET_AFTER: u64 = 360;

impl ResourceCollector {
    pub fn new(proc_root: &Path, cgroup_root: &Path) -> Self {
        Self {
            proc_root: proc_root.to_owned(),
            cgroups: CgroupFs::new(cgroup_root),
            known: HashMap::new(),
            previous_pids: HashMap::new(),
            restarts: HashMap::new(),
            collections: 0,
        }
    }

    pub fn collect(&mut self) -> Vec<OwnerUsage> {
        let mut pids_now: HashMap<Owner, HashSet<u32>> = HashMap::new();
        let mut paths_of: HashMap<Owner, Paths> = HashMap::new();
        let mut alive = HashSet::new();
        let entries = std::fs::read_dir(&self.proc_root)
            .into_iter()
            .flatten()
            .flatten();
        for entry in entries {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            alive.insert(pid);
            let proc_root = &self.proc_root;
            let known = self.known.entry(pid).or_insert_with(|| {
                let text = read(&proc_root.join(pid.to_string()).join("cgroup"))?;
                let owner = cgroup::owner_of(cgroup::path_of(&text)?)?;
                let paths = Paths::parse(&text).cut_at(&owner);
                Some((owner, paths))
            });
            if let Some((owner, paths)) = known {
                pids_now.entry(owner.clone()).or_default().insert(pid);
                paths_of
                    .entry(owner.clone())
                    .or_insert_with(|| paths.clone());
            }
        }
        self.known.retain(|pid, _| alive.contains(pid));
        self.collections += 1;
        // A restart: none of the processes seen last time is left, new
        // ones run (also after a while with none: a service restarted
        // after a delay).
        for (owner, pids) in pids_now {
            if let Some((before, _)) = self.previous_pids.get(&owner)
                && before.is_disjoint(&pids)
            {
                *self.restarts.entry(owner.clone()).or_default() += 1;
            }
            self.previous_pids.insert(owner, (pids, self.collections));
        }
        let now = self.collections;
        self.previous_pids
            .retain(|_, (_, seen)| now - *seen <= FORGET_AFTER);
        let remembered = &self.previous_pids;
        self.restarts
            .retain(|owner, _| remembered.contains_key(owner));
        let devices = block_devices(&self.proc_root);
        let mut out: Vec<OwnerUsage> = paths_of
            .into_iter()
            .map(|(owner, paths)| OwnerUsage {
                usage: self.cgroups.usage(&paths, &devices),
                restarts: self.restarts.get(&owner).copied().unwrap_or(0),
                owner,
            })
            .collect();
        out.sort_by(|a, b| a.owner.label().cmp(&b.owner.label()));
        out
    }
}

/// The node's figures that are not per process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeUsage {
    /// (device, bytes read, bytes written, seconds busy) of whole disks.
    pub disks: Vec<(String, f64, f64, f64)>,
    /// (mount point, device, size bytes, available bytes).
    pub filesystems: Vec<(String, String, f64, f64)>,
    /// (interface, bytes received, bytes sent, receive errors+drops,
    /// send errors+drops).
    pub interfaces: Vec<(String, f64, f64, f64, f64)>,
    pub pressure: Vec<(&'static str, &'static str, f64)>,
}

const FILESYSTEMS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "vfat", "jfs",
];
/// Virtual interfaces (containers, bridges, tunnels) are left out.
const VIRTUAL_INTERFACES: &[&str] = &[
    "lo", "veth", "docker", "br-", "cni", "flannel", "cali", "vxlan", "tunl", "kube-", "virbr",
    "lxc", "cilium", "weave",
];

/// Reads the node's disks (`/proc/diskstats`, whole disks: those in
/// `<sys_root>/block`), local filesystems (`/proc/mounts` + statvfs),
/// network interfaces (`/proc/net/dev`) and pressure (`/proc/pressure`).
pub fn node_usage(proc_root: &Path, sys_root: &Path) -> NodeUsage {
    let mut n = NodeUsage::default();
    for line in read(&proc_root.join("diskstats"))
        .unwrap_or_default()
        .lines()
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 || f[2].starts_with("loop") || f[2].starts_with("ram") {
            continue;
        }
        if !sys_root.join("block").join(f[2]).exists() {
            continue; // a partition
        }
        let number = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        // Sectors are 512 bytes here whatever the device's own size.
        n.disks.push((
            f[2].to_owned(),
            number(5) * 512.0,
            number(9) * 512.0,
            number(12) / 1e3,
        ));
    }
    let mut seen_devices = HashSet::new();
    for line in read(&proc_root.join("mounts")).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [device, mount_point, fs_type, ..] = f[..] else {
            continue;
        };
        if !FILESYSTEMS.contains(&fs_type) || !seen_devices.insert(device.to_owned()) {
            continue;
        }
        // /proc/mounts escapes blanks as octal.
        let mount_point = mount_point.replace("\\040", " ");
        if let Ok(s) = rustix::fs::statvfs(mount_point.as_str()) {
            let block = s.f_frsize as f64;
            n.filesystems.push((
                mount_point,
                device.to_owned(),
                s.f_blocks as f64 * block,
                s.f_bavail as f64 * block,
            ));
        }
    }
    for line in read(&proc_root.join("net/dev"))
        .unwrap_or_default()
        .lines()
        .skip(2)
    {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if VIRTUAL_INTERFACES.iter().any(|v| name.starts_with(v)) {
            continue;
        }
        let c: Vec<f64> = counters
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        if c.len() < 12 {
            continue;
        }
        n.interfaces
            .push((name.to_owned(), c[0], c[8], c[2] + c[3], c[10] + c[11]));
    }
    for resource in ["cpu", "memory", "io"] {
        if let Some(text) = read(&proc_root.join("pressure").join(resource)) {
            pressure(&text, resource, &mut n.pressure);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170605f4e3";

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn v1_controllers_are_read() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let cg = format!("/docker/{ID}");
        write(r, &format!("cpuacct{cg}/cpuacct.usage"), "2500000000\n");
        write(
            r,
            &format!("cpu{cg}/cpu.stat"),
            "nr_periods 10\nnr_throttled 4\nthrottled_time 750000000\n",
        );
        write(r, &format!("cpu{cg}/cpu.cfs_quota_us"), "50000\n");
        write(r, &format!("cpu{cg}/cpu.cfs_period_us"), "100000\n");
        write(
            r,
            &format!("memory{cg}/memory.stat"),
            "cache 10\nrss 20\ntotal_cache 4096\ntotal_rss 8192\n",
        );
        write(
            r,
            &format!("memory{cg}/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        write(
            r,
            &format!("memory{cg}/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write(
            r,
            &format!("blkio{cg}/blkio.throttle.io_service_bytes_recursive"),
            "8:0 Read 1024\n8:0 Write 2048\n8:0 Sync 3072\n8:0 Total 3072\nTotal 3072\n",
        );
        let paths = Paths::parse(&format!(
            "9:blkio:{cg}\n4:memory:{cg}\n2:cpu,cpuacct:{cg}\n1:name=systemd:{cg}\n0::/\n"
        ));
        assert_eq!(paths.cpu.as_deref(), Some(cg.as_str()));
        let devices = HashMap::from([("8:0".to_owned(), "sda".to_owned())]);
        let u = CgroupFs::new(r).usage(&paths, &devices);
        assert_eq!(u.cpu_seconds, Some(2.5));
        assert_eq!(u.throttled_seconds, Some(0.75));
        assert_eq!(u.cpu_limit_cores, Some(0.5));
        assert_eq!(u.memory_rss_bytes, Some(8192.0));
        assert_eq!(u.memory_cache_bytes, Some(4096.0));
        assert_eq!(u.memory_limit_bytes, None, "no limit set");
        assert_eq!(u.oom_kills, Some(2.0));
        assert_eq!(u.disk, vec![("sda".to_owned(), 1024.0, 2048.0)]);
        assert!(u.pressure.is_empty());
    }

    #[test]
    fn v2_files_are_read() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "cgroup.controllers", "cpu io memory\n");
        let cg = format!("system.slice/docker-{ID}.scope");
        write(
            r,
            &format!("{cg}/cpu.stat"),
            "usage_usec 3000000\nuser_usec 2000000\nthrottled_usec 500000\n",
        );
        write(r, &format!("{cg}/cpu.max"), "150000 100000\n");
        write(r, &format!("{cg}/memory.stat"), "anon 1000\nfile 2000\n");
        write(r, &format!("{cg}/memory.max"), "1073741824\n");
        write(
            r,
            &format!("{cg}/memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        write(
            r,
            &format!("{cg}/io.stat"),
            "259:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        write(
            r,
            &format!("{cg}/memory.pressure"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n",
        );
        let paths = Paths::parse(&format!("0::/{cg}\n"));
        let devices = HashMap::from([("259:0".to_owned(), "nvme0n1".to_owned())]);
        let u = CgroupFs::new(r).usage(&paths, &devices);
        assert_eq!(u.cpu_seconds, Some(3.0));
        assert_eq!(u.throttled_seconds, Some(0.5));
        assert_eq!(u.cpu_limit_cores, Some(1.5));
        assert_eq!(
            (u.memory_rss_bytes, u.memory_cache_bytes),
            (Some(1000.0), Some(2000.0))
        );
        assert_eq!(u.memory_limit_bytes, Some(1073741824.0));
        assert_eq!(u.oom_kills, Some(1.0));
        assert_eq!(u.disk, vec![("nvme0n1".to_owned(), 4096.0, 8192.0)]);
        assert_eq!(
            u.pressure,
            vec![("memory", "some", 1.5), ("memory", "full", 0.5)]
        );
        // "max" quota: no CPU limit.
        write(r, &format!("{cg}/cpu.max"), "max 100000\n");
        write(r, &format!("{cg}/memory.max"), "max\n");
        let u = CgroupFs::new(r).usage(&paths, &devices);
        assert_eq!((u.cpu_limit_cores, u.memory_limit_bytes), (None, None));
    }

    #[test]
    fn restarts_are_counted_when_every_process_is_replaced() {
        let proc = tempfile::tempdir().unwrap();
        let cgroups = tempfile::tempdir().unwrap();
        let service = "0::/system.slice/web.service\n";
        let set = |pids: &[u32]| {
            for entry in std::fs::read_dir(proc.path()).unwrap().flatten() {
                std::fs::remove_dir_all(entry.path()).unwrap();
            }
            for pid in pids {
                write(proc.path(), &format!("{pid}/cgroup"), service);
            }
        };
        let mut c = ResourceCollector::new(proc.path(), cgroups.path());
        let restarts = |c: &mut ResourceCollector| {
            let out = c.collect();
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!(out[0].owner, Owner::Service("web".into()));
            out[0].restarts
        };
        set(&[100, 101]);
        assert_eq!(restarts(&mut c), 0);
        set(&[101, 102]); // a worker replaced: not a restart
        assert_eq!(restarts(&mut c), 0);
        set(&[200]); // all replaced
        assert_eq!(restarts(&mut c), 1);
        set(&[]);
        assert!(c.collect().is_empty());
        set(&[300]); // back after being gone: a restart too
        assert_eq!(restarts(&mut c), 2, "gone for a while, then back");
    }

    #[test]
    fn this_node_is_read_and_agrees_with_sysfs() {
        let n = node_usage(Path::new("/proc"), Path::new("/sys"));
        eprintln!("{n:?}");
        assert!(!n.disks.is_empty(), "a whole disk in /sys/block");
        assert!(n.disks.iter().all(|(d, ..)| !d.starts_with("loop")));
        assert!(
            n.filesystems
                .iter()
                .all(|(_, _, size, avail)| size >= avail && *size > 0.0),
            "{:?}",
            n.filesystems
        );
        assert!(n.interfaces.iter().all(|(i, ..)| i != "lo"));
        // The same kernel counters through sysfs, read just after: equal
        // or a little ahead.
        for (interface, received, ..) in &n.interfaces {
            let path = format!("/sys/class/net/{interface}/statistics/rx_bytes");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let sysfs: f64 = text.trim().parse().unwrap();
            assert!(
                sysfs >= *received && sysfs - received < 1e7,
                "{interface}: {received} vs {sysfs}"
            );
        }
        for (disk, read, ..) in &n.disks {
            let stat = std::fs::read_to_string(format!("/sys/block/{disk}/stat")).unwrap();
            let sectors: f64 = stat.split_whitespace().nth(2).unwrap().parse().unwrap();
            assert!(sectors * 512.0 >= *read, "{disk}");
        }
    }

    #[test]
    fn paths_are_cut_at_the_owners_own_cgroup() {
        let service = Owner::Service("postgresql@15-main".into());
        let paths = Paths::parse(
            "4:memory:/system.slice/postgresql@15-main.service/workers\n0::/system.slice/postgresql@15-main.service/a/b\n",
        )
        .cut_at(&service);
        assert_eq!(
            paths.memory.as_deref(),
            Some("/system.slice/postgresql@15-main.service")
        );
        assert_eq!(
            paths.unified.as_deref(),
            Some("/system.slice/postgresql@15-main.service")
        );
        let container = Owner::Container {
            runtime: "docker",
            id: ID.into(),
            pod_uid: None,
        };
        let paths =
            Paths::parse(&format!("0::/system.slice/docker-{ID}.scope/init\n")).cut_at(&container);
        assert_eq!(
            paths.unified,
            Some(format!("/system.slice/docker-{ID}.scope"))
        );
    }
}
