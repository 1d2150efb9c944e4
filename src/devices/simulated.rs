//! Simulated hosts: sysfs trees laid out exactly as Linux and tt-kmd lay them out, for
//! the tests and the demo's simulated cards. One picture of a real host in the project.
//!
//! What the kernel makes, and so what this writes (from tt-kmd's `chardev.c`,
//! `wormhole.c`, `blackhole.c`, `telemetry.c` and the kernel's PCI, hwmon and class
//! code):
//!
//! ```text
//! sys/devices/pci0000:00/0000:00:01.1/                 root port (real dir)
//! sys/devices/pci0000:00/0000:00:01.1/0000:01:00.0/    PCI function (real dir):
//!     vendor device class current_link_* max_link_* numa_node ...
//!     driver -> ../../../../bus/pci/drivers/tenstorrent, subsystem -> ../../../../bus/pci
//!     hwmon/hwmon3/  name temp1_input ...  device -> ../../../0000:01:00.0
//!     tenstorrent/tenstorrent!0/  tt_* dev uevent pcie_perf_counters/
//!         device -> ../../../0000:01:00.0   (relative to this physical directory)
//!         subsystem -> ../../../../../../class/tenstorrent
//! sys/class/tenstorrent/tenstorrent!0 -> ../../devices/pci0000:00/0000:00:01.1/0000:01:00.0/tenstorrent/tenstorrent!0
//! sys/bus/pci/devices/0000:01:00.0    -> ../../../devices/pci0000:00/0000:00:01.1/0000:01:00.0
//! sys/bus/pci/drivers/tenstorrent/0000:01:00.0 -> ../../../../devices/...
//! sys/class/hwmon/hwmon3              -> ../../devices/pci0000:00/0000:00:01.1/0000:01:00.0/hwmon/hwmon3
//! dev/tenstorrent/0                   (a character device on a real host; a plain file here)
//! proc/driver/tenstorrent/0/pids      one line per open file descriptor
//! ```
//!
//! Real directories exist only under `sys/devices/`; every other path is a link into it.

use super::PCIE_PERF_COUNTERS;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A file at the root of a simulated host's tree, so that the views can say that the
/// cards they show are simulated (a real `/` never has it).
pub const SIMULATED_MARKER: &str = "tttrack-simulated-host";

/// Marks `root` as a simulated host's tree.
pub fn mark_simulated(root: &Path) -> io::Result<()> {
    write(
        &root.join(SIMULATED_MARKER),
        "cards under this directory are simulated by tt-track demo\n",
    )
}

/// Whether `root` is a simulated host's tree.
pub fn is_simulated(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join(SIMULATED_MARKER)).is_ok_and(|m| m.is_file())
}

/// The character-device major the tests give tenstorrent devices (`dev` files).
const CHAR_MAJOR: u32 = 511;

/// One card as the kernel shows it.
#[derive(Debug, Clone)]
pub struct SimCard {
    /// `/dev/tenstorrent/N`, `tenstorrent!N`.
    pub index: u32,
    /// PCI address of the card's function, `DDDD:BB:SS.F`.
    pub bdf: String,
    /// PCI device id (`0x401e` Wormhole, `0xb140` Blackhole).
    pub pci_device: u32,
    /// hwmon name (`wormhole`, `blackhole`) and its number (`hwmonX`).
    pub hwmon_name: String,
    pub hwmon_index: u32,
    /// (file, content) in the class device directory, `tt_card_type` among them.
    pub class_files: Vec<(String, String)>,
    /// (file, content) in the hwmon directory (not `name`).
    pub hwmon_files: Vec<(String, String)>,
    /// (file, content) in the PCI function's directory, beyond vendor and device.
    pub pci_files: Vec<(String, String)>,
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn set(v: &mut Vec<(String, String)>, file: &str, content: &str) {
    match v.iter_mut().find(|(f, _)| f == file) {
        Some(e) => e.1 = content.to_string(),
        None => v.push((file.to_string(), content.to_string())),
    }
}

impl SimCard {
    /// A Wormhole card (`n150`, `n300`, `galaxy-wormhole`) with the files its driver
    /// creates and plausible readings; `hwmon_index` defaults to `index + 2`.
    pub fn wormhole(index: u32, bdf: &str, board: &str) -> Self {
        SimCard {
            index,
            bdf: bdf.to_string(),
            pci_device: 0x401e,
            hwmon_name: "wormhole".into(),
            hwmon_index: index + 2,
            class_files: pairs(&[
                ("tt_card_type", &format!("{board}\n")),
                ("tt_aiclk", "1000\n"),
                ("tt_axiclk", "900\n"),
                ("tt_arcclk", "540\n"),
                ("tt_serial", "0000012300000456\n"),
                ("tt_asic_id", "00000ABC00000DEF\n"),
                ("tt_fw_bundle_ver", "18.2.0.0\n"),
                ("tt_arc_fw_ver", "2.30.0.0\n"),
                ("tt_eth_fw_ver", "6.14.0\n"),
                ("tt_m3bl_fw_ver", "5.11.0.0\n"),
                ("tt_m3app_fw_ver", "5.11.1.0\n"),
                ("tt_ttflash_ver", "3.0.0.0\n"),
                ("tt_heartbeat", "1000\n"),
            ]),
            hwmon_files: pairs(&[
                ("temp1_input", "45250\n"),
                ("temp1_max", "75000\n"),
                ("temp1_label", "asic1_temp\n"),
                ("in0_input", "850\n"),
                ("in0_max", "950\n"),
                ("in0_label", "vcore1\n"),
                ("curr1_input", "21000\n"),
                ("curr1_max", "170000\n"),
                ("curr1_label", "current1\n"),
                ("power1_input", "25000000\n"),
                ("power1_max", "150000000\n"),
                ("power1_label", "power1\n"),
            ]),
            pci_files: pairs(&[
                ("current_link_speed", "16.0 GT/s PCIe\n"),
                ("current_link_width", "16\n"),
                ("max_link_speed", "16.0 GT/s PCIe\n"),
                ("max_link_width", "16\n"),
            ]),
        }
    }

    /// A Blackhole card (`p100a`, `p150a/b/c`, `p300a/b/c`, `galaxy-blackhole`): no ARC,
    /// Ethernet, M3 bootloader or tt-flash version files, a fan, a thermal trip count.
    pub fn blackhole(index: u32, bdf: &str, board: &str) -> Self {
        SimCard {
            index,
            bdf: bdf.to_string(),
            pci_device: 0xb140,
            hwmon_name: "blackhole".into(),
            hwmon_index: index + 2,
            class_files: pairs(&[
                ("tt_card_type", &format!("{board}\n")),
                ("tt_aiclk", "1350\n"),
                ("tt_axiclk", "800\n"),
                ("tt_arcclk", "800\n"),
                ("tt_serial", "100001BC00000777\n"),
                ("tt_asic_id", "0000077700000888\n"),
                ("tt_fw_bundle_ver", "80.15.0.0\n"),
                ("tt_m3app_fw_ver", "5.9.0.0\n"),
                ("tt_heartbeat", "77\n"),
                ("tt_therm_trip_count", "2\n"),
            ]),
            hwmon_files: pairs(&[
                ("temp1_input", "61000\n"),
                ("temp1_max", "90000\n"),
                ("temp1_label", "asic_temp\n"),
                ("in0_input", "780\n"),
                ("in0_max", "900\n"),
                ("in0_label", "vcore\n"),
                ("curr1_input", "60000\n"),
                ("curr1_max", "250000\n"),
                ("curr1_label", "current\n"),
                ("power1_input", "120000000\n"),
                ("power1_max", "300000000\n"),
                ("power1_label", "power\n"),
                ("fan1_input", "2400\n"),
                ("fan1_label", "fan_rpm\n"),
            ]),
            pci_files: pairs(&[
                ("current_link_speed", "32.0 GT/s PCIe\n"),
                ("current_link_width", "16\n"),
                ("max_link_speed", "32.0 GT/s PCIe\n"),
                ("max_link_width", "16\n"),
            ]),
        }
    }

    /// Sets (or adds) a class-device attribute before `install`.
    pub fn class(mut self, file: &str, content: &str) -> Self {
        set(&mut self.class_files, file, content);
        self
    }

    /// Sets (or adds) an hwmon attribute before `install`.
    pub fn hwmon(mut self, file: &str, content: &str) -> Self {
        set(&mut self.hwmon_files, file, content);
        self
    }

    /// Sets (or adds) a PCI-function attribute before `install`.
    pub fn pci(mut self, file: &str, content: &str) -> Self {
        set(&mut self.pci_files, file, content);
        self
    }

    /// Removes an attribute of any of the three directories before `install`.
    pub fn without(mut self, file: &str) -> Self {
        for v in [
            &mut self.class_files,
            &mut self.hwmon_files,
            &mut self.pci_files,
        ] {
            v.retain(|(f, _)| f != file);
        }
        self
    }

    fn domain_bus(&self) -> (&str, &str) {
        let mut it = self.bdf.split(':');
        (it.next().unwrap_or("0000"), it.next().unwrap_or("00"))
    }

    /// `pciDDDD:00/DDDD:00:BB.1`: the root complex and the root port the card hangs
    /// off (one port per card, numbered after the card's bus).
    fn bridge_path(&self) -> String {
        let (domain, bus) = self.domain_bus();
        format!("pci{domain}:00/{domain}:00:{bus}.1")
    }

    /// `sys/devices/.../BDF`, relative to the root.
    pub fn pci_path(&self) -> String {
        format!("sys/devices/{}/{}", self.bridge_path(), self.bdf)
    }

    /// The physical class-device directory under `root`.
    pub fn class_dir(&self, root: &Path) -> PathBuf {
        root.join(self.pci_path())
            .join("tenstorrent")
            .join(format!("tenstorrent!{}", self.index))
    }

    /// The physical hwmon directory under `root`.
    pub fn hwmon_dir(&self, root: &Path) -> PathBuf {
        root.join(self.pci_path())
            .join("hwmon")
            .join(format!("hwmon{}", self.hwmon_index))
    }

    /// Writes the card under `root` as the kernel lays it out.
    pub fn install(&self, root: &Path) -> io::Result<()> {
        self.install_pci(root)?;
        self.install_hwmon(root)?;
        self.install_class_device(root)?;
        self.install_links(root)?;
        self.install_dev_and_proc(root)
    }

    /// The root port and the card's PCI function, with its driver and subsystem links.
    fn install_pci(&self, root: &Path) -> io::Result<()> {
        let port = root.join("sys/devices").join(self.bridge_path());
        std::fs::create_dir_all(&port)?;
        // The root port is a PCI device too: a walker that lands on it reads a bridge.
        write(&port.join("vendor"), "0x8086\n")?;
        write(&port.join("device"), "0x7a38\n")?;
        write(&port.join("class"), "0x060400\n")?;

        let pci = root.join(self.pci_path());
        std::fs::create_dir_all(&pci)?;
        write(&pci.join("vendor"), "0x1e52\n")?;
        write(&pci.join("device"), &format!("0x{:04x}\n", self.pci_device))?;
        write(&pci.join("subsystem_vendor"), "0x1e52\n")?;
        write(&pci.join("class"), "0x120000\n")?;
        write(&pci.join("numa_node"), "-1\n")?;
        write(
            &pci.join("uevent"),
            &format!(
                "DRIVER=tenstorrent\nPCI_ID=1E52:{:04X}\nPCI_SLOT_NAME={}\n",
                self.pci_device, self.bdf
            ),
        )?;
        for (f, c) in &self.pci_files {
            write(&pci.join(f), c)?;
        }
        relink(
            "../../../../bus/pci/drivers/tenstorrent",
            &pci.join("driver"),
        )?;
        relink("../../../../bus/pci", &pci.join("subsystem"))?;

        Ok(())
    }

    /// The card's hwmon device under its PCI function.
    fn install_hwmon(&self, root: &Path) -> io::Result<()> {
        let hw = self.hwmon_dir(root);
        std::fs::create_dir_all(&hw)?;
        write(&hw.join("name"), &format!("{}\n", self.hwmon_name))?;
        for (f, c) in &self.hwmon_files {
            write(&hw.join(f), c)?;
        }
        relink(&format!("../../../{}", self.bdf), &hw.join("device"))?;
        relink("../../../../../../class/hwmon", &hw.join("subsystem"))?;

        Ok(())
    }

    /// The driver's class device (`tenstorrent/tenstorrent!N`) and its attributes.
    fn install_class_device(&self, root: &Path) -> io::Result<()> {
        let class = self.class_dir(root);
        std::fs::create_dir_all(class.join("pcie_perf_counters"))?;
        for (f, c) in &self.class_files {
            write(&class.join(f), c)?;
        }
        write(
            &class.join("dev"),
            &format!("{CHAR_MAJOR}:{}\n", self.index),
        )?;
        write(
            &class.join("uevent"),
            &format!(
                "MAJOR={CHAR_MAJOR}\nMINOR={}\nDEVNAME=tenstorrent/{}\n",
                self.index, self.index
            ),
        )?;
        for c in PCIE_PERF_COUNTERS {
            let p = class.join("pcie_perf_counters").join(c);
            if !p.exists() {
                write(&p, "0\n")?;
            }
        }
        relink(&format!("../../../{}", self.bdf), &class.join("device"))?;
        relink(
            "../../../../../../class/tenstorrent",
            &class.join("subsystem"),
        )?;

        Ok(())
    }

    /// The links into `sys/devices`: class, bus, driver and hwmon class entries.
    fn install_links(&self, root: &Path) -> io::Result<()> {
        let to_pci = format!("devices/{}/{}", self.bridge_path(), self.bdf);
        let class_link = root
            .join("sys/class/tenstorrent")
            .join(format!("tenstorrent!{}", self.index));
        relink(
            &format!("../../{to_pci}/tenstorrent/tenstorrent!{}", self.index),
            &class_link,
        )?;
        relink(
            &format!("../../../{to_pci}"),
            &root.join("sys/bus/pci/devices").join(&self.bdf),
        )?;
        relink(
            &format!("../../../../{to_pci}"),
            &root.join("sys/bus/pci/drivers/tenstorrent").join(&self.bdf),
        )?;
        relink(
            &format!("../../{to_pci}/hwmon/hwmon{}", self.hwmon_index),
            &root
                .join("sys/class/hwmon")
                .join(format!("hwmon{}", self.hwmon_index)),
        )?;
        Ok(())
    }

    /// `/dev/tenstorrent/N` and the driver's `/proc` entry with its `pids` file.
    fn install_dev_and_proc(&self, root: &Path) -> io::Result<()> {
        std::fs::create_dir_all(root.join("dev/tenstorrent"))?;
        write(&root.join(format!("dev/tenstorrent/{}", self.index)), "")?;
        std::fs::create_dir_all(root.join(format!("proc/driver/tenstorrent/{}", self.index)))?;
        let pids = root.join(format!("proc/driver/tenstorrent/{}/pids", self.index));
        if !pids.exists() {
            write(&pids, "")?;
        }
        Ok(())
    }

    /// Removes the card as a hot unplug does: its directories and every link to them.
    pub fn remove(&self, root: &Path) -> io::Result<()> {
        let _ = std::fs::remove_dir_all(root.join(self.pci_path()));
        for l in [
            root.join("sys/class/tenstorrent")
                .join(format!("tenstorrent!{}", self.index)),
            root.join("sys/bus/pci/devices").join(&self.bdf),
            root.join("sys/bus/pci/drivers/tenstorrent").join(&self.bdf),
            root.join("sys/class/hwmon")
                .join(format!("hwmon{}", self.hwmon_index)),
            root.join(format!("dev/tenstorrent/{}", self.index)),
        ] {
            let _ = std::fs::remove_file(l);
        }
        let _ =
            std::fs::remove_dir_all(root.join(format!("proc/driver/tenstorrent/{}", self.index)));
        Ok(())
    }

    /// Changes a class-device attribute of an installed card (a new reading).
    pub fn write_class(&self, root: &Path, file: &str, content: &str) -> io::Result<()> {
        write(&self.class_dir(root).join(file), content)
    }

    /// Changes an hwmon attribute of an installed card.
    pub fn write_hwmon(&self, root: &Path, file: &str, content: &str) -> io::Result<()> {
        write(&self.hwmon_dir(root).join(file), content)
    }

    /// Sets the card's live readings, in the units people use, written in the hwmon
    /// units the driver uses (millidegrees, microwatts, milliamperes, RPM).
    pub fn set_readings(&self, root: &Path, r: &Readings) -> io::Result<()> {
        let mut files = vec![
            ("temp1_input", (r.temp_c * 1000.0) as u64),
            ("power1_input", (r.power_w * 1e6) as u64),
        ];
        if let Some(a) = r.current_a {
            files.push(("curr1_input", (a * 1000.0) as u64));
        }
        if let Some(rpm) = r.fan_rpm {
            files.push(("fan1_input", rpm));
        }
        for (f, v) in files {
            self.write_hwmon(root, f, &format!("{v}\n"))?;
        }
        Ok(())
    }
}

/// A simulated card's live readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readings {
    pub temp_c: f64,
    pub power_w: f64,
    pub current_a: Option<f64>,
    pub fan_rpm: Option<u64>,
}

/// Lists `pids` in the driver's pid file of device `index`, one line each, as the
/// driver does (one line per open file descriptor, so a pid may repeat).
pub fn set_holders(root: &Path, index: u32, pids: &[u32]) -> io::Result<()> {
    let d = root.join(format!("proc/driver/tenstorrent/{index}"));
    std::fs::create_dir_all(&d)?;
    let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
    write(&d.join("pids"), &text)
}

/// Replaces a file's content in one step (write a temporary, rename), so a reader
/// never sees half a value, as it never does in sysfs.
fn write(p: &Path, content: &str) -> io::Result<()> {
    let dir = p.parent().unwrap_or(Path::new("."));
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, p)
}

/// Creates (or replaces) the symlink `link -> target`, making its directory.
fn relink(target: &str, link: &Path) -> io::Result<()> {
    if let Some(d) = link.parent() {
        std::fs::create_dir_all(d)?;
    }
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(link)?,
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} exists and is not a link",
                link.display()
            )))
        }
        Err(_) => {}
    }
    symlink(target, link)
}
