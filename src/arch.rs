//! Tenstorrent chip architectures: one table for every name and number of one that the
//! project reads or writes (TT-Metal's numbers and names, the driver's PCI ids and
//! hwmon names, what people are shown).

/// One architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// TT-Metal's `tt::ARCH` value: `DeviceInfo::arch` and the original protocol's
    /// `arch_type` carry it.
    pub number: u32,
    /// TT-Metal's name (`tt::arch_to_str`), used in the page, JSON and Prometheus.
    pub name: &'static str,
    /// For people (tt-smi's device column).
    pub display: &'static str,
    /// The PCI device id under vendor 0x1e52, for chips the driver knows.
    pub pci_device: Option<u32>,
    /// The `name` of the driver's hwmon device for the chip, where it has one.
    pub hwmon: Option<&'static str>,
}

/// Every architecture known here.
pub const ARCHES: [Arch; 4] = [
    Arch {
        number: 1,
        name: "grayskull",
        display: "Grayskull",
        pci_device: Some(0xfaca),
        hwmon: None,
    },
    Arch {
        number: 2,
        name: "wormhole_b0",
        display: "Wormhole",
        pci_device: Some(0x401e),
        hwmon: Some("wormhole"),
    },
    Arch {
        number: 3,
        name: "blackhole",
        display: "Blackhole",
        pci_device: Some(0xb140),
        hwmon: Some("blackhole"),
    },
    Arch {
        number: 4,
        name: "quasar",
        display: "Quasar",
        pci_device: None,
        hwmon: None,
    },
];

/// The architecture of TT-Metal's number `n`.
pub fn by_number(n: u32) -> Option<&'static Arch> {
    ARCHES.iter().find(|a| a.number == n)
}

/// The architecture of TT-Metal's name `name`.
pub fn by_name(name: &str) -> Option<&'static Arch> {
    ARCHES.iter().find(|a| a.name == name)
}

/// The architecture of a PCI device id.
pub fn by_pci_device(id: u32) -> Option<&'static Arch> {
    ARCHES.iter().find(|a| a.pci_device == Some(id))
}

/// The architecture whose driver names its hwmon device `name`.
pub fn by_hwmon(name: &str) -> Option<&'static Arch> {
    ARCHES.iter().find(|a| a.hwmon == Some(name))
}

/// TT-Metal's name of number `n`, "unknown" for any other.
pub fn name_of(n: u32) -> &'static str {
    by_number(n).map_or("unknown", |a| a.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_unique() {
        for (i, a) in ARCHES.iter().enumerate() {
            for b in &ARCHES[i + 1..] {
                assert_ne!(a.number, b.number);
                assert_ne!(a.name, b.name);
                assert!(a.pci_device.is_none() || a.pci_device != b.pci_device);
                assert!(a.hwmon.is_none() || a.hwmon != b.hwmon);
            }
        }
        assert_eq!(by_pci_device(0x401e).map(|a| a.name), Some("wormhole_b0"));
        assert_eq!(by_hwmon("blackhole").map(|a| a.number), Some(3));
        assert_eq!(name_of(9), "unknown");
    }
}
