/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * odp_hmm: On-Demand Paging of user memory for a DMA device, through HMM and
 * the two-step (IOVA) DMA API. This header is the one source of truth for the
 * ioctl ABI of /dev/odp_hmm; the module and the Rust userspace crate follow it.
 *
 * Rules every structure here keeps:
 *   - only __u32 and __u64 fields, naturally aligned, no implicit padding, so
 *     32-bit and 64-bit callers share one layout;
 *   - the first field is @version: the ABI version the caller was built
 *     against, 1 up to ODP_HMM_ABI_VERSION;
 *   - a later ABI grows a structure at its end only, and bumps the version.
 *     The size is part of the ioctl number, and the module takes the
 *     structure's size in any ABI version: fields beyond the caller's size
 *     are neither read nor written, so a program built against an older
 *     header keeps working unchanged;
 *   - every flags field rejects unknown bits, every reserved field must be 0.
 *
 * Version history:
 *   1  the first ABI
 *   2  struct odp_hmm_info grows the module-wide live_* gauges and
 *      @link_page_sizes; struct odp_hmm_stats grows the prefetch, fault
 *      latency and chunk counters; ODP_HMM_INFO_{IMPLICIT,ASYNC_PREFETCH,
 *      USERFAULTFD,P2P_*}, ODP_HMM_REGISTER_IMPLICIT, ODP_HMM_FAULT_ASYNC,
 *      ODP_HMM_BACKEND_PINNED
 *
 * Errors (as -1 and errno):
 *   ENOTTY      unknown ioctl, or an argument size the module does not know
 *   EINVAL      malformed argument: unaligned address, zero or unaligned
 *               length, unknown flag bits, reserved field not zero, an
 *               unknown @backend, a device copy from the device buffer to
 *               itself
 *   EPROTONOSUPPORT  @version is 0 or newer than ODP_HMM_ABI_VERSION
 *   EOVERFLOW   address + length wraps or leaves the user address space
 *   EFAULT      the range is not (fully) backed by a mapping, or its pages
 *               cannot be read (PROT_NONE, VM_IO); or a user pointer (the
 *               argument structure, @pages) cannot be accessed
 *   ERANGE      a sub-range is not inside the registration it names
 *   ENOENT      unknown handle (also on a second unregister, and for a call
 *               that raced the unregister of its handle)
 *   E2BIG       snapshot of more than ODP_HMM_SNAPSHOT_MAX_PAGES pages,
 *               device copy longer than ODP_HMM_DMA_MAX_LEN
 *   EPERM       write access to a read-only registration or mapping; a debug
 *               ioctl that the module was not loaded to allow; REGISTER,
 *               UNREGISTER, FAULT, SNAPSHOT or DMA from another address space
 *               than the one that opened the file (a forked child, a process
 *               the file descriptor was passed to). INFO and STATS only read,
 *               and work for any holder of the file.
 *   ENOSPC      the registration would take the file's registered memory
 *               beyond the module parameter file_limit_mb (default 64 GiB),
 *               which bounds its IOVA space and kernel memory; for an
 *               implicit registration, the 2 MiB chunk a fault or device
 *               access would make
 *   ENOMEM      kernel memory for the per-page state (8 or 16 bytes per 4 KiB
 *               page, charged to the caller's memory cgroup) or the IOVA
 *               space cannot be had, or a call's working memory
 *   ESRCH       the registered address space has exited
 *   EOPNOTSUPP  the DMA device has no copy engine (see ODP_HMM_INFO_COPY_ENGINE);
 *               or, at registration, it cannot take HMM mappings (they would
 *               be bounced or need cache maintenance)
 *   EREMOTEIO   a page is PCI peer memory that the DMA device cannot reach
 *               (no P2P path in the topology); a fault still maps every
 *               other page and writes its output fields, a device copy moves
 *               nothing
 *   ENODEV      the DMA device is gone (unbound, or removed from the bus)
 *   EBUSY       the range kept changing under the fault for a whole second,
 *               or under a device copy for 16 attempts
 *   EINTR       the caller got a fatal signal during a fault or a device copy
 *   ETIMEDOUT   the device did not finish a copy within copy_timeout_ms; its
 *               bus mastering is turned off before the call returns. Or a
 *               device copy waited longer than device_fault_timeout_ms
 *               (default 10000, writable at run time) for the pages it faults
 *               in, e.g. from a userfaultfd handler that does not answer:
 *               nothing was moved and the engine stays usable; the fault goes
 *               on in the background until the handler answers, its
 *               userfaultfd is closed or the process exits
 *   EIO         the copy engine is disabled after such a timeout (rebind the
 *               device to get it back), or a mapping call failed
 */
#ifndef _UAPI_LINUX_ODP_HMM_H
#define _UAPI_LINUX_ODP_HMM_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define ODP_HMM_DEVICE_PATH		"/dev/odp_hmm"
#define ODP_HMM_ABI_VERSION		2

/* Largest snapshot (pages) and device copy (bytes) one ioctl accepts. */
#define ODP_HMM_SNAPSHOT_MAX_PAGES	(1U << 20)
#define ODP_HMM_DMA_MAX_LEN		4096U

/* struct odp_hmm_info::flags */
#define ODP_HMM_INFO_COPY_ENGINE	(1U << 0) /* the device can copy (edu) */
#define ODP_HMM_INFO_IOVA		(1U << 1) /* IOVA (two-step) mode usable */
#define ODP_HMM_INFO_DEBUG_RAW_DMA	(1U << 2) /* ODP_HMM_DMA_SRC_RAW_IOVA allowed */
/* Capabilities (version 2), in the spirit of ibv_query_device_ex()'s odp_caps: */
#define ODP_HMM_INFO_IMPLICIT		(1U << 3) /* ODP_HMM_REGISTER_IMPLICIT */
#define ODP_HMM_INFO_ASYNC_PREFETCH	(1U << 4) /* ODP_HMM_FAULT_ASYNC */
#define ODP_HMM_INFO_USERFAULTFD	(1U << 5) /* faults wait for userfaultfd handlers
						     (set where the kernel has userfaultfd) */
#define ODP_HMM_INFO_P2P_HOST_BRIDGE	(1U << 6) /* peer memory mapped through the host bridge */
#define ODP_HMM_INFO_P2P_BUS		(1U << 7) /* peer memory reached by bus address (both
						     P2P bits: where the kernel has PCI
						     P2PDMA; whether a given provider is
						     reachable depends on the topology) */

/* struct odp_hmm_info::domain_type: the DMA device's IOMMU domain. */
#define ODP_HMM_DOMAIN_NONE		0 /* no IOMMU: dma-direct */
#define ODP_HMM_DOMAIN_IDENTITY		1 /* passthrough */
#define ODP_HMM_DOMAIN_DMA		2 /* translated, strict invalidation */
#define ODP_HMM_DOMAIN_DMA_FQ		3 /* translated, lazy (flush queue) */
#define ODP_HMM_DOMAIN_OTHER		4

/* Mapping backends (module parameter "backend", struct odp_hmm_register). */
#define ODP_HMM_BACKEND_DEFAULT		0 /* in: the module parameter's choice */
#define ODP_HMM_BACKEND_RUST		1 /* the Rust manager (batched links) */
#define ODP_HMM_BACKEND_KERNEL		2 /* the kernel's hmm_dma_map_pfn() */
#define ODP_HMM_BACKEND_LEGACY		3 /* dma_map_phys() per page, stored */
#define ODP_HMM_BACKEND_NONE		4 /* fault only, map nothing (floor) */
#define ODP_HMM_BACKEND_PINNED		5 /* version 2: not ODP, pinned (see below) */

/* struct odp_hmm_register::dma_mode */
#define ODP_HMM_DMA_MODE_NONE		0 /* ODP_HMM_BACKEND_NONE */
#define ODP_HMM_DMA_MODE_IOVA		1 /* one IOVA window, pages linked */
#define ODP_HMM_DMA_MODE_MAP		2 /* dma_map_phys() per page (fallback) */

/**
 * struct odp_hmm_info - what the module drives (ODP_HMM_IOC_INFO)
 * @version:	in: ODP_HMM_ABI_VERSION
 * @flags:	out: ODP_HMM_INFO_*
 * @pci_segment: out: PCI address of the DMA device: segment (domain),
 * @pci_bus:	out: bus,
 * @pci_devfn:	out: device << 3 | function
 * @pci_vendor:	out: PCI vendor id
 * @pci_device:	out: PCI device id
 * @domain_type: out: ODP_HMM_DOMAIN_*
 * @backend:	out: default backend (ODP_HMM_BACKEND_*)
 * @page_size:	out: PAGE_SIZE of the kernel
 * @dma_mask:	out: the device's streaming DMA mask
 * @live_registrations: out (version 2): registrations alive now, in every
 *		open file of every process
 * @live_pages_mapped: out (version 2): pages the device can reach now,
 *		in every registration
 * @live_iova_bytes: out (version 2): IOVA space reserved now
 * @live_bookkeeping_bytes: out (version 2): kernel memory held now for
 *		per-page state
 * @link_page_sizes: out (version 2): the sizes one link maps whole (bit n:
 *		2^n bytes), where the device has an IOVA window: aligned blocks of
 *		physically contiguous pages and whole huge-page folios; 0 without one
 */
struct odp_hmm_info {
	__u32 version;
	__u32 flags;
	__u32 pci_segment;
	__u32 pci_bus;
	__u32 pci_devfn;
	__u32 pci_vendor;
	__u32 pci_device;
	__u32 domain_type;
	__u32 backend;
	__u32 page_size;
	__u64 dma_mask;
	__u64 live_registrations;
	__u64 live_pages_mapped;
	__u64 live_iova_bytes;
	__u64 live_bookkeeping_bytes;
	__u64 link_page_sizes;
};

/* The size of struct odp_hmm_info in ABI version 1 (up to @dma_mask). */
#define ODP_HMM_INFO_SIZE_V1		48

/* struct odp_hmm_register::flags */
#define ODP_HMM_ACCESS_READ		(1U << 0) /* device may read (required) */
#define ODP_HMM_ACCESS_WRITE		(1U << 1) /* device may write */
#define ODP_HMM_REGISTER_IMPLICIT	(1U << 2) /* version 2: implicit ODP, see below */

/**
 * struct odp_hmm_register - register a range for ODP (ODP_HMM_IOC_REGISTER)
 * @version:	in: ODP_HMM_ABI_VERSION
 * @flags:	in: ODP_HMM_ACCESS_*; READ is required
 * @addr:	in: page-aligned start in the caller's address space
 * @length:	in: page-aligned length, not 0; the whole range must be mapped
 *		when it is registered (it may be unmapped later)
 * @backend:	in: ODP_HMM_BACKEND_*; out: the backend used
 * @dma_mode:	out: ODP_HMM_DMA_MODE_*
 * @handle:	out: names the registration in later calls; never 0, and never
 *		reused by the open file (an old handle stays unknown: ENOENT)
 * @iova_base:	out: DMA address of @addr in IOVA mode, else 0
 *
 * Nothing is faulted or mapped at registration: pages are mapped by
 * ODP_HMM_IOC_FAULT or by a device access (ODP_HMM_IOC_DMA).
 *
 * With ODP_HMM_REGISTER_IMPLICIT (like mlx5's implicit ODP MR) the range may
 * be huge and need not be mapped: @addr 0 and @length 0 mean the whole user
 * address space. Per-page state and IOVA are made lazily, one 2 MiB chunk at
 * a time, at the first fault or device access in the chunk; @iova_base is 0
 * and @dma_mode says how chunks map. A chunk that an munmap left empty, or
 * that a failed call made for an unmapped address, is freed at the next call
 * on the registration. Device accesses anywhere in the range fault on demand
 * (a copy may cross chunks); unmapped addresses fail with EFAULT. Each chunk
 * is charged to the file's file_limit_mb (ENOSPC beyond it). STATS counts
 * the live chunks in @chunks; INFO's live_registrations counts each chunk.
 *
 * ODP_HMM_BACKEND_PINNED (version 2; per registration only, not a value of
 * the module parameter) is the baseline ODP replaces, a classic RDMA memory
 * region: the whole range is pinned with pin_user_pages_fast(FOLL_LONGTERM,
 * and FOLL_WRITE with ODP_HMM_ACCESS_WRITE) and linked into the IOVA window
 * (or mapped, without one) by the registration itself, so its cost is paid
 * up front. The pages are charged to the process's pinned memory against
 * RLIMIT_MEMLOCK (unless it has CAP_IPC_LOCK). The device keeps the pages it
 * got at registration whatever later happens to the mapping: munmap,
 * mprotect, MADV_DONTNEED, fork and exit do not unmap them (the pinned pages
 * stay allocated until unregister, or until the file is closed), so the
 * process and the device may no longer see the same memory, exactly as with
 * a pinned RDMA region. ODP_HMM_IOC_FAULT maps nothing (@pages_mapped 0,
 * @pages_valid the pages of the sub-range). Errors: EINVAL with
 * ODP_HMM_REGISTER_IMPLICIT; ENOMEM over RLIMIT_MEMLOCK; EFAULT if a page
 * cannot be pinned (unmapped, VM_IO or VM_PFNMAP, a file mapping the kernel
 * does not pin long-term); EINTR on a fatal signal while pinning.
 */
struct odp_hmm_register {
	__u32 version;
	__u32 flags;
	__u64 addr;
	__u64 length;
	__u32 backend;
	__u32 dma_mode;
	__u64 handle;
	__u64 iova_base;
};

/**
 * struct odp_hmm_unregister - drop a registration (ODP_HMM_IOC_UNREGISTER)
 * @version:	in: ODP_HMM_ABI_VERSION
 * @reserved:	in: 0
 * @handle:	in: from ODP_HMM_IOC_REGISTER
 *
 * Unmaps every page and releases the IOVA window.
 */
struct odp_hmm_unregister {
	__u32 version;
	__u32 reserved;
	__u64 handle;
};

/* struct odp_hmm_fault::flags */
#define ODP_HMM_FAULT_WRITE		(1U << 0) /* fault for write, map writable */
#define ODP_HMM_FAULT_NO_FAULT		(1U << 1) /* map only pages already present */
#define ODP_HMM_FAULT_ASYNC		(1U << 2) /* version 2: queue it, return at once */

/**
 * struct odp_hmm_fault - fault and map a sub-range (ODP_HMM_IOC_FAULT)
 * @version:	in: ODP_HMM_ABI_VERSION
 * @flags:	in: ODP_HMM_FAULT_*; without WRITE the pages are mapped
 *		readable only (prefetch), even in a writable registration;
 *		NO_FAULT maps only what is present, and excludes WRITE; ASYNC
 *		(with either) queues the fault to a worker and returns at once,
 *		like ibv_advise_mr() without IBV_ADVISE_MR_FLAG_FLUSH: the outputs
 *		are 0, and the result shows in STATS (@prefetched_pages,
 *		@prefetch_errors); unregister, close and exit cancel it. The
 *		call itself fails only for what it can check at once: EINVAL,
 *		EOVERFLOW, ERANGE, ENOENT, EPERM (WRITE on a read-only
 *		registration), ENOMEM (and the errors of any call: ENOTTY,
 *		EPROTONOSUPPORT, EFAULT); the errno of the fault itself
 *		(EFAULT, EPERM, ...) is not reported, the prefetch is counted
 *		in @prefetch_errors
 * @handle:	in: the registration
 * @addr:	in: page-aligned start, inside the registration
 * @length:	in: page-aligned length, not 0, inside the registration
 * @pages_mapped: out: pages this call newly mapped for the device
 * @pages_valid:	out: pages of the sub-range mapped after the call
 */
struct odp_hmm_fault {
	__u32 version;
	__u32 flags;
	__u64 handle;
	__u64 addr;
	__u64 length;
	__u64 pages_mapped;
	__u64 pages_valid;
};

/* struct odp_hmm_page::flags */
#define ODP_HMM_PAGE_VALID		(1U << 0) /* a page is known for this address */
#define ODP_HMM_PAGE_WRITE		(1U << 1) /* mapped for device writes */
#define ODP_HMM_PAGE_DMA_MAPPED		(1U << 2) /* the device can reach it */
#define ODP_HMM_PAGE_P2P		(1U << 3) /* peer memory, via the host bridge */
#define ODP_HMM_PAGE_P2P_BUS		(1U << 4) /* peer memory, PCI bus address */

/**
 * struct odp_hmm_page - the device's view of one page (snapshot entry)
 * @dma_addr:	DMA address of the page when ODP_HMM_PAGE_DMA_MAPPED, else 0
 * @flags:	ODP_HMM_PAGE_*
 * @order:	log2 of the pages mapped as one unit with this one (9: a 2 MiB
 *		THP linked whole); 0 for a single page
 */
struct odp_hmm_page {
	__u64 dma_addr;
	__u32 flags;
	__u32 order;
};

/**
 * struct odp_hmm_snapshot - read per-page state (ODP_HMM_IOC_SNAPSHOT)
 * @version:	in: ODP_HMM_ABI_VERSION
 * @flags:	in: 0
 * @handle:	in: the registration
 * @addr:	in: page-aligned start, inside the registration
 * @npages:	in: entries in @pages, 1..ODP_HMM_SNAPSHOT_MAX_PAGES; the
 *		pages must lie inside the registration
 * @pages:	in: user pointer to struct odp_hmm_page[@npages]
 *
 * Faults nothing. Large snapshots are taken in chunks, each consistent.
 */
struct odp_hmm_snapshot {
	__u32 version;
	__u32 flags;
	__u64 handle;
	__u64 addr;
	__u64 npages;
	__u64 pages;
};

/**
 * struct odp_hmm_stats - counters (ODP_HMM_IOC_STATS)
 * @version:	in: ODP_HMM_ABI_VERSION
 * @reserved:	in: 0
 * @handle:	in: a registration, or 0 for every registration this open
 *		file ever had (unregistered ones included)
 * @faults:	out: fault calls and device page faults that ran hmm_range_fault()
 * @pages_faulted: out: pages hmm_range_fault() reported valid
 * @pages_mapped: out: pages made reachable by the device
 * @pages_unmapped: out: pages made unreachable again
 * @invalidations: out: invalidation callbacks that unmapped something
 * @invalidations_ignored: out: invalidation callbacks that touched nothing
 * @fault_retries: out: faults repeated because the range changed
 * @link_calls:	out: dma_iova_link() (IOVA) or dma_map_phys() calls
 * @sync_calls:	out: dma_iova_sync() calls
 * @unlink_calls: out: dma_iova_unlink() or dma_unmap_phys() calls
 * @p2p_host_bridge_pages: out: pages mapped as PCI peer memory via the host bridge
 * @p2p_bus_pages: out: pages mapped as PCI peer memory by bus address
 * @p2p_refused_pages: out: peer pages the topology could not reach
 * @iova_bytes:	out: IOVA space reserved now
 * @bookkeeping_bytes: out: kernel memory held now for per-page state
 * @pages_now:	out: pages mapped now
 * @registrations: out: registrations alive now
 * @fault_ns:	out: time spent in hmm_range_fault()
 * @map_ns:	out: time spent mapping faulted pages (links, syncs, bookkeeping)
 * @sync_ns:	out: of which in dma_iova_sync(), when the module parameter
 *		dma_call_timers=1 (0 otherwise, and for backend=kernel, which
 *		syncs inside hmm_dma_map_pfn())
 * @link_ns:	out: of which in dma_iova_link() or dma_map_phys(), when
 *		dma_call_timers=1 (0 otherwise, and for
 *		backend=kernel)
 * @unmap_ns:	out: time invalidations spent unmapping
 * @invalidations_nonblocking: out: of the invalidation callbacks, those that
 *		must not sleep (the OOM reaper, process_mrelease()), counted
 *		whether or not they unmapped anything
 * @fault_calls: out (version 2): fault requests: FAULT ioctls, device
 *		accesses that faulted, asynchronous prefetches
 * @fault_latency_ns: out (version 2): their total time, call to return
 * @fault_latency_max_ns: out (version 2): the longest one
 * @prefetched_pages: out (version 2): pages asynchronous prefetches mapped
 * @prefetch_errors: out (version 2): asynchronous prefetches that failed
 *		(their errno is not reported; the pages stay unmapped)
 * @chunks: out (version 2): chunks of implicit registrations that hold
 *		per-page state now
 */
struct odp_hmm_stats {
	__u32 version;
	__u32 reserved;
	__u64 handle;
	__u64 faults;
	__u64 pages_faulted;
	__u64 pages_mapped;
	__u64 pages_unmapped;
	__u64 invalidations;
	__u64 invalidations_ignored;
	__u64 fault_retries;
	__u64 link_calls;
	__u64 sync_calls;
	__u64 unlink_calls;
	__u64 p2p_host_bridge_pages;
	__u64 p2p_bus_pages;
	__u64 p2p_refused_pages;
	__u64 iova_bytes;
	__u64 bookkeeping_bytes;
	__u64 pages_now;
	__u64 registrations;
	__u64 fault_ns;
	__u64 map_ns;
	__u64 sync_ns;
	__u64 unmap_ns;
	__u64 link_ns;
	__u64 invalidations_nonblocking;
	__u64 fault_calls;
	__u64 fault_latency_ns;
	__u64 fault_latency_max_ns;
	__u64 prefetched_pages;
	__u64 prefetch_errors;
	__u64 chunks;
};

/*
 * /proc/PID/fdinfo/FD of an open /dev/odp_hmm has one line per live
 * registration, readable by anyone who may read the process's fdinfo:
 *
 *   odp_hmm-registration: handle=N start=0x... length=0x... backend=NAME
 *     mode=iova|map|none|revoked faults=N pages_faulted=N pages_now=N
 *     invalidations=N prefetched=N prefetch_errors=N fault_calls=N
 *     fault_latency_ns=N fault_latency_max_ns=N iova_bytes=N
 *     bookkeeping_bytes=N chunks=N
 *
 * (on one line), the same values STATS reports for the handle. New fields
 * are added at the end of the line.
 */

/* The size of struct odp_hmm_stats in ABI version 1 (up to @invalidations_nonblocking). */
#define ODP_HMM_STATS_SIZE_V1		200

/* struct odp_hmm_dma::flags */
#define ODP_HMM_DMA_SRC_DEVBUF		(1U << 0) /* src_addr: offset in the device buffer */
#define ODP_HMM_DMA_DST_DEVBUF		(1U << 1) /* dst_addr: offset in the device buffer */
#define ODP_HMM_DMA_SRC_RAW_IOVA	(1U << 2) /* src_addr: a raw DMA address (debug) */

/**
 * struct odp_hmm_dma - let the device copy memory (ODP_HMM_IOC_DMA)
 * @version:	in: ODP_HMM_ABI_VERSION
 * @flags:	in: ODP_HMM_DMA_*; at most one of the SRC flags, and not both
 *		DEVBUF flags
 * @src_handle:	in: registration of the source (unless a SRC flag is set)
 * @src_addr:	in: user address in it, device-buffer offset, or raw IOVA
 * @dst_handle:	in: registration of the destination (unless DST_DEVBUF)
 * @dst_addr:	in: user address in it, or device-buffer offset
 * @length:	in: bytes, 1..ODP_HMM_DMA_MAX_LEN; device-buffer ranges must
 *		stay inside its ODP_HMM_DMA_MAX_LEN bytes
 * @faults:	out: pages the device found unmapped and faulted first
 *
 * The device reads and writes through the IOMMU. As a NIC with ODP would,
 * it faults in (and maps) pages that are not mapped, writable ones for the
 * destination, before it moves the data. A registered-to-registered copy
 * goes through the device buffer. ODP_HMM_DMA_SRC_RAW_IOVA reads a DMA address
 * nobody checked, to prove that an unmapped page is gone from the IOMMU; it
 * needs the module parameter debug_raw_dma=1 and CAP_SYS_RAWIO.
 */
struct odp_hmm_dma {
	__u32 version;
	__u32 flags;
	__u64 src_handle;
	__u64 src_addr;
	__u64 dst_handle;
	__u64 dst_addr;
	__u64 length;
	__u64 faults;
};

#define ODP_HMM_IOC_MAGIC		0xB9

#define ODP_HMM_IOC_INFO	_IOWR(ODP_HMM_IOC_MAGIC, 0x00, struct odp_hmm_info)
#define ODP_HMM_IOC_REGISTER	_IOWR(ODP_HMM_IOC_MAGIC, 0x01, struct odp_hmm_register)
#define ODP_HMM_IOC_UNREGISTER	_IOW(ODP_HMM_IOC_MAGIC, 0x02, struct odp_hmm_unregister)
#define ODP_HMM_IOC_FAULT	_IOWR(ODP_HMM_IOC_MAGIC, 0x03, struct odp_hmm_fault)
#define ODP_HMM_IOC_SNAPSHOT	_IOW(ODP_HMM_IOC_MAGIC, 0x04, struct odp_hmm_snapshot)
#define ODP_HMM_IOC_STATS	_IOWR(ODP_HMM_IOC_MAGIC, 0x05, struct odp_hmm_stats)
#define ODP_HMM_IOC_DMA		_IOWR(ODP_HMM_IOC_MAGIC, 0x06, struct odp_hmm_dma)

#endif /* _UAPI_LINUX_ODP_HMM_H */
