//! CPU profiles: `bpf/profile.bpf.c` samples every CPU at 99 Hz and counts
//! samples per (process, user stack, kernel stack); each window the agent
//! reads and clears the counts and the stacks and symbolizes them —
//! kernel addresses from /proc/kallsyms, user addresses from the ELF
//! symbol tables (and DWARF when present) of the files the process maps,
//! both through blazesym. A user stack that does not reach a program's
//! entry (binaries built without frame pointers) is marked as cut short,
//! not passed off as whole.

use std::collections::{BTreeMap, HashMap};

/// Samples per second per CPU.
pub const SAMPLE_HZ: u64 = 99;
/// `struct sample_key` of `bpf/profile.bpf.c`.
pub const KEY_SIZE: usize = 12;
/// Put at the root of a user stack that does not reach an entry point.
pub const TRUNCATED: &str = "[stack cut short: no frame pointers]";
/// Put at the root of a stack as deep as the kernel records.
pub const TOO_DEEP: &str = "[stack cut short: deeper than 127 frames]";
/// Frames the kernel records per stack (`bpf/profile.bpf.c`).
pub const MAX_DEPTH: usize = 127;

/// Functions where a complete user stack starts.
const ENTRY_POINTS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "thread_start",
];

/// One sample key: process, user stack id and kernel stack id (negative:
/// none).
pub fn parse_key(b: &[u8; KEY_SIZE]) -> (u32, i32, i32) {
    let word = |at: usize| [b[at], b[at + 1], b[at + 2], b[at + 3]];
    (
        u32::from_ne_bytes(word(0)),
        i32::from_ne_bytes(word(4)),
        i32::from_ne_bytes(word(8)),
    )
}

/// A stack from its symbolized frames: user frames (leaf first, as the
/// kernel gives them), then kernel frames (leaf first); returned root
/// first, marked when the user part is cut short.
pub fn stack(user: &[String], kernel: &[String]) -> Vec<String> {
    let mut frames = Vec::with_capacity(user.len() + kernel.len() + 1);
    if user.len() >= MAX_DEPTH || (user.is_empty() && kernel.len() >= MAX_DEPTH) {
        frames.push(TOO_DEEP.to_owned());
    } else if let Some(root) = user.last()
        && !ENTRY_POINTS.contains(&root.as_str())
    {
        frames.push(TRUNCATED.to_owned());
    }
    frames.extend(user.iter().rev().cloned());
    frames.extend(kernel.iter().rev().cloned());
    frames
}

/// Samples read from the kernel: process, user frames and kernel frames
/// (addresses, leaf first), and how many samples had them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample {
    pub pid: u32,
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    pub count: u64,
}

/// One process's stacks over a window: (frames root first, samples).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessProfile {
    pub pid: u32,
    pub stacks: Vec<(Vec<String>, u64)>,
}

/// Names of `addresses` in `source`; `[unknown]` where there is none.
fn symbolize(
    symbolizer: &blazesym::symbolize::Symbolizer,
    source: &blazesym::symbolize::source::Source<'_>,
    addresses: &[u64],
) -> HashMap<u64, String> {
    use blazesym::symbolize::{Input, Symbolized};
    let names = match symbolizer.symbolize(source, Input::AbsAddr(addresses)) {
        Ok(names) => names,
        Err(e) => {
            tracing::debug!(error = %e, "cannot symbolize");
            Vec::new()
        }
    };
    addresses
        .iter()
        .zip(names.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(addr, sym)| {
            let name = match sym {
                Some(Symbolized::Sym(s)) => s.name.to_string(),
                _ => "[unknown]".to_owned(),
            };
            (*addr, name)
        })
        .collect()
}

/// Caller frames hold return addresses, which can point past the end of
/// the calling function: one byte back is inside the call.
fn call_sites(frames: &[u64]) -> Vec<u64> {
    frames
        .iter()
        .enumerate()
        .map(|(i, a)| if i == 0 { *a } else { a.saturating_sub(1) })
        .collect()
}

/// Groups raw samples into symbolized per-process profiles.
pub fn profiles(
    symbolizer: &blazesym::symbolize::Symbolizer,
    samples: Vec<RawSample>,
) -> Vec<ProcessProfile> {
    use blazesym::symbolize::source::{Kernel, Process, Source};
    let samples: Vec<RawSample> = samples
        .into_iter()
        .map(|s| RawSample {
            user: call_sites(&s.user),
            kernel: call_sites(&s.kernel),
            ..s
        })
        .collect();
    let mut kernel_addresses: Vec<u64> = samples.iter().flat_map(|s| s.kernel.clone()).collect();
    kernel_addresses.sort_unstable();
    kernel_addresses.dedup();
    let kernel_names = if kernel_addresses.is_empty() {
        HashMap::new()
    } else {
        symbolize(
            symbolizer,
            &Source::Kernel(Kernel::default()),
            &kernel_addresses,
        )
    };
    let mut by_pid: BTreeMap<u32, Vec<RawSample>> = BTreeMap::new();
    for s in samples {
        by_pid.entry(s.pid).or_default().push(s);
    }
    let mut out = Vec::new();
    for (pid, samples) in by_pid {
        let mut user_addresses: Vec<u64> = samples.iter().flat_map(|s| s.user.clone()).collect();
        user_addresses.sort_unstable();
        user_addresses.dedup();
        let user_names = if user_addresses.is_empty() {
            HashMap::new()
        } else {
            symbolize(
                symbolizer,
                &Source::Process(Process::new(pid.into())),
                &user_addresses,
            )
        };
        let mut stacks: HashMap<Vec<String>, u64> = HashMap::new();
        for RawSample {
            user,
            kernel,
            count,
            ..
        } in samples
        {
            let names = |addresses: &[u64], names: &HashMap<u64, String>| -> Vec<String> {
                addresses
                    .iter()
                    .map(|a| names.get(a).cloned().unwrap_or_else(|| "[unknown]".into()))
                    .collect()
            };
            let frames = stack(&names(&user, &user_names), &names(&kernel, &kernel_names));
            if !frames.is_empty() {
                *stacks.entry(frames).or_default() += count;
            }
        }
        let mut stacks: Vec<_> = stacks.into_iter().collect();
        stacks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.push(ProcessProfile { pid, stacks });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_root_first_and_cut_ones_marked() {
        let s = |v: &[&str]| v.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            stack(
                &s(&["hot", "main", "__libc_start_call_main"]),
                &s(&["do_syscall_64"])
            ),
            s(&["__libc_start_call_main", "main", "hot", "do_syscall_64"])
        );
        assert_eq!(
            stack(&s(&["hot", "[unknown]"]), &[]),
            s(&[TRUNCATED, "[unknown]", "hot"])
        );
        assert_eq!(
            stack(&[], &s(&["worker_thread", "kthread"])),
            s(&["kthread", "worker_thread"])
        );
        let mut key = [0u8; KEY_SIZE];
        key[0..4].copy_from_slice(&42u32.to_ne_bytes());
        key[4..8].copy_from_slice(&(-14i32).to_ne_bytes());
        key[8..12].copy_from_slice(&7i32.to_ne_bytes());
        assert_eq!(parse_key(&key), (42, -14, 7));
    }

    #[test]
    fn this_process_is_symbolized() {
        // An address inside this very function, from a function pointer.
        let here = this_process_is_symbolized as *const () as usize as u64;
        let out = profiles(
            &blazesym::symbolize::Symbolizer::new(),
            vec![RawSample {
                pid: std::process::id(),
                user: vec![here],
                kernel: vec![],
                count: 3,
            }],
        );
        assert_eq!(out.len(), 1);
        let (frames, count) = &out[0].stacks[0];
        assert_eq!(*count, 3);
        assert!(
            frames
                .iter()
                .any(|f| f.contains("this_process_is_symbolized")),
            "{frames:?}"
        );
    }
}
