//! JSON lines: one event object per line, as produced to the `events` topic. An event
//! without `ts` takes its line number.

use std::path::Path;

use recsys_schemas::Event;

use super::{at, lines};
use crate::Result;

pub(super) fn read(path: &Path) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let line = line.map_err(|e| at(path, n, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let e = Event::from_json(line.as_bytes(), n as i64).map_err(|e| at(path, n, e))?;
        out.push(e);
    }
    Ok(out)
}
