// SPDX-License-Identifier: GPL-2.0

//! Userspace selftests of odp_hmm. They run as root inside the test VM, with the module loaded
//! (scripts/vm-run.sh), and print KTAP: one `ok N name` / `not ok N name` line per test and a
//! closing `N passed, N failed` line. The exit code is non-zero if any test failed.
//!
//! Usage: odp_hmm_selftests [GROUP...] [-k SUBSTRING]
//!   GROUP: foundation, odp (default: both), p2p-host-bridge, p2p-bus, p2p-refused,
//!   dma-device-param (each in its VM topology and module arguments, see scripts/test.sh)

mod foundation;
mod ktap;
mod odp;
mod p2p;
mod util;

use ktap::Test;

/// The groups, by name.
fn group(name: &str) -> Option<&'static [&'static Test]> {
    match name {
        "foundation" => Some(foundation::TESTS),
        "dma-device-param" => Some(foundation::DMA_DEVICE_PARAM),
        "odp" => Some(odp::TESTS),
        "p2p-host-bridge" => Some(p2p::HOST_BRIDGE),
        "p2p-bus" => Some(p2p::BUS),
        "p2p-refused" => Some(p2p::REFUSED),
        _ => None,
    }
}

fn main() {
    let mut groups = Vec::new();
    let mut filter = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-k" {
            filter = args.next();
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
            g.iter()
                .filter(|t| filter.as_deref().is_none_or(|f| t.name.contains(f))),
        );
    }
    let failed = ktap::run(&groups.join("+"), &tests);
    std::process::exit(if failed > 0 { 1 } else { 0 });
}
