// SPDX-License-Identifier: GPL-2.0

//! A PCI driver for QEMU's `edu` device (1234:11e8), the module's DMA device and copy engine.
//!
//! Device reference: QEMU `docs/specs/edu.rst`. The device has a 4 KiB buffer at device address
//! [`BUF_BASE`] and a DMA engine that copies between that buffer and a DMA address (translated
//! by the IOMMU). One side of every transfer is the buffer. A transfer runs 100 ms of virtual time
//! after it is started: the device proves correctness, it does not measure speed.

use core::cell::Cell;

use kernel::{
    device::Core,
    dma::{
        Coherent,
        Device as _,
        DmaMask, //
    },
    io::Io,
    pci,
    pci::DevresBar,
    prelude::*,
    sync::{
        aref::ARef,
        Arc, //
    },
    time::{
        delay::fsleep,
        Delta, //
    },
};

use crate::{
    dma_device::{
        self,
        DmaDevice, //
    },
    kapi::{
        params,
        pci as kpci, //
    },
};

/// Bytes of BAR 0 the driver maps (the registers it uses end at 0xa0).
const BAR_SIZE: usize = 0x100;

/// Identification register: `0x010000edu`, the major and minor version in the top bytes.
const REG_ID: usize = 0x00;
/// DMA source address.
const REG_DMA_SRC: usize = 0x80;
/// DMA destination address.
const REG_DMA_DST: usize = 0x88;
/// DMA byte count.
const REG_DMA_COUNT: usize = 0x90;
/// DMA command and status.
const REG_DMA_CMD: usize = 0x98;

/// Command bit: start (reads back set while the transfer runs).
const CMD_START: u64 = 1 << 0;
/// Command bit: direction device buffer -> memory (clear: memory -> device buffer).
const CMD_TO_MEMORY: u64 = 1 << 1;

/// Device address of the device's buffer.
pub(crate) const BUF_BASE: u64 = 0x40000;
/// Size of the device's buffer, the longest transfer.
pub(crate) const BUF_SIZE: usize = 4096;

/// How often a transfer is polled for (it takes 100 ms of virtual time); how long, the module
/// parameter `copy_timeout_ms` says.
const POLL_INTERVAL_US: i64 = 2_000;

/// Which way a transfer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From a DMA address into the device buffer.
    ToBuffer,
    /// From the device buffer to a DMA address.
    FromBuffer,
}

/// The copy engine of one edu device.
///
/// The caller serialises transfers (the engine lock of [`DmaDevice`]): the device runs one at a
/// time and its buffer is shared state.
///
/// A transfer that does not finish in time leaves the device possibly still writing: the engine
/// turns bus mastering off before it returns, so the device can reach no memory any more, and
/// is dead from then on (its transfers fail with `EIO`; rebinding the device makes a new one).
pub(crate) struct Engine {
    bar: DevresBar<BAR_SIZE>,
    pci: ARef<pci::Device>,
    /// A zeroed page the buffer is wiped from.
    zero: Coherent<[u8]>,
    /// The open file whose data the buffer may hold (0: none).
    owner: Cell<u64>,
    dead: Cell<bool>,
}

impl Engine {
    /// Copies `len` bytes between the device buffer at `offset` and the DMA address `addr`, and
    /// waits for the device to finish.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT` if the device did not finish within `copy_timeout_ms` (the engine is dead
    /// afterwards), `EIO` once it is dead, `ENODEV` if the device is going away.
    pub(crate) fn transfer(&self, dir: Direction, addr: u64, offset: usize, len: usize) -> Result {
        if self.dead.get() {
            return Err(EIO);
        }
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > BUF_SIZE) {
            return Err(EINVAL);
        }
        // CAST: `offset` and `len` are below `BUF_SIZE`.
        let (buf, len) = (BUF_BASE + offset as u64, len as u64);
        let (src, dst, cmd) = match dir {
            Direction::ToBuffer => (addr, buf, CMD_START),
            Direction::FromBuffer => (buf, addr, CMD_START | CMD_TO_MEMORY),
        };
        {
            // 64-bit registers: the mapping is only known 4-byte aligned at compile time, so the
            // accesses are checked at run time.
            let bar = self.bar.try_access().ok_or(ENODEV)?;
            bar.try_write64(src, REG_DMA_SRC)?;
            bar.try_write64(dst, REG_DMA_DST)?;
            bar.try_write64(len, REG_DMA_COUNT)?;
            bar.try_write64(cmd, REG_DMA_CMD)?;
        }
        let timeout_us = i64::from(params::copy_timeout_ms()).saturating_mul(1000);
        let mut waited = 0;
        loop {
            // Sleep without holding the BAR: unbind waits for the access guard, not for us.
            fsleep(Delta::from_micros(POLL_INTERVAL_US));
            waited += POLL_INTERVAL_US;
            let status = self
                .bar
                .try_access()
                .ok_or(ENODEV)?
                .try_read64(REG_DMA_CMD)?;
            if status & CMD_START == 0 {
                return Ok(());
            }
            if waited >= timeout_us {
                // The device may still be moving data: cut it off from memory before the caller
                // lets the mm reclaim the pages it was given.
                kpci::clear_bus_master(&self.pci);
                self.dead.set(true);
                dev_err!(
                    self.pci.as_ref(),
                    "edu transfer did not finish in {} ms: bus mastering off, engine disabled\n",
                    params::copy_timeout_ms()
                );
                return Err(ETIMEDOUT);
            }
        }
    }

    /// Makes the buffer hold nothing of another file than `file` (an identity that is never
    /// reused): the first copy of a new file wipes it.
    pub(crate) fn claim(&self, file: u64) -> Result {
        if self.owner.get() != file {
            self.owner.set(0);
            self.transfer(Direction::ToBuffer, self.zero.dma_address(), 0, BUF_SIZE)?;
            self.owner.set(file);
        }
        Ok(())
    }
}

/// The driver bound to an edu device: it published the device as the module's DMA device.
pub(crate) struct EduDriver;

/// Per-device state: the published DMA device.
pub(crate) struct EduData {
    dma: Arc<DmaDevice>,
}

kernel::pci_device_table!(
    PCI_TABLE,
    <EduDriver as pci::Driver>::IdInfo,
    [(kpci::device_id(0x1234, 0x11e8), ())]
);

impl pci::Driver for EduDriver {
    type IdInfo = ();
    type Data<'bound> = EduData;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pdev.enable_device_mem()?;
        pdev.set_master();
        // SAFETY: Called once during probe, before anything is mapped for this device.
        unsafe { pdev.dma_set_mask_and_coherent(DmaMask::new::<64>())? };
        let bar = pdev.iomap_region_sized::<BAR_SIZE>(0, c"odp_hmm_edu")?;
        let id = bar.read32(REG_ID);
        let engine = Engine {
            bar: bar.into_devres()?,
            pci: ARef::from(&**pdev),
            zero: Coherent::<u8>::zeroed_slice(pdev.as_ref(), BUF_SIZE, GFP_KERNEL)?,
            owner: Cell::new(0),
            dead: Cell::new(false),
        };
        let dma = DmaDevice::new(ARef::from(&**pdev), Some(engine))?;
        dma_device::publish(dma.clone())?;
        dev_info!(
            pdev,
            "edu {}.{} ready as the odp_hmm DMA device and copy engine\n",
            id >> 24,
            (id >> 16) & 0xff
        );
        Ok(EduData { dma })
    }

    fn unbind<'bound>(_pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // Every registration stops mapping for the device before its driver lets go of it.
        dma_device::withdraw(&this.dma);
    }
}
