//! What `cargo xtask dist` checks in a built binary's ELF header: the
//! machine it is for, 32 or 64 bits, and whether it asks for a dynamic
//! loader. Read from the file itself, so that the check means the same for a
//! foreign binary (where `ldd` cannot help) and needs no `file(1)`.

use std::fmt;

/// `e_machine` values of the targets `dist` builds.
pub const EM_ARM: u16 = 40;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// Program header type of the dynamic loader's path.
const PT_INTERP: u32 = 3;

/// The facts of one ELF file that `dist` checks.
#[derive(Debug, PartialEq, Eq)]
pub struct Elf {
    pub machine: u16,
    pub bits: u8,
    /// A PT_INTERP header: the kernel starts a dynamic loader first.
    pub interp: bool,
}

impl fmt::Display for Elf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let machine = match self.machine {
            EM_ARM => "ARM",
            EM_X86_64 => "x86-64",
            EM_AARCH64 => "AArch64",
            _ => "machine",
        };
        let linking = if self.interp { "dynamic" } else { "static" };
        write!(
            f,
            "ELF {}-bit {machine} (e_machine {}), {linking}",
            self.bits, self.machine
        )
    }
}

/// Parse the header and program headers of a little-endian ELF file.
pub fn parse(bytes: &[u8]) -> Result<Elf, String> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".to_owned());
    }
    let bits = match bytes.get(4) {
        Some(1) => 32,
        Some(2) => 64,
        other => return Err(format!("unknown ELF class {other:?}")),
    };
    if bytes.get(5) != Some(&1) {
        return Err("not a little-endian ELF file".to_owned());
    }
    let u16_at = |at: usize| -> Result<u16, String> {
        let b = bytes.get(at..at + 2).ok_or("ELF header cut short")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| -> Result<u32, String> {
        let b = bytes.get(at..at + 4).ok_or("ELF header cut short")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| -> Result<u64, String> {
        let b = bytes.get(at..at + 8).ok_or("ELF header cut short")?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let machine = u16_at(18)?;
    // Elf32_Ehdr and Elf64_Ehdr differ from e_entry on (4 or 8 bytes wide).
    let (phoff, phentsize, phnum) = if bits == 32 {
        (u64::from(u32_at(28)?), u16_at(42)?, u16_at(44)?)
    } else {
        (u64_at(32)?, u16_at(54)?, u16_at(56)?)
    };
    let mut interp = false;
    for i in 0..u64::from(phnum) {
        let at = i
            .checked_mul(u64::from(phentsize))
            .and_then(|off| off.checked_add(phoff))
            .and_then(|at| usize::try_from(at).ok())
            .ok_or("program header offset overflows")?;
        // p_type is the first word of Elf32_Phdr and Elf64_Phdr alike.
        interp |= u32_at(at)? == PT_INTERP;
    }
    Ok(Elf {
        machine,
        bits,
        interp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 32-bit ARM header with the given program header types.
    fn arm32(types: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; 52];
        bytes[..6].copy_from_slice(b"\x7fELF\x01\x01");
        bytes[18..20].copy_from_slice(&EM_ARM.to_le_bytes());
        bytes[28..32].copy_from_slice(&52u32.to_le_bytes());
        bytes[42..44].copy_from_slice(&32u16.to_le_bytes());
        bytes[44..46].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for &ty in types {
            let mut phdr = [0u8; 32];
            phdr[..4].copy_from_slice(&ty.to_le_bytes());
            bytes.extend_from_slice(&phdr);
        }
        bytes
    }

    #[test]
    fn elf32_static_and_dynamic() {
        let load = 1;
        let dynamic = 2;
        let static_bin = parse(&arm32(&[load, load])).unwrap();
        assert_eq!(
            static_bin,
            Elf {
                machine: EM_ARM,
                bits: 32,
                interp: false
            }
        );
        assert!(parse(&arm32(&[load, PT_INTERP, dynamic])).unwrap().interp);
    }

    #[test]
    fn this_test_binary_is_a_dynamic_64_bit_host_binary() {
        let bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = parse(&bytes).unwrap();
        assert_eq!(u32::from(elf.bits), usize::BITS);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(elf.machine, EM_X86_64);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(elf.machine, EM_AARCH64);
        assert!(elf.interp, "cargo test binaries are dynamic");
    }

    #[test]
    fn refuses_what_is_not_a_whole_elf_header() {
        assert!(parse(b"#!/bin/sh\n").is_err());
        assert!(parse(b"\x7fELF\x02\x01").is_err());
        assert!(parse(b"\x7fELF\x02\x02").is_err(), "big-endian");
        let mut cut = arm32(&[1]);
        cut.truncate(54);
        assert!(parse(&cut).is_err(), "program header past the end");
    }
}
