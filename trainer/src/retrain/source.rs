//! The archive as a source of training events: the given days, below the cutoff, read
//! on a second thread while this one trains (reading and training overlap; at most two
//! read batches wait in between).

use std::collections::BTreeMap;
use std::path::Path;

use recsys_engine::train::EventSource;
use recsys_schemas::Event;

use crate::archive;
use crate::{Result, TrainerError};

pub(super) struct ArchiveDays<'a> {
    pub(super) dir: &'a Path,
    pub(super) days: &'a [String],
    pub(super) cutoff: &'a BTreeMap<i32, i64>,
    /// Rows per Parquet read (and shuffle window).
    pub(super) read_rows: usize,
}

impl EventSource for ArchiveDays<'_> {
    type Error = TrainerError;

    fn pass(&mut self, sink: &mut dyn FnMut(Vec<Event>) -> Result<()>) -> Result<()> {
        let Self {
            dir,
            days,
            cutoff,
            read_rows,
        } = *self;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(2);
            let reader = scope.spawn(move || {
                archive::read_days_upto(dir, days, cutoff, read_rows, &mut |_, b| {
                    // The trainer hung up (it failed): stop reading.
                    tx.send(b)
                        .map_err(|_| TrainerError::Task("training stopped".into()))
                })
            });
            let mut trained = Ok(());
            for batch in rx.iter() {
                trained = sink(batch);
                if trained.is_err() {
                    break;
                }
            }
            drop(rx);
            trained?;
            reader
                .join()
                .map_err(|_| TrainerError::Task("the archive reader panicked".into()))?
        })
    }
}
