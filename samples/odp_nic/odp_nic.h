/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * odp_nic: the uAPI of odp_hmm's sample NIC driver (/dev/odp_nic).
 *
 * The sample drives a QEMU edu device as if it were a NIC with On-Demand
 * Paging: a process registers ranges of its memory, and "work requests" make
 * the device read or write bytes at a user address of a registration through
 * the device's own page table (one DMA-address slot per page). An empty slot
 * is a page fault, which a work item resolves through odp_hmm's in-kernel API
 * before the request is retried. The other ioctls let a test see the table,
 * the sample's record of its invalidation callbacks and its counters.
 *
 * Errors (as -1 and errno):
 *   ENOTTY   unknown ioctl
 *   EINVAL   unknown flag or direction, a reserved field not 0, an unaligned
 *            or zero length, a work request of 0 or more than
 *            ODP_NIC_WORK_MAX_LEN bytes, a table or event request of 0 or
 *            too many entries
 *   ENOENT   unknown handle
 *   ERANGE   a work request, prefetch or table request outside its
 *            registration
 *   EFAULT   a user pointer cannot be accessed; a page of the work request
 *            cannot be faulted in (not mapped)
 *   EPERM    a write work request on a read-only registration or mapping;
 *            RAW_READ without the module parameter debug_raw_dma=1 or
 *            CAP_SYS_RAWIO
 *   EBUSY    a work request found its pages invalidated at every one of
 *            ODP_NIC_WORK_RETRIES attempts; the range kept changing under a
 *            fault (odp_hmm)
 *   EINTR    a signal came while a work request waited for its page fault
 *            (the fault is resolved all the same, later)
 *
 * A work request's page fault covers the request's own pages only, and the
 * request gets that fault's own result, whatever other requests fault
 * meanwhile.
 *   EIO      the device did not finish a transfer in time (bus mastering is
 *            off from then on: rebind the device); or the device's table
 *            disagreed with odp_hmm at a DMA (a bug the sample checks for; it
 *            counts it in dma_check_failures and moves nothing)
 *   ENODEV   the device was unbound; the open file only closes from then on
 *   ESRCH    the registering process exited
 *   ENOMEM, E2BIG (a registration of more than ODP_NIC_MAX_PAGES pages)
 *   other    odp_hmm_umem_get()'s and odp_hmm_umem_map_and_lock()'s errnos
 *            (include/linux/odp_hmm.h)
 */
#ifndef _UAPI_ODP_NIC_H
#define _UAPI_ODP_NIC_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define ODP_NIC_DEVICE_PATH	"/dev/odp_nic"

/* A work request moves at most the device's buffer. */
#define ODP_NIC_WORK_MAX_LEN	4096U
/* Times a work request goes back to its page table before EBUSY. */
#define ODP_NIC_WORK_RETRIES	64U
/* Most pages one registration may have (1 GiB of 4 KiB pages). */
#define ODP_NIC_MAX_PAGES	(1U << 18)
/* Most slots one TABLE call reports. */
#define ODP_NIC_TABLE_MAX	512U
/* Events each registration keeps (the newest), and most one EVENTS call reports. */
#define ODP_NIC_EVENTS_MAX	128U
/* What a RAW_READ leaves in the bytes the device could not read. */
#define ODP_NIC_RAW_SENTINEL	0xe7U

/* struct odp_nic_register::access */
#define ODP_NIC_ACCESS_READ	(1U << 0) /* the device may read (required) */
#define ODP_NIC_ACCESS_WRITE	(1U << 1) /* the device may write */

/* struct odp_nic_register::flags */
#define ODP_NIC_REG_TWO_PASS	(1U << 0) /* invalidate_start/_finish callbacks */

/**
 * struct odp_nic_register - register a range of the caller's memory
 * @addr:	in: page-aligned start
 * @length:	in: page-aligned bytes, 1 to ODP_NIC_MAX_PAGES pages
 * @access:	in: ODP_NIC_ACCESS_*
 * @flags:	in: ODP_NIC_REG_*. With ODP_NIC_REG_TWO_PASS the registration
 *		has odp_hmm's two-pass callbacks: the first zaps the slots, the
 *		second waits for the device's DMAs in flight (which then run
 *		without the update lock, as a device with an asynchronous fence
 *		would); without it, one callback that zaps, and every DMA runs
 *		under the update lock (the fence is the lock).
 * @handle:	out: names the registration (1, 2, ... per open file; an
 *		unregistered handle is given out again only after 2^31 - 1
 *		others)
 * @reserved:	in: 0
 */
struct odp_nic_register {
	__u64 addr;
	__u64 length;
	__u32 access;
	__u32 flags;
	__u32 handle;
	__u32 reserved;
};

/* struct odp_nic_work::dir */
#define ODP_NIC_WORK_READ	0 /* the device reads registered memory into @buf */
#define ODP_NIC_WORK_WRITE	1 /* the device writes @buf into registered memory */

/**
 * struct odp_nic_work - let the device move bytes (a work request)
 * @handle:	in: the registration
 * @dir:	in: ODP_NIC_WORK_*
 * @addr:	in: user address in the registration (any alignment)
 * @length:	in: bytes, 1..ODP_NIC_WORK_MAX_LEN, inside the registration
 * @buf:	in: user buffer of @length bytes (read from for a write,
 *		written to for a read)
 * @faults:	out: page faults this request raised
 * @retries:	out: times it went back to the page table (after a fault, or
 *		because an invalidation emptied a slot before the DMA)
 */
struct odp_nic_work {
	__u32 handle;
	__u32 dir;
	__u64 addr;
	__u64 length;
	__u64 buf;
	__u32 faults;
	__u32 retries;
};

/* struct odp_nic_prefetch::flags */
#define ODP_NIC_PREFETCH_WRITE	(1U << 0) /* map for writing */

/**
 * struct odp_nic_prefetch - map pages and fill their slots now
 * @handle:	in: the registration
 * @flags:	in: ODP_NIC_PREFETCH_*
 * @addr:	in: user address in the registration
 * @length:	in: bytes, not 0, inside the registration
 *
 * As ibv_advise_mr() with IBV_ADVISE_MR_FLAG_FLUSH: the pages are faulted in
 * and mapped (odp_hmm_umem_prefetch()), then, under the update lock, the
 * slots of those odp_hmm reports reachable are filled. A page an
 * invalidation took in between stays empty (a work request faults it).
 */
struct odp_nic_prefetch {
	__u32 handle;
	__u32 flags;
	__u64 addr;
	__u64 length;
};

/* struct odp_nic_slot::state */
#define ODP_NIC_SLOT_VALID	(1U << 0) /* the slot holds a DMA address */
#define ODP_NIC_SLOT_WRITE	(1U << 1) /* ... that the device may write */

/**
 * struct odp_nic_slot - one page of the device's page table, and odp_hmm's
 * view of the page, read together under the registration's update lock
 * @dma_addr:	the slot's DMA address (0 when empty)
 * @state:	ODP_NIC_SLOT_*
 * @odp_flags:	ODP_HMM_PAGE_* flags odp_hmm_umem_dma_addr() reports
 * @odp_dma_addr: the DMA address it reports (0 if it said ENOENT)
 */
struct odp_nic_slot {
	__u64 dma_addr;
	__u32 state;
	__u32 odp_flags;
	__u64 odp_dma_addr;
};

/**
 * struct odp_nic_table - read the device's page table
 * @handle:	in: the registration
 * @count:	in: slots, 1..ODP_NIC_TABLE_MAX
 * @first:	in: index of the first page in the registration
 * @slots:	in: user array of @count struct odp_nic_slot
 */
struct odp_nic_table {
	__u32 handle;
	__u32 count;
	__u64 first;
	__u64 slots;
};

/* struct odp_nic_event::kind */
#define ODP_NIC_EV_INVALIDATE	1 /* the one-pass callback (zaps) */
#define ODP_NIC_EV_START	2 /* the first pass (zaps) */
#define ODP_NIC_EV_FINISH	3 /* the second pass (waits; zaps nothing) */
#define ODP_NIC_EV_FILL		4 /* a fault filled slots */
#define ODP_NIC_EV_REFUSED	5 /* a non-blockable callback refused: DMA in flight */

/**
 * struct odp_nic_event - one record of what happened to the page table
 * @seq:	1, 2, ... per registration, in the order the events happened
 *		(each is recorded under the update lock)
 * @kind:	ODP_NIC_EV_*
 * @pages:	pages of the range
 * @start:	first user address of the range
 * @end:	one past its last address
 * @slots_filled: slots of the range that held an address when the event
 *		began (for a fill: the slots it filled)
 * @slots_linked: of those, how many held the address odp_hmm reported for
 *		the page at that moment (odp_hmm_umem_dma_addr() returned 0
 *		with that address); for ODP_NIC_EV_FINISH, how many pages
 *		odp_hmm still flagged ODP_HMM_PAGE_DMA_MAPPED (it reports
 *		ENOENT between the passes)
 * @pages_linked: pages odp_hmm flagged ODP_HMM_PAGE_DMA_MAPPED at that
 *		moment (not unlinked yet), among those the event looked up:
 *		for a fill, the pages of the range; for a callback, the pages
 *		whose slot was filled, and for ODP_NIC_EV_FINISH also those its
 *		first pass emptied (the callbacks look up no other page: their
 *		cost stays bounded by what the device had mapped)
 * @slots_zapped: slots the event emptied
 */
struct odp_nic_event {
	__u64 seq;
	__u32 kind;
	__u32 pages;
	__u64 start;
	__u64 end;
	__u32 slots_filled;
	__u32 slots_linked;
	__u32 pages_linked;
	__u32 slots_zapped;
};

/**
 * struct odp_nic_events - read a registration's record
 * @handle:	in: the registration
 * @count:	in: capacity of @events, 1..ODP_NIC_EVENTS_MAX; out: events
 *		written
 * @after:	in: report events with a larger @seq only
 * @events:	in: user array of @count struct odp_nic_event
 * @last_seq:	out: the newest event's @seq (0: none)
 * @lost:	out: events after @after that were overwritten before this call
 */
struct odp_nic_events {
	__u32 handle;
	__u32 count;
	__u64 after;
	__u64 events;
	__u64 last_seq;
	__u64 lost;
};

/**
 * struct odp_nic_counters - counters of a registration or of the device
 * @handle:	in: a registration, or 0: the device's totals, over every
 *		registration since the device was bound
 * @reserved:	in: 0
 * @work_requests: work requests that moved their bytes
 * @work_bytes:	bytes they moved
 * @faults_raised: page faults raised by work requests (one per request
 *		that found a slot empty, for the request's pages)
 * @faults_resolved: of those, faults odp_hmm_umem_map_and_lock() resolved
 * @fault_errors: of those, faults that failed (their request got the errno);
 *		once no fault is queued, faults_raised is faults_resolved +
 *		fault_errors
 * @slots_filled: slots filled by faults and prefetches
 * @invalidations: one-pass callbacks (and refused ones not counted)
 * @invalidate_starts: first passes
 * @invalidate_finishes: second passes
 * @slots_zapped: slots emptied by callbacks
 * @stale_slots: slots a callback found holding an address odp_hmm did not
 *		report for the page: must stay 0
 * @refilled_between_passes: slots a second pass found filled (they were
 *		filled after the first pass zapped them): must stay 0
 * @fills_between_passes: faults and prefetches that filled slots while a
 *		two-pass invalidation was between its passes (for other pages)
 * @dma_check_failures: DMAs not started because a slot's address differed
 *		from odp_hmm's: must stay 0
 * @refused_nonblocking: non-blockable callbacks refused (DMA in flight)
 * @dma_transfers: device transfers to or from registered memory
 * @prefetches:	prefetches that filled what was reachable
 * @map_unreachable: pages odp_hmm_umem_map_and_lock() returned as mapped
 *		whose address odp_hmm_umem_dma_addr() then did not give, under
 *		the same hold of the lock: must stay 0
 * @live_registrations: registrations alive now (the device's totals only)
 * @odp_faults:	odp_hmm_umem_stats() of the registration (0 for the device's
 *		totals): its faults
 * @odp_pages_mapped: ... pages made reachable
 * @odp_pages_unmapped: ... pages made unreachable
 * @odp_invalidations: ... invalidations that unmapped something
 * @odp_pages_now: ... pages reachable now
 */
struct odp_nic_counters {
	__u32 handle;
	__u32 reserved;
	__u64 work_requests;
	__u64 work_bytes;
	__u64 faults_raised;
	__u64 faults_resolved;
	__u64 fault_errors;
	__u64 slots_filled;
	__u64 invalidations;
	__u64 invalidate_starts;
	__u64 invalidate_finishes;
	__u64 slots_zapped;
	__u64 stale_slots;
	__u64 refilled_between_passes;
	__u64 fills_between_passes;
	__u64 dma_check_failures;
	__u64 refused_nonblocking;
	__u64 dma_transfers;
	__u64 prefetches;
	__u64 map_unreachable;
	__u64 live_registrations;
	__u64 odp_faults;
	__u64 odp_pages_mapped;
	__u64 odp_pages_unmapped;
	__u64 odp_invalidations;
	__u64 odp_pages_now;
};

/**
 * struct odp_nic_raw_read - let the device read a raw DMA address (debug)
 * @dma_addr:	in: the address
 * @length:	in: bytes, 1..ODP_NIC_WORK_MAX_LEN
 * @buf:	in: user buffer of @length bytes: what the device's buffer held
 *		afterwards (ODP_NIC_RAW_SENTINEL where the device read nothing)
 *
 * For tests that prove a page is gone from the IOMMU: needs the module
 * parameter debug_raw_dma=1 and CAP_SYS_RAWIO.
 */
struct odp_nic_raw_read {
	__u64 dma_addr;
	__u64 length;
	__u64 buf;
};

#define ODP_NIC_IOC_MAGIC	0xBB

#define ODP_NIC_IOC_REGISTER	_IOWR(ODP_NIC_IOC_MAGIC, 0x00, struct odp_nic_register)
#define ODP_NIC_IOC_UNREGISTER	_IOW(ODP_NIC_IOC_MAGIC, 0x01, __u32)
#define ODP_NIC_IOC_WORK	_IOWR(ODP_NIC_IOC_MAGIC, 0x02, struct odp_nic_work)
#define ODP_NIC_IOC_PREFETCH	_IOW(ODP_NIC_IOC_MAGIC, 0x03, struct odp_nic_prefetch)
#define ODP_NIC_IOC_TABLE	_IOW(ODP_NIC_IOC_MAGIC, 0x04, struct odp_nic_table)
#define ODP_NIC_IOC_EVENTS	_IOWR(ODP_NIC_IOC_MAGIC, 0x05, struct odp_nic_events)
#define ODP_NIC_IOC_COUNTERS	_IOWR(ODP_NIC_IOC_MAGIC, 0x06, struct odp_nic_counters)
#define ODP_NIC_IOC_RAW_READ	_IOW(ODP_NIC_IOC_MAGIC, 0x07, struct odp_nic_raw_read)

#endif /* _UAPI_ODP_NIC_H */
