/* SPDX-License-Identifier: GPL-2.0 */
/*
 * odp_shim: the C half of odp_hmm. It holds what Rust cannot express or reach:
 * wrappers for static inline kernel helpers, and the module parameters (the
 * Rust `module!` macro has no string parameters).
 *
 * Every function here is a thin, non-inline wrapper; policy stays in Rust.
 */
#ifndef ODP_SHIM_H
#define ODP_SHIM_H

#include <linux/types.h>

struct device;
struct dma_iova_state;
struct mmu_interval_notifier;
struct mmu_notifier_range;
struct workqueue_struct;

/* Module parameters, validated when the module is loaded. */
enum odp_shim_backend {
	ODP_SHIM_BACKEND_RUST = 1,
	ODP_SHIM_BACKEND_KERNEL = 2,
	ODP_SHIM_BACKEND_LEGACY = 3,
	ODP_SHIM_BACKEND_NONE = 4,
};
int odp_shim_param_backend(void);
const char *odp_shim_param_dma_device(void);
bool odp_shim_param_debug_raw_dma(void);
/* Writable at run time (mode 0644): read them each time. */
unsigned int odp_shim_param_copy_timeout_ms(void);
unsigned long odp_shim_param_file_limit_mb(void);
unsigned int odp_shim_param_device_fault_timeout_ms(void);
bool odp_shim_param_dma_call_timers(void);

/* <linux/mmu_notifier.h> inline helpers. */
void odp_shim_mmu_interval_set_seq(struct mmu_interval_notifier *sub,
				   unsigned long cur_seq);
bool odp_shim_mmu_interval_read_retry(struct mmu_interval_notifier *sub,
				      unsigned long seq);
bool odp_shim_mmu_notifier_range_blockable(const struct mmu_notifier_range *range);

/* <linux/dma-mapping.h> inline helpers. */
bool odp_shim_dma_use_iova(struct dma_iova_state *state);
bool odp_shim_dma_mapping_error(struct device *dev, u64 dma_addr);
u64 odp_shim_dma_get_mask(struct device *dev);
bool odp_shim_dma_coherent_unbounced(struct device *dev);

struct pci_dev;

/* PCI segment (domain) number of a device. */
u32 odp_shim_pci_segment(struct pci_dev *pdev);

/* Lockdep annotations of memory reclaim (no-ops without lockdep). */
void odp_shim_fs_reclaim_acquire(void);
void odp_shim_fs_reclaim_release(void);

/* IOMMU domain of a device, as ODP_HMM_DOMAIN_*. */
u32 odp_shim_iommu_domain_type(struct device *dev);
/* Flushes the IOTLB of a lazy (flush-queue) domain; nothing for any other. */
void odp_shim_iommu_flush_lazy(struct device *dev);

/* kvcalloc() for per-page state: accounted, no warning, no OOM killer. */
void *odp_shim_state_array_alloc(size_t n, size_t size);

/* The module's own workqueue. */
struct workqueue_struct *odp_shim_alloc_workqueue(void);

/* Scheduling helpers (inline or macros in C). */
void odp_shim_cond_resched(void);
bool odp_shim_fatal_signal_pending(void);

/* Page helpers on raw PFNs (the PFNs hmm_range_fault() reported). */
void odp_shim_set_pfn_dirty(unsigned long pfn);

/* Long-term pins (backend=pinned): RLIMIT_MEMLOCK accounting, as ib_umem_get(). */
struct mm_struct;
struct page;
int odp_shim_pinned_vm_charge(struct mm_struct *mm, unsigned long npages);
void odp_shim_pinned_vm_uncharge(struct mm_struct *mm, unsigned long npages);
unsigned long odp_shim_pinned_page_pfn(struct page *page, unsigned int *order);

/* PCI peer-to-peer memory (see src/p2p.rs for the classification rule). */
struct pci_p2pdma_map_state;
const void *odp_shim_pfn_p2p_pgmap(unsigned long pfn);
bool odp_shim_pfns_have_p2p(const unsigned long *hmm_pfns, size_t n);
struct pci_dev *odp_shim_p2p_provider(unsigned long pfn, u64 *bus_offset);
struct pci_dev *odp_shim_pci_upstream_bridge(struct pci_dev *pdev);
bool odp_shim_pci_acs_redirects(struct pci_dev *pdev);
int odp_shim_p2pdma_distance(struct pci_dev *provider, struct device *client);
void odp_shim_pci_dev_put(struct pci_dev *pdev);
struct pci_dev *odp_shim_pci_dev_get(struct device *dev);
/* The PCI bus removal watch; it calls odp_hmm_pci_device_removed() (Rust). */
int odp_shim_watch_pci_removal(void);
void odp_shim_unwatch_pci_removal(void);
void odp_hmm_pci_device_removed(struct pci_dev *pdev);
/*
 * The kernel's own pci_p2pdma_state(), where the kernel exports what it needs
 * (ODP_SHIM_HAVE_P2PDMA_STATE, probed by Kbuild): a PCI_P2PDMA_MAP_* value,
 * and the bus address of a PCI_P2PDMA_MAP_BUS_ADDR page.
 */
int odp_shim_p2pdma_state(struct pci_p2pdma_map_state *state,
			  struct device *dev, unsigned long pfn, u64 *bus_addr);

#endif /* ODP_SHIM_H */
