// SPDX-License-Identifier: GPL-2.0
// Vigil agent: L7 requests from syscall tracepoints.
//
// Syscalls followed: read/write, sendto/recvfrom, readv/writev,
// sendmsg/recvmsg and sendmmsg/recvmmsg (the first buffer of the first
// message).
//
// Sockets are tracked from connect() (client side, with the destination
// address; UDP sockets too, as resolvers connect them) and accept()/
// accept4() (server side). Request/response protocols alternate: on a
// client socket a write opens a pending request and the next read
// completes it; on a server socket a read opens it and the next write
// completes it. The first bytes of both and the latency in the kernel's
// clock go to userspace, which tells the protocol (HTTP/1.x, Redis,
// Memcached, Postgres, MySQL, DNS) from the bytes.
//
// TLS: uprobes on OpenSSL's SSL_write/SSL_read (and _ex) see the
// plaintext. The socket a call uses is learnt from the syscall it makes
// inside; from then on that socket's raw syscalls (ciphertext) are
// skipped and the plaintext is handled as its data instead.
//
// Tracepoint records carry preserve_access_index: CO-RE relocates them
// against the running kernel's BTF.

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
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

enum {
	BPF_F_NO_PREALLOC = 1,
	BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
};

enum {
	BPF_ANY = 0,
	BPF_RB_NO_WAKEUP = 1,
};

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct trace_event_raw_sys_enter {
	long int id;
	long unsigned int args[6];
} __attribute__((preserve_access_index));

struct trace_event_raw_sys_exit {
	long int id;
	long int ret;
} __attribute__((preserve_access_index));

// The process's name (its main thread's comm): a process that exits
// right after a request is still named.
struct task_struct {
	struct task_struct *group_leader;
	char comm[16];
} __attribute__((preserve_access_index));

// Bytes kept of a request (an HTTP request line and headers up to a
// traceparent, a DNS question, an SQL keyword) and of a response (a status
// line or a result code).
#define REQ_PREFIX 512
#define RESP_PREFIX 16
// A request's pieces are put together while it is shorter than this.
#define PIECE_SLACK 64
#define EINPROGRESS 115
#define AF_INET 2
#define AF_INET6 10

#define ROLE_CLIENT 1
#define ROLE_SERVER 2

struct sock_info {
	__u64 opened_ns;
	__u32 role;
	__u16 family;
	__u16 dport;
	__u8 daddr[16];
	__u32 tls;	// 1: its data is seen through OpenSSL
	__u32 pad;
};

// Registers of a probed user function (x86-64 calling convention).
struct pt_regs {
	long unsigned int di;
	long unsigned int si;
	long unsigned int dx;
	long unsigned int cx;
	long unsigned int ax;
} __attribute__((preserve_access_index));

// An SSL_read/SSL_write call in progress on a thread.
struct tls_call {
	__u64 buf;
	// SSL_read_ex/SSL_write_ex: where the byte count goes; 0 otherwise.
	__u64 count_at;
	__u32 fd;
	__u32 has_fd;
	__u32 active;
	__u32 pad;
};

struct pending {
	__u64 start_ns;
	// Bytes of the request kept so far: a request read in pieces (MariaDB
	// reads a packet's 4-byte header, then its body) is put together.
	__u32 len;
	__u32 pad;
	// Room for a piece of up to REQ_PREFIX bytes at any offset below
	// PIECE_SLACK, as the verifier wants to see.
	__u8 request[REQ_PREFIX + PIECE_SLACK];
};

struct io_args {
	__u64 buf;
	// recvmmsg returns a message count: where the kernel writes the first
	// message's length.
	__u64 mmsg_len_at;
	// Vectored calls: the first buffer's length (only it is read).
	__u64 first_len;
	__u32 how;
	__u32 fd;
	__u32 active;	// a syscall on a tracked socket is in progress
	__u32 pad;
};

struct connect_args {
	__u64 addr;
	__u32 fd;
	__u32 pad;
};

// One record per answered request; userspace mirrors it
// (services/agent/src/ebpf/l7.rs).
struct l7_event {
	__u64 start_ns;	// CLOCK_MONOTONIC, when the request began
	__u64 latency_ns;
	__u32 pid;
	__u32 fd;
	__u32 role;
	__u16 family;
	__u16 dport;
	__u8 daddr[16];
	char comm[16];		// the process's name
	__u32 request_len;	// bytes of request[] that are the request's
	__u32 pad;
	__u8 request[REQ_PREFIX];
	__u8 response[RESP_PREFIX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} l7_events SEC(".maps");

// A pending request being put together: too big for the BPF stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending);
} scratch SEC(".maps");

// (tgid << 32 | fd) of tracked sockets.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct sock_info);
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pending);
} pending_requests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tls_call);
} tls_calls SEC(".maps");

// Per thread, the arguments of the syscall in progress.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct connect_args);
} connecting SEC(".maps");

// In the thread's own storage: cheaper than a map keyed by thread id.
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct io_args);
} in_io SEC(".maps");

static __always_inline __u64 sock_key(__u32 fd)
{
	return (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | fd;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int sys_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct connect_args a = {
		.addr = BPF_CORE_READ(ctx, args[1]),
		.fd = (__u32)BPF_CORE_READ(ctx, args[0]),
	};
	bpf_map_update_elem(&connecting, &tid, &a, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int sys_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct connect_args *a = bpf_map_lookup_elem(&connecting, &tid);
	if (!a)
		return 0;
	struct connect_args args = *a;
	bpf_map_delete_elem(&connecting, &tid);
	long ret = BPF_CORE_READ(ctx, ret);
	if (ret != 0 && ret != -EINPROGRESS)
		return 0;
	struct sock_info info = { .opened_ns = bpf_ktime_get_ns(), .role = ROLE_CLIENT };
	__u16 family = 0;
	bpf_probe_read_user(&family, sizeof(family), (void *)args.addr);
	if (family == AF_INET) {
		bpf_probe_read_user(&info.dport, 2, (void *)(args.addr + 2));
		bpf_probe_read_user(info.daddr, 4, (void *)(args.addr + 4));
	} else if (family == AF_INET6) {
		bpf_probe_read_user(&info.dport, 2, (void *)(args.addr + 2));
		bpf_probe_read_user(info.daddr, 16, (void *)(args.addr + 8));
	} else {
		return 0; // unix sockets and others: not TCP
	}
	info.family = family;
	__u64 key = sock_key(args.fd);
	bpf_map_update_elem(&sockets, &key, &info, BPF_ANY);
	return 0;
}

static __always_inline int accepted(struct trace_event_raw_sys_exit *ctx)
{
	long fd = BPF_CORE_READ(ctx, ret);
	if (fd < 0)
		return 0;
	struct sock_info info = { .opened_ns = bpf_ktime_get_ns(), .role = ROLE_SERVER };
	__u64 key = sock_key((__u32)fd);
	bpf_map_update_elem(&sockets, &key, &info, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sys_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx);
}

// dup(), dup2(), dup3() and fcntl(F_DUPFD[_CLOEXEC]) of a tracked socket:
// the new fd is the same socket.
#define F_DUPFD 0
#define F_DUPFD_CLOEXEC 1030

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} duping SEC(".maps");

static __always_inline int dup_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 old = (__u32)BPF_CORE_READ(ctx, args[0]);
	__u64 key = sock_key(old);
	if (!bpf_map_lookup_elem(&sockets, &key))
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&duping, &tid, &old, BPF_ANY);
	return 0;
}

static __always_inline int dup_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 *old = bpf_map_lookup_elem(&duping, &tid);
	if (!old)
		return 0;
	__u64 old_key = sock_key(*old);
	bpf_map_delete_elem(&duping, &tid);
	long fd = BPF_CORE_READ(ctx, ret);
	struct sock_info *info = bpf_map_lookup_elem(&sockets, &old_key);
	if (fd < 0 || !info)
		return 0;
	struct sock_info copy = *info;
	__u64 key = sock_key((__u32)fd);
	bpf_map_update_elem(&sockets, &key, &copy, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_dup")
int sys_enter_dup(struct trace_event_raw_sys_enter *ctx) { return dup_enter(ctx); }
SEC("tracepoint/syscalls/sys_exit_dup")
int sys_exit_dup(struct trace_event_raw_sys_exit *ctx) { return dup_exit(ctx); }
// dup2/dup3 close the target fd first (unless it is the source):
// forget what it was.
static __always_inline void forget_target(struct trace_event_raw_sys_enter *ctx)
{
	__u32 old = (__u32)BPF_CORE_READ(ctx, args[0]);
	__u32 target = (__u32)BPF_CORE_READ(ctx, args[1]);
	if (old == target)
		return;
	__u64 key = sock_key(target);
	bpf_map_delete_elem(&sockets, &key);
	bpf_map_delete_elem(&pending_requests, &key);
}

SEC("tracepoint/syscalls/sys_enter_dup2")
int sys_enter_dup2(struct trace_event_raw_sys_enter *ctx)
{
	forget_target(ctx);
	return dup_enter(ctx);
}
SEC("tracepoint/syscalls/sys_exit_dup2")
int sys_exit_dup2(struct trace_event_raw_sys_exit *ctx) { return dup_exit(ctx); }
SEC("tracepoint/syscalls/sys_enter_dup3")
int sys_enter_dup3(struct trace_event_raw_sys_enter *ctx)
{
	forget_target(ctx);
	return dup_enter(ctx);
}
SEC("tracepoint/syscalls/sys_exit_dup3")
int sys_exit_dup3(struct trace_event_raw_sys_exit *ctx) { return dup_exit(ctx); }

SEC("tracepoint/syscalls/sys_enter_fcntl")
int sys_enter_fcntl(struct trace_event_raw_sys_enter *ctx)
{
	long cmd = BPF_CORE_READ(ctx, args[1]);
	if (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC)
		return 0;
	return dup_enter(ctx);
}
SEC("tracepoint/syscalls/sys_exit_fcntl")
int sys_exit_fcntl(struct trace_event_raw_sys_exit *ctx) { return dup_exit(ctx); }

SEC("tracepoint/syscalls/sys_enter_close")
int sys_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 key = sock_key((__u32)BPF_CORE_READ(ctx, args[0]));
	bpf_map_delete_elem(&sockets, &key);
	bpf_map_delete_elem(&pending_requests, &key);
	return 0;
}

// How a syscall passes its first buffer.
#define BUF_PLAIN 0	// read, write, sendto, recvfrom: args[1] is the buffer
#define BUF_IOVEC 1	// readv, writev: args[1] is a struct iovec array
#define BUF_MSGHDR 2	// sendmsg, recvmsg: args[1] is a struct user_msghdr
#define BUF_MMSG_SEND 3	// sendmmsg: args[1] is a struct mmsghdr array
#define BUF_MMSG_RECV 4	// recvmmsg: likewise

// Offsets in the userspace ABI (x86-64), not kernel internals:
// struct iovec { void *iov_base; size_t iov_len; };
// struct user_msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov; ... };
// struct mmsghdr { struct user_msghdr msg_hdr; unsigned int msg_len; };
#define MSGHDR_IOV 16
#define MMSGHDR_LEN 56

static __always_inline int io_enter(struct trace_event_raw_sys_enter *ctx, int how)
{
	__u32 fd = (__u32)BPF_CORE_READ(ctx, args[0]);
	__u64 key = sock_key(fd);
	struct sock_info *info = bpf_map_lookup_elem(&sockets, &key);
	if (!info)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct tls_call *tls = bpf_task_storage_get(&tls_calls, task, 0, 0);
	if (tls && tls->active) {
		// Inside SSL_read/SSL_write: ciphertext. The call's return
		// handles the plaintext as this socket's; what raw bytes were
		// taken for a request before (the handshake) are forgotten.
		tls->fd = fd;
		tls->has_fd = 1;
		if (!info->tls) {
			info->tls = 1;
			bpf_map_delete_elem(&pending_requests, &key);
		}
		return 0;
	}
	if (info->tls)
		return 0; // handshake or alert records outside a call
	__u64 buf = BPF_CORE_READ(ctx, args[1]);
	struct io_args a = { .fd = fd, .how = how };
	if (how == BUF_MMSG_RECV)
		a.mmsg_len_at = buf + MMSGHDR_LEN;
	if (how >= BUF_MSGHDR) {
		__u64 iov = 0;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(buf + MSGHDR_IOV)))
			return 0;
		buf = iov;
	}
	if (how != BUF_PLAIN) {
		__u64 base = 0;
		if (bpf_probe_read_user(&base, sizeof(base), (void *)buf))
			return 0;
		if (bpf_probe_read_user(&a.first_len, sizeof(a.first_len), (void *)(buf + 8)))
			return 0;
		buf = base;
	}
	a.buf = buf;
	a.active = 1;
	struct io_args *slot = bpf_task_storage_get(&in_io, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (slot)
		*slot = a;
	return 0;
}

// `ret` bytes at `buf` went through socket `fd` (out when is_write):
// a request opens or extends a pending one, a response completes it.
static __always_inline int data(__u32 fd, __u64 buf, long ret, int is_write)
{
	__u64 key = sock_key(fd);
	struct sock_info *info = bpf_map_lookup_elem(&sockets, &key);
	if (!info)
		return 0;
	__u32 len = ret < REQ_PREFIX ? (__u32)ret : REQ_PREFIX;
	// A client writes requests and reads responses; a server the reverse.
	int request = (info->role == ROLE_CLIENT) == is_write;
	struct pending *p = bpf_map_lookup_elem(&pending_requests, &key);
	if (request) {
		// A request sent in several pieces is timed from its first; its
		// first pieces are put together while it is short.
		if (p) {
			__u32 have = p->len;
			if (have >= PIECE_SLACK)
				return 0;
			__u32 more = len < REQ_PREFIX - have ? len : REQ_PREFIX - have;
			bpf_probe_read_user(&p->request[have & (PIECE_SLACK - 1)],
					    more & (REQ_PREFIX - 1) ? more & (REQ_PREFIX - 1) : REQ_PREFIX,
					    (void *)buf);
			p->len = have + more;
			return 0;
		}
		__u32 zero = 0;
		struct pending *fresh = bpf_map_lookup_elem(&scratch, &zero);
		if (!fresh)
			return 0;
		fresh->start_ns = bpf_ktime_get_ns();
		fresh->len = len;
		if (bpf_probe_read_user(fresh->request, len & (REQ_PREFIX - 1) ? len & (REQ_PREFIX - 1) : REQ_PREFIX,
					(void *)buf))
			return 0;
		bpf_map_update_elem(&pending_requests, &key, fresh, BPF_ANY);
		return 0;
	}
	if (!p)
		return 0; // the rest of a response already counted
	struct l7_event *e = bpf_ringbuf_reserve(&l7_events, sizeof(*e), 0);
	if (!e) {
		bpf_map_delete_elem(&pending_requests, &key);
		return 0;
	}
	__u64 now = bpf_ktime_get_ns();
	e->start_ns = p->start_ns;
	e->latency_ns = now - p->start_ns;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->fd = fd;
	e->role = info->role;
	e->family = info->family;
	e->dport = info->dport;
	__builtin_memcpy(e->daddr, info->daddr, 16);
	__builtin_memset(e->comm, 0, sizeof(e->comm));
	struct task_struct *task = (void *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&e->comm, task, group_leader, comm);
	__u32 have = p->len;
	e->request_len = have;
	e->pad = 0;
	// Only the request's bytes; userspace ignores the rest of the buffer.
	bpf_probe_read_kernel(e->request, have & (REQ_PREFIX - 1) ? have & (REQ_PREFIX - 1) : REQ_PREFIX,
			      p->request);
	__builtin_memset(e->response, 0, RESP_PREFIX);
	__u32 rlen = ret < RESP_PREFIX ? (__u32)ret : RESP_PREFIX;
	bpf_probe_read_user(e->response, rlen & (RESP_PREFIX - 1) ? rlen & (RESP_PREFIX - 1) : RESP_PREFIX,
			    (void *)buf);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	bpf_map_delete_elem(&pending_requests, &key);
	return 0;
}

static __always_inline int io_exit(struct trace_event_raw_sys_exit *ctx, int is_write)
{
	struct io_args *a = bpf_task_storage_get(&in_io, bpf_get_current_task_btf(), 0, 0);
	if (!a || !a->active)
		return 0;
	struct io_args args = *a;
	a->active = 0;
	long ret = BPF_CORE_READ(ctx, ret);
	if (ret <= 0)
		return 0;
	if (args.how == BUF_MMSG_RECV) {
		// A message count: the first message's bytes are in its header.
		__u32 got = 0;
		bpf_probe_read_user(&got, sizeof(got), (void *)args.mmsg_len_at);
		ret = got;
	} else if (args.how == BUF_MMSG_SEND) {
		ret = (long)args.first_len; // the first message went out whole
	}
	// Only the first buffer of a vectored call is read: no further.
	if (args.how != BUF_PLAIN && (__u64)ret > args.first_len)
		ret = (long)args.first_len;
	if (ret <= 0)
		return 0;
	return data(args.fd, args.buf, ret, is_write);
}

SEC("tracepoint/syscalls/sys_enter_write")
int sys_enter_write(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_PLAIN); }
SEC("tracepoint/syscalls/sys_exit_write")
int sys_exit_write(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 1); }
SEC("tracepoint/syscalls/sys_enter_read")
int sys_enter_read(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_PLAIN); }
SEC("tracepoint/syscalls/sys_exit_read")
int sys_exit_read(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 0); }
SEC("tracepoint/syscalls/sys_enter_sendto")
int sys_enter_sendto(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_PLAIN); }
SEC("tracepoint/syscalls/sys_exit_sendto")
int sys_exit_sendto(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 1); }
SEC("tracepoint/syscalls/sys_enter_recvfrom")
int sys_enter_recvfrom(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_PLAIN); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int sys_exit_recvfrom(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 0); }
SEC("tracepoint/syscalls/sys_enter_writev")
int sys_enter_writev(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_IOVEC); }
SEC("tracepoint/syscalls/sys_exit_writev")
int sys_exit_writev(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 1); }
SEC("tracepoint/syscalls/sys_enter_readv")
int sys_enter_readv(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_IOVEC); }
SEC("tracepoint/syscalls/sys_exit_readv")
int sys_exit_readv(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 0); }
SEC("tracepoint/syscalls/sys_enter_sendmsg")
int sys_enter_sendmsg(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_MSGHDR); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int sys_exit_sendmsg(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 1); }
SEC("tracepoint/syscalls/sys_enter_recvmsg")
int sys_enter_recvmsg(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_MSGHDR); }
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int sys_exit_recvmsg(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 0); }
SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int sys_enter_sendmmsg(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_MMSG_SEND); }
SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int sys_exit_sendmmsg(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 1); }
SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int sys_enter_recvmmsg(struct trace_event_raw_sys_enter *ctx) { return io_enter(ctx, BUF_MMSG_RECV); }
SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int sys_exit_recvmmsg(struct trace_event_raw_sys_exit *ctx) { return io_exit(ctx, 0); }

// OpenSSL. SSL_write(ssl, buf, num) / SSL_read(ssl, buf, num) return
// the bytes; the _ex variants (ssl, buf, num, size_t *count) return 1 and
// put the bytes in *count.
static __always_inline int tls_enter(struct pt_regs *ctx, int ex)
{
	struct tls_call *call = bpf_task_storage_get(&tls_calls, bpf_get_current_task_btf(), 0,
						     BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!call)
		return 0;
	call->buf = BPF_CORE_READ(ctx, si);
	call->count_at = ex ? BPF_CORE_READ(ctx, cx) : 0;
	call->fd = 0;
	call->has_fd = 0;
	call->active = 1;
	return 0;
}

static __always_inline int tls_return(struct pt_regs *ctx, int is_write)
{
	struct tls_call *c = bpf_task_storage_get(&tls_calls, bpf_get_current_task_btf(), 0, 0);
	if (!c || !c->active)
		return 0;
	struct tls_call call = *c;
	c->active = 0;
	// Both return an int: the upper half of rax is not theirs.
	long ret = (int)BPF_CORE_READ(ctx, ax);
	if (call.count_at) {
		if (ret != 1)
			return 0;
		__u64 count = 0;
		if (bpf_probe_read_user(&count, sizeof(count), (void *)call.count_at))
			return 0;
		ret = count > (1U << 30) ? (1L << 30) : (long)count;
	}
	if (ret <= 0)
		return 0;
	if (!call.has_fd)
		return 0; // served from OpenSSL's buffer: no socket learnt
	return data(call.fd, call.buf, ret, is_write);
}

SEC("uprobe")
int ssl_enter(struct pt_regs *ctx) { return tls_enter(ctx, 0); }
SEC("uprobe")
int ssl_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, 1); }
SEC("uretprobe")
int ssl_write_return(struct pt_regs *ctx) { return tls_return(ctx, 1); }
SEC("uretprobe")
int ssl_read_return(struct pt_regs *ctx) { return tls_return(ctx, 0); }

char LICENSE[] SEC("license") = "GPL";
