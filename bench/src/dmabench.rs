// SPDX-License-Identifier: GPL-2.0

//! The kernel's own `dma_map_benchmark` (`CONFIG_DMA_MAP_BENCHMARK`, `kernel/dma/map_benchmark.c`;
//! the tool is the kernel tree's `tools/dma/dma_map_benchmark`, built by `scripts/bench.sh`), run
//! on the DMA device itself, so through the same IOMMU and domain as odp_hmm's mappings: the cost
//! of one `dma_map_single()` and `dma_unmap_single()` of N pages, the reference for one map call.
//!
//! The driver has no ID table: the device is handed to it with `driver_override`, after
//! odp_hmm's edu driver let go of it, and handed back afterwards.

use std::{
    fs,
    path::Path,
    process::Command, //
};

/// odp_hmm's edu driver.
const ODP_DRIVER: &str = "/sys/bus/pci/drivers/odp_hmm_edu";
/// The benchmark's driver.
const BENCH_DRIVER: &str = "/sys/bus/pci/drivers/dma_map_benchmark";

/// What one run of the tool reported, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapCost {
    pub map_us: f64,
    pub map_sd_us: f64,
    pub unmap_us: f64,
    pub unmap_sd_us: f64,
}

fn write(path: &str, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("{path} <- {value:?}: {e}"))
}

/// The name of the driver bound to PCI device `bdf`, if any.
fn driver_of(bdf: &str) -> Option<String> {
    fs::read_link(format!("/sys/bus/pci/devices/{bdf}/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// The device `bdf` bound to `dma_map_benchmark` while it exists; bound back to odp_hmm's edu
/// driver when dropped.
struct Borrowed {
    bdf: String,
}

impl Borrowed {
    fn take(bdf: &str) -> Result<Self, String> {
        if driver_of(bdf).as_deref() != Some("odp_hmm_edu") {
            return Err(format!(
                "{bdf} is not bound to odp_hmm_edu (driver {:?})",
                driver_of(bdf)
            ));
        }
        write(&format!("{ODP_DRIVER}/unbind"), bdf)?;
        let borrowed = Self { bdf: bdf.into() };
        write(
            &format!("/sys/bus/pci/devices/{bdf}/driver_override"),
            "dma_map_benchmark",
        )?;
        write("/sys/bus/pci/drivers_probe", bdf)?;
        if driver_of(bdf).as_deref() != Some("dma_map_benchmark") {
            return Err(format!(
                "{bdf} did not bind to dma_map_benchmark (CONFIG_DMA_MAP_BENCHMARK?)"
            ));
        }
        Ok(borrowed)
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        let bdf = &self.bdf;
        if driver_of(bdf).as_deref() == Some("dma_map_benchmark") {
            let _ = write(&format!("{BENCH_DRIVER}/unbind"), bdf);
        }
        let _ = write(&format!("/sys/bus/pci/devices/{bdf}/driver_override"), "\n");
        let _ = write(&format!("{ODP_DRIVER}/bind"), bdf);
    }
}

/// Parses the tool's "average map latency(us):X standard deviation:Y" lines.
fn parse(out: &str) -> Option<MapCost> {
    let pair = |what: &str| -> Option<(f64, f64)> {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("average {what} latency(us):")))?;
        let (avg, sd) = line.split_once(':')?.1.split_once(" standard deviation:")?;
        Some((avg.trim().parse().ok()?, sd.trim().parse().ok()?))
    };
    let (map_us, map_sd_us) = pair("map")?;
    let (unmap_us, unmap_sd_us) = pair("unmap")?;
    Some(MapCost {
        map_us,
        map_sd_us,
        unmap_us,
        unmap_sd_us,
    })
}

/// Runs `tool` on device `bdf` for `seconds` per granule, one thread, 64-bit DMA mask (as the
/// edu device is set up), for each of `granules` pages per map.
pub fn run(
    tool: &str,
    bdf: &str,
    seconds: u32,
    granules: &[u32],
) -> Result<Vec<(u32, MapCost)>, String> {
    if !Path::new(tool).is_file() {
        return Err(format!("{tool}: no such file"));
    }
    let _borrowed = Borrowed::take(bdf)?;
    let mut out = Vec::new();
    for &g in granules {
        let result = Command::new(tool)
            .args(["-t", "1", "-b", "64", "-s"])
            .arg(seconds.to_string())
            .arg("-g")
            .arg(g.to_string())
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        let text = String::from_utf8_lossy(&result.stdout);
        if !result.status.success() {
            return Err(format!(
                "{tool} -g {g}: {} {}{}",
                result.status,
                text,
                String::from_utf8_lossy(&result.stderr)
            ));
        }
        let cost = parse(&text).ok_or_else(|| format!("{tool}: unexpected output: {text}"))?;
        out.push((g, cost));
    }
    Ok(out)
}
