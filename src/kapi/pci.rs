// SPDX-License-Identifier: GPL-2.0

//! PCI device lookups the `kernel` crate has no wrapper for.
//!
//! C header: [`include/linux/pci.h`](srctree/include/linux/pci.h).

use core::ptr::{
    self,
    NonNull, //
};

use kernel::{
    bindings,
    error::to_result,
    pci,
    prelude::*,
    sync::aref::ARef, //
};

use crate::{
    bindings as odp,
    pci_addr::PciAddr, //
};

/// The raw `struct pci_dev` of `dev`.
pub(crate) fn raw_pci(dev: &pci::Device) -> *mut bindings::pci_dev {
    // CAST: `pci::Device` is a `#[repr(transparent)]` wrapper around `Opaque<struct pci_dev>`,
    // which is `#[repr(transparent)]` around the C struct.
    ptr::from_ref(dev).cast::<bindings::pci_dev>().cast_mut()
}

/// `PCI_DEVICE(vendor, device)`: an ID table entry for a vendor the `kernel` crate has no
/// constant for (QEMU's test devices use 0x1234).
pub(crate) const fn device_id(vendor: u16, device: u16) -> pci::DeviceId {
    let mut raw: bindings::pci_device_id = pin_init::zeroed();
    raw.vendor = vendor as u32;
    raw.device = device as u32;
    // CAST: `PCI_ANY_ID` is `~0`, stored in the unsigned fields.
    raw.subvendor = bindings::PCI_ANY_ID as u32;
    raw.subdevice = bindings::PCI_ANY_ID as u32;
    // SAFETY: `pci::DeviceId` is a `#[repr(transparent)]` wrapper around `struct pci_device_id`,
    // and `raw` is what the C `PCI_DEVICE()` macro builds.
    unsafe { core::mem::transmute::<bindings::pci_device_id, pci::DeviceId>(raw) }
}

/// Finds the PCI function at `addr` and takes a reference to it.
pub(crate) fn get_by_address(addr: &PciAddr) -> Option<ARef<pci::Device>> {
    // SAFETY: Always safe to call; the result is NULL or a referenced `struct pci_dev`.
    let raw = unsafe {
        bindings::pci_get_domain_bus_and_slot(
            // CAST: Segments are at most 16 bits wide on every platform (ACPI MCFG).
            addr.segment as i32,
            u32::from(addr.bus),
            u32::from(addr.devfn()),
        )
    };
    let raw = NonNull::new(raw)?;
    // SAFETY: `pci_get_domain_bus_and_slot` returned a reference we now own, and
    // `pci::Device` is a transparent wrapper around `struct pci_dev`.
    Some(unsafe { ARef::from_raw(raw.cast::<pci::Device>()) })
}

/// The PCI function that `dev` is, with a reference; `None` if `dev` is no PCI device.
///
/// # Safety
///
/// `dev` must be a valid `struct device`.
pub(crate) unsafe fn get_pci_of(dev: *mut bindings::device) -> Option<ARef<pci::Device>> {
    // SAFETY: `dev` is valid (the caller's guarantee); the result is NULL or referenced.
    let raw = NonNull::new(unsafe { odp::odp_shim_pci_dev_get(dev) })?;
    // SAFETY: We own the reference `odp_shim_pci_dev_get` took, and `pci::Device` is a
    // transparent wrapper around `struct pci_dev`.
    Some(unsafe { ARef::from_raw(raw.cast::<pci::Device>()) })
}

/// Where a PCI function sits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Location {
    /// PCI segment (domain).
    pub(crate) segment: u32,
    /// Bus number.
    pub(crate) bus: u32,
    /// Device and function: `device << 3 | function`.
    pub(crate) devfn: u32,
}

impl Location {
    /// The location of `dev`.
    pub(crate) fn of(dev: &pci::Device) -> Self {
        let raw = raw_pci(dev);
        // SAFETY: `dev` is a valid `struct pci_dev` by its type invariants, and a PCI function
        // always sits on a bus, which outlives it.
        let (bus, devfn) = unsafe { ((*(*raw).bus).number, (*raw).devfn) };
        // SAFETY: `raw` is a valid `struct pci_dev`, as above.
        let segment = unsafe { crate::bindings::odp_shim_pci_segment(raw) };
        Self {
            segment,
            bus: u32::from(bus),
            devfn,
        }
    }
}

/// Turns bus mastering off (`pci_clear_master()`): the device can no longer reach memory.
pub(crate) fn clear_bus_master(dev: &pci::Device) {
    // SAFETY: `dev` is a valid `struct pci_dev` by its type invariants.
    unsafe { bindings::pci_clear_master(raw_pci(dev)) };
}

/// Watches the PCI bus for devices that are about to be removed (`BUS_NOTIFY_DEL_DEVICE`) and
/// tells [`crate::dma_device::pci_device_removed`], before the device's IOMMU group goes. One
/// watch at a time (the shim's notifier block is static): the module makes one at load.
///
/// # Invariants
///
/// The shim's notifier is registered on the PCI bus while this value lives.
pub(crate) struct RemovalWatch(());

impl RemovalWatch {
    /// Starts watching.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: Always safe to call; paired with the unwatch in `Drop`.
        to_result(unsafe { odp::odp_shim_watch_pci_removal() })?;
        // INVARIANT: The notifier is registered.
        Ok(Self(()))
    }
}

impl Drop for RemovalWatch {
    fn drop(&mut self) {
        // SAFETY: The notifier is registered by the type invariants; unregistering waits for a
        // running callback.
        unsafe { odp::odp_shim_unwatch_pci_removal() };
    }
}

/// Called by the shim's PCI bus notifier for a device about to be removed.
///
/// # Safety
///
/// `pdev` must be a valid `struct pci_dev` for the duration of the call (the bus notifier runs
/// while the device is being deleted, before it is freed).
#[no_mangle]
unsafe extern "C" fn odp_hmm_pci_device_removed(pdev: *mut bindings::pci_dev) {
    // SAFETY: `pdev` is valid for the call (the caller's guarantee); `pci::Device` is a
    // transparent wrapper around `struct pci_dev`.
    let dev = unsafe { &*pdev.cast::<pci::Device>() };
    crate::dma_device::pci_device_removed(dev);
}
