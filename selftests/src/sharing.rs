// SPDX-License-Identifier: GPL-2.0

//! One process's file is not another's: registrations belong to the address space that opened
//! the file. A forked child, or a process the descriptor was passed to over a unix socket, gets
//! `EPERM` for REGISTER, UNREGISTER, FAULT, SNAPSHOT and DMA through it, and INFO and STATS work
//! for it; the opener's registration is untouched.

use std::{
    io::{
        self,
        Read,
        Write, //
    },
    mem,
    os::{
        fd::{
            AsRawFd,
            FromRawFd, //
        },
        unix::net::UnixStream,
    },
    ptr,
};

use odp_hmm_uapi::*;

use crate::{
    check_eq,
    ktap::{
        Outcome,
        Test,
        TestResult, //
    },
    util::*,
};

/// Tests for the `odp` group.
pub const TESTS: &[&Test] = &[
    &Test {
        name: "forked_child_gets_eperm",
        run: forked_child,
    },
    &Test {
        name: "fd_passed_over_unix_socket_gets_eperm",
        run: passed_over_socket,
    },
];

/// Pages the opener registers.
const PAGES: usize = 4;

/// What the other process knows of the opener's registration.
#[derive(Clone, Copy)]
struct Target {
    handle: u64,
    addr: u64,
    /// Pages mapped, if the other process's STATS must see exactly these.
    pages_now: Option<u64>,
}

/// Every call another address space makes through the opener's file: refused with `EPERM` if it
/// acts on registrations, answered if it only reads.
fn foreign_calls(dev: &Device, t: Target) -> TestResult {
    let ps = page_size() as u64;
    let info = dev.info()?;
    check_eq!(
        info.version,
        ODP_HMM_ABI_VERSION,
        "INFO from another process"
    );
    let st = dev.stats(t.handle)?;
    check_eq!(st.registrations, 1, "STATS of the opener's registration");
    if let Some(pages) = t.pages_now {
        check_eq!(
            st.pages_now,
            pages,
            "pages mapped, as STATS shows another process"
        );
    }
    check_eq!(dev.stats(0)?.registrations, 1, "STATS of the whole file");

    let eperm = |r: io::Result<()>, what: &str| expect_errno(r, libc::EPERM, what);
    eperm(dev.unregister(t.handle), "UNREGISTER")?;
    eperm(dev.fault(t.handle, t.addr, ps, 0).map(drop), "FAULT")?;
    eperm(
        dev.fault(t.handle, t.addr, ps, ODP_HMM_FAULT_WRITE)
            .map(drop),
        "FAULT for write",
    )?;
    eperm(dev.snapshot(t.handle, t.addr, 1).map(drop), "SNAPSHOT")?;
    eperm(
        dev.copy((t.handle, t.addr), (t.handle, t.addr + ps), 64)
            .map(drop),
        "DMA between the opener's pages",
    )?;
    eperm(
        dev.dma(&odp_hmm_dma {
            flags: ODP_HMM_DMA_SRC_DEVBUF,
            dst_handle: t.handle,
            dst_addr: t.addr,
            length: 64,
            ..Default::default()
        })
        .map(drop),
        "DMA from the device buffer",
    )?;
    // Its own memory is not the file's address space either.
    let own = Mapping::anon(PAGES * page_size())?;
    eperm(
        dev.register(own.addr(), own.len() as u64, RW, 0).map(drop),
        "REGISTER of the other process's own memory",
    )?;
    // Nothing of that changed the registration.
    let st = dev.stats(t.handle)?;
    check_eq!(st.registrations, 1, "registrations after the refused calls");
    if let Some(pages) = t.pages_now {
        check_eq!(st.pages_now, pages, "pages mapped after the refused calls");
    }
    Ok(())
}

/// The opener's registration of `m` still works: it faults, maps, and the device copies.
fn still_works(dev: &Device, m: &Mapping, reg: &Registration) -> TestResult {
    check_eq!(
        dev.stats(0)?.registrations,
        1,
        "the opener's registrations afterwards"
    );
    let f = dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
    check_eq!(
        f.pages_valid,
        PAGES as u64,
        "pages mapped by the opener's fault"
    );
    check_eq!(
        mapped(&dev.snapshot(reg.handle, m.addr(), PAGES)?).len(),
        PAGES,
        "pages in the opener's snapshot"
    );
    copy_and_check(dev, m, reg, 0, PAGES - 1)?;
    dev.unregister(reg.handle)?;
    Ok(())
}

/// Registers [`PAGES`] marked pages and maps them writable.
fn opener() -> Result<(Mapping, Device, Registration), Outcome> {
    let ps = page_size();
    let mut m = Mapping::anon(PAGES * ps)?;
    for i in 0..PAGES {
        mark_page(&mut m.bytes_mut()[i * ps..(i + 1) * ps], 0x21, i);
    }
    let (dev, reg) = register(&m, RW)?;
    dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
    Ok((m, dev, reg))
}

fn forked_child() -> TestResult {
    let (m, dev, reg) = opener()?;
    let target = Target {
        handle: reg.handle,
        addr: m.addr(),
        // fork() write-protected the opener's pages: they were unmapped before the child runs.
        pages_now: None,
    };
    in_child_test(|| foreign_calls(&dev, target))?;
    still_works(&dev, &m, &reg)
}

/// Sends descriptor `fd` with `data` over `sock` (`SCM_RIGHTS`).
fn send_fd(sock: &UnixStream, fd: i32, data: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64 words: the control buffer must be aligned for `struct cmsghdr`.
    let mut control = [0u64; 8];
    // SAFETY: `CMSG_SPACE` only computes.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<i32>() as u32) } as usize;
    assert!(space <= mem::size_of_val(&control));
    // SAFETY: An all-zero `msghdr` is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` has a control buffer of `space` bytes, room for one header and one `int`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<i32>() as u32) as usize;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
    }
    // SAFETY: `msg` and everything it points to live across the call.
    if unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives a descriptor and `data.len()` bytes sent by [`send_fd`].
fn recv_fd(sock: &UnixStream, data: &mut [u8]) -> io::Result<std::fs::File> {
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: An all-zero `msghdr` is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: `msg` and everything it points to live across the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(io::Error::other(format!(
            "received {n} bytes of {}",
            data.len()
        )));
    }
    // SAFETY: `recvmsg` filled the control buffer; the header is checked before the data is read.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::other("no descriptor came with the message"));
        }
        let fd = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
        Ok(std::fs::File::from_raw_fd(fd))
    }
}

fn passed_over_socket() -> TestResult {
    let (ours, theirs) = UnixStream::pair()?;
    // The other process exists before the device is opened: the file reaches it only over the
    // socket.
    // (The closure owns `theirs`: in this process it is closed when `spawn` returns.)
    let child = ChildTest::spawn(move || {
        let mut data = [0u8; 24];
        let file = recv_fd(&theirs, &mut data)?;
        let word = |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().expect("8"));
        let dev = Device::from_file(file);
        foreign_calls(
            &dev,
            Target {
                handle: word(0),
                addr: word(1),
                pages_now: Some(word(2)),
            },
        )?;
        // Done: the opener may look again.
        (&theirs).write_all(&[1])?;
        Ok(())
    })?;
    let (m, dev, reg) = opener()?;
    let data = [reg.handle, m.addr(), PAGES as u64]
        .map(u64::to_le_bytes)
        .concat();
    send_fd(&ours, dev.file().as_raw_fd(), &data)?;
    let mut done = [0u8];
    let told = (&ours).read_exact(&mut done);
    child.join()?;
    told.map_err(|e| format!("the other process did not finish: {e}"))?;
    check_eq!(
        dev.stats(reg.handle)?.pages_now,
        PAGES as u64,
        "pages mapped after the other process's calls"
    );
    still_works(&dev, &m, &reg)
}
