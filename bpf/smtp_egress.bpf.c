// SPDX-License-Identifier: GPL-2.0
/* mailwarden egress collector: one event per TCP connect to a watched port.
 *
 * Hook: the sock:inet_sock_set_state tracepoint, transition to TCP_SYN_SENT. It fires inside
 * connect(), in the connecting task's context, before the SYN leaves: so pid/uid/comm are right,
 * attempts that fail or that a firewall refuses are seen, and so are connects from every network
 * namespace (containers included). Two programs, same logic:
 *   on_state_btf  SEC("tp_btf/...")      typed args, needs kernel BTF, no tracefs (preferred)
 *   on_state_tp   SEC("tracepoint/...")  classic tracepoint, needs tracefs mounted (fallback)
 * The loader (mailwarden/egress/bpf.py) enables exactly one of them.
 *
 * Besides pid/uid/gid/comm/cgroup/netns and the destination, each event carries what is needed
 * to attribute a process that has already exited when user space reads the event: the raw argv
 * (first ARGS_MAX bytes), and the executable's and the working directory's path as a list of
 * components walked up the dentry tree (crossing mounts), leaf first.
 *
 * Maps: ports (watched destination ports, host order, set from user space at run time),
 *       events (ring buffer), stats (seen/dropped counters).
 * The layout of struct event is mirrored by mailwarden.egress.bpf.RawEvent: change both.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define TCP_SYN_SENT 2
#define PROTO_TCP 6
#define FAMILY_INET 2
#define FAMILY_INET6 10
#define ARGS_MAX 512
#define PATH_DEPTH 10
#define NAME_MAX_ 48
#define WALK_STEPS 24

struct event {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 sk_uid;
	__u32 netns;
	__u16 family;
	__u16 dport;
	__u8 daddr[16];
	char comm[16];
	char pcomm[16];
	__u16 args_len;
	__u8 exe_depth; /* components filled; PATH_DEPTH+1 = truncated */
	__u8 cwd_depth;
	__u32 _pad;
	char args[ARGS_MAX];
	char exe[PATH_DEPTH][NAME_MAX_];
	char cwd[PATH_DEPTH][NAME_MAX_];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

/* stats[0] = events emitted, stats[1] = events dropped (ring buffer full) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* Walk from (dentry, vfsmount) up to the root, crossing mount points, writing one component per
 * slot, leaf first. Returns the number of slots filled, PATH_DEPTH + 1 when the path was longer. */
static __always_inline __u8 walk_path(struct dentry *dentry, struct vfsmount *vfsmnt,
				      char (*out)[NAME_MAX_])
{
	struct mount *mnt = container_of(vfsmnt, struct mount, mnt);
	__u8 n = 0;

	for (int i = 0; i < WALK_STEPS; i++) {
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);

		if (dentry == mnt_root || dentry == parent) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
			if (dentry != mnt_root || mnt_parent == mnt)
				return n; /* the global root */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			vfsmnt = &mnt->mnt;
			continue;
		}
		if (n >= PATH_DEPTH)
			return PATH_DEPTH + 1;
		const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
		bpf_probe_read_kernel_str(out[n], NAME_MAX_, name);
		n++;
		dentry = parent;
	}
	return PATH_DEPTH + 1;
}

static __always_inline int emit(__u16 family, __u16 dport, const void *daddr4,
				const void *daddr6, __u32 sk_uid, __u32 netns)
{
	struct event *e;
	struct task_struct *task;
	struct mm_struct *mm;
	__u64 id = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(1);
		return 0;
	}
	task = (struct task_struct *)bpf_get_current_task();
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)ug;
	e->gid = ug >> 32;
	e->sk_uid = sk_uid;
	e->netns = netns;
	e->family = family;
	e->dport = dport;
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == FAMILY_INET)
		bpf_probe_read_kernel(e->daddr, 4, daddr4);
	else
		bpf_probe_read_kernel(e->daddr, 16, daddr6);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	BPF_CORE_READ_STR_INTO(&e->pcomm, task, real_parent, comm);

	e->args_len = 0;
	e->exe_depth = 0;
	e->cwd_depth = 0;
	e->_pad = 0;
	e->args[0] = 0;
	mm = BPF_CORE_READ(task, mm);
	if (mm) {
		unsigned long start = BPF_CORE_READ(mm, arg_start);
		unsigned long end = BPF_CORE_READ(mm, arg_end);
		unsigned long len = end - start;
		if (end > start) {
			if (len > ARGS_MAX - 1)
				len = ARGS_MAX - 1;
			if (bpf_probe_read_user(e->args, len & (ARGS_MAX - 1), (void *)start) == 0)
				e->args_len = len;
		}
		struct file *exe = BPF_CORE_READ(mm, exe_file);
		if (exe)
			e->exe_depth = walk_path(BPF_CORE_READ(exe, f_path.dentry),
						 BPF_CORE_READ(exe, f_path.mnt), e->exe);
	}
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	if (fs)
		e->cwd_depth = walk_path(BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt),
					 e->cwd);
	bpf_ringbuf_submit(e, 0);
	count(0);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state_btf, struct sock *sk, int oldstate, int newstate)
{
	if (newstate != TCP_SYN_SENT || sk->sk_protocol != PROTO_TCP)
		return 0;
	__u16 dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (!bpf_map_lookup_elem(&ports, &dport))
		return 0;
	return emit(sk->__sk_common.skc_family, dport, &sk->__sk_common.skc_daddr,
		    &sk->__sk_common.skc_v6_daddr, sk->sk_uid.val,
		    BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum));
}

SEC("tracepoint/sock/inet_sock_set_state")
int on_state_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->newstate != TCP_SYN_SENT || ctx->protocol != PROTO_TCP)
		return 0;
	__u16 dport = ctx->dport; /* the tracepoint stores it in host order */
	if (!bpf_map_lookup_elem(&ports, &dport))
		return 0;
	const struct sock *sk = ctx->skaddr;
	return emit(ctx->family, dport, ctx->daddr, ctx->daddr_v6, BPF_CORE_READ(sk, sk_uid.val),
		    BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum));
}
