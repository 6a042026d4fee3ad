// SPDX-License-Identifier: GPL-2.0

//! Userspace selftests of odp_hmm. They run as root inside the test VM, with the module loaded
//! (scripts/vm-run.sh), and print KTAP: one `ok N name` / `not ok N name` line per test and a
//! closing `N passed, N failed` line. The exit code is non-zero if any test failed.
//!
//! Usage: odp_hmm_selftests [GROUP...] [-k SUBSTRING]...  (a test runs if its name contains any)
//!   GROUP: foundation, odp (default: both), lazy, robustness, features, fuzz, p2p-host-bridge,
//!   p2p-bus, p2p-refused, dma-device-param, dma-device-remove, nic (each in its VM topology and
//!   module arguments, see scripts/test.sh)
//!
//! The `fuzz` group reads ODP_HMM_FUZZ_SEED (rerun a seed it printed), ODP_HMM_FUZZ_CALLS
//! (default 100000) and ODP_HMM_FUZZ_COPIES (device copies that may reach the engine, default
//! 300) from the environment.

mod features;
mod foundation;
mod fuzz;
mod ktap;
mod limits;
mod nic;
mod nic_abi;
mod odp;
mod p2p;
mod robustness;
mod sharing;
mod units;
mod util;

use ktap::Test;

/// The groups, by name.
fn group(name: &str) -> Option<Vec<&'static Test>> {
    let parts: &[&[&'static Test]] = match name {
        "foundation" => &[foundation::TESTS],
        "dma-device-param" => &[foundation::DMA_DEVICE_PARAM],
        "dma-device-remove" => &[robustness::DMA_DEVICE_REMOVE],
        "odp" => &[
            odp::TESTS,
            units::TESTS,
            sharing::TESTS,
            limits::TESTS,
            robustness::ODP,
        ],
        "lazy" => &[units::LAZY],
        "robustness" => &[robustness::TESTS],
        "features" => &[features::TESTS],
        "fuzz" => &[fuzz::TESTS],
        "p2p-host-bridge" => &[p2p::HOST_BRIDGE],
        "p2p-bus" => &[p2p::BUS],
        "p2p-refused" => &[p2p::REFUSED],
        "nic" => &[nic::TESTS],
        _ => return None,
    };
    Some(parts.iter().flat_map(|p| p.iter().copied()).collect())
}

fn main() {
    let mut groups = Vec::new();
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-k" {
            filters.extend(args.next());
        } else {
            groups.push(arg);
        }
    }
    if groups.is_empty() {
        groups = vec!["foundation".into(), "odp".into()];
    }
    let mut tests: Vec<&Test> = Vec::new();
    for name in &groups {
        let Some(g) = group(name) else {
            eprintln!("unknown group {name}");
            std::process::exit(2);
        };
        tests.extend(
            g.into_iter().filter(|t| {
                filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str()))
            }),
        );
    }
    let failed = ktap::run(&groups.join("+"), &tests);
    std::process::exit(if failed > 0 { 1 } else { 0 });
}
