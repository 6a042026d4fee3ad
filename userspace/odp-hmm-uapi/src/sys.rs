// SPDX-License-Identifier: GPL-2.0

//! Hand-written bindings to the few C library functions and constants the userspace crates use.
//!
//! The one supported target is x86_64 Linux with glibc (the test VM and the build hosts): every
//! value below was taken from that system's headers, and the `sys` test compiles a C program
//! against those headers and checks each constant, type size and wait-status helper against
//! them. The standard library already links glibc, so the functions need no link attribute.
//! Declarations follow the glibc prototypes (`ioctl` and `mremap` are variadic there).

#![allow(non_camel_case_types, non_upper_case_globals)]

#[cfg(not(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")))]
compile_error!("odp_hmm_uapi::sys supports x86_64 Linux with glibc only");

pub use core::ffi::{
    c_char,
    c_int,
    c_long,
    c_uint,
    c_ulong,
    c_void, //
};

/// `size_t`.
pub type size_t = usize;
/// `ssize_t`.
pub type ssize_t = isize;
/// `off_t` (64 bits on x86_64).
pub type off_t = i64;
/// `pid_t`.
pub type pid_t = i32;
/// `uid_t`.
pub type uid_t = u32;
/// `gid_t`.
pub type gid_t = u32;

// <sys/mman.h>
/// Pages may be read.
pub const PROT_READ: c_int = 0x1;
/// Pages may be written.
pub const PROT_WRITE: c_int = 0x2;
/// Share changes.
pub const MAP_SHARED: c_int = 0x01;
/// Changes are private.
pub const MAP_PRIVATE: c_int = 0x02;
/// Interpret `addr` exactly.
pub const MAP_FIXED: c_int = 0x10;
/// Don't use a file.
pub const MAP_ANONYMOUS: c_int = 0x20;
/// Don't check for reservations.
pub const MAP_NORESERVE: c_int = 0x4000;
/// Back the mapping with hugetlbfs pages.
pub const MAP_HUGETLB: c_int = 0x40000;
/// What `mmap` and `mremap` return on error: `(void *) -1`.
pub const MAP_FAILED: *mut c_void = !0 as *mut c_void;
/// Don't need these pages.
pub const MADV_DONTNEED: c_int = 4;
/// Worth backing with hugepages.
pub const MADV_HUGEPAGE: c_int = 14;
/// Not worth backing with hugepages.
pub const MADV_NOHUGEPAGE: c_int = 15;
/// `mremap` may move the mapping.
pub const MREMAP_MAYMOVE: c_int = 1;
/// `mremap` moves the mapping to the given address.
pub const MREMAP_FIXED: c_int = 2;

// <unistd.h>
/// `sysconf` name of the page size.
pub const _SC_PAGESIZE: c_int = 30;

// <errno.h>
/// Operation not permitted.
pub const EPERM: c_int = 1;
/// No such file or directory.
pub const ENOENT: c_int = 2;
/// No such process.
pub const ESRCH: c_int = 3;
/// Interrupted system call.
pub const EINTR: c_int = 4;
/// I/O error.
pub const EIO: c_int = 5;
/// Argument list too long.
pub const E2BIG: c_int = 7;
/// Try again.
pub const EAGAIN: c_int = 11;
/// Out of memory.
pub const ENOMEM: c_int = 12;
/// Permission denied.
pub const EACCES: c_int = 13;
/// Bad address.
pub const EFAULT: c_int = 14;
/// Device or resource busy.
pub const EBUSY: c_int = 16;
/// File exists.
pub const EEXIST: c_int = 17;
/// No such device.
pub const ENODEV: c_int = 19;
/// Invalid argument.
pub const EINVAL: c_int = 22;
/// Not a typewriter (inappropriate ioctl).
pub const ENOTTY: c_int = 25;
/// No space left on device.
pub const ENOSPC: c_int = 28;
/// Math result not representable.
pub const ERANGE: c_int = 34;
/// Function not implemented.
pub const ENOSYS: c_int = 38;
/// Value too large for defined data type.
pub const EOVERFLOW: c_int = 75;
/// Protocol not supported.
pub const EPROTONOSUPPORT: c_int = 93;
/// Operation not supported.
pub const EOPNOTSUPP: c_int = 95;
/// Connection timed out.
pub const ETIMEDOUT: c_int = 110;
/// Remote I/O error.
pub const EREMOTEIO: c_int = 121;

// <signal.h>
/// Kill the process (cannot be caught).
pub const SIGKILL: c_int = 9;

// <sys/syscall.h>: system calls glibc 2.36 has no wrapper for.
/// `pidfd_open(pid, flags)`: a file descriptor that refers to a process.
pub const SYS_pidfd_open: c_long = 434;
/// `pidfd_getfd(pidfd, targetfd, flags)`: a duplicate of another process's file descriptor.
pub const SYS_pidfd_getfd: c_long = 438;
/// `process_mrelease(pidfd, flags)`: reap a dying process's memory now (the OOM reaper's work).
pub const SYS_process_mrelease: c_long = 448;

// <sys/wait.h>, after glibc's <bits/waitstatus.h>.
/// The child exited normally (`WIFEXITED`).
#[allow(non_snake_case)]
pub const fn WIFEXITED(status: c_int) -> bool {
    WTERMSIG(status) == 0
}

/// The child's exit code, if [`WIFEXITED`] (`WEXITSTATUS`).
#[allow(non_snake_case)]
pub const fn WEXITSTATUS(status: c_int) -> c_int {
    (status & 0xff00) >> 8
}

/// The signal that ended the child, if it did not exit (`WTERMSIG`).
#[allow(non_snake_case)]
pub const fn WTERMSIG(status: c_int) -> c_int {
    status & 0x7f
}

unsafe extern "C" {
    // <sys/ioctl.h>
    pub fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;

    // <sys/mman.h>
    pub fn mmap(
        addr: *mut c_void,
        len: size_t,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: off_t,
    ) -> *mut c_void;
    pub fn munmap(addr: *mut c_void, len: size_t) -> c_int;
    pub fn mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> c_int;
    pub fn madvise(addr: *mut c_void, len: size_t, advice: c_int) -> c_int;
    pub fn mremap(
        old_addr: *mut c_void,
        old_len: size_t,
        new_len: size_t,
        flags: c_int,
        ...
    ) -> *mut c_void;
    pub fn memfd_create(name: *const c_char, flags: c_uint) -> c_int;

    // <unistd.h>
    pub fn ftruncate(fd: c_int, length: off_t) -> c_int;
    pub fn close(fd: c_int) -> c_int;
    pub fn pipe(fds: *mut c_int) -> c_int;
    pub fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t;
    pub fn fork() -> pid_t;
    pub fn _exit(status: c_int) -> !;
    pub fn setgid(gid: gid_t) -> c_int;
    pub fn setuid(uid: uid_t) -> c_int;
    pub fn sysconf(name: c_int) -> c_long;
    pub fn syscall(number: c_long, ...) -> c_long;

    // <signal.h>
    pub fn kill(pid: pid_t, sig: c_int) -> c_int;

    // <grp.h>
    pub fn setgroups(size: size_t, list: *const gid_t) -> c_int;

    // <sys/wait.h>
    pub fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t;
}
