// SPDX-License-Identifier: GPL-2.0

//! The device odp_hmm maps memory for, and its lifetime.
//!
//! One DMA device is *current* at a time: the `edu` device this module's PCI driver bound, or the
//! PCI device the `dma_device=` parameter names (mapped for, but not driven: it has no copy
//! engine). Each registration keeps an [`Arc`] of the device it maps for. When the device goes
//! away, every registration still mapping for it is revoked first: its pages are unmapped and its
//! IOVA window freed while the device and its IOMMU group still exist, and later calls on it fail
//! with `ENODEV`. For the edu device that is the driver's unbind; for a `dma_device=` device,
//! which another driver drives, the PCI bus's removal notification ([`pci_device_removed`]).
//!
//! # Locking
//!
//! - [`CURRENT`] (global mutex): which device is current. Nothing else is taken under it.
//! - [`DmaDevice::engine`] (mutex): the copy engine and its buffer, held for a whole device copy.
//!   Taken before a registration's lock (`odp_umem.rs`), never after. INFO does not take it
//!   (it would wait for a copy in flight, up to `copy_timeout_ms`): it reads
//!   [`DmaDevice::has_engine`], an atomic flag cleared when the engine is revoked.
//! - [`DmaDevice::users`] (mutex): the registrations mapping for the device and whether it was
//!   revoked. Nothing is taken under it: revocation takes the list out, then revokes each.

use core::sync::atomic::{
    AtomicBool,
    Ordering, //
};

use kernel::{
    device, new_mutex, pci,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNode, //
    },
    sync::{
        aref::ARef,
        Arc,
        Mutex, //
    },
};

use crate::{
    edu::Engine,
    kapi::{
        dma::DmaDev,
        params,
        pci::{
            self as kpci,
            Location, //
        },
    },
    odp_umem::{
        OdpUmem,
        Revoked, //
    },
    pci_addr::PciAddr,
    uapi,
};

kernel::sync::global_lock! {
    // SAFETY: `init()` runs first in module init, before the PCI removal watch, the misc device
    // and the PCI driver are registered, the only users.
    unsafe(uninit) static CURRENT: Mutex<Option<Arc<DmaDevice>>> = None;
}

/// Initialises [`CURRENT`]: the first thing module init does.
pub(crate) fn init() {
    // SAFETY: Called once, from module init, before any other use of `CURRENT`.
    unsafe { CURRENT.init() };
}

/// Makes the `dma_device=` device current if one was given.
pub(crate) fn use_param_device() -> Result {
    let Some(name) = params::dma_device() else {
        return Ok(());
    };
    let Some(addr) = PciAddr::parse(name.to_bytes()) else {
        pr_err!("dma_device={}: not a PCI address (DDDD:BB:DD.F)\n", name);
        return Err(EINVAL);
    };
    let Some(pdev) = kpci::get_by_address(&addr) else {
        pr_err!("dma_device={}: no such PCI device\n", name);
        return Err(ENODEV);
    };
    pr_info!("mapping for {} (dma_device=); no copy engine\n", name);
    publish(DmaDevice::new(pdev, None)?)
}

/// Drops the `dma_device=` device at module exit (the edu driver withdraws its own on unbind).
pub(crate) fn exit() {
    let current = CURRENT.lock().take();
    if let Some(dev) = current {
        dev.revoke();
    }
}

/// A PCI device is about to be removed: if it is the current DMA device, stop using it now,
/// while its IOMMU group still exists.
pub(crate) fn pci_device_removed(pdev: &pci::Device) {
    let gone = {
        let current = CURRENT.lock();
        current
            .as_ref()
            .filter(|dev| core::ptr::eq(dev.pci(), pdev))
            .cloned()
    };
    if let Some(dev) = gone {
        dev_info!(
            dev.device(),
            "removed from the PCI bus: revoking its registrations\n"
        );
        withdraw(&dev);
    }
}

/// Makes `dev` the current DMA device; `EBUSY` if another one is.
pub(crate) fn publish(dev: Arc<DmaDevice>) -> Result {
    let mut current = CURRENT.lock();
    if current.is_some() {
        dev_info!(
            dev.device(),
            "another DMA device is in use: not using this one\n"
        );
        return Err(EBUSY);
    }
    *current = Some(dev);
    Ok(())
}

/// Stops using `dev`: it is no longer current, and its registrations are revoked.
pub(crate) fn withdraw(dev: &Arc<DmaDevice>) {
    {
        let mut current = CURRENT.lock();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, dev)) {
            *current = None;
        }
    }
    dev.revoke();
}

/// The current DMA device; `ENODEV` if there is none.
pub(crate) fn current() -> Result<Arc<DmaDevice>> {
    CURRENT.lock().clone().ok_or(ENODEV)
}

/// The registrations mapping for a device, keyed by address (unique while they live).
struct Users {
    /// Set once the device is going away; no registration may be added after.
    revoked: bool,
    map: RBTree<usize, Arc<OdpUmem>>,
}

/// The key of a registration in [`Users`]: its address.
fn user_key(umem: &Arc<OdpUmem>) -> usize {
    // CAST: Only compared, never dereferenced.
    Arc::as_ptr(umem) as usize
}

/// A device memory is mapped for.
#[pin_data]
pub(crate) struct DmaDevice {
    dev: DmaDev,
    pci: ARef<pci::Device>,
    /// The copy engine, when the device is an edu this module drives; `None` once revoked.
    #[pin]
    engine: Mutex<Option<Engine>>,
    /// Whether `engine` holds an engine (set at creation, cleared when it is revoked).
    has_engine: AtomicBool,
    #[pin]
    users: Mutex<Users>,
}

impl DmaDevice {
    /// A DMA device for `pci`, with its copy engine if it has one.
    pub(crate) fn new(pci: ARef<pci::Device>, engine: Option<Engine>) -> Result<Arc<Self>> {
        let dev = DmaDev::new(pci.clone());
        let has_engine = AtomicBool::new(engine.is_some());
        Arc::pin_init(
            try_pin_init!(Self {
                dev,
                pci,
                engine <- new_mutex!(engine, "DmaDevice::engine"),
                has_engine,
                users <- new_mutex!(
                    Users {
                        revoked: false,
                        map: RBTree::new(),
                    },
                    "DmaDevice::users"
                ),
            }),
            GFP_KERNEL,
        )
    }

    /// The DMA-API view of the device.
    pub(crate) fn dma(&self) -> &DmaDev {
        &self.dev
    }

    /// The PCI device.
    pub(crate) fn pci(&self) -> &pci::Device {
        &self.pci
    }

    /// The generic device, for messages.
    pub(crate) fn device(&self) -> &device::Device {
        self.dev.device()
    }

    /// The engine lock: the copy engine, if the device has one and is not revoked.
    pub(crate) fn engine(&self) -> &Mutex<Option<Engine>> {
        &self.engine
    }

    /// Records a registration that maps for this device; `ENODEV` once it is revoked.
    pub(crate) fn add_user(&self, umem: Arc<OdpUmem>) -> Result {
        let key = user_key(&umem);
        let node = RBTreeNode::new(key, umem, GFP_KERNEL)?;
        let mut users = self.users.lock();
        if users.revoked {
            return Err(ENODEV);
        }
        users.map.insert(node);
        Ok(())
    }

    /// Forgets a registration (it was unregistered).
    pub(crate) fn remove_user(&self, umem: &Arc<OdpUmem>) {
        let removed = self.users.lock().map.remove(&user_key(umem));
        // Dropped outside the lock: a last reference frees the registration.
        drop(removed);
    }

    /// Revokes every registration and the copy engine: nothing maps for or drives the device
    /// after this returns.
    fn revoke(&self) {
        // INFO stops offering the engine first; then wait for a device copy in flight, and keep
        // later ones out.
        self.has_engine.store(false, Ordering::Relaxed);
        let engine = self.engine.lock().take();
        let users = {
            let mut users = self.users.lock();
            users.revoked = true;
            core::mem::replace(&mut users.map, RBTree::new())
        };
        for umem in users.values() {
            umem.revoke(Revoked::DeviceGone);
        }
        drop(engine);
    }

    /// What `ODP_HMM_IOC_INFO` reports.
    pub(crate) fn info(&self) -> uapi::Info {
        let location = Location::of(&self.pci);
        let mut flags = 0;
        if self.has_engine.load(Ordering::Relaxed) {
            flags |= uapi::INFO_COPY_ENGINE;
        }
        if self.dev.domain_type() == crate::bindings::ODP_HMM_DOMAIN_DMA
            || self.dev.domain_type() == crate::bindings::ODP_HMM_DOMAIN_DMA_FQ
        {
            flags |= uapi::INFO_IOVA;
        }
        if params::debug_raw_dma() {
            flags |= uapi::INFO_DEBUG_RAW_DMA;
        }
        // What every registration can do here, whatever its backend: implicit registrations
        // and asynchronous prefetch are the module's own; faults wait for userfaultfd handlers
        // (`hmm_range_fault_unlocked_timeout()`) where the kernel has userfaultfd; peer memory
        // is recognised only where the kernel has PCI P2PDMA (whether a given provider is
        // reachable depends on the topology, see `p2p.rs`).
        flags |= uapi::INFO_IMPLICIT | uapi::INFO_ASYNC_PREFETCH;
        if cfg!(CONFIG_USERFAULTFD) {
            flags |= uapi::INFO_USERFAULTFD;
        }
        if cfg!(CONFIG_PCI_P2PDMA) {
            flags |= uapi::INFO_P2P_HOST_BRIDGE | uapi::INFO_P2P_BUS;
        }
        uapi::Info {
            version: uapi::ABI_VERSION,
            flags,
            pci_segment: location.segment,
            pci_bus: location.bus,
            pci_devfn: location.devfn,
            pci_vendor: u32::from(self.pci.vendor_id().as_raw()),
            pci_device: u32::from(self.pci.device_id()),
            domain_type: self.dev.domain_type(),
            backend: params::backend(),
            // CAST: The page size is 4 KiB on every target this module builds for.
            page_size: kernel::page::PAGE_SIZE as u32,
            dma_mask: self.dev.dma_mask(),
            link_page_sizes: if flags & uapi::INFO_IOVA != 0 {
                crate::link_plan::link_page_sizes(kernel::page::PAGE_SHIFT as u32)
            } else {
                0
            },
            ..Default::default()
        }
    }
}
