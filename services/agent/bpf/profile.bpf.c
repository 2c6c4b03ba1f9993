// SPDX-License-Identifier: GPL-2.0
// Vigil agent: CPU profiles. A perf_event program on a software CPU clock
// (99 Hz on every CPU) counts samples per (process, user stack, kernel
// stack); the stacks themselves go to a stack-trace map. Userspace reads
// and clears both every window and symbolizes the addresses.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_STACK_TRACE = 7,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_F_USER_STACK = 256,
};

#include <bpf/bpf_helpers.h>

#define MAX_DEPTH 127

// Userspace (services/agent/src/ebpf/profile.rs) mirrors it.
struct sample_key {
	__u32 pid;
	__s32 user_stack;	// a stack id, or a negative error (no stack)
	__s32 kernel_stack;
};

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sample_key);
	__type(value, __u64);
} samples SEC(".maps");

SEC("perf_event")
int cpu_sample(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (pid == 0)
		return 0; // the idle task
	struct sample_key key = {
		.pid = pid,
		.user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK),
		.kernel_stack = bpf_get_stackid(ctx, &stacks, 0),
	};
	__u64 *count = bpf_map_lookup_elem(&samples, &key);
	if (count) {
		__sync_fetch_and_add(count, 1);
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&samples, &key, &one, BPF_NOEXIST);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
