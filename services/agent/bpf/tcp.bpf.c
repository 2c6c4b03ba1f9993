// SPDX-License-Identifier: GPL-2.0
// Vigil agent: the TCP lifecycle and OOM kills from tracepoints (no
// kprobes needed).
//
// sock:inet_sock_set_state gives connects (SYN_SENT -> ESTABLISHED or
// -> CLOSE: failed), accepts (SYN_RECV -> ESTABLISHED) and closes;
// tcp:tcp_retransmit_skb gives retransmits. Events go to userspace through
// a ring buffer without waking it: the agent drains it on a timer.
//
// Struct layouts are not hard-coded: the tracepoint records below carry
// preserve_access_index, so clang emits CO-RE relocations and the loader
// fixes every field offset against the running kernel's BTF.

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
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_RB_NO_WAKEUP = 1,
};

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct trace_event_raw_inet_sock_set_state {
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
} __attribute__((preserve_access_index));

// tcp:tcp_retransmit_skb's record (kernels >= 6.12 name it so; older ones
// share tcp_event_sk_skb). The fields read have the same names in both;
// only the newer has `err`, set when the attempt sent nothing.
struct trace_event_raw_tcp_retransmit_skb {
	const void *skbaddr;
	const void *skaddr;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
	int err;
} __attribute__((preserve_access_index));

// oom:mark_victim: the process the OOM killer chose.
struct trace_event_raw_mark_victim {
	int pid;
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_event_sk_skb {
	const void *skbaddr;
	const void *skaddr;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
} __attribute__((preserve_access_index));

// How many MSS-sized segments a TCP skb holds (tcp_skb_pcount): TCP
// always builds GSO skbs, so one retransmitted skb can be several
// segments. The control block lives in skb->cb.
struct sk_buff {
	char cb[48];
} __attribute__((preserve_access_index));

struct tcp_skb_cb {
	__u16 tcp_gso_segs;
} __attribute__((preserve_access_index));

static __always_inline __u16 skb_segments(const void *skbaddr)
{
	const struct sk_buff *skb = skbaddr;
	const struct tcp_skb_cb *cb = (const void *)__builtin_preserve_access_index(&skb->cb);
	__u16 segs = BPF_CORE_READ(cb, tcp_gso_segs);
	return segs ? segs : 1;
}

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7

// Event kinds; userspace (services/agent/src/ebpf/tcp.rs) mirrors them.
#define EVENT_CONNECT 1
#define EVENT_CONNECT_FAILED 2
#define EVENT_ACCEPT 3
#define EVENT_CLOSE 4
#define EVENT_RETRANSMIT 5
#define EVENT_OOM_KILL 6

struct event {
	__u64 timestamp_ns;
	__u64 duration_ns;
	__u64 sock;
	__u32 kind;
	__u32 pid;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 segments;	// retransmit: segments sent again; 0 otherwise
	__u8 saddr[16];
	__u8 daddr[16];
};

struct conn {
	__u64 start_ns;
	__u32 pid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

// Sockets between SYN_SENT and the connect's outcome, and established
// ones, with the process that connected (0 for accepted ones: the
// handshake ends in softirq context, not in the acceptor).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn);
} connecting SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct conn);
} established SEC(".maps");

static __always_inline void emit(__u32 kind, __u64 sock, __u32 pid, __u64 duration_ns,
				 __u16 segments, __u16 family, __u16 sport, __u16 dport,
				 const __u8 *saddr4, const __u8 *daddr4,
				 const __u8 *saddr6, const __u8 *daddr6)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return;
	e->timestamp_ns = bpf_ktime_get_ns();
	e->duration_ns = duration_ns;
	e->sock = sock;
	e->kind = kind;
	e->pid = pid;
	e->family = family;
	e->sport = sport;
	e->dport = dport;
	e->segments = segments;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET) {
		bpf_probe_read_kernel(e->saddr, 4, saddr4);
		bpf_probe_read_kernel(e->daddr, 4, daddr4);
	} else {
		bpf_probe_read_kernel(e->saddr, 16, saddr6);
		bpf_probe_read_kernel(e->daddr, 16, daddr6);
	}
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

SEC("tracepoint/sock/inet_sock_set_state")
int inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (BPF_CORE_READ(ctx, protocol) != IPPROTO_TCP)
		return 0;
	__u64 sock = (__u64)BPF_CORE_READ(ctx, skaddr);
	int oldstate = BPF_CORE_READ(ctx, oldstate);
	int newstate = BPF_CORE_READ(ctx, newstate);
	__u16 family = BPF_CORE_READ(ctx, family);
	__u16 sport = BPF_CORE_READ(ctx, sport);
	__u16 dport = BPF_CORE_READ(ctx, dport);
	__u64 now = bpf_ktime_get_ns();
	const __u8 *s4 = ctx->saddr, *d4 = ctx->daddr, *s6 = ctx->saddr_v6, *d6 = ctx->daddr_v6;

	if (newstate == TCP_SYN_SENT) {
		struct conn c = { .start_ns = now, .pid = bpf_get_current_pid_tgid() >> 32 };
		bpf_map_update_elem(&connecting, &sock, &c, BPF_ANY);
		return 0;
	}
	if (oldstate == TCP_SYN_SENT) {
		struct conn *c = bpf_map_lookup_elem(&connecting, &sock);
		if (!c)
			return 0;
		struct conn found = *c;
		bpf_map_delete_elem(&connecting, &sock);
		if (newstate == TCP_ESTABLISHED) {
			emit(EVENT_CONNECT, sock, found.pid, now - found.start_ns, 0, family, sport, dport, s4, d4, s6, d6);
			found.start_ns = now;
			bpf_map_update_elem(&established, &sock, &found, BPF_ANY);
		} else if (newstate == TCP_CLOSE) {
			emit(EVENT_CONNECT_FAILED, sock, found.pid, now - found.start_ns, 0, family, sport, dport, s4, d4, s6, d6);
		}
		return 0;
	}
	if (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED) {
		struct conn c = { .start_ns = now, .pid = 0 };
		bpf_map_update_elem(&established, &sock, &c, BPF_ANY);
		emit(EVENT_ACCEPT, sock, 0, 0, 0, family, sport, dport, s4, d4, s6, d6);
		return 0;
	}
	if (newstate == TCP_CLOSE) {
		struct conn *c = bpf_map_lookup_elem(&established, &sock);
		if (!c)
			return 0;
		struct conn found = *c;
		bpf_map_delete_elem(&established, &sock);
		emit(EVENT_CLOSE, sock, found.pid, now - found.start_ns, 0, family, sport, dport, s4, d4, s6, d6);
	}
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tcp_retransmit_skb(void *ctx)
{
	__u64 sock;
	__u16 family, sport, dport, segments;
	const __u8 *s4, *d4, *s6, *d6;
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb)) {
		struct trace_event_raw_tcp_retransmit_skb *r = ctx;
		// Count segments that went out again, as the kernel's own
		// counters (TCP_INFO total_retrans, RetransSegs) do.
		if (bpf_core_field_exists(r->err) && BPF_CORE_READ(r, err) != 0)
			return 0;
		sock = (__u64)BPF_CORE_READ(r, skaddr);
		segments = skb_segments(BPF_CORE_READ(r, skbaddr));
		family = BPF_CORE_READ(r, family);
		sport = BPF_CORE_READ(r, sport);
		dport = BPF_CORE_READ(r, dport);
		s4 = r->saddr; d4 = r->daddr; s6 = r->saddr_v6; d6 = r->daddr_v6;
	} else {
		struct trace_event_raw_tcp_event_sk_skb *r = ctx;
		sock = (__u64)BPF_CORE_READ(r, skaddr);
		segments = skb_segments(BPF_CORE_READ(r, skbaddr));
		family = BPF_CORE_READ(r, family);
		sport = BPF_CORE_READ(r, sport);
		dport = BPF_CORE_READ(r, dport);
		s4 = r->saddr; d4 = r->daddr; s6 = r->saddr_v6; d6 = r->daddr_v6;
	}
	struct conn *c = bpf_map_lookup_elem(&established, &sock);
	__u32 pid = c ? c->pid : 0;
	emit(EVENT_RETRANSMIT, sock, pid, 0, segments, family, sport, dport, s4, d4, s6, d6);
	return 0;
}

SEC("tracepoint/oom/mark_victim")
int mark_victim(struct trace_event_raw_mark_victim *ctx)
{
	__u32 victim = BPF_CORE_READ(ctx, pid);
	__u8 none[16] = {};
	emit(EVENT_OOM_KILL, 0, victim, 0, 0, AF_INET, 0, 0, none, none, none, none);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
