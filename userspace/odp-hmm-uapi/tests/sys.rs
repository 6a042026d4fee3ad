// SPDX-License-Identifier: GPL-2.0

//! Checks the hand-written C library bindings of `odp_hmm_uapi::sys` against this system's C
//! headers: a C program prints every constant, type size and signedness, and the wait-status
//! macros over all 16-bit statuses, and each printed value must equal the Rust one. Then a few
//! calls check the functions behave as declared.

use std::{
    collections::{
        BTreeMap,
        BTreeSet, //
    },
    ffi::CString,
    fs::File,
    io::Write,
    mem::size_of,
    os::{
        fd::{
            AsRawFd,
            FromRawFd, //
        },
        unix::fs::MetadataExt,
    },
    path::PathBuf,
    ptr,
};

use odp_hmm_uapi::sys;

mod common;

/// Compiles and runs `body` (C statements) with the C library headers `sys` mirrors included;
/// returns its standard output.
fn c_output(body: &str) -> String {
    let prelude =
        "#define _GNU_SOURCE\n#include <errno.h>\n#include <grp.h>\n#include <stdint.h>\n\
                   #include <signal.h>\n#include <stdio.h>\n#include <sys/ioctl.h>\n\
                   #include <sys/mman.h>\n#include <sys/syscall.h>\n#include <sys/types.h>\n\
                   #include <sys/wait.h>\n#include <unistd.h>\n\
                   #define P(name, v) printf(\"%s %lld\\n\", name, (long long)(v))\n\
                   #define SIGNED(t) ((t)-1 < (t)0)";
    common::run_c(prelude, body, &[])
}

/// `name value` lines as a map.
fn c_values(body: &str) -> BTreeMap<String, i64> {
    common::values(&c_output(body))
}

macro_rules! check_consts {
    ($c:ident, $rust:ident, $($name:ident),* $(,)?) => {{
        $(
            $c += &format!("P(\"{0}\", {0});\n", stringify!($name));
            $rust.insert(stringify!($name).to_string(), sys::$name as i64);
        )*
    }};
}

macro_rules! check_types {
    ($c:ident, $rust:ident, $($name:ident),* $(,)?) => {{
        $(
            $c += &format!(
                "P(\"sizeof({0})\", sizeof({0}));\nP(\"signed({0})\", SIGNED({0}));\n",
                stringify!($name)
            );
            $rust.insert(format!("sizeof({})", stringify!($name)), size_of::<sys::$name>() as i64);
            $rust.insert(
                format!("signed({})", stringify!($name)),
                (<sys::$name>::MIN != 0) as i64,
            );
        )*
    }};
}

/// The names of the constants `src/sys.rs` defines.
fn consts_in_source() -> BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/sys.rs");
    let source = std::fs::read_to_string(path).expect("src/sys.rs");
    source
        .lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| !name.starts_with("fn "))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

#[test]
fn constants_and_types_match_the_headers() {
    let mut c = String::new();
    let mut rust = BTreeMap::new();
    check_consts!(
        c,
        rust,
        PROT_READ,
        PROT_WRITE,
        MAP_SHARED,
        MAP_PRIVATE,
        MAP_FIXED,
        MAP_ANONYMOUS,
        MAP_NORESERVE,
        MAP_HUGETLB,
        MADV_DONTNEED,
        MADV_HUGEPAGE,
        MADV_NOHUGEPAGE,
        MREMAP_MAYMOVE,
        MREMAP_FIXED,
        _SC_PAGESIZE,
        EPERM,
        ENOENT,
        ESRCH,
        EINTR,
        EIO,
        E2BIG,
        EAGAIN,
        ENOMEM,
        EACCES,
        EFAULT,
        EBUSY,
        EEXIST,
        ENODEV,
        EINVAL,
        ENOTTY,
        ENOSPC,
        ERANGE,
        ENOSYS,
        EOVERFLOW,
        EPROTONOSUPPORT,
        EOPNOTSUPP,
        ETIMEDOUT,
        EREMOTEIO,
        SIGKILL,
        SYS_pidfd_open,
        SYS_pidfd_getfd,
        SYS_process_mrelease,
    );
    // A pointer constant: compared as an address.
    c += "P(\"MAP_FAILED\", (intptr_t)MAP_FAILED);\n";
    rust.insert("MAP_FAILED".to_string(), sys::MAP_FAILED as isize as i64);
    check_types!(c, rust, size_t, ssize_t, off_t, pid_t, uid_t, gid_t);
    let from_c = c_values(&c);
    assert_eq!(from_c.len(), rust.len(), "every checked item printed once");
    for (name, value) in &rust {
        assert_eq!(from_c.get(name), Some(value), "{name}: C and Rust differ");
    }

    // Every constant of the module is checked above.
    let checked: BTreeSet<String> = rust.keys().filter(|k| !k.contains('(')).cloned().collect();
    assert_eq!(
        consts_in_source(),
        checked,
        "src/sys.rs constants and the checked list differ"
    );
}

#[test]
fn wait_status_helpers_match_the_macros() {
    let out = c_output(
        "for (int s = 0; s <= 0xffff; s++)\n\
         printf(\"%d %d %d %d\\n\", s, !!WIFEXITED(s), WEXITSTATUS(s), WTERMSIG(s));",
    );
    let mut lines = 0;
    for line in out.lines() {
        let v: Vec<i32> = line
            .split(' ')
            .map(|x| x.parse().expect("number"))
            .collect();
        let s = v[0];
        assert_eq!(sys::WIFEXITED(s) as i32, v[1], "WIFEXITED({s:#x})");
        assert_eq!(sys::WEXITSTATUS(s), v[2], "WEXITSTATUS({s:#x})");
        assert_eq!(sys::WTERMSIG(s), v[3], "WTERMSIG({s:#x})");
        lines += 1;
    }
    assert_eq!(lines, 0x10000);
}

#[test]
fn memory_calls_work() {
    let from_c = c_values("P(\"page\", sysconf(_SC_PAGESIZE));");
    // SAFETY: `sysconf` has no memory-safety preconditions.
    let ps = unsafe { sys::sysconf(sys::_SC_PAGESIZE) };
    assert_eq!(Some(&(ps as i64)), from_c.get("page"));
    let ps = ps as usize;

    // SAFETY: A fresh mapping chosen by the kernel overlaps nothing of ours.
    let a = unsafe {
        sys::mmap(
            ptr::null_mut(),
            4 * ps,
            sys::PROT_READ | sys::PROT_WRITE,
            sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | sys::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(a, sys::MAP_FAILED);
    let a = a.cast::<u8>();
    // SAFETY: `a` is our 4-page read-write mapping; every range below lies inside it.
    unsafe {
        a.write_bytes(0xaa, 4 * ps);
        assert_eq!(sys::madvise(a.cast(), ps, sys::MADV_DONTNEED), 0);
        assert_eq!(*a, 0, "MADV_DONTNEED dropped the private page");
        assert_eq!(*a.add(ps), 0xaa);
        assert_eq!(sys::mprotect(a.add(3 * ps).cast(), ps, sys::PROT_READ), 0);
        // Moves page 1 over page 2.
        let p = sys::mremap(
            a.add(ps).cast(),
            ps,
            ps,
            sys::MREMAP_MAYMOVE | sys::MREMAP_FIXED,
            a.add(2 * ps),
        );
        assert_eq!(p, a.add(2 * ps).cast());
        assert_eq!(*a.add(2 * ps), 0xaa);
        // Page 1 is gone: MAP_FIXED maps a fresh page there.
        let p = sys::mmap(
            a.add(ps).cast(),
            ps,
            sys::PROT_READ,
            sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | sys::MAP_FIXED,
            -1,
            0,
        );
        assert_eq!(p, a.add(ps).cast());
        assert_eq!(*a.add(ps), 0);
        assert_eq!(sys::munmap(a.cast(), 4 * ps), 0);
    }

    let name = CString::new("odp_hmm_sys_test").expect("no NUL");
    // SAFETY: `name` is a valid C string.
    let fd = unsafe { sys::memfd_create(name.as_ptr(), 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is ours; the mapping is fresh and unmapped before the end of the block.
    unsafe {
        assert_eq!(sys::ftruncate(fd, ps as sys::off_t), 0);
        let m = sys::mmap(
            ptr::null_mut(),
            ps,
            sys::PROT_READ | sys::PROT_WRITE,
            sys::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(m, sys::MAP_FAILED);
        m.cast::<u8>().write(7);
        assert_eq!(sys::close(fd), 0);
        assert_eq!(*m.cast::<u8>(), 7);
        assert_eq!(sys::munmap(m, ps), 0);
    }
}

/// A forked child waiting on a pipe.
struct Reader {
    pid: sys::pid_t,
    /// The pipe's read end (the child reads its copy).
    read_end: File,
    /// The pipe's write end: one byte to it wakes the child.
    write_end: File,
}

/// Forks a child that reads one byte from a new pipe, then leaves with
/// `_exit(then(bytes_read, byte))`. `then` must make async-signal-safe calls only.
fn fork_reader(then: fn(sys::ssize_t, u8) -> sys::c_int) -> Reader {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid out-array of two descriptors.
    assert_eq!(unsafe { sys::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: The child only makes async-signal-safe calls and leaves with `_exit`.
    let pid = unsafe { sys::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let mut byte = 0u8;
        // SAFETY: Plain calls on the child's descriptors; `byte` is a valid 1-byte buffer.
        unsafe {
            sys::close(fds[1]);
            let n = sys::read(fds[0], (&mut byte as *mut u8).cast(), 1);
            sys::_exit(then(n, byte));
        }
    }
    // SAFETY: Both pipe ends are ours; each `File` closes its end on drop.
    let (read_end, write_end) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    Reader {
        pid,
        read_end,
        write_end,
    }
}

#[test]
fn process_calls_work() {
    let child = fork_reader(|n, byte| {
        // Only root may drop its groups and identity; others get EPERM.
        // SAFETY: Plain calls without pointers but a null list of no groups.
        let dropped = unsafe {
            sys::setgroups(0, ptr::null()) == 0
                && sys::setgid(65534) == 0
                && sys::setuid(65534) == 0
        };
        let code = if n == 1 && byte == 42 { 40 } else { 1 };
        code + dropped as i32
    });
    let (pid, mut w) = (child.pid, child.write_end);
    drop(child.read_end);
    w.write_all(&[42]).expect("write to the pipe");
    drop(w);
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    assert_eq!(unsafe { sys::waitpid(pid, &mut status, 0) }, pid);
    assert!(sys::WIFEXITED(status));
    let root = std::fs::metadata("/proc/self").expect("/proc/self").uid() == 0;
    assert_eq!(sys::WEXITSTATUS(status), 40 + root as i32);

    // A terminal ioctl (TCGETS) on a file that is not a terminal.
    let tcgets = c_values("P(\"TCGETS\", TCGETS);")["TCGETS"] as sys::c_ulong;
    let f = File::open("/dev/null").expect("/dev/null");
    // SAFETY: /dev/null refuses TCGETS before looking at the argument.
    let r = unsafe { sys::ioctl(f.as_raw_fd(), tcgets, ptr::null_mut::<sys::c_void>()) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(sys::ENOTTY)
    );
}

#[test]
fn pidfd_calls_work() {
    // The child's read blocks until the parent kills it.
    let Reader {
        pid,
        read_end: r,
        write_end: _w,
    } = fork_reader(|_, _| 1);
    // SAFETY: `pidfd_open(pid, 0)` takes no pointers.
    let pidfd = unsafe {
        sys::syscall(
            sys::SYS_pidfd_open,
            sys::c_long::from(pid),
            0 as sys::c_long,
        )
    };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `pidfd` is a descriptor we own from here on.
    let pidfd = unsafe { File::from_raw_fd(pidfd as i32) };
    // The child's copy of the pipe's read end, by its number there (the same as ours).
    // SAFETY: `pidfd_getfd(pidfd, fd, 0)` takes no pointers.
    let dup = unsafe {
        sys::syscall(
            sys::SYS_pidfd_getfd,
            sys::c_long::from(pidfd.as_raw_fd()),
            sys::c_long::from(r.as_raw_fd()),
            0 as sys::c_long,
        )
    };
    assert!(dup >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
    // SAFETY: `dup` is a descriptor we own from here on.
    let dup = unsafe { File::from_raw_fd(dup as i32) };
    let ino = |f: &File| f.metadata().expect("fstat").ino();
    assert_eq!(ino(&dup), ino(&r), "pidfd_getfd gave the child's pipe");
    // A process that is not dying has nothing to release.
    // SAFETY: `process_mrelease(pidfd, 0)` takes no pointers.
    let released = unsafe {
        sys::syscall(
            sys::SYS_process_mrelease,
            sys::c_long::from(pidfd.as_raw_fd()),
            0 as sys::c_long,
        )
    };
    assert_eq!(released, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(sys::EINVAL)
    );
    // SAFETY: `kill` takes no pointers; `pid` is our child.
    assert_eq!(unsafe { sys::kill(pid, sys::SIGKILL) }, 0);
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    assert_eq!(unsafe { sys::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(sys::WTERMSIG(status), sys::SIGKILL);
}
