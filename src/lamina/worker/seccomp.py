"""The seccomp filter every instance runs under: a classic-BPF deny list, built once.

Denied with EPERM: `DENIED_SYSCALLS` (ptrace and friends, mount and the new mount API,
unshare/setns, keyring, bpf/perf/userfaultfd, io_uring, kexec and modules, handles, swap,
reboot, clocks, ...), clone with any namespace flag, odd personalities, the whole x32 ABI;
clone3 answers ENOSYS (its flags sit in memory, out of the filter's reach, so libc falls back
to clone); any other architecture (i386 through int 0x80) kills the process.

Standard library only: a zygote of any Python 3.9+ imports it (as `seccomp`, beside
`confine`), and `confine.load_seccomp` installs `filter_bytes(...)`.
"""

from __future__ import annotations

import errno
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# x86_64 numbers of the syscalls answered with EPERM, by theme.
_DENIED_TABLE = """
    ptrace 101  process_vm_readv 310  process_vm_writev 311  pidfd_getfd 438  kcmp 312
    mount 165  umount2 166  pivot_root 155  chroot 161  open_tree 428  move_mount 429
    fsopen 430  fsconfig 431  fsmount 432  fspick 433  mount_setattr 442  open_tree_attr 467
    unshare 272  setns 308
    keyctl 250  add_key 248  request_key 249
    bpf 321  perf_event_open 298  userfaultfd 323
    io_uring_setup 425  io_uring_enter 426  io_uring_register 427
    kexec_load 246  kexec_file_load 320  init_module 175  finit_module 313  delete_module 176
    open_by_handle_at 304  name_to_handle_at 303
    swapon 167  swapoff 168  reboot 169  acct 163  vhangup 153
    settimeofday 164  clock_settime 227  clock_adjtime 305  adjtimex 159
    syslog 103  iopl 172  ioperm 173  lookup_dcookie 212  quotactl 179  quotactl_fd 443
    uselib 134  ustat 136  sysfs 139
"""
_WORDS = _DENIED_TABLE.split()
DENIED_SYSCALLS = {_WORDS[i]: int(_WORDS[i + 1]) for i in range(0, len(_WORDS), 2)}
NR_CLONE = 56
NR_CLONE3 = 435
NR_PERSONALITY = 135
# personality(2) values normal programs use: PER_LINUX, PER_LINUX32, UNAME26 variants, query.
PERSONALITY_ALLOWED = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0 = 16  # low 32 bits of args[0] (little endian); clone and personality use no more


def program(namespace_flags: int) -> list[tuple[int, int, int, int]]:
    """The filter as classic-BPF (code, jt, jf, k) instructions, jumps resolved from labels.

    The syscall number is looked up in a balanced tree of comparisons rather than a list: the
    kernel runs the filter for every syscall number when it loads it (to cache the ones that
    are always allowed), and a tree makes that, and each uncached syscall, several times faster.
    """
    prog: list[tuple[int, int | str, int | str, int]] = []
    labels: dict[str, int] = {}

    def op(code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        prog.append((code, jt, jf, k))

    def lookup(table: list[tuple[int, str]]) -> None:
        if len(table) <= 4:
            for nr, target in table:
                op(_BPF_JEQ_K, nr, target, 0)
            op(_BPF_RET_K, SECCOMP_RET_ALLOW)
            return
        mid = len(table) // 2
        upper = f"nr>={table[mid][0]}"
        op(_BPF_JGE_K, table[mid][0], upper, 0)
        lookup(table[:mid])
        labels[upper] = len(prog)
        lookup(table[mid:])

    op(_BPF_LD_W_ABS, _OFF_ARCH)
    op(_BPF_JEQ_K, AUDIT_ARCH_X86_64, 0, "kill")  # i386 through int 0x80, say
    op(_BPF_LD_W_ABS, _OFF_NR)
    op(_BPF_JGE_K, X32_SYSCALL_BIT, "eperm", 0)  # the x32 ABI: all of it
    table = [(nr, "eperm") for nr in DENIED_SYSCALLS.values()]
    table.append((NR_CLONE, "clone"))
    table.append((NR_CLONE3, "enosys"))  # its flags sit in memory: make libc fall back to clone
    table.append((NR_PERSONALITY, "personality"))
    lookup(sorted(table))
    labels["clone"] = len(prog)  # classic BPF only jumps forward
    op(_BPF_LD_W_ABS, _OFF_ARG0)
    op(_BPF_JSET_K, namespace_flags, "eperm", "allow")
    labels["personality"] = len(prog)
    op(_BPF_LD_W_ABS, _OFF_ARG0)
    for value in PERSONALITY_ALLOWED:
        op(_BPF_JEQ_K, value, "allow", 0)
    labels["eperm"] = len(prog)  # (personality falls through to here)
    op(_BPF_RET_K, SECCOMP_RET_ERRNO | errno.EPERM)
    labels["enosys"] = len(prog)
    op(_BPF_RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS)
    labels["kill"] = len(prog)
    op(_BPF_RET_K, SECCOMP_RET_KILL_PROCESS)
    labels["allow"] = len(prog)
    op(_BPF_RET_K, SECCOMP_RET_ALLOW)

    def offset(pc: int, target: int | str) -> int:
        if isinstance(target, int):
            return target
        jump = labels[target] - pc - 1
        if not 0 <= jump <= 255:
            raise ValueError(f"seccomp: jump to {target} out of range ({jump})")
        return jump

    return [(code, offset(pc, jt), offset(pc, jf), k) for pc, (code, jt, jf, k) in enumerate(prog)]


def filter_bytes(namespace_flags: int) -> bytes:
    """The program as the kernel takes it (struct sock_filter[]); clone with any of
    `namespace_flags` is denied."""
    return b"".join(struct.pack("=HBBI", *ins) for ins in program(namespace_flags))
