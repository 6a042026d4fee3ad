// SPDX-License-Identifier: GPL-2.0

//! The streaming DMA API, including the two-step IOVA API.
//!
//! C header: [`include/linux/dma-mapping.h`](srctree/include/linux/dma-mapping.h).
//!
//! [`DmaDev`] is a device memory is mapped for. [`IovaWindow`] is one IOVA range reserved with
//! `dma_iova_try_alloc()`, into which pages are linked and unlinked at chosen offsets; where no
//! IOVA can be reserved (no IOMMU, or an identity domain), pages are mapped one by one with
//! [`DmaDev::map_phys`] instead.
//!
//! Every mapping is made with `DMA_ATTR_REQUIRE_COHERENT`: memory that the CPU keeps using while
//! the device may access it cannot be bounced (swiotlb) or need cache maintenance, so such
//! mappings must fail instead of silently copying.

use core::ptr;

use kernel::{
    bindings,
    device,
    error::to_result,
    pci,
    prelude::*,
    sync::aref::ARef, //
};

use crate::bindings as odp;

/// What a mapping allows the device to do, and what the memory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Access {
    /// The device may write (`DMA_BIDIRECTIONAL`); else it may only read (`DMA_TO_DEVICE`), and
    /// the IOMMU enforces that.
    pub(crate) writable: bool,
    /// The memory is PCI peer MMIO reached through the host bridge (`DMA_ATTR_MMIO`).
    pub(crate) mmio: bool,
}

impl Access {
    fn direction(self) -> bindings::dma_data_direction {
        if self.writable {
            bindings::dma_data_direction::DMA_BIDIRECTIONAL
        } else {
            bindings::dma_data_direction::DMA_TO_DEVICE
        }
    }

    fn attrs(self) -> c_ulong {
        let mmio = if self.mmio {
            bindings::DMA_ATTR_MMIO
        } else {
            0
        };
        // CAST: The attribute bits fit in `unsigned long`.
        (bindings::DMA_ATTR_REQUIRE_COHERENT | mmio) as c_ulong
    }
}

/// The raw `struct device` of `dev`.
pub(crate) fn raw_device<Ctx: device::DeviceContext>(
    dev: &device::Device<Ctx>,
) -> *mut bindings::device {
    // CAST: `device::Device` is a `#[repr(transparent)]` wrapper around `Opaque<struct device>`,
    // which is `#[repr(transparent)]` around the C struct.
    ptr::from_ref(dev).cast::<bindings::device>().cast_mut()
}

/// A (PCI) device that memory is mapped for.
///
/// # Invariants
///
/// `pci` is a device that is not unbound while this value is used to map memory: the owner
/// revokes every mapping before its driver lets go of the device (see `dma_device.rs`).
#[derive(Clone)]
pub(crate) struct DmaDev {
    pci: ARef<pci::Device>,
}

impl DmaDev {
    /// Wraps a PCI device whose DMA mask its driver has set.
    pub(crate) fn new(pci: ARef<pci::Device>) -> Self {
        // INVARIANT: The caller (the DMA device slot) revokes mappings before unbind.
        Self { pci }
    }

    /// The device.
    pub(crate) fn device(&self) -> &device::Device {
        self.pci.as_ref()
    }

    /// The device, as a PCI device.
    pub(crate) fn pci(&self) -> &pci::Device {
        &self.pci
    }

    fn as_raw(&self) -> *mut bindings::device {
        raw_device(self.device())
    }

    /// The streaming DMA mask.
    pub(crate) fn dma_mask(&self) -> u64 {
        // SAFETY: `self.dev` is a valid device by the type invariants.
        unsafe { odp::odp_shim_dma_get_mask(self.as_raw()) }
    }

    /// The IOMMU domain type, as `ODP_HMM_DOMAIN_*`.
    pub(crate) fn domain_type(&self) -> u32 {
        // SAFETY: `self.dev` is a valid device by the type invariants.
        unsafe { odp::odp_shim_iommu_domain_type(self.as_raw()) }
    }

    /// Whether `dma_map_phys()` mappings of this device must be unmapped (and so their addresses
    /// kept). It is false only for dma-direct without DMA-API debugging.
    pub(crate) fn need_unmap(&self) -> bool {
        // SAFETY: `self.dev` is a valid device by the type invariants.
        unsafe { bindings::dma_need_unmap(self.as_raw()) }
    }

    /// Whether memory can be mapped for this device while the CPU keeps using it: no bouncing,
    /// no cache maintenance. The same test as `hmm_dma_map_alloc()` makes.
    pub(crate) fn is_coherent_unbounced(&self) -> bool {
        // SAFETY: `self.dev` is a valid device by the type invariants.
        unsafe { odp::odp_shim_dma_coherent_unbounced(self.as_raw()) }
    }

    /// Maps `size` bytes of physical memory at `phys` with `dma_map_phys()`.
    ///
    /// # Safety
    ///
    /// `phys..phys + size` must be memory (or, with `access.mmio`, PCI peer MMIO) that stays
    /// allocated to its owner until the mapping is unmapped with [`Self::unmap_phys`]: the device
    /// can reach it meanwhile.
    pub(crate) unsafe fn map_phys(&self, phys: u64, size: usize, access: Access) -> Result<u64> {
        // SAFETY: `self.dev` is a valid device by the type invariants; the caller keeps the memory
        // alive while it is mapped.
        let addr = unsafe {
            bindings::dma_map_phys(
                self.as_raw(),
                phys,
                size,
                access.direction(),
                access.attrs(),
            )
        };
        // SAFETY: `self.dev` is a valid device by the type invariants.
        if unsafe { odp::odp_shim_dma_mapping_error(self.as_raw(), addr) } {
            return Err(EIO);
        }
        Ok(addr)
    }

    /// Unmaps what [`Self::map_phys`] mapped, with the same size and access. On a lazy
    /// (flush-queue) domain the device may still reach the memory until [`Self::flush_lazy`].
    ///
    /// # Safety
    ///
    /// `addr` and `size` must be exactly those of one successful [`Self::map_phys`] call, mapped
    /// with `access`, that was not unmapped since: the IOMMU cannot unmap part of a mapping.
    pub(crate) unsafe fn unmap_phys(&self, addr: u64, size: usize, access: Access) {
        // SAFETY: `self.dev` is a valid device by the type invariants; `addr` and `size` describe
        // one live mapping (the caller's guarantee).
        unsafe {
            bindings::dma_unmap_phys(
                self.as_raw(),
                addr,
                size,
                access.direction(),
                access.attrs(),
            )
        };
    }

    /// Flushes the IOTLB if the device's domain is lazy (`IOMMU_DOMAIN_DMA_FQ`), where
    /// [`Self::unmap_phys`] leaves the flush to a timer: afterwards the device can reach nothing
    /// that was unmapped before. Nothing happens on any other domain.
    pub(crate) fn flush_lazy(&self) {
        // SAFETY: `self.dev` is a valid device by the type invariants.
        unsafe { odp::odp_shim_iommu_flush_lazy(self.as_raw()) };
    }
}

/// An IOVA range reserved for a device with `dma_iova_try_alloc()`.
///
/// # Invariants
///
/// - `state` holds a live reservation of `dma_iova_size(state)` bytes for `dev`.
/// - Every range linked into it is unlinked before it is dropped (the mapping manager's job:
///   `dma_iova_free()` requires it), and `dev` stays bound meanwhile (see [`DmaDev`]).
pub(crate) struct IovaWindow {
    dev: DmaDev,
    state: bindings::dma_iova_state,
}

impl IovaWindow {
    /// Reserves `size` bytes of IOVA space for `dev`, or `None` where the IOVA API cannot be
    /// used (no dma-iommu domain, or no space).
    pub(crate) fn try_alloc(dev: &DmaDev, size: usize) -> Option<Self> {
        let mut state = bindings::dma_iova_state::default();
        if size == 0 {
            return None;
        }
        // SAFETY: The device is valid by the invariants of `DmaDev`; `state` is a valid
        // destination. A phys of 0 asks for page alignment only.
        let reserved = unsafe { bindings::dma_iova_try_alloc(dev.as_raw(), &mut state, 0, size) };
        // SAFETY: `state` was initialised by `dma_iova_try_alloc`.
        if !reserved || !unsafe { odp::odp_shim_dma_use_iova(&mut state) } {
            return None;
        }
        // INVARIANT: The reservation succeeded; nothing is linked yet.
        Some(Self {
            dev: dev.clone(),
            state,
        })
    }

    /// The DMA address of offset 0.
    pub(crate) fn base(&self) -> u64 {
        self.state.addr
    }

    /// Links `size` bytes of physical memory at `phys` at `offset` in the window, without an
    /// IOTLB sync ([`Self::sync`] makes the links visible to the device).
    ///
    /// # Safety
    ///
    /// - `offset..offset + size` must be page-aligned, inside the window, and not linked.
    /// - `phys..phys + size` must be memory (or, with `access.mmio`, PCI peer MMIO) that stays
    ///   allocated to its owner until it is unlinked: the device can reach it meanwhile.
    pub(crate) unsafe fn link(
        &mut self,
        phys: u64,
        offset: usize,
        size: usize,
        access: Access,
    ) -> Result {
        // SAFETY: The reservation is live by the type invariants; the range is free and the
        // memory stays alive while linked (the caller's guarantee).
        to_result(unsafe {
            bindings::dma_iova_link(
                self.dev.as_raw(),
                &mut self.state,
                phys,
                offset,
                size,
                access.direction(),
                access.attrs(),
            )
        })
    }

    /// Makes the links of `offset..offset + size` visible to the device.
    pub(crate) fn sync(&mut self, offset: usize, size: usize) -> Result {
        // SAFETY: The reservation is live by the type invariants; syncing any range is harmless.
        to_result(unsafe {
            bindings::dma_iova_sync(self.dev.as_raw(), &mut self.state, offset, size)
        })
    }

    /// Unlinks `offset..offset + size` with the access it was linked with. The IOTLB is flushed
    /// before this returns, on strict and lazy domains alike.
    ///
    /// # Safety
    ///
    /// `offset..offset + size` must be a union of whole ranges that [`Self::link`] calls linked
    /// with `access`, and nothing else: the IOMMU cannot unmap part of what one call mapped, and
    /// what it cannot unmap stays reachable by the device.
    pub(crate) unsafe fn unlink(&mut self, offset: usize, size: usize, access: Access) {
        // SAFETY: The reservation is live by the type invariants; the range is whole linked units
        // (the caller's guarantee).
        unsafe {
            bindings::dma_iova_unlink(
                self.dev.as_raw(),
                &mut self.state,
                offset,
                size,
                access.direction(),
                access.attrs(),
            )
        };
    }
}

impl Drop for IovaWindow {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the reservation is live and nothing is linked in it.
        unsafe { bindings::dma_iova_free(self.dev.as_raw(), &mut self.state) };
    }
}
