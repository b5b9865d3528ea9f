"""A seccomp filter through ctypes: socket(2), io_uring_setup(2), setsid(2) and setpgid(2) fail with EPERM.

What Landlock (up to ABI 7) leaves open is reached through new sockets: UDP and raw sockets, and connecting to
a unix socket by its path (a pathname lookup Landlock does not mediate). A process that cannot create a socket
has none of those (socketpair(2), harmless, stays allowed; io_uring could create sockets behind the filter's
back). setsid and setpgid: the parent kills a worker by its process group (and the session the worker was
started in), so a process the model forks must not leave either; one that did would outlive its deployment and the
service (a fork does not inherit PR_SET_PDEATHSIG). Standalone on purpose (standard library only), like
landlock.py. Needs no_new_privs set first.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

# architecture -> (AUDIT_ARCH_*, (socket, io_uring_setup, setsid, setpgid))
_ARCHES = {"x86_64": (0xC000003E, (41, 425, 112, 109)), "aarch64": (0xC00000B7, (198, 425, 157, 154))}
_X32_SYSCALL_BIT = 0x40000000
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


class SeccompUnavailable(OSError):
    """This architecture is not one the filter knows, or the kernel refused it."""


class _FProg(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_char_p))


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def deny_sockets() -> None:
    """Install the filter for this process and its future children, for good."""
    machine = platform.machine()
    if machine not in _ARCHES:
        raise SeccompUnavailable(errno.ENOSYS, f"no seccomp filter for {machine}")
    arch, denied = _ARCHES[machine]
    deny = _RET_ERRNO | errno.EPERM
    count = len(denied)
    program = b"".join((
        _insn(_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _insn(_JEQ_K, 1, 0, arch),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),  # another ABI's syscall numbers: no
        _insn(_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        _insn(_JGE_K, count + 1, 0, _X32_SYSCALL_BIT) if machine == "x86_64"
        else _insn(_JEQ_K, count + 1, 0, 0xFFFFFFFF),
        *(_insn(_JEQ_K, count - i, 0, nr) for i, nr in enumerate(denied)),  # each jumps to the deny below
        _insn(_RET_K, 0, 0, _RET_ALLOW),
        _insn(_RET_K, 0, 0, deny),
    ))
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _FProg(len(program) // 8, ctypes.cast(buffer, ctypes.c_char_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        code = ctypes.get_errno()
        raise SeccompUnavailable(code, os.strerror(code))
