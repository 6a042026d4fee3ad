// SPDX-License-Identifier: GPL-2.0

//! The device node and the module's lifecycle.

use std::{
    env, fs,
    os::unix::fs::{
        FileTypeExt,
        MetadataExt,
        PermissionsExt, //
    },
};

use odp_hmm_uapi::*;

use crate::{
    check, check_eq,
    ktap::{
        Test,
        TestResult, //
    },
    skip,
    util::*,
};

/// The tests of this group.
pub const TESTS: &[&Test] = &[
    &Test {
        name: "device_node_mode_0600_root",
        run: device_node_mode,
    },
    &Test {
        name: "unprivileged_open_refused",
        run: unprivileged_open_refused,
    },
    &Test {
        name: "unknown_ioctl_enotty",
        run: unknown_ioctl_enotty,
    },
    &Test {
        name: "info_reports_device_and_domain",
        run: info_reports_device,
    },
    &Test {
        name: "info_of_abi_version_1_still_works",
        run: info_abi_v1,
    },
    &Test {
        name: "unload_with_open_device_refused",
        run: unload_with_open_device,
    },
    &Test {
        name: "load_unload_cycles",
        run: load_unload_cycles,
    },
    &Test {
        name: "unbind_revokes_registrations",
        run: unbind_revokes_registrations,
    },
];

fn device_node_mode() -> TestResult {
    let meta = fs::metadata(ODP_HMM_DEVICE_PATH)?;
    check!(
        meta.file_type().is_char_device(),
        "{ODP_HMM_DEVICE_PATH} is not a character device"
    );
    // The module's own default is 0600 root; the package's udev rule gives the node to the group
    // odp, mode 0660 (udev/60-odp-hmm.rules), when it is installed.
    let rule = "/usr/lib/udev/rules.d/60-odp-hmm.rules";
    let (mode, gid) = if fs::metadata(rule).is_ok() {
        let odp = fs::read_to_string("/etc/group")?
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&"odp")).then(|| f.get(2).and_then(|g| g.parse::<u32>().ok()))
            })
            .flatten()
            .ok_or(format!("{rule} is installed but there is no group odp"))?;
        println!("# {rule} installed: expecting 0660 root:odp");
        (0o660, odp)
    } else {
        (0o600, 0)
    };
    check_eq!(
        meta.permissions().mode() & 0o7777,
        mode,
        "mode of {ODP_HMM_DEVICE_PATH}"
    );
    check_eq!(meta.uid(), 0, "owner of {ODP_HMM_DEVICE_PATH}");
    check_eq!(meta.gid(), gid, "group of {ODP_HMM_DEVICE_PATH}");
    Ok(())
}

fn unprivileged_open_refused() -> TestResult {
    let code = in_child(|| {
        // SAFETY: Plain syscalls in the forked child.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return 2;
            }
        }
        match Device::open() {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => 0,
            Err(_) => 3,
            Ok(_) => 1,
        }
    })?;
    check!(code != 2, "could not drop privileges in the child");
    check!(
        code != 1,
        "an unprivileged process opened {ODP_HMM_DEVICE_PATH}"
    );
    check_eq!(
        code,
        0,
        "child exit code (3: open failed with another errno than EACCES)"
    );
    Ok(())
}

fn unknown_ioctl_enotty() -> TestResult {
    let dev = Device::open()?;
    let mut arg = [0u64; 16];
    // Unknown number in the module's magic, an unknown magic, and a known number with a wrong size.
    let unknown_nr = (3 << 30) | (8 << 16) | (ODP_HMM_IOC_MAGIC << 8) | 0x7f;
    let foreign = (3 << 30) | (8 << 16) | (0x42 << 8) | 0x01;
    let wrong_size = ODP_HMM_IOC_INFO ^ (1 << 16);
    for cmd in [unknown_nr, foreign, wrong_size] {
        // SAFETY: The module does not know these ioctls; `arg` is large enough anyway.
        let r = unsafe { dev.raw_ioctl(cmd, &mut arg) };
        expect_errno(r, libc::ENOTTY, &format!("ioctl {cmd:#x}"))?;
    }
    // The device still answers.
    dev.info()?;
    Ok(())
}

fn info_reports_device() -> TestResult {
    let info = Device::open()?.info()?;
    check_eq!(info.version, ODP_HMM_ABI_VERSION, "version");
    check_eq!(info.page_size as usize, page_size(), "page size");
    let edu = info.is_edu();
    check!(
        !edu || info.flags & ODP_HMM_INFO_COPY_ENGINE != 0,
        "the edu device is in use but no copy engine is reported"
    );
    let bdf = info.pci_address();
    let vendor = fs::read_to_string(format!("/sys/bus/pci/devices/{bdf}/vendor"))?;
    check_eq!(
        vendor.trim(),
        format!("{:#06x}", info.pci_vendor),
        "vendor of {bdf} in sysfs"
    );
    let group_type = fs::read_to_string(format!("/sys/bus/pci/devices/{bdf}/iommu_group/type"))
        .unwrap_or_default();
    let expected = match group_type.trim() {
        "DMA" => ODP_HMM_DOMAIN_DMA,
        "DMA-FQ" => ODP_HMM_DOMAIN_DMA_FQ,
        "identity" => ODP_HMM_DOMAIN_IDENTITY,
        "" => ODP_HMM_DOMAIN_NONE,
        _ => ODP_HMM_DOMAIN_OTHER,
    };
    check_eq!(
        info.domain_type,
        expected,
        "domain type (sysfs says {:?})",
        group_type.trim()
    );
    let iova = info.flags & ODP_HMM_INFO_IOVA != 0;
    check_eq!(
        iova,
        expected == ODP_HMM_DOMAIN_DMA || expected == ODP_HMM_DOMAIN_DMA_FQ,
        "IOVA mode flag"
    );
    Ok(())
}

/// A program built against the version-1 header passes the 48-byte `struct odp_hmm_info` (its
/// size is in the ioctl number): it must get the same first 48 bytes, and nothing beyond.
fn info_abi_v1() -> TestResult {
    let dev = Device::open()?;
    let now = dev.info()?;
    check!(
        now.live_registrations == 0 && now.live_iova_bytes == 0,
        "gauges with nothing registered: {now:?}"
    );
    let v1 = ODP_HMM_INFO_SIZE_V1 as usize;
    let cmd = (ODP_HMM_IOC_INFO & !(0x3fff << 16)) | ((v1 as u32) << 16);
    let mut arg = odp_hmm_info {
        version: 1,
        ..Default::default()
    };
    let sentinel = u64::MAX;
    arg.live_registrations = sentinel;
    // SAFETY: `arg` is larger than the 48 bytes the command names.
    unsafe { dev.raw_ioctl(cmd, &mut arg)? };
    check_eq!(arg.version, 1, "the caller's version is echoed");
    check_eq!(
        (arg.pci_bus, arg.pci_devfn, arg.domain_type, arg.dma_mask),
        (now.pci_bus, now.pci_devfn, now.domain_type, now.dma_mask),
        "version-1 fields"
    );
    check_eq!(
        arg.live_registrations,
        sentinel,
        "bytes past the version-1 size were written"
    );
    Ok(())
}

fn unload_with_open_device() -> TestResult {
    let dev = Device::open()?;
    let (code, out) = sh("rmmod odp_hmm");
    check!(
        code != 0,
        "rmmod succeeded while the device was open: {out}"
    );
    check!(
        out.contains("in use"),
        "rmmod failed for another reason than 'in use': {out}"
    );
    // The open device still works.
    dev.info()?;
    drop(dev);
    Ok(())
}

/// Unloads and reloads the module `ODP_HMM_LOAD_CYCLES` times (default 20; the VM groups that
/// only vary the IOMMU or the backend run fewer: each cycle is seconds under TCG).
fn load_unload_cycles() -> TestResult {
    let Ok(module) = env::var("ODP_HMM_MODULE") else {
        skip!("ODP_HMM_MODULE is not set (run through scripts/vm-run.sh)");
    };
    let args = env::var("ODP_HMM_MODULE_ARGS").unwrap_or_default();
    // A path is loaded with insmod; a module name with modprobe (installed, e.g. by DKMS).
    let load = if module.contains('/') {
        "insmod"
    } else {
        "modprobe"
    };
    let cycles: usize = env::var("ODP_HMM_LOAD_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("# {cycles} load/unload cycles");
    for round in 0..cycles {
        let (code, out) = sh("rmmod odp_hmm");
        check_eq!(code, 0, "round {round}: rmmod: {out}");
        check!(
            fs::metadata(ODP_HMM_DEVICE_PATH).is_err(),
            "round {round}: {ODP_HMM_DEVICE_PATH} outlived the module"
        );
        let (code, out) = sh(&format!("{load} {module} {args}"));
        check_eq!(code, 0, "round {round}: {load}: {out}");
        // Each load brings the device back, bound to its DMA device.
        let info = Device::open()?.info()?;
        check_eq!(info.version, ODP_HMM_ABI_VERSION, "round {round}: info");
    }
    Ok(())
}

fn unbind_revokes_registrations() -> TestResult {
    let dev = Device::open()?;
    let info = dev.info()?;
    if !info.is_edu() {
        skip!("the DMA device is not an edu this module drives");
    }
    let bdf = info.pci_address();
    let driver = "/sys/bus/pci/drivers/odp_hmm_edu";
    let ps = page_size();
    let mut m = Mapping::anon(4 * ps)?;
    m.fill_page(0, 0x42);
    let reg = dev.register(m.addr(), m.len() as u64, RW, 0)?;
    dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
    check_eq!(
        dev.stats(reg.handle)?.pages_now,
        4,
        "pages mapped before unbind"
    );
    // The driver lets go of the device: every registration stops mapping for it first.
    fs::write(format!("{driver}/unbind"), &bdf)?;
    let result = (|| -> TestResult {
        expect_errno(
            dev.fault(reg.handle, m.addr(), ps as u64, 0),
            libc::ENODEV,
            "fault after unbind",
        )?;
        expect_errno(
            dev.snapshot(reg.handle, m.addr(), 1),
            libc::ENODEV,
            "snapshot after unbind",
        )?;
        expect_errno(
            dev.copy(
                (reg.handle, m.addr()),
                (reg.handle, m.addr() + ps as u64),
                64,
            ),
            libc::ENODEV,
            "device copy after unbind",
        )?;
        expect_errno(dev.info(), libc::ENODEV, "info without a DMA device")?;
        check_eq!(
            dev.stats(reg.handle)?.pages_now,
            0,
            "pages mapped after unbind"
        );
        dev.unregister(reg.handle)?;
        Ok(())
    })();
    // Bind it again, whatever happened.
    fs::write(format!("{driver}/bind"), &bdf)?;
    result?;
    // A new registration maps for the rebound device.
    let reg = dev.register(m.addr(), m.len() as u64, RW, 0)?;
    copy_and_check(&dev, &m, &reg, 0, 1)
}

/// The tests run with `dma_device=` naming a device other than the edu (scripts/test.sh loads
/// the module so in the p2p-rc topology, naming the NVMe controller).
pub const DMA_DEVICE_PARAM: &[&Test] = &[&Test {
    name: "dma_device_param_maps_for_another_device",
    run: dma_device_param,
}];

fn dma_device_param() -> TestResult {
    let dev = Device::open()?;
    let info = dev.info()?;
    let wanted = env::var("ODP_HMM_MODULE_ARGS").unwrap_or_default();
    let Some(addr) = wanted
        .split_whitespace()
        .find_map(|a| a.strip_prefix("dma_device="))
    else {
        skip!("the module was loaded without dma_device=");
    };
    check_eq!(info.pci_address(), addr, "the DMA device in use");
    check!(!info.is_edu(), "dma_device= named the edu device");
    check_eq!(info.flags & ODP_HMM_INFO_COPY_ENGINE, 0, "copy engine flag");
    // Mapping for it works: register, fault, snapshot.
    let ps = page_size();
    let mut m = Mapping::anon(4 * ps)?;
    m.fill_page(0, 1);
    let reg = dev.register(m.addr(), m.len() as u64, RW, 0)?;
    let f = dev.fault(reg.handle, m.addr(), m.len() as u64, ODP_HMM_FAULT_WRITE)?;
    check_eq!(f.pages_valid, 4, "pages mapped for the named device");
    let snap = dev.snapshot(reg.handle, m.addr(), 4)?;
    check!(
        snap.iter().all(|p| p.flags & ODP_HMM_PAGE_DMA_MAPPED != 0),
        "snapshot: {snap:?}"
    );
    // It has no copy engine: the device copy says so.
    expect_errno(
        copy_in(&dev, &m, &reg, 0, ps, 64),
        libc::EOPNOTSUPP,
        "device copy without a copy engine",
    )?;
    dev.unregister(reg.handle)?;
    Ok(())
}
