/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C declarations bindgen turns into Rust for odp_hmm (see Kbuild): the HMM
 * headers that `kernel::bindings` lacks, this module's uAPI and its C shim.
 */
#ifndef ODP_BINDINGS_H
#define ODP_BINDINGS_H

#include <linux/hmm.h>
#include <linux/hmm-dma.h>

#include "uapi/linux/odp_hmm.h"
#include "linux/odp_hmm.h"
#include "odp_shim.h"

/*
 * The ioctl numbers are function-like macros, which bindgen cannot expand;
 * enumerators are evaluated by the compiler, so these carry the header's values.
 */
enum odp_shim_ioctl {
	ODP_SHIM_IOC_INFO = ODP_HMM_IOC_INFO,
	ODP_SHIM_IOC_REGISTER = ODP_HMM_IOC_REGISTER,
	ODP_SHIM_IOC_UNREGISTER = ODP_HMM_IOC_UNREGISTER,
	ODP_SHIM_IOC_FAULT = ODP_HMM_IOC_FAULT,
	ODP_SHIM_IOC_SNAPSHOT = ODP_HMM_IOC_SNAPSHOT,
	ODP_SHIM_IOC_STATS = ODP_HMM_IOC_STATS,
	ODP_SHIM_IOC_DMA = ODP_HMM_IOC_DMA,
};

#endif /* ODP_BINDINGS_H */
