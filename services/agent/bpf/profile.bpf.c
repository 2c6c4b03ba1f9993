// SPDX-License-Identifier: GPL-2.0
// Vigil agent: CPU profiles. A perf_event program on a software CPU clock
// (99 Hz on every CPU) counts samples per (process, user stack, kernel
// stack); the stacks themselves go to a stack-trace map. There are two
// pairs of maps: samples go to the pair `generation` names, and userspace
// flips it before reading and clearing the other pair, so that it never
// clears what the kernel is writing.

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
	BPF_MAP_TYPE_ARRAY = 2,
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

#define STACKS(name)                                                   \
	struct {                                                       \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                \
		__uint(max_entries, 16384);                            \
		__uint(key_size, sizeof(__u32));                       \
		__uint(value_size, MAX_DEPTH * sizeof(__u64));         \
	} name SEC(".maps")

#define SAMPLES(name)                                                  \
	struct {                                                       \
		__uint(type, BPF_MAP_TYPE_HASH);                       \
		__uint(max_entries, 16384);                            \
		__type(key, struct sample_key);                        \
		__type(value, __u64);                                  \
	} name SEC(".maps")

STACKS(stacks0);
STACKS(stacks1);
SAMPLES(samples0);
SAMPLES(samples1);

// Which pair samples go to: 0 or 1.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} generation SEC(".maps");

static __always_inline void count(void *ctx, void *samples, void *stacks, __u32 pid)
{
	struct sample_key key = {
		.pid = pid,
		.user_stack = bpf_get_stackid(ctx, stacks, BPF_F_USER_STACK),
		.kernel_stack = bpf_get_stackid(ctx, stacks, 0),
	};
	__u64 *n = bpf_map_lookup_elem(samples, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else {
		__u64 one = 1;
		bpf_map_update_elem(samples, &key, &one, BPF_NOEXIST);
	}
}

SEC("perf_event")
int cpu_sample(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (pid == 0)
		return 0; // the idle task
	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&generation, &zero);
	if (gen && *gen)
		count(ctx, &samples1, &stacks1, pid);
	else
		count(ctx, &samples0, &stacks0, pid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
