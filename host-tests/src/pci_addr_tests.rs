// SPDX-License-Identifier: GPL-2.0

//! Tests of `src/pci_addr.rs`: parsing `DDDD:BB:DD.F` / `BB:DD.F` and the `devfn` byte.

use crate::pci_addr::PciAddr;

fn addr(segment: u32, bus: u8, device: u8, function: u8) -> PciAddr {
    PciAddr {
        segment,
        bus,
        device,
        function,
    }
}

#[test]
fn parses_valid_addresses() {
    let table: [(&str, PciAddr); 16] = [
        ("0000:00:00.0", addr(0, 0, 0, 0)),
        ("0000:00:1f.3", addr(0, 0, 0x1f, 3)),
        ("0000:00:1F.3", addr(0, 0, 0x1f, 3)),
        ("0001:3b:00.1", addr(1, 0x3b, 0, 1)),
        ("abcd:Ef:0a.5", addr(0xabcd, 0xef, 0x0a, 5)),
        ("ABCD:EF:0A.5", addr(0xabcd, 0xef, 0x0a, 5)),
        ("ffff:ff:1f.7", addr(0xffff, 0xff, 0x1f, 7)),
        ("FFFF:FF:1F.7", addr(0xffff, 0xff, 0x1f, 7)),
        // Fewer digits than the canonical width.
        ("1:2:3.4", addr(1, 2, 3, 4)),
        ("12:3:04.6", addr(0x12, 3, 4, 6)),
        ("123:a:b.7", addr(0x123, 0xa, 0xb, 7)),
        // Without a segment: segment 0.
        ("00:1f.3", addr(0, 0, 0x1f, 3)),
        ("3b:00.0", addr(0, 0x3b, 0, 0)),
        ("FF:1F.7", addr(0, 0xff, 0x1f, 7)),
        ("a:1.2", addr(0, 0xa, 1, 2)),
        ("10:10.0", addr(0, 0x10, 0x10, 0)),
    ];
    for (text, expected) in table {
        assert_eq!(PciAddr::parse(text.as_bytes()), Some(expected), "{text:?}");
    }
}

#[test]
fn refuses_malformed_addresses() {
    let table: &[&str] = &[
        // Empty and missing parts.
        "",
        ":",
        ".",
        ":.",
        "::.",
        "00",
        "00:00",
        "00.0",
        "0000:00:00",
        "0000:00.0",
        ":00.0",
        "00:.0",
        "00:00.",
        ":00:00.0",
        "0000::00.0",
        "0000:00:.0",
        "0000:00:00.",
        // Device or function out of range.
        "00:20.0",
        "00:ff.0",
        "0000:00:20.0",
        "0000:00:3f.7",
        "00:00.8",
        "00:1f.f",
        "0000:00:00.9",
        // Too many digits.
        "00000:00:00.0",
        "0000:000:00.0",
        "0000:100:00.0",
        "0000:00:000.0",
        "0000:00:001.0",
        "0000:00:00.00",
        "000:00.0",
        "00:000.0",
        "10000:00:00.0",
        // Extra separators.
        "0000:00:00:00.0",
        "0000:00:00.0:",
        "0000:00:00.0.0",
        "00:00.0.",
        "00:00..0",
        "0000:00:00.0.",
        "0000.00:00.0",
        "00.00:00.0",
        ":0000:00:00.0",
        "0000:00:00.0:0",
        // Non-hexadecimal characters, signs, prefixes, whitespace.
        "g000:00:00.0",
        "0000:0g:00.0",
        "0000:00:0g.0",
        "0000:00:00.g",
        "0x00:00.0",
        "+1:00.0",
        "-1:00.0",
        "00:+1.0",
        "00:1.-0",
        " 00:00.0",
        "00:00.0 ",
        "00 :00.0",
        "00:00.0\n",
        "0000:00:00,0",
        "0000;00:00.0",
    ];
    for text in table {
        assert_eq!(PciAddr::parse(text.as_bytes()), None, "{text:?}");
    }
}

#[test]
fn refuses_non_ascii_bytes() {
    let table: &[&[u8]] = &[
        b"00:00.\xff",
        b"\xaa:00.0",
        b"00:\xb1.0",
        b"00:00.0\0",
        b"\x000:00.0",
        "00:1\u{ff11}.0".as_bytes(),
    ];
    for text in table {
        assert_eq!(PciAddr::parse(text), None, "{text:?}");
    }
}

#[test]
fn every_device_and_function_round_trips() {
    for device in 0u8..32 {
        for function in 0u8..8 {
            for (text, segment, bus) in [
                (format!("0000:00:{device:02x}.{function}"), 0, 0),
                (format!("{device:02x}:{device:02X}.{function}"), 0, device),
                (
                    format!("BEEF:{bus:x}:{device:x}.{function}", bus = 255 - device),
                    0xbeef,
                    255 - device,
                ),
            ] {
                let a = PciAddr::parse(text.as_bytes()).unwrap_or_else(|| panic!("{text}"));
                assert_eq!(a, addr(segment, bus, device, function), "{text}");
                assert_eq!(a.devfn(), device * 8 + function, "{text}");
                assert_eq!(a.devfn() >> 3, device, "{text}");
                assert_eq!(a.devfn() & 7, function, "{text}");
            }
        }
        // One past the last function, in the same position.
        let text = format!("00:{device:02x}.8");
        assert_eq!(PciAddr::parse(text.as_bytes()), None, "{text}");
    }
    for device in 32u32..=0xff {
        let text = format!("00:{device:02x}.0");
        assert_eq!(PciAddr::parse(text.as_bytes()), None, "{text}");
    }
}

#[test]
fn every_bus_parses() {
    for bus in 0u8..=255 {
        for text in [
            format!("{bus:02x}:00.0"),
            format!("{bus:X}:00.0"),
            format!("0:{bus:x}:00.0"),
        ] {
            assert_eq!(
                PciAddr::parse(text.as_bytes()),
                Some(addr(0, bus, 0, 0)),
                "{text}"
            );
        }
    }
}

#[test]
fn devfn_packs_device_and_function() {
    let table: [(u8, u8, u8); 7] = [
        (0, 0, 0x00),
        (0, 1, 0x01),
        (1, 0, 0x08),
        (0, 7, 0x07),
        (0x1f, 3, 0xfb),
        (0x1f, 7, 0xff),
        (0x10, 5, 0x85),
    ];
    for (device, function, devfn) in table {
        assert_eq!(
            addr(0x1234, 0x56, device, function).devfn(),
            devfn,
            "{device:#x}.{function}"
        );
    }
    assert_eq!(PciAddr::parse(b"0000:00:1f.3").unwrap().devfn(), 0xfb);
    assert_eq!(PciAddr::parse(b"3b:02.1").unwrap().devfn(), 0x11);
}
