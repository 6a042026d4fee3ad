// SPDX-License-Identifier: GPL-2.0
/*
 * odp_nic: a sample driver for odp_hmm's in-kernel API (<linux/odp_hmm.h>).
 *
 * It drives a QEMU edu device (1234:11e8) as if it were a NIC with On-Demand
 * Paging, the way mlx5 uses ib_umem_odp, and uses nothing of odp_hmm but its
 * exported functions:
 *
 *  - a registration (ODP_NIC_IOC_REGISTER) is an odp_hmm_umem_get() of the
 *    caller's memory for this device, and a device page table: one DMA-address
 *    slot per page, the device's only source of addresses;
 *  - a work request (ODP_NIC_IOC_WORK) reads or writes bytes at a user address
 *    of a registration. If a slot it needs is empty, it raises a page fault:
 *    a work item resolves it with odp_hmm_umem_map_and_lock() and fills the
 *    slots from odp_hmm_umem_dma_addr() under the update lock, and the request
 *    is retried. The DMA takes its addresses from the slots, re-checked under
 *    the update lock;
 *  - a prefetch (ODP_NIC_IOC_PREFETCH) maps pages with odp_hmm_umem_prefetch()
 *    and fills their slots later, under odp_hmm_umem_lock(), from what
 *    odp_hmm_umem_dma_addr() reports reachable then;
 *  - odp_hmm's invalidate callback zaps the slots of the range before the
 *    pages are unlinked; with the two-pass callbacks the first pass zaps and
 *    the second waits for the DMAs in flight.
 *
 * The edu device runs one transfer at a time between its 4 KiB buffer and a
 * DMA address; each takes about 100 ms. A read moves registered memory into
 * the buffer and the buffer into a coherent bounce page; a write the other
 * way round.
 *
 * The driver claims a 64-bit DMA mask, but QEMU's edu honours only the bits
 * of its dma_mask property (default 28 bits) and silently truncates every
 * address beyond them: start QEMU with
 *
 *   -device edu,dma_mask=0xffffffffffffffff
 *
 * (scripts/vm-run.sh does), or the device reads and writes the wrong memory.
 *
 * Hand the device over with driver_override (this driver matches no device
 * id by itself, so it never takes odp_hmm's own edu):
 *
 *   echo odp_nic > /sys/bus/pci/devices/$BDF/driver_override
 *   echo $BDF > /sys/bus/pci/devices/$BDF/driver/unbind   # if bound
 *   echo $BDF > /sys/bus/pci/drivers_probe
 *
 * guest-teardown.sh beside this file undoes that (and unloads the module).
 *
 * Locking, outermost first:
 *  1. odp_nic.gate (rw_semaphore): ioctls and a file's release read, device
 *     removal writes: removal waits until no ioctl runs and no release is
 *     tearing registrations down, so no umem of the device outlives remove();
 *  2. odp_nic.engine (mutex): the edu's DMA engine, its buffer and the bounce
 *     page, for a whole work request's transfers; taken before
 *  3. the registration's update lock (odp_hmm's): the page table (slots), the
 *     record of events and passes_open. The callbacks run under it, so they
 *     only touch those, atomics and wait queues.
 * odp_nic.files_lock (under the gate), nic_reg.fault_lock: leaves.
 *
 * Lifetimes: a registration holds a reference on the device (struct odp_nic),
 * its open file's table, each ioctl using it and each queued run of its fault
 * work one on the registration; the last one releases the umem (process
 * context: an ioctl, the file's release or the work item). A page fault
 * request is shared by its waiter and the work item (the waiter may leave on
 * a signal): the last of them frees it. Unbinding releases every umem first:
 * odp_hmm wants them gone before the device. The module itself cannot go
 * while a file is open (fops .owner), nor odp_hmm while this module is loaded
 * (it uses odp_hmm's symbols).
 */

#include <linux/atomic.h>
#include <linux/capability.h>
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/io.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/odp_hmm.h>
#include <linux/overflow.h>
#include <linux/pci.h>
#include <linux/refcount.h>
#include <linux/rwsem.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include "odp_nic.h"

#define EDU_VENDOR		0x1234
#define EDU_DEVICE		0x11e8
#define EDU_REG_ID		0x00
#define EDU_REG_DMA_SRC		0x80
#define EDU_REG_DMA_DST		0x88
#define EDU_REG_DMA_COUNT	0x90
#define EDU_REG_DMA_CMD		0x98
#define EDU_CMD_START		BIT(0)	/* reads back set while running */
#define EDU_CMD_TO_RAM		BIT(1)	/* buffer -> DMA address */
#define EDU_BUF_BASE		0x40000	/* device address of its buffer */
#define EDU_BUF_SIZE		4096
#define EDU_TIMEOUT_MS		5000

static bool debug_raw_dma;
module_param(debug_raw_dma, bool, 0444);
MODULE_PARM_DESC(debug_raw_dma,
		 "Allow ODP_NIC_IOC_RAW_READ (the device reads an unchecked DMA address; for tests). Default: off");

static unsigned int fault_delay_ms;
module_param(fault_delay_ms, uint, 0644);
MODULE_PARM_DESC(fault_delay_ms,
		 "Delay of every page-fault work item, in ms (for tests that need faults queued). Default: 0");

static unsigned int prefetch_delay_us;
module_param(prefetch_delay_us, uint, 0644);
MODULE_PARM_DESC(prefetch_delay_us,
		 "Time a prefetch spends preparing its table update between mapping the pages and taking the update lock, in us (for tests that race invalidations). Default: 0");

/* Counters (struct odp_nic_counters). */
enum nic_counter {
	NIC_WORK_REQUESTS,
	NIC_WORK_BYTES,
	NIC_FAULTS_RAISED,
	NIC_FAULTS_RESOLVED,
	NIC_FAULT_ERRORS,
	NIC_SLOTS_FILLED,
	NIC_INVALIDATIONS,
	NIC_INVALIDATE_STARTS,
	NIC_INVALIDATE_FINISHES,
	NIC_SLOTS_ZAPPED,
	NIC_STALE_SLOTS,
	NIC_REFILLED_BETWEEN_PASSES,
	NIC_FILLS_BETWEEN_PASSES,
	NIC_DMA_CHECK_FAILURES,
	NIC_REFUSED_NONBLOCKING,
	NIC_DMA_TRANSFERS,
	NIC_PREFETCHES,
	NIC_MAP_UNREACHABLE,
	NIC_NR_COUNTERS
};

/* One bound edu device. */
struct odp_nic {
	struct kref ref;		/* the binding, open files, registrations */
	struct pci_dev *pdev;
	void __iomem *bar;
	struct miscdevice misc;
	struct rw_semaphore gate;	/* read: ioctls; write: removal */
	bool gone;			/* unbound (under gate) */
	struct mutex engine;		/* the DMA engine, buffer and bounce */
	bool engine_dead;		/* a transfer timed out (under engine) */
	void *bounce;			/* coherent page */
	dma_addr_t bounce_dma;
	struct mutex files_lock;	/* files (a leaf) */
	struct list_head files;
	atomic64_t totals[NIC_NR_COUNTERS];
	atomic64_t live_regs;
};

/* One open file. */
struct nic_file {
	struct odp_nic *nic;
	struct list_head node;		/* odp_nic.files, under files_lock */
	struct xarray regs;		/* handle -> struct nic_reg */
	u32 next_handle;		/* xa_alloc_cyclic(): no early reuse */
};

/* A slot of the device's page table. */
struct nic_slot {
	dma_addr_t dma;
	u32 state;			/* ODP_NIC_SLOT_* */
	/*
	 * Instrumentation only (the record of events): a first pass emptied
	 * the slot and its second pass has not run yet.
	 */
	bool hidden;
};

/* One registration: an odp_hmm umem and the device's page table for it. */
struct nic_reg {
	struct kref ref;		/* the file's table, ioctls, fault work */
	struct odp_nic *nic;
	/*
	 * Set once odp_hmm_umem_get() returned; NULL again from the start of
	 * its release (nic_reg_revoke(), an xchg). Read with READ_ONCE(): the
	 * callbacks may see either. Ioctls and the fault work see it set: the
	 * release comes with the last reference (they hold one) or from
	 * removal, which first shuts the gate on ioctls and flushes the work.
	 */
	struct odp_hmm_umem *umem;
	u32 handle;
	bool two_pass;
	u64 start;
	u64 npages;

	/* Under the update lock: */
	struct nic_slot *slots;
	unsigned int passes_open;	/* first passes awaiting their second */
	u64 log_seq;
	struct odp_nic_event log[ODP_NIC_EVENTS_MAX];

	/* Two-pass mode: DMAs running without the update lock. */
	atomic_t inflight;
	wait_queue_head_t inflight_wq;

	/* Page faults raised and not taken by the work item yet. */
	spinlock_t fault_lock;
	struct list_head faults;	/* struct nic_fault.node */
	struct work_struct fault_work;

	atomic64_t counters[NIC_NR_COUNTERS];
};

/*
 * One page fault a work request raised: resolved on its own pages, with its
 * own result. Its waiter and the work item each hold a reference (users).
 */
struct nic_fault {
	struct list_head node;		/* nic_reg.faults, under fault_lock */
	u64 first;			/* pages first..end */
	u64 end;
	bool write;
	int err;			/* set before done completes */
	struct completion done;
	refcount_t users;
};

static struct workqueue_struct *nic_wq;

/* The bound device, if any (one at a time). */
static DEFINE_MUTEX(nic_bound_lock);
static struct odp_nic *nic_bound;

static void nic_count(struct nic_reg *reg, enum nic_counter c, u64 n)
{
	atomic64_add(n, &reg->counters[c]);
	atomic64_add(n, &reg->nic->totals[c]);
}

static void nic_free(struct kref *ref)
{
	kfree(container_of(ref, struct odp_nic, ref));
}

static void nic_put(struct odp_nic *nic)
{
	kref_put(&nic->ref, nic_free);
}

/* Releases the umem, once (the last reference, or the device's removal). */
static void nic_reg_revoke(struct nic_reg *reg)
{
	struct odp_hmm_umem *umem = xchg(&reg->umem, NULL);

	if (umem) {
		odp_hmm_umem_release(umem);
		atomic64_dec(&reg->nic->live_regs);
	}
}

static void nic_reg_free(struct kref *ref)
{
	struct nic_reg *reg = container_of(ref, struct nic_reg, ref);

	/* Process context: an ioctl, a file release or the fault work item. */
	nic_reg_revoke(reg);
	kvfree(reg->slots);
	nic_put(reg->nic);
	kfree(reg);
}

static void nic_reg_put(struct nic_reg *reg)
{
	kref_put(&reg->ref, nic_reg_free);
}

/*
 * The umem, for an ioctl or the fault work, which see it set (see nic_reg.umem).
 */
static struct odp_hmm_umem *nic_umem(struct nic_reg *reg)
{
	return READ_ONCE(reg->umem);
}

static u64 nic_page_addr(struct nic_reg *reg, u64 idx)
{
	return reg->start + (idx << PAGE_SHIFT);
}

/* Appends an event to the record; update lock held. */
static void nic_log(struct nic_reg *reg, struct odp_nic_event *ev)
{
	ev->seq = ++reg->log_seq;
	reg->log[ev->seq % ODP_NIC_EVENTS_MAX] = *ev;
}

/* ---- The edu device ---------------------------------------------------- */

/*
 * Copies @len bytes from @src to @dst (one of them in the device's buffer)
 * and waits for the device. A device that does not finish loses its bus
 * mastering before the caller's locks let the pages go.
 */
static int edu_transfer(struct odp_nic *nic, u64 src, u64 dst, u32 len,
			bool to_ram)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(EDU_TIMEOUT_MS);

	lockdep_assert_held(&nic->engine);
	if (nic->engine_dead)
		return -EIO;
	writeq(src, nic->bar + EDU_REG_DMA_SRC);
	writeq(dst, nic->bar + EDU_REG_DMA_DST);
	writeq(len, nic->bar + EDU_REG_DMA_COUNT);
	writeq(EDU_CMD_START | (to_ram ? EDU_CMD_TO_RAM : 0),
	       nic->bar + EDU_REG_DMA_CMD);
	for (;;) {
		usleep_range(1000, 2000);
		if (!(readq(nic->bar + EDU_REG_DMA_CMD) & EDU_CMD_START))
			break;
		if (time_after(jiffies, deadline)) {
			pci_clear_master(nic->pdev);
			nic->engine_dead = true;
			dev_err(&nic->pdev->dev,
				"transfer did not finish in %u ms: bus mastering off\n",
				EDU_TIMEOUT_MS);
			return -EIO;
		}
	}
	/* What the device wrote is visible before we read it. */
	dma_rmb();
	return 0;
}

/* ---- The invalidate callbacks ------------------------------------------- */

/*
 * Empties the slots of [@start, @end) if @zap, and records what they held.
 * Update lock held.
 *
 * The record is instrumentation for the tests, not part of what a driver's
 * callback has to do: it asks odp_hmm about the pages whose slot is filled
 * (did the slot hold the address odp_hmm has linked? odp_hmm has not
 * unlinked the page yet, pages_linked shows it) and, in a second pass, about
 * those its first pass emptied (still linked: the second pass runs before
 * the unlink). Other pages are not looked up: the callback's cost stays
 * bounded by what the device had mapped, whatever the range (a whole 1 GiB
 * registration on exit). odp_hmm's answer is not available while the umem
 * is being got or released (umem NULL): the record then counts no page
 * linked.
 */
static void nic_zap(struct nic_reg *reg, u64 start, u64 end, u32 kind,
		    bool zap)
{
	struct odp_hmm_umem *umem = READ_ONCE(reg->umem);
	struct odp_nic_event ev = { .kind = kind };
	bool finish = kind == ODP_NIC_EV_FINISH;
	u64 first, last, i;

	start = max(start, reg->start);
	end = min(end, nic_page_addr(reg, reg->npages));
	if (start >= end)
		return;
	first = (start - reg->start) >> PAGE_SHIFT;
	last = (end - 1 - reg->start) >> PAGE_SHIFT;
	ev.start = nic_page_addr(reg, first);
	ev.end = nic_page_addr(reg, last + 1);
	ev.pages = last + 1 - first;
	for (i = first; i <= last; i++) {
		struct nic_slot *slot = &reg->slots[i];
		bool filled = slot->state & ODP_NIC_SLOT_VALID;
		dma_addr_t dma = 0;
		u32 flags = 0;
		int ret = -ENODEV;

		if (umem && (filled || (finish && slot->hidden)))
			ret = odp_hmm_umem_dma_addr(umem, nic_page_addr(reg, i),
						    &dma, &flags);
		if (flags & ODP_HMM_PAGE_DMA_MAPPED)
			ev.pages_linked++;
		if (finish)
			slot->hidden = false;
		if (filled) {
			ev.slots_filled++;
			if (finish) {
				if (flags & ODP_HMM_PAGE_DMA_MAPPED)
					ev.slots_linked++;
				nic_count(reg, NIC_REFILLED_BETWEEN_PASSES, 1);
			} else if (!ret && dma == slot->dma) {
				ev.slots_linked++;
			} else {
				nic_count(reg, NIC_STALE_SLOTS, 1);
			}
			if (zap) {
				slot->state = 0;
				slot->dma = 0;
				slot->hidden = kind == ODP_NIC_EV_START;
				ev.slots_zapped++;
			}
		}
	}
	nic_count(reg, NIC_SLOTS_ZAPPED, ev.slots_zapped);
	nic_log(reg, &ev);
}

/*
 * The one-pass callback (and a two-pass registration's non-blockable one).
 * One-pass DMAs run under the update lock, which the caller holds: none is
 * in flight. A two-pass registration's may be: wait for them, or refuse
 * where the caller may not sleep.
 */
static bool nic_invalidate(void *priv, u64 start, u64 end, bool blockable)
{
	struct nic_reg *reg = priv;

	if (atomic_read(&reg->inflight)) {
		if (!blockable) {
			struct odp_nic_event ev = {
				.kind = ODP_NIC_EV_REFUSED,
				.start = start,
				.end = end,
			};

			nic_count(reg, NIC_REFUSED_NONBLOCKING, 1);
			nic_log(reg, &ev);
			return false;
		}
		wait_event(reg->inflight_wq, !atomic_read(&reg->inflight));
	}
	nic_zap(reg, start, end, ODP_NIC_EV_INVALIDATE, true);
	nic_count(reg, NIC_INVALIDATIONS, 1);
	return true;
}

/* First pass: zap. No new DMA can start on these pages from here on. */
static void nic_invalidate_start(void *priv, u64 start, u64 end)
{
	struct nic_reg *reg = priv;

	nic_zap(reg, start, end, ODP_NIC_EV_START, true);
	reg->passes_open++;
	nic_count(reg, NIC_INVALIDATE_STARTS, 1);
}

/*
 * Second pass: wait until the DMAs that may still use the old addresses are
 * done. The slots stay as the first pass left them; a slot found filled
 * again would be a bug (odp_hmm hides these pages between the passes).
 */
static void nic_invalidate_finish(void *priv, u64 start, u64 end)
{
	struct nic_reg *reg = priv;

	wait_event(reg->inflight_wq, !atomic_read(&reg->inflight));
	nic_zap(reg, start, end, ODP_NIC_EV_FINISH, false);
	if (reg->passes_open)
		reg->passes_open--;
	nic_count(reg, NIC_INVALIDATE_FINISHES, 1);
}

static const struct odp_hmm_umem_ops nic_one_pass_ops = {
	.invalidate = nic_invalidate,
};

static const struct odp_hmm_umem_ops nic_two_pass_ops = {
	.invalidate = nic_invalidate,
	.invalidate_start = nic_invalidate_start,
	.invalidate_finish = nic_invalidate_finish,
};

/* ---- Page faults --------------------------------------------------------- */

/* Whether slots @first..@end are filled (writable for @write); locked. */
static bool nic_slots_ready(struct nic_reg *reg, struct odp_hmm_umem *umem,
			    u64 first, u64 end, bool write)
{
	u32 need = ODP_NIC_SLOT_VALID | (write ? ODP_NIC_SLOT_WRITE : 0);
	u64 i;

	odp_hmm_umem_assert_held(umem);
	for (i = first; i < end; i++)
		if ((reg->slots[i].state & need) != need)
			return false;
	return true;
}

/*
 * Fills the slots of pages @first..@end (writable ones for @write) from what
 * odp_hmm reports now; update lock held. Returns the pages it could not fill.
 */
static u64 nic_fill(struct nic_reg *reg, struct odp_hmm_umem *umem, u64 first,
		    u64 end, bool write)
{
	struct odp_nic_event ev = { .kind = ODP_NIC_EV_FILL };
	u64 i;

	odp_hmm_umem_assert_held(umem);
	ev.start = nic_page_addr(reg, first);
	ev.end = nic_page_addr(reg, end);
	ev.pages = end - first;
	for (i = first; i < end; i++) {
		dma_addr_t dma;
		u32 flags = 0;

		if (odp_hmm_umem_dma_addr(umem, nic_page_addr(reg, i), &dma,
					  &flags))
			continue;
		ev.pages_linked++;
		if (write && !(flags & ODP_HMM_PAGE_WRITE))
			continue;
		reg->slots[i].dma = dma;
		reg->slots[i].state = ODP_NIC_SLOT_VALID |
			((flags & ODP_HMM_PAGE_WRITE) ? ODP_NIC_SLOT_WRITE : 0);
		ev.slots_filled++;
	}
	if (reg->passes_open && ev.slots_filled)
		nic_count(reg, NIC_FILLS_BETWEEN_PASSES, 1);
	nic_log(reg, &ev);
	nic_count(reg, NIC_SLOTS_FILLED, ev.slots_filled);
	return ev.pages - ev.slots_filled;
}

/*
 * The page-fault handler: maps the pages through odp_hmm and fills their
 * slots under the update lock that odp_hmm_umem_map_and_lock() returns with.
 */
static int nic_resolve(struct nic_reg *reg, u64 first, u64 end, bool write)
{
	struct odp_hmm_umem *umem = nic_umem(reg);
	u64 unfilled;
	int ret;

	/* The fault work holds a reference, and removal flushes it first. */
	if (WARN_ON_ONCE(!umem))
		return -ENODEV;
	ret = odp_hmm_umem_map_and_lock(umem, nic_page_addr(reg, first),
					(end - first) << PAGE_SHIFT,
					write ? ODP_HMM_MAP_WRITE : 0);
	if (ret < 0)
		return ret;
	/* It returned with every page mapped: each must be there to fill. */
	unfilled = nic_fill(reg, umem, first, end, write);
	odp_hmm_umem_unlock(umem);
	if (unfilled)
		nic_count(reg, NIC_MAP_UNREACHABLE, unfilled);
	return 0;
}

static void nic_fault_put(struct nic_fault *fault)
{
	if (refcount_dec_and_test(&fault->users))
		kfree(fault);
}

/*
 * Resolves the faults raised so far, each on its own pages and with its own
 * result: pages of one may be unmapped while another's are fine.
 */
static void nic_fault_work(struct work_struct *work)
{
	struct nic_reg *reg = container_of(work, struct nic_reg, fault_work);
	struct nic_fault *fault, *next;
	LIST_HEAD(batch);

	spin_lock(&reg->fault_lock);
	list_splice_init(&reg->faults, &batch);
	spin_unlock(&reg->fault_lock);

	if (!list_empty(&batch) && READ_ONCE(fault_delay_ms))
		msleep(READ_ONCE(fault_delay_ms));
	list_for_each_entry_safe(fault, next, &batch, node) {
		list_del(&fault->node);
		fault->err = nic_resolve(reg, fault->first, fault->end,
					 fault->write);
		nic_count(reg, fault->err ? NIC_FAULT_ERRORS :
					    NIC_FAULTS_RESOLVED, 1);
		complete(&fault->done);
		nic_fault_put(fault);
	}
	nic_reg_put(reg);
}

/*
 * Raises a page fault for pages @first..@end and waits until the work item
 * resolved it. Returns its errno.
 */
static int nic_fault(struct nic_reg *reg, u64 first, u64 end, bool write)
{
	struct nic_fault *fault;
	int err;

	fault = kzalloc_obj(*fault);
	if (!fault)
		return -ENOMEM;
	fault->first = first;
	fault->end = end;
	fault->write = write;
	init_completion(&fault->done);
	refcount_set(&fault->users, 2);
	spin_lock(&reg->fault_lock);
	list_add_tail(&fault->node, &reg->faults);
	spin_unlock(&reg->fault_lock);
	nic_count(reg, NIC_FAULTS_RAISED, 1);

	/* Each queued run of the work item holds a reference. */
	kref_get(&reg->ref);
	if (!queue_work(nic_wq, &reg->fault_work))
		nic_reg_put(reg);	/* already queued: ours is not the last */

	/* Any signal ends the wait; the fault goes on without a waiter. */
	if (wait_for_completion_interruptible(&fault->done))
		err = -EINTR;
	else
		err = fault->err;
	nic_fault_put(fault);
	return err;
}

/* ---- Work requests --------------------------------------------------------- */

/*
 * Moves the bytes of one work request through the device, taking every DMA
 * address from the page table. -EAGAIN if an invalidation emptied a slot
 * since the caller looked: go back to the table.
 */
static int nic_dma(struct nic_reg *reg, bool write, u64 addr, u32 len,
		   void *kbuf)
{
	struct odp_nic *nic = reg->nic;
	struct odp_hmm_umem *umem = nic_umem(reg);
	u64 first = (addr - reg->start) >> PAGE_SHIFT;
	u64 end = ((addr + len - 1 - reg->start) >> PAGE_SHIFT) + 1;
	/* A request of at most ODP_NIC_WORK_MAX_LEN bytes spans 2 pages. */
	dma_addr_t dma[2];
	u32 done = 0;
	u64 i;
	int ret = 0;

	BUILD_BUG_ON(ODP_NIC_WORK_MAX_LEN > PAGE_SIZE);
	mutex_lock(&nic->engine);
	if (write) {
		memcpy(nic->bounce, kbuf, len);
		ret = edu_transfer(nic, nic->bounce_dma, EDU_BUF_BASE, len,
				   false);
		if (ret)
			goto out;
	}

	odp_hmm_umem_lock(umem);
	if (!nic_slots_ready(reg, umem, first, end, write)) {
		odp_hmm_umem_unlock(umem);
		ret = -EAGAIN;
		goto out;
	}
	for (i = first; i < end; i++) {
		dma_addr_t odp_dma;

		dma[i - first] = reg->slots[i].dma;
		/* A check, not a source: the table must agree with odp_hmm. */
		if (odp_hmm_umem_dma_addr(umem, nic_page_addr(reg, i), &odp_dma,
					  NULL) || odp_dma != dma[i - first]) {
			nic_count(reg, NIC_DMA_CHECK_FAILURES, 1);
			dev_err_ratelimited(&nic->pdev->dev,
					    "slot %llu of registration %u holds %pad, odp_hmm says otherwise\n",
					    i, reg->handle, &dma[i - first]);
			odp_hmm_umem_unlock(umem);
			ret = -EIO;
			goto out;
		}
	}
	/*
	 * One-pass: the transfers run under the update lock, so no
	 * invalidation of these pages can complete before they are over.
	 * Two-pass: they run without it, counted in flight, on the addresses
	 * read above; the second pass waits for them before odp_hmm unlinks
	 * anything.
	 */
	if (reg->two_pass) {
		atomic_inc(&reg->inflight);
		odp_hmm_umem_unlock(umem);
	}
	while (done < len) {
		u64 va = addr + done;
		u64 idx = (va - reg->start) >> PAGE_SHIFT;
		u32 off = offset_in_page(va);
		u32 n = min_t(u32, len - done, PAGE_SIZE - off);
		u64 iova = dma[idx - first] + off;

		if (write)
			ret = edu_transfer(nic, EDU_BUF_BASE + done, iova, n,
					   true);
		else
			ret = edu_transfer(nic, iova, EDU_BUF_BASE + done, n,
					   false);
		if (ret)
			break;
		nic_count(reg, NIC_DMA_TRANSFERS, 1);
		done += n;
	}
	if (reg->two_pass) {
		if (atomic_dec_and_test(&reg->inflight))
			wake_up_all(&reg->inflight_wq);
	} else {
		odp_hmm_umem_unlock(umem);
	}
	if (ret)
		goto out;

	if (!write) {
		ret = edu_transfer(nic, EDU_BUF_BASE, nic->bounce_dma, len,
				   true);
		if (!ret)
			memcpy(kbuf, nic->bounce, len);
	}
out:
	mutex_unlock(&nic->engine);
	return ret;
}

/* Whether @addr..@addr + @len is inside the registration; its pages. */
static int nic_span(struct nic_reg *reg, u64 addr, u64 len, u64 *first,
		    u64 *end)
{
	u64 reg_end = nic_page_addr(reg, reg->npages);
	u64 last;

	if (!len)
		return -EINVAL;
	if (check_add_overflow(addr, len - 1, &last) || addr < reg->start ||
	    last >= reg_end)
		return -ERANGE;
	*first = (addr - reg->start) >> PAGE_SHIFT;
	*end = ((last - reg->start) >> PAGE_SHIFT) + 1;
	return 0;
}

static struct nic_reg *nic_lookup(struct nic_file *f, u32 handle)
{
	struct nic_reg *reg;

	xa_lock(&f->regs);
	reg = xa_load(&f->regs, handle);
	if (reg)
		kref_get(&reg->ref);
	xa_unlock(&f->regs);
	return reg;
}

static long nic_ioc_work(struct nic_file *f, void __user *uarg)
{
	struct odp_hmm_umem *umem;
	struct odp_nic_work w;
	struct nic_reg *reg;
	void *kbuf = NULL;
	u64 first, end;
	bool write;
	long ret;

	if (copy_from_user(&w, uarg, sizeof(w)))
		return -EFAULT;
	if (w.dir != ODP_NIC_WORK_READ && w.dir != ODP_NIC_WORK_WRITE)
		return -EINVAL;
	if (!w.length || w.length > ODP_NIC_WORK_MAX_LEN)
		return -EINVAL;
	write = w.dir == ODP_NIC_WORK_WRITE;
	reg = nic_lookup(f, w.handle);
	if (!reg)
		return -ENOENT;
	umem = nic_umem(reg);
	ret = nic_span(reg, w.addr, w.length, &first, &end);
	if (ret)
		goto out;
	kbuf = kmalloc(w.length, GFP_KERNEL);
	if (!kbuf) {
		ret = -ENOMEM;
		goto out;
	}
	if (write && copy_from_user(kbuf, u64_to_user_ptr(w.buf), w.length)) {
		ret = -EFAULT;
		goto out;
	}

	w.faults = 0;
	w.retries = 0;
	for (;;) {
		bool ready;

		if (w.retries >= ODP_NIC_WORK_RETRIES) {
			ret = -EBUSY;
			break;
		}
		odp_hmm_umem_lock(umem);
		ready = nic_slots_ready(reg, umem, first, end, write);
		odp_hmm_umem_unlock(umem);
		if (!ready) {
			/* A device page fault: resolve it, then retry. */
			w.faults++;
			ret = nic_fault(reg, first, end, write);
			if (ret)
				break;
			w.retries++;
			continue;
		}
		ret = nic_dma(reg, write, w.addr, w.length, kbuf);
		if (ret != -EAGAIN)
			break;
		w.retries++;
	}
	if (!ret) {
		nic_count(reg, NIC_WORK_REQUESTS, 1);
		nic_count(reg, NIC_WORK_BYTES, w.length);
		if (!write && copy_to_user(u64_to_user_ptr(w.buf), kbuf,
					   w.length))
			ret = -EFAULT;
	}
	if (copy_to_user(uarg, &w, sizeof(w)) && !ret)
		ret = -EFAULT;
out:
	kfree(kbuf);
	nic_reg_put(reg);
	return ret;
}

/*
 * A prefetch: map the pages now, prepare the table update (outside the update
 * lock, where it may allocate), then fill the slots of what odp_hmm reports
 * reachable under the lock. Pages an invalidation took meanwhile stay empty.
 */
static long nic_ioc_prefetch(struct nic_file *f, void __user *uarg)
{
	struct odp_nic_prefetch a;
	struct odp_hmm_umem *umem;
	unsigned int delay;
	struct nic_reg *reg;
	u64 first, end;
	bool write;
	long ret;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.flags & ~ODP_NIC_PREFETCH_WRITE)
		return -EINVAL;
	write = a.flags & ODP_NIC_PREFETCH_WRITE;
	reg = nic_lookup(f, a.handle);
	if (!reg)
		return -ENOENT;
	ret = nic_span(reg, a.addr, a.length, &first, &end);
	if (ret)
		goto put;
	umem = nic_umem(reg);
	ret = odp_hmm_umem_prefetch(umem, nic_page_addr(reg, first),
				    (end - first) << PAGE_SHIFT,
				    write ? ODP_HMM_MAP_WRITE : 0);
	if (ret < 0)
		goto put;
	delay = READ_ONCE(prefetch_delay_us);
	if (delay)
		usleep_range(delay, delay + delay / 4 + 1);
	odp_hmm_umem_lock(umem);
	nic_fill(reg, umem, first, end, write);
	odp_hmm_umem_unlock(umem);
	nic_count(reg, NIC_PREFETCHES, 1);
	ret = 0;
put:
	nic_reg_put(reg);
	return ret;
}

/* ---- Registrations ----------------------------------------------------- */

static long nic_ioc_register(struct nic_file *f, void __user *uarg)
{
	struct odp_nic *nic = f->nic;
	struct odp_nic_register r;
	struct odp_hmm_umem *umem;
	struct nic_reg *reg;
	u32 access, handle;
	long ret;

	if (copy_from_user(&r, uarg, sizeof(r)))
		return -EFAULT;
	if (r.reserved || r.flags & ~ODP_NIC_REG_TWO_PASS ||
	    r.access & ~(ODP_NIC_ACCESS_READ | ODP_NIC_ACCESS_WRITE) ||
	    !(r.access & ODP_NIC_ACCESS_READ))
		return -EINVAL;
	if (!r.length || !PAGE_ALIGNED(r.addr) || !PAGE_ALIGNED(r.length))
		return -EINVAL;
	if (r.length >> PAGE_SHIFT > ODP_NIC_MAX_PAGES)
		return -E2BIG;

	reg = kzalloc_obj(*reg);
	if (!reg)
		return -ENOMEM;
	kref_init(&reg->ref);
	reg->nic = nic;
	reg->start = r.addr;
	reg->npages = r.length >> PAGE_SHIFT;
	reg->two_pass = r.flags & ODP_NIC_REG_TWO_PASS;
	atomic_set(&reg->inflight, 0);
	init_waitqueue_head(&reg->inflight_wq);
	spin_lock_init(&reg->fault_lock);
	INIT_LIST_HEAD(&reg->faults);
	INIT_WORK(&reg->fault_work, nic_fault_work);
	reg->slots = kvcalloc(reg->npages, sizeof(*reg->slots), GFP_KERNEL);
	if (!reg->slots) {
		kfree(reg);
		return -ENOMEM;
	}
	kref_get(&nic->ref);

	/* Everything the callbacks use is ready: they may run from here on. */
	access = ODP_HMM_ACCESS_READ;
	if (r.access & ODP_NIC_ACCESS_WRITE)
		access |= ODP_HMM_ACCESS_WRITE;
	umem = odp_hmm_umem_get(&nic->pdev->dev, r.addr, r.length, access,
				reg->two_pass ? &nic_two_pass_ops :
						&nic_one_pass_ops, reg);
	if (IS_ERR(umem)) {
		ret = PTR_ERR(umem);
		nic_reg_put(reg);
		return ret;
	}
	WRITE_ONCE(reg->umem, umem);
	atomic64_inc(&nic->live_regs);

	/* 1, 2, ...: a handle comes back only after 2^31 - 1 others. */
	ret = xa_alloc_cyclic(&f->regs, &handle, reg, xa_limit_31b,
			      &f->next_handle, GFP_KERNEL);
	if (ret < 0) {
		nic_reg_put(reg);
		return ret;
	}
	reg->handle = handle;
	r.handle = handle;
	if (copy_to_user(uarg, &r, sizeof(r))) {
		/* Nobody knows the handle: take it back. */
		if (xa_erase(&f->regs, handle))
			nic_reg_put(reg);
		return -EFAULT;
	}
	return 0;
}

static long nic_ioc_unregister(struct nic_file *f, void __user *uarg)
{
	struct nic_reg *reg;
	u32 handle;

	if (get_user(handle, (u32 __user *)uarg))
		return -EFAULT;
	reg = xa_erase(&f->regs, handle);
	if (!reg)
		return -ENOENT;
	/* The umem goes with the last reference: a request in flight keeps it. */
	nic_reg_put(reg);
	return 0;
}

/* ---- Inspection ---------------------------------------------------------- */

static long nic_ioc_table(struct nic_file *f, void __user *uarg)
{
	struct odp_hmm_umem *umem;
	struct odp_nic_slot *out;
	struct odp_nic_table t;
	struct nic_reg *reg;
	long ret = 0;
	u32 i;

	if (copy_from_user(&t, uarg, sizeof(t)))
		return -EFAULT;
	if (!t.count || t.count > ODP_NIC_TABLE_MAX)
		return -EINVAL;
	reg = nic_lookup(f, t.handle);
	if (!reg)
		return -ENOENT;
	if (t.first >= reg->npages || t.count > reg->npages - t.first) {
		ret = -ERANGE;
		goto put;
	}
	/* Allocated before the update lock: nothing allocates under it. */
	out = kcalloc(t.count, sizeof(*out), GFP_KERNEL);
	if (!out) {
		ret = -ENOMEM;
		goto put;
	}
	umem = nic_umem(reg);
	odp_hmm_umem_lock(umem);
	for (i = 0; i < t.count; i++) {
		struct nic_slot *slot = &reg->slots[t.first + i];
		dma_addr_t dma;

		out[i].dma_addr = slot->dma;
		out[i].state = slot->state;
		if (!odp_hmm_umem_dma_addr(umem, nic_page_addr(reg, t.first + i),
					   &dma, &out[i].odp_flags))
			out[i].odp_dma_addr = dma;
	}
	odp_hmm_umem_unlock(umem);
	if (copy_to_user(u64_to_user_ptr(t.slots), out,
			 array_size(t.count, sizeof(*out))))
		ret = -EFAULT;
	kfree(out);
put:
	nic_reg_put(reg);
	return ret;
}

static long nic_ioc_events(struct nic_file *f, void __user *uarg)
{
	struct odp_nic_events e;
	struct odp_nic_event *out;
	struct nic_reg *reg;
	u64 seq, oldest, next;
	long ret = 0;
	u32 n = 0;

	if (copy_from_user(&e, uarg, sizeof(e)))
		return -EFAULT;
	if (!e.count || e.count > ODP_NIC_EVENTS_MAX)
		return -EINVAL;
	reg = nic_lookup(f, e.handle);
	if (!reg)
		return -ENOENT;
	out = kcalloc(e.count, sizeof(*out), GFP_KERNEL);
	if (!out) {
		ret = -ENOMEM;
		goto put;
	}
	odp_hmm_umem_lock(nic_umem(reg));
	e.last_seq = reg->log_seq;
	oldest = reg->log_seq > ODP_NIC_EVENTS_MAX ?
		 reg->log_seq - ODP_NIC_EVENTS_MAX + 1 : 1;
	e.lost = 0;
	/* No event comes after U64_MAX. */
	if (!check_add_overflow(e.after, 1, &next)) {
		e.lost = oldest > next ? oldest - next : 0;
		for (seq = max(oldest, next);
		     seq <= reg->log_seq && n < e.count; seq++)
			out[n++] = reg->log[seq % ODP_NIC_EVENTS_MAX];
	}
	odp_hmm_umem_unlock(nic_umem(reg));
	e.count = n;
	if (copy_to_user(u64_to_user_ptr(e.events), out,
			 array_size(n, sizeof(*out))) ||
	    copy_to_user(uarg, &e, sizeof(e)))
		ret = -EFAULT;
	kfree(out);
put:
	nic_reg_put(reg);
	return ret;
}

static long nic_ioc_counters(struct nic_file *f, void __user *uarg)
{
	struct odp_nic_counters c, out = { };
	atomic64_t *src = f->nic->totals;
	struct nic_reg *reg = NULL;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if (c.reserved)
		return -EINVAL;
	if (c.handle) {
		reg = nic_lookup(f, c.handle);
		if (!reg)
			return -ENOENT;
		src = reg->counters;
	}
	out.handle = c.handle;
	out.work_requests = atomic64_read(&src[NIC_WORK_REQUESTS]);
	out.work_bytes = atomic64_read(&src[NIC_WORK_BYTES]);
	out.faults_raised = atomic64_read(&src[NIC_FAULTS_RAISED]);
	out.faults_resolved = atomic64_read(&src[NIC_FAULTS_RESOLVED]);
	out.fault_errors = atomic64_read(&src[NIC_FAULT_ERRORS]);
	out.slots_filled = atomic64_read(&src[NIC_SLOTS_FILLED]);
	out.invalidations = atomic64_read(&src[NIC_INVALIDATIONS]);
	out.invalidate_starts = atomic64_read(&src[NIC_INVALIDATE_STARTS]);
	out.invalidate_finishes = atomic64_read(&src[NIC_INVALIDATE_FINISHES]);
	out.slots_zapped = atomic64_read(&src[NIC_SLOTS_ZAPPED]);
	out.stale_slots = atomic64_read(&src[NIC_STALE_SLOTS]);
	out.refilled_between_passes =
		atomic64_read(&src[NIC_REFILLED_BETWEEN_PASSES]);
	out.fills_between_passes = atomic64_read(&src[NIC_FILLS_BETWEEN_PASSES]);
	out.dma_check_failures = atomic64_read(&src[NIC_DMA_CHECK_FAILURES]);
	out.refused_nonblocking = atomic64_read(&src[NIC_REFUSED_NONBLOCKING]);
	out.dma_transfers = atomic64_read(&src[NIC_DMA_TRANSFERS]);
	out.prefetches = atomic64_read(&src[NIC_PREFETCHES]);
	out.map_unreachable = atomic64_read(&src[NIC_MAP_UNREACHABLE]);
	if (reg) {
		struct odp_hmm_stats s = { .version = ODP_HMM_ABI_VERSION };

		odp_hmm_umem_stats(nic_umem(reg), &s);
		out.odp_faults = s.faults;
		out.odp_pages_mapped = s.pages_mapped;
		out.odp_pages_unmapped = s.pages_unmapped;
		out.odp_invalidations = s.invalidations;
		out.odp_pages_now = s.pages_now;
		nic_reg_put(reg);
	} else {
		out.live_registrations = atomic64_read(&f->nic->live_regs);
	}
	return copy_to_user(uarg, &out, sizeof(out)) ? -EFAULT : 0;
}

static long nic_ioc_raw_read(struct nic_file *f, void __user *uarg)
{
	struct odp_nic *nic = f->nic;
	struct odp_nic_raw_read r;
	void *kbuf;
	long ret;

	if (!debug_raw_dma || !capable(CAP_SYS_RAWIO))
		return -EPERM;
	if (copy_from_user(&r, uarg, sizeof(r)))
		return -EFAULT;
	if (!r.length || r.length > ODP_NIC_WORK_MAX_LEN)
		return -EINVAL;
	kbuf = kmalloc(r.length, GFP_KERNEL);
	if (!kbuf)
		return -ENOMEM;
	mutex_lock(&nic->engine);
	/* The sentinel first, so that what the device could not read shows. */
	memset(nic->bounce, ODP_NIC_RAW_SENTINEL, r.length);
	ret = edu_transfer(nic, nic->bounce_dma, EDU_BUF_BASE, r.length, false);
	if (!ret)
		ret = edu_transfer(nic, r.dma_addr, EDU_BUF_BASE, r.length,
				   false);
	if (!ret)
		ret = edu_transfer(nic, EDU_BUF_BASE, nic->bounce_dma,
				   r.length, true);
	if (!ret)
		memcpy(kbuf, nic->bounce, r.length);
	mutex_unlock(&nic->engine);
	if (!ret && copy_to_user(u64_to_user_ptr(r.buf), kbuf, r.length))
		ret = -EFAULT;
	kfree(kbuf);
	return ret;
}

/* ---- The character device ---------------------------------------------- */

static int nic_open(struct inode *inode, struct file *file)
{
	struct odp_nic *nic = container_of(file->private_data, struct odp_nic,
					   misc);
	struct nic_file *f;

	f = kzalloc_obj(*f);
	if (!f)
		return -ENOMEM;
	xa_init_flags(&f->regs, XA_FLAGS_ALLOC1);
	down_read(&nic->gate);
	if (nic->gone) {
		up_read(&nic->gate);
		kfree(f);
		return -ENODEV;
	}
	kref_get(&nic->ref);
	f->nic = nic;
	mutex_lock(&nic->files_lock);
	list_add(&f->node, &nic->files);
	mutex_unlock(&nic->files_lock);
	up_read(&nic->gate);
	file->private_data = f;
	return 0;
}

static int nic_release(struct inode *inode, struct file *file)
{
	struct nic_file *f = file->private_data;
	struct odp_nic *nic = f->nic;
	struct nic_reg *reg;
	unsigned long handle;

	/*
	 * Under the gate: once the file is off the list, removal no longer
	 * sees its registrations, so it must wait until their umems are
	 * released (or handed to the fault work, which it flushes).
	 */
	down_read(&nic->gate);
	mutex_lock(&nic->files_lock);
	list_del(&f->node);
	mutex_unlock(&nic->files_lock);
	/* A fault work item may keep a registration a little longer. */
	xa_for_each(&f->regs, handle, reg) {
		xa_erase(&f->regs, handle);
		nic_reg_put(reg);
	}
	up_read(&nic->gate);
	xa_destroy(&f->regs);
	nic_put(nic);
	kfree(f);
	return 0;
}

static long nic_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct nic_file *f = file->private_data;
	void __user *uarg = (void __user *)arg;
	long ret;

	down_read(&f->nic->gate);
	if (f->nic->gone) {
		ret = -ENODEV;
		goto out;
	}
	switch (cmd) {
	case ODP_NIC_IOC_REGISTER:
		ret = nic_ioc_register(f, uarg);
		break;
	case ODP_NIC_IOC_UNREGISTER:
		ret = nic_ioc_unregister(f, uarg);
		break;
	case ODP_NIC_IOC_WORK:
		ret = nic_ioc_work(f, uarg);
		break;
	case ODP_NIC_IOC_PREFETCH:
		ret = nic_ioc_prefetch(f, uarg);
		break;
	case ODP_NIC_IOC_TABLE:
		ret = nic_ioc_table(f, uarg);
		break;
	case ODP_NIC_IOC_EVENTS:
		ret = nic_ioc_events(f, uarg);
		break;
	case ODP_NIC_IOC_COUNTERS:
		ret = nic_ioc_counters(f, uarg);
		break;
	case ODP_NIC_IOC_RAW_READ:
		ret = nic_ioc_raw_read(f, uarg);
		break;
	default:
		ret = -ENOTTY;
	}
out:
	up_read(&f->nic->gate);
	return ret;
}

/* .owner: rmmod is refused while a file (and so a registration) is open. */
static const struct file_operations nic_fops = {
	.owner = THIS_MODULE,
	.open = nic_open,
	.release = nic_release,
	.unlocked_ioctl = nic_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

/* ---- The PCI driver ------------------------------------------------------ */

static int nic_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct odp_nic *nic;
	u32 version;
	int ret;

	/* driver_override can hand any device over: take only an edu. */
	if (pdev->vendor != EDU_VENDOR || pdev->device != EDU_DEVICE)
		return -ENODEV;
	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		return ret;

	nic = kzalloc_obj(*nic);
	if (!nic)
		return -ENOMEM;
	kref_init(&nic->ref);
	nic->pdev = pdev;
	init_rwsem(&nic->gate);
	mutex_init(&nic->engine);
	mutex_init(&nic->files_lock);
	INIT_LIST_HEAD(&nic->files);
	nic->bar = pcim_iomap_region(pdev, 0, "odp_nic");
	if (IS_ERR(nic->bar)) {
		ret = PTR_ERR(nic->bar);
		goto free;
	}
	pci_set_master(pdev);
	nic->bounce = dma_alloc_coherent(&pdev->dev, EDU_BUF_SIZE,
					 &nic->bounce_dma, GFP_KERNEL);
	if (!nic->bounce) {
		ret = -ENOMEM;
		goto free;
	}

	mutex_lock(&nic_bound_lock);
	if (nic_bound) {
		ret = -EBUSY;
		goto unlock;
	}
	nic->misc.minor = MISC_DYNAMIC_MINOR;
	nic->misc.name = "odp_nic";
	nic->misc.fops = &nic_fops;
	nic->misc.parent = &pdev->dev;
	nic->misc.mode = 0600;
	ret = misc_register(&nic->misc);
	if (ret)
		goto unlock;
	nic_bound = nic;
	mutex_unlock(&nic_bound_lock);

	pci_set_drvdata(pdev, nic);
	version = readl(nic->bar + EDU_REG_ID);
	dev_info(&pdev->dev, "edu %u.%u ready as the odp_nic sample NIC\n",
		 version >> 24, (version >> 16) & 0xff);
	return 0;

unlock:
	mutex_unlock(&nic_bound_lock);
	dma_free_coherent(&pdev->dev, EDU_BUF_SIZE, nic->bounce,
			  nic->bounce_dma);
free:
	nic_put(nic);
	return ret;
}

/*
 * Unbind: odp_hmm wants every registration released before the device goes.
 * The gate waits for the ioctls and file releases in progress and keeps new
 * ones out; the workqueue is flushed, so no fault runs and the registrations
 * only queued faults kept are gone; then every umem still on a file's table
 * is released.
 */
static void nic_remove(struct pci_dev *pdev)
{
	struct odp_nic *nic = pci_get_drvdata(pdev);
	struct nic_file *f;

	misc_deregister(&nic->misc);
	down_write(&nic->gate);
	nic->gone = true;
	flush_workqueue(nic_wq);
	mutex_lock(&nic->files_lock);
	list_for_each_entry(f, &nic->files, node) {
		struct nic_reg *reg;
		unsigned long handle;

		xa_for_each(&f->regs, handle, reg)
			nic_reg_revoke(reg);
	}
	mutex_unlock(&nic->files_lock);
	up_write(&nic->gate);

	dma_free_coherent(&pdev->dev, EDU_BUF_SIZE, nic->bounce,
			  nic->bounce_dma);
	mutex_lock(&nic_bound_lock);
	nic_bound = NULL;
	mutex_unlock(&nic_bound_lock);
	dev_info(&pdev->dev, "odp_nic unbound\n");
	nic_put(nic);
}

/* No id: the device is handed over with driver_override only. */
static const struct pci_device_id nic_ids[] = {
	{ }
};

static struct pci_driver nic_driver = {
	.name = "odp_nic",
	.id_table = nic_ids,
	.probe = nic_probe,
	.remove = nic_remove,
};

static int __init nic_init(void)
{
	int ret;

	nic_wq = alloc_workqueue("odp_nic", WQ_UNBOUND, 0);
	if (!nic_wq)
		return -ENOMEM;
	ret = pci_register_driver(&nic_driver);
	if (ret)
		destroy_workqueue(nic_wq);
	return ret;
}

static void __exit nic_exit(void)
{
	pci_unregister_driver(&nic_driver);
	/* Fault work items of closed files may still run: wait for them. */
	destroy_workqueue(nic_wq);
}

module_init(nic_init);
module_exit(nic_exit);

MODULE_DESCRIPTION("odp_hmm sample: a NIC with On-Demand Paging on a QEMU edu device");
MODULE_AUTHOR("The odp_hmm authors");
MODULE_LICENSE("GPL");
