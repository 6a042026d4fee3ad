// SPDX-License-Identifier: GPL-2.0
/*
 * odp_shim: the C half of odp_hmm (see odp_shim.h).
 *
 * Module parameters live here because the Rust module! macro has no string
 * parameters; the rest are out-of-line copies of static inline helpers that
 * bindgen cannot turn into callable functions.
 */

#include <linux/capability.h>
#include <linux/dma-mapping.h>
#include <linux/hmm.h>
#include <linux/iommu.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/moduleparam.h>
#include <linux/pci.h>
#include <linux/pci-p2pdma.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/workqueue.h>

#include "uapi/linux/odp_hmm.h"
#include "linux/odp_hmm.h"
#include "odp_shim.h"

/* ---- Module parameters ------------------------------------------------ */

static const char *const backend_names[] = {
	[ODP_SHIM_BACKEND_RUST] = "rust",
	[ODP_SHIM_BACKEND_KERNEL] = "kernel",
	[ODP_SHIM_BACKEND_LEGACY] = "legacy",
	[ODP_SHIM_BACKEND_NONE] = "none",
};

static int backend = ODP_SHIM_BACKEND_RUST;

static int backend_set(const char *val, const struct kernel_param *kp)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(backend_names); i++) {
		if (backend_names[i] && sysfs_streq(val, backend_names[i])) {
			*(int *)kp->arg = i;
			return 0;
		}
	}
	return -EINVAL;
}

static int backend_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%s\n", backend_names[*(int *)kp->arg]);
}

static const struct kernel_param_ops backend_ops = {
	.set = backend_set,
	.get = backend_get,
};

module_param_cb(backend, &backend_ops, &backend, 0444);
MODULE_PARM_DESC(backend,
		 "Default mapping backend: rust (the Rust manager, default), kernel (the kernel's hmm_dma_map_pfn), legacy (dma_map_phys per page) or none (fault only)");

static char dma_device[32];
module_param_string(dma_device, dma_device, sizeof(dma_device), 0444);
MODULE_PARM_DESC(dma_device,
		 "PCI address (DDDD:BB:DD.F) of the DMA device to map for; empty (default): the QEMU edu device this module drives, which can also copy");

static bool debug_raw_dma;
module_param(debug_raw_dma, bool, 0444);
MODULE_PARM_DESC(debug_raw_dma,
		 "Allow ODP_HMM_DMA_SRC_RAW_IOVA (device reads an unchecked DMA address; for tests). Default: off");

static unsigned int copy_timeout_ms = 5000;
module_param(copy_timeout_ms, uint, 0644);
MODULE_PARM_DESC(copy_timeout_ms,
		 "How long a device transfer may take, in ms (default 5000). After a timeout bus mastering is turned off and the copy engine stays disabled (later copies: EIO) until the device is rebound");

static unsigned int device_fault_timeout_ms = 10000;
module_param(device_fault_timeout_ms, uint, 0644);
MODULE_PARM_DESC(device_fault_timeout_ms,
		 "How long a device copy waits for the pages it faults in, in ms (default 10000): a userfaultfd handler that does not answer makes it fail with ETIMEDOUT");

static unsigned long file_limit_mb = 64 * 1024;
module_param(file_limit_mb, ulong, 0644);
MODULE_PARM_DESC(file_limit_mb,
		 "Most memory one open file of /dev/odp_hmm may have registered at a time, in MiB: what bounds its IOVA space and its 8-16 bytes of kernel memory per 4 KiB page (default 65536: 64 GiB; 0: no limit). A registration beyond it fails with ENOSPC");

static bool dma_call_timers;
module_param(dma_call_timers, bool, 0644);
MODULE_PARM_DESC(dma_call_timers,
		 "Time every batch's dma_iova_link()/dma_map_phys() and dma_iova_sync() calls for the link_ns and sync_ns counters (a clock read each, a cost of its own in small faults). Default: off (the counters stay 0)");

bool odp_shim_param_dma_call_timers(void)
{
	return READ_ONCE(dma_call_timers);
}

int odp_shim_param_backend(void)
{
	return backend;
}

const char *odp_shim_param_dma_device(void)
{
	return dma_device;
}

bool odp_shim_param_debug_raw_dma(void)
{
	return debug_raw_dma;
}

unsigned int odp_shim_param_copy_timeout_ms(void)
{
	return READ_ONCE(copy_timeout_ms);
}

unsigned int odp_shim_param_device_fault_timeout_ms(void)
{
	return READ_ONCE(device_fault_timeout_ms);
}

unsigned long odp_shim_param_file_limit_mb(void)
{
	return READ_ONCE(file_limit_mb);
}

/* ---- <linux/mmu_notifier.h> ------------------------------------------- */

void odp_shim_mmu_interval_set_seq(struct mmu_interval_notifier *sub,
				   unsigned long cur_seq)
{
	mmu_interval_set_seq(sub, cur_seq);
}

bool odp_shim_mmu_interval_read_retry(struct mmu_interval_notifier *sub,
				      unsigned long seq)
{
	return mmu_interval_read_retry(sub, seq);
}

bool odp_shim_mmu_notifier_range_blockable(const struct mmu_notifier_range *range)
{
	return mmu_notifier_range_blockable(range);
}

/* ---- <linux/dma-mapping.h> -------------------------------------------- */

bool odp_shim_dma_use_iova(struct dma_iova_state *state)
{
	return dma_use_iova(state);
}

bool odp_shim_dma_mapping_error(struct device *dev, u64 dma_addr)
{
	return dma_mapping_error(dev, dma_addr);
}

u64 odp_shim_dma_get_mask(struct device *dev)
{
	return dma_get_mask(dev);
}

/*
 * HMM mappings cannot follow the DMA API's buffer ownership rules (the CPU keeps
 * using the memory), so they need a device that never bounces or syncs: the
 * test hmm_dma_map_alloc() makes.
 */
bool odp_shim_dma_coherent_unbounced(struct device *dev)
{
	bool need_sync = false;

#ifdef CONFIG_DMA_NEED_SYNC
	need_sync = !dev_dma_skip_sync(dev);
#endif
	return !need_sync && !dma_addressing_limited(dev);
}

/* ---- PCI --------------------------------------------------------------- */

u32 odp_shim_pci_segment(struct pci_dev *pdev)
{
	return pci_domain_nr(pdev->bus);
}

/* ---- Lockdep ----------------------------------------------------------- */

void odp_shim_fs_reclaim_acquire(void)
{
	fs_reclaim_acquire(GFP_KERNEL);
}

void odp_shim_fs_reclaim_release(void)
{
	fs_reclaim_release(GFP_KERNEL);
}

/* ---- IOMMU ------------------------------------------------------------- */

u32 odp_shim_iommu_domain_type(struct device *dev)
{
	struct iommu_domain *domain = iommu_get_domain_for_dev(dev);

	if (!domain)
		return ODP_HMM_DOMAIN_NONE;
	switch (domain->type) {
	case IOMMU_DOMAIN_IDENTITY:
		return ODP_HMM_DOMAIN_IDENTITY;
	case IOMMU_DOMAIN_DMA:
		return ODP_HMM_DOMAIN_DMA;
	case IOMMU_DOMAIN_DMA_FQ:
		return ODP_HMM_DOMAIN_DMA_FQ;
	default:
		return ODP_HMM_DOMAIN_OTHER;
	}
}

/*
 * On a flush-queue (lazy) domain, dma_unmap_phys() clears the page table but
 * leaves the IOTLB flush to the queue's timer, so the device may still reach
 * what was unmapped. Flushes the whole IOTLB of @dev's domain in that case:
 * after this returns, nothing unmapped before is reachable.
 */
void odp_shim_iommu_flush_lazy(struct device *dev)
{
	struct iommu_domain *domain = iommu_get_domain_for_dev(dev);

	if (domain && domain->type == IOMMU_DOMAIN_DMA_FQ)
		iommu_flush_iotlb_all(domain);
}

/* ---- Memory ------------------------------------------------------------ */

/*
 * Per-page state arrays, sized by users: charged to the caller's memory cgroup,
 * silent when they cannot be had (kvmalloc() warns above INT_MAX otherwise),
 * and failing rather than invoking the OOM killer.
 */
void *odp_shim_state_array_alloc(size_t n, size_t size)
{
	return kvcalloc(n, size, GFP_KERNEL_ACCOUNT | __GFP_NOWARN |
				 __GFP_RETRY_MAYFAIL);
}

/* ---- Scheduling -------------------------------------------------------- */

void odp_shim_cond_resched(void)
{
	cond_resched();
}

bool odp_shim_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

/* The module's own workqueue (alloc_workqueue() is a variadic macro). */
struct workqueue_struct *odp_shim_alloc_workqueue(void)
{
	return alloc_workqueue("odp_hmm", WQ_UNBOUND, 0);
}

/* ---- Pages ------------------------------------------------------------- */

/*
 * Called from the invalidation callback with the page still mapped, which keeps
 * its mapping alive: like ib_umem_odp, the caller's lock stands in for the page
 * lock (set_page_dirty_lock() may sleep, and the callback may not).
 */
void odp_shim_set_pfn_dirty(unsigned long pfn)
{
	folio_mark_dirty(page_folio(pfn_to_page(pfn)));
}

/*
 * Charges @npages long-term pinned pages to @mm's pinned_vm, against the
 * current task's RLIMIT_MEMLOCK unless it has CAP_IPC_LOCK: what ib_umem_get()
 * does for a pinned RDMA memory region. -ENOMEM over the limit.
 */
int odp_shim_pinned_vm_charge(struct mm_struct *mm, unsigned long npages)
{
	unsigned long limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;
	unsigned long now = atomic64_add_return(npages, &mm->pinned_vm);

	if (now > limit && !capable(CAP_IPC_LOCK)) {
		atomic64_sub(npages, &mm->pinned_vm);
		return -ENOMEM;
	}
	return 0;
}

void odp_shim_pinned_vm_uncharge(struct mm_struct *mm, unsigned long npages)
{
	atomic64_sub(npages, &mm->pinned_vm);
}

/* The PFN of a pinned page, and the order of its folio. */
unsigned long odp_shim_pinned_page_pfn(struct page *page, unsigned int *order)
{
	*order = folio_order(page_folio(page));
	return page_to_pfn(page);
}

/* ---- PCI peer-to-peer memory ------------------------------------------ */

/*
 * The pagemap of a PCI peer page (one per provider BAR), or NULL for any other
 * page: the key the P2P classification is cached by.
 */
const void *odp_shim_pfn_p2p_pgmap(unsigned long pfn)
{
	struct page *page = pfn_to_page(pfn);

	return is_pci_p2pdma_page(page) ? page_pgmap(page) : NULL;
}

/*
 * Whether any valid entry of a hmm_range_fault() result is a PCI peer page:
 * one call per fault batch, so that batches of ordinary memory (nearly all)
 * skip the per-page classification.
 */
bool odp_shim_pfns_have_p2p(const unsigned long *hmm_pfns, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned long word = hmm_pfns[i];
		unsigned int order = hmm_pfn_to_map_order(word);

		if ((word & HMM_PFN_VALID) &&
		    is_pci_p2pdma_page(hmm_pfn_to_page(word)))
			return true;
		/*
		 * A page that hmm_range_fault() reports with a map order was
		 * mapped by one PMD or PUD, as were its neighbours up to the end
		 * of that aligned block: one folio, one kind of memory. Reading
		 * one struct page per block instead of one per page is what
		 * makes this cheap for huge pages.
		 */
		if (order && (word & HMM_PFN_VALID))
			i += (1UL << order) - ((word & ~HMM_PFN_FLAGS) & ((1UL << order) - 1));
		else
			i++;
	}
	return false;
}

/*
 * The PCI function whose memory BAR holds peer page @pfn, with a reference
 * (drop it with odp_shim_pci_dev_put()), and its BAR's bus offset (bus address
 * minus CPU physical address: what pci_p2pdma_bus_addr_map() adds). NULL if
 * @pfn is not PCI peer memory.
 */
struct pci_dev *odp_shim_p2p_provider(unsigned long pfn, u64 *bus_offset)
{
	phys_addr_t phys = PFN_PHYS(pfn);
	struct pci_dev *pdev = NULL;
	int bar;

	if (!odp_shim_pfn_p2p_pgmap(pfn))
		return NULL;
	for_each_pci_dev(pdev) {
		for (bar = 0; bar < PCI_STD_NUM_BARS; bar++) {
			struct resource *res = &pdev->resource[bar];

			if (!(res->flags & IORESOURCE_MEM) ||
			    phys < res->start || phys > res->end)
				continue;
			/* for_each_pci_dev() holds a reference on pdev. */
			*bus_offset = pci_bus_address(pdev, bar) -
				      pci_resource_start(pdev, bar);
			return pdev;
		}
	}
	return NULL;
}

/* The bridge above @pdev, or NULL at the root; @pdev holds a reference on it. */
struct pci_dev *odp_shim_pci_upstream_bridge(struct pci_dev *pdev)
{
	return pci_upstream_bridge(pdev);
}

/*
 * Whether @pdev redirects peer-to-peer requests upstream (ACS Request or
 * Completion Redirect, or Egress Control set): the test of
 * drivers/pci/p2pdma.c: pci_bridge_has_acs_redir().
 */
bool odp_shim_pci_acs_redirects(struct pci_dev *pdev)
{
	u16 ctrl;

	if (!pdev->acs_cap)
		return false;
	pci_read_config_word(pdev, pdev->acs_cap + PCI_ACS_CTRL, &ctrl);
	return ctrl & (PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_EC);
}

/* pci_p2pdma_distance() between @provider and @client: < 0 if unsupported. */
int odp_shim_p2pdma_distance(struct pci_dev *provider, struct device *client)
{
	return pci_p2pdma_distance_many(provider, &client, 1, false);
}

/*
 * The PCI bus notifier: a device about to be removed (echo 1 > .../remove, hot
 * unplug) is reported before its driver is gone and before its IOMMU group is
 * released (BUS_NOTIFY_REMOVED_DEVICE), so its mappings can still be undone.
 */
static int odp_shim_pci_notify(struct notifier_block *nb, unsigned long action,
			       void *data)
{
	if (action == BUS_NOTIFY_DEL_DEVICE)
		odp_hmm_pci_device_removed(to_pci_dev(data));
	return NOTIFY_DONE;
}

static struct notifier_block odp_shim_pci_nb = {
	.notifier_call = odp_shim_pci_notify,
};

int odp_shim_watch_pci_removal(void)
{
	return bus_register_notifier(&pci_bus_type, &odp_shim_pci_nb);
}

void odp_shim_unwatch_pci_removal(void)
{
	bus_unregister_notifier(&pci_bus_type, &odp_shim_pci_nb);
}

/* The PCI function @dev is, with a reference; NULL if it is no PCI device. */
struct pci_dev *odp_shim_pci_dev_get(struct device *dev)
{
	return dev_is_pci(dev) ? pci_dev_get(to_pci_dev(dev)) : NULL;
}

void odp_shim_pci_dev_put(struct pci_dev *pdev)
{
	pci_dev_put(pdev);
}

#ifdef ODP_SHIM_HAVE_P2PDMA_STATE
int odp_shim_p2pdma_state(struct pci_p2pdma_map_state *state,
			  struct device *dev, unsigned long pfn, u64 *bus_addr)
{
	struct page *page = pfn_to_page(pfn);
	enum pci_p2pdma_map_type type = pci_p2pdma_state(state, dev, page);

	if (type == PCI_P2PDMA_MAP_BUS_ADDR)
		*bus_addr = pci_p2pdma_bus_addr_map(state->mem, PFN_PHYS(pfn));
	return type;
}
#else
int odp_shim_p2pdma_state(struct pci_p2pdma_map_state *state,
			  struct device *dev, unsigned long pfn, u64 *bus_addr)
{
	return -EOPNOTSUPP;
}
#endif

/* ---- The in-kernel API (include/linux/odp_hmm.h) ----------------------- */

/*
 * Defined in Rust (src/kapi/driver_abi.rs), exported here: the prototypes
 * above come from the consumers' own header, so the two cannot drift.
 */
EXPORT_SYMBOL_GPL(odp_hmm_umem_get);
EXPORT_SYMBOL_GPL(odp_hmm_umem_release);
EXPORT_SYMBOL_GPL(odp_hmm_umem_map_and_lock);
EXPORT_SYMBOL_GPL(odp_hmm_umem_prefetch);
EXPORT_SYMBOL_GPL(odp_hmm_umem_lock);
EXPORT_SYMBOL_GPL(odp_hmm_umem_unlock);
EXPORT_SYMBOL_GPL(odp_hmm_umem_assert_held);
EXPORT_SYMBOL_GPL(odp_hmm_umem_dma_addr);
EXPORT_SYMBOL_GPL(odp_hmm_umem_stats);
EXPORT_SYMBOL_GPL(odp_hmm_umem_start);
EXPORT_SYMBOL_GPL(odp_hmm_umem_end);
