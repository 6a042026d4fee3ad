// SPDX-License-Identifier: GPL-2.0

//! odp_hmm: On-Demand Paging of user memory for a DMA device, through HMM and the two-step DMA
//! API.
//!
//! A process registers ranges of its memory through `/dev/odp_hmm` (ABI:
//! `include/uapi/linux/odp_hmm.h`). Nothing is pinned: pages are faulted with `hmm_range_fault()`
//! and mapped for the device on demand, into one IOVA window reserved per registration, and
//! unmapped when the mm invalidates them. The module drives QEMU's `edu` device as DMA device and
//! copy engine, so that tests can make a real device read and write registered memory through the
//! IOMMU.
//!
//! Layout:
//! - [`pfn_flags`], [`range`], [`link_plan`], [`pci_addr`]: pure logic, host-tested;
//!   [`gauges`]: module-wide gauges.
//! - [`hmm_dma_map`]: the mapping manager; [`p2p`]: peer memory; [`odp_umem`]: registrations.
//! - [`device`], [`dma_copy`], [`uapi`]: the character device and its ABI.
//! - [`dma_device`], [`edu`]: the DMA device and its lifetime.
//! - [`kapi`], [`bindings`]: the only code that calls C.

use kernel::{
    driver,
    miscdevice::{
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    pci,
    prelude::*,
};

mod bindings;
mod device;
mod dma_copy;
mod dma_device;
mod edu;
mod gauges;
mod hmm_dma_map;
mod kapi;
mod link_plan;
mod odp_umem;
mod p2p;
mod pci_addr;
mod pfn_flags;
mod range;
mod uapi;

module! {
    type: OdpHmmModule,
    name: "odp_hmm",
    authors: ["The odp_hmm developers"],
    description: "On-Demand Paging of user memory for a DMA device through HMM and IOVA",
    license: "GPL",
}

// The state-word layout must be the kernel's own.
// CAST: `unsigned long` is 64 bits wide on the targets this module builds for (see `kapi`).
const _: () = {
    use crate::bindings as odp;
    assert!(pfn_flags::VALID == odp::hmm_pfn_flags_HMM_PFN_VALID as u64);
    assert!(pfn_flags::WRITE == odp::hmm_pfn_flags_HMM_PFN_WRITE as u64);
    assert!(pfn_flags::ERROR == odp::hmm_pfn_flags_HMM_PFN_ERROR as u64);
    assert!(pfn_flags::DMA_MAPPED == odp::hmm_pfn_flags_HMM_PFN_DMA_MAPPED as u64);
    assert!(pfn_flags::P2PDMA == odp::hmm_pfn_flags_HMM_PFN_P2PDMA as u64);
    assert!(pfn_flags::P2PDMA_BUS == odp::hmm_pfn_flags_HMM_PFN_P2PDMA_BUS as u64);
    assert!(pfn_flags::ORDER_SHIFT as u64 == odp::hmm_pfn_flags_HMM_PFN_ORDER_SHIFT as u64);
    assert!(pfn_flags::FLAGS == odp::hmm_pfn_flags_HMM_PFN_FLAGS as u64);
    assert!(pfn_flags::REQ_FAULT == odp::hmm_pfn_flags_HMM_PFN_REQ_FAULT as u64);
    assert!(pfn_flags::REQ_WRITE == odp::hmm_pfn_flags_HMM_PFN_REQ_WRITE as u64);
};

/// The module: the character device and the edu driver.
///
/// Fields are dropped in order: the device node goes first (no new users), then the driver
/// (its unbind revokes every registration), then the DMA device slot. The slot is initialised
/// first, so that a failure to register the others releases what it took.
#[pin_data]
struct OdpHmmModule {
    #[pin]
    misc: MiscDeviceRegistration<device::OdpFile>,
    #[pin]
    edu: driver::Registration<pci::Adapter<edu::EduDriver>>,
    slot: DmaDeviceSlot,
}

/// The DMA device slot: the `dma_device=` device, if one was named, and the watch for its removal
/// from the PCI bus. Both go when the module does (or when its init fails later on).
struct DmaDeviceSlot {
    _watch: kapi::pci::RemovalWatch,
}

impl DmaDeviceSlot {
    fn new() -> Result<Self> {
        dma_device::init();
        // The watch before the device: one removed right after it is taken must be seen.
        let watch = kapi::pci::RemovalWatch::new()?;
        dma_device::use_param_device()?;
        Ok(Self { _watch: watch })
    }
}

impl Drop for DmaDeviceSlot {
    fn drop(&mut self) {
        dma_device::exit();
    }
}

impl kernel::InPlaceModule for OdpHmmModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            slot: DmaDeviceSlot::new()?,
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"odp_hmm" }),
            edu <- driver::Registration::new(c"odp_hmm_edu", module),
        })
    }
}
