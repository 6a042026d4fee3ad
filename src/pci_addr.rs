// SPDX-License-Identifier: GPL-2.0

//! PCI addresses as users write them: `DDDD:BB:DD.F`, or `BB:DD.F` in segment 0.
//!
//! Pure logic: no kernel dependency, unit-tested on the host (`host-tests/`).

/// A PCI function's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PciAddr {
    /// PCI segment (domain).
    pub(crate) segment: u32,
    /// Bus number.
    pub(crate) bus: u8,
    /// Device number (0..=31).
    pub(crate) device: u8,
    /// Function number (0..=7).
    pub(crate) function: u8,
}

impl PciAddr {
    /// Parses `DDDD:BB:DD.F` or `BB:DD.F` (hexadecimal fields); `None` if malformed.
    pub(crate) fn parse(text: &[u8]) -> Option<Self> {
        let mut fields = text.split(|&c| c == b':');
        let (first, second, third) = (fields.next()?, fields.next()?, fields.next());
        if fields.next().is_some() {
            return None;
        }
        let (segment, bus, slot) = match third {
            Some(slot) => (hex(first, 4)?, second, slot),
            None => (0, first, second),
        };
        let mut slot = slot.split(|&c| c == b'.');
        let (device, function) = (slot.next()?, slot.next()?);
        if slot.next().is_some() {
            return None;
        }
        let device = u8::try_from(hex(device, 2)?).ok().filter(|&d| d < 32)?;
        let function = u8::try_from(hex(function, 1)?).ok().filter(|&f| f < 8)?;
        Some(Self {
            segment,
            bus: u8::try_from(hex(bus, 2)?).ok()?,
            device,
            function,
        })
    }

    /// The `devfn` byte: device in bits 7..3, function in bits 2..0.
    pub(crate) fn devfn(&self) -> u8 {
        (self.device << 3) | self.function
    }
}

/// Parses 1..=`max_digits` hexadecimal digits.
fn hex(digits: &[u8], max_digits: usize) -> Option<u32> {
    if digits.is_empty() || digits.len() > max_digits {
        return None;
    }
    digits.iter().try_fold(0u32, |value, &c| {
        let digit = char::from(c).to_digit(16)?;
        Some(value * 16 + digit)
    })
}
