//! A cursor over a file's bytes for the little-endian formats of snapshots and
//! checkpoints: every short read is an error naming the file and the position.

use std::path::Path;

use crate::{IndexError, Result};

pub struct Reader<'a> {
    bytes: &'a [u8],
    pub at: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], at: usize, path: &'a Path) -> Self {
        Self { bytes, at, path }
    }

    pub fn bad(&self, why: impl std::fmt::Display) -> IndexError {
        IndexError::Snapshot(format!("{}: {why}", self.path.display()))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.bad(format!("truncated at byte {}", self.at)))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// `n` strings, each a `u32` length and UTF-8 bytes.
    pub fn strings(&mut self, n: usize) -> Result<Vec<String>> {
        (0..n)
            .map(|_| {
                let len = self.u32()? as usize;
                let bytes = self.take(len)?;
                std::str::from_utf8(bytes)
                    .map(str::to_owned)
                    .map_err(|_| self.bad("an id is not UTF-8"))
            })
            .collect()
    }

    pub fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = n.checked_mul(4).ok_or_else(|| self.bad("size overflow"))?;
        Ok(self
            .take(bytes)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}
