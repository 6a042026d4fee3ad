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
    pci,
    sync::aref::ARef, //
};

use crate::pci_addr::PciAddr;

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
