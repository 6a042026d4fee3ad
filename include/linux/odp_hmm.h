/* SPDX-License-Identifier: GPL-2.0 */
/*
 * odp_hmm: the in-kernel API for device drivers.
 *
 * A driver whose device keeps its own translation table (a NIC's MTT, a GPU's
 * page table) registers a range of a process's memory for its struct device;
 * nothing is pinned. When the device faults on a page, the driver calls
 * odp_hmm_umem_map_and_lock(): the pages are faulted in (hmm_range_fault()),
 * linked into the registration's IOVA window, and the call returns with the
 * registration's update lock held, so that the driver can read each page's
 * DMA address (odp_hmm_umem_dma_addr()) and program its table before anything
 * can change; then it calls odp_hmm_umem_unlock(). When the mm changes the
 * range, the driver's invalidate callback runs under the same lock *before*
 * any page is unlinked: it zaps its entries and fences the device; then the
 * pages are unlinked and marked dirty.
 *
 * Build against it: add -I<odp_hmm>/include to ccflags and name odp_hmm's
 * Module.symvers in KBUILD_EXTRA_SYMBOLS. Every function is
 * EXPORT_SYMBOL_GPL. The API is stable within a major version of odp_hmm.
 *
 * Porting from ib_umem_odp (drivers/infiniband/core/umem_odp.c):
 *
 *   ib_umem_odp_get(dev, addr, size, access, ops)  odp_hmm_umem_get(dev, addr,
 *                                                   length, access, ops, priv)
 *   ib_umem_odp_release(umem_odp)                  odp_hmm_umem_release(umem)
 *   ib_umem_odp_map_dma_and_lock(umem_odp, va,     odp_hmm_umem_map_and_lock(
 *       bcnt, access_mask, fault)                      umem, va, bcnt, flags)
 *   mutex_lock/unlock(&umem_odp->umem_mutex)       odp_hmm_umem_lock/unlock()
 *   lockdep_assert_held(&umem_odp->umem_mutex)     odp_hmm_umem_assert_held()
 *   umem_odp->map.dma_list[idx], pfn_list[idx]     odp_hmm_umem_dma_addr()
 *   ib_umem_odp_unmap_dma_pages() (from the        done by odp_hmm after the
 *       driver's invalidate)                           driver's callback returns
 *   mmu_interval_set_seq() in the driver           done by odp_hmm before the
 *                                                      driver's callback
 *   ib_umem_start/end(umem_odp)                    odp_hmm_umem_start/end()
 *
 * Differences: the callbacks receive the driver's @priv and the range to zap
 * (not the notifier); the range may be wider than the mm's (whole link units,
 * clipped to the registration): zap all of it. Pages are linked in aligned
 * blocks and folios, not one per call. Errors are errnos, never
 * DMA_MAPPING_ERROR. The registration always covers @addr..@addr+@length of
 * the calling process (there is no per-page shift: huge pages are linked whole
 * when they can be, and every 4 KiB page has its own DMA address).
 *
 * Contexts: odp_hmm_umem_get(), _release(), _map_and_lock(), _prefetch() and
 * _lock() may sleep, take the mmap lock and allocate: process context, no
 * locks of the driver's that its callbacks take. Never call them, nor
 * odp_hmm_umem_release(), from a callback.
 */
#ifndef _LINUX_ODP_HMM_H
#define _LINUX_ODP_HMM_H

#include <linux/types.h>

#include "../uapi/linux/odp_hmm.h"

struct device;

/* A registration (opaque). */
struct odp_hmm_umem;

/* odp_hmm_umem_map_and_lock() and odp_hmm_umem_prefetch() flags. */
#define ODP_HMM_MAP_WRITE	ODP_HMM_FAULT_WRITE	/* fault for write, map writable */
#define ODP_HMM_MAP_NO_FAULT	ODP_HMM_FAULT_NO_FAULT	/* map only what is present */

/* odp_hmm_umem_dma_addr() page flags: ODP_HMM_PAGE_* of the uAPI header. */

/**
 * struct odp_hmm_umem_ops - what the driver is told before pages go
 * @invalidate: required. Zap the translations of [@start, @end) and make sure
 *	the device no longer uses them (fence) before returning. Called with the
 *	update lock held, from the mm's invalidation: possibly from memory
 *	reclaim, so it must not allocate with GFP_KERNEL (GFP_NOWAIT is fine)
 *	and must not take a lock that is held while calling into odp_hmm. If
 *	@blockable is false (the OOM reaper) it must not sleep; returning false
 *	makes the mm try again later. Return true otherwise.
 * @invalidate_start: optional, with @invalidate_finish: the kernel's two-pass
 *	notifier, for devices whose fence is asynchronous. Start the shootdown
 *	of [@start, @end) and return without waiting. Called with the update lock
 *	held, in a context that may sleep (non-blockable invalidations use
 *	@invalidate instead).
 * @invalidate_finish: the second pass, once every notifier of the range ran
 *	its first: wait until the device stopped using [@start, @end), the same
 *	range as the first pass's. Called once for every @invalidate_start, even
 *	if odp_hmm_umem_release() ran in between. Called with the update lock
 *	held; may sleep. The pages are unlinked after it returns. Same memory and
 *	lock rules as @invalidate, and more: it must not wait for a thread that
 *	may be inside odp_hmm_umem_map_and_lock() or odp_hmm_umem_prefetch() on
 *	this registration, since those wait for the invalidation to end.
 *
 * The update lock is free between the two passes, and several invalidations
 * of one registration may be between their passes at once (another first pass,
 * or a non-blockable @invalidate, can run in between): the callbacks of a
 * two-pass registration are not serialized from start to finish. Meanwhile
 * odp_hmm_umem_dma_addr() reports the pages of each pending range -ENOENT
 * (with *@page_flags still ODP_HMM_PAGE_VALID | ODP_HMM_PAGE_DMA_MAPPED: they
 * stay linked until the second pass), and odp_hmm_umem_map_and_lock() faults
 * them again, which waits for the invalidation to end: nothing refills what a
 * first pass zapped. Other pages are not affected.
 */
struct odp_hmm_umem_ops {
	bool (*invalidate)(void *priv, u64 start, u64 end, bool blockable);
	void (*invalidate_start)(void *priv, u64 start, u64 end);
	void (*invalidate_finish)(void *priv, u64 start, u64 end);
};

/**
 * odp_hmm_umem_get() - register a range of the calling process's memory
 * @dev: the DMA device (a PCI function) whose driver calls
 * @addr: page-aligned start in current->mm
 * @length: page-aligned length, not 0; the range must be mapped now
 * @access: ODP_HMM_ACCESS_READ, optionally | ODP_HMM_ACCESS_WRITE
 * @ops: the callbacks (@ops->invalidate required); must outlive the umem
 * @priv: passed to the callbacks
 *
 * Reserves one IOVA window for the range; maps nothing. The backend is the
 * module parameter's. Process context.
 *
 * Return: the registration, or an ERR_PTR(): -EINVAL (flags, alignment, no
 * @ops->invalidate, or only one of the two-pass callbacks), -EOVERFLOW,
 * -EFAULT (not mapped), -EOPNOTSUPP (@dev is not a PCI device, or it would
 * bounce), -ENOMEM.
 */
struct odp_hmm_umem *odp_hmm_umem_get(struct device *dev, u64 addr, u64 length,
				      u32 access,
				      const struct odp_hmm_umem_ops *ops,
				      void *priv);

/**
 * odp_hmm_umem_release() - unmap everything and free the registration
 * @umem: from odp_hmm_umem_get(); not locked
 *
 * After it returns no callback runs any more and the device can reach none of
 * the pages. Process context; the driver must have stopped using the
 * translations first.
 */
void odp_hmm_umem_release(struct odp_hmm_umem *umem);

/**
 * odp_hmm_umem_map_and_lock() - fault in and map a sub-range, return locked
 * @umem: the registration, not locked by the caller
 * @addr: start, inside the registration (rounded down to a page)
 * @length: bytes, not 0 (rounded up to whole pages)
 * @flags: ODP_HMM_MAP_WRITE, ODP_HMM_MAP_NO_FAULT, or 0 (read)
 *
 * Like ib_umem_odp_map_dma_and_lock(): on success the update lock is held and
 * every page of the sub-range is mapped (writable with ODP_HMM_MAP_WRITE),
 * or, with ODP_HMM_MAP_NO_FAULT, whatever was present is. Read the addresses
 * with odp_hmm_umem_dma_addr(), then odp_hmm_umem_unlock().
 *
 * Return: the number of pages of the sub-range mapped (>= 0), lock held; or a
 * negative errno, lock not held: -ERANGE (outside the registration),
 * -EINVAL, -EPERM (write to a read-only registration or mapping), -EFAULT,
 * -EREMOTEIO (unreachable peer memory), -ESRCH (the process exited), -EBUSY
 * (the range kept changing), -EINTR (fatal signal), -ENODEV, -ENOMEM, -EIO.
 */
int odp_hmm_umem_map_and_lock(struct odp_hmm_umem *umem, u64 addr, u64 length,
			      u32 flags);

/**
 * odp_hmm_umem_prefetch() - fault in and map a sub-range, without the lock
 * @umem: the registration, not locked by the caller
 * @addr, @length, @flags: as for odp_hmm_umem_map_and_lock()
 *
 * Return: pages of the sub-range mapped, or a negative errno as above.
 */
int odp_hmm_umem_prefetch(struct odp_hmm_umem *umem, u64 addr, u64 length,
			  u32 flags);

/**
 * odp_hmm_umem_lock() - take the update lock
 * @umem: the registration
 *
 * Invalidations wait while it is held. Process context.
 */
void odp_hmm_umem_lock(struct odp_hmm_umem *umem);

/**
 * odp_hmm_umem_unlock() - release the update lock
 * @umem: the registration, locked by the calling task (odp_hmm_umem_lock() or
 *	a successful odp_hmm_umem_map_and_lock())
 */
void odp_hmm_umem_unlock(struct odp_hmm_umem *umem);

/**
 * odp_hmm_umem_assert_held() - lockdep: the update lock is held
 * @umem: the registration
 */
void odp_hmm_umem_assert_held(struct odp_hmm_umem *umem);

/**
 * odp_hmm_umem_dma_addr() - a page's DMA address and state, under the lock
 * @umem: the registration, locked by the calling task
 * @addr: any address in the page, inside the registration
 * @dma: out: the page's DMA address (for the page's first byte)
 * @page_flags: out (may be NULL): ODP_HMM_PAGE_*
 *
 * The address stays valid until the lock is released; after that, only until
 * the next invalidate callback covering it.
 *
 * Return: 0; -ENOENT if the device cannot reach the page now (*@dma untouched,
 * *@page_flags set); -ERANGE outside the registration; -ENODEV.
 */
int odp_hmm_umem_dma_addr(struct odp_hmm_umem *umem, u64 addr, dma_addr_t *dma,
			  u32 *page_flags);

/**
 * odp_hmm_umem_stats() - the registration's counters
 * @umem: the registration, not locked by the caller
 * @stats: out: every field of struct odp_hmm_stats past @handle
 *	(@registrations is 1)
 */
void odp_hmm_umem_stats(struct odp_hmm_umem *umem, struct odp_hmm_stats *stats);

/* The registered range: [odp_hmm_umem_start(), odp_hmm_umem_end()). */
u64 odp_hmm_umem_start(struct odp_hmm_umem *umem);
u64 odp_hmm_umem_end(struct odp_hmm_umem *umem);

#endif /* _LINUX_ODP_HMM_H */
