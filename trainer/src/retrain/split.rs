//! What the retrain trains and tests on: the catalog of the training days (items, each
//! user's training items, counts) and a temporal test set on the last day.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use recsys_engine::eval::Catalog;
use recsys_schemas::Event;

use crate::archive;
use crate::{Result, TrainerError};

/// The catalog of the training days and the number of their events.
pub(super) fn catalog(
    dir: &Path,
    train_days: &[String],
    cutoff: &BTreeMap<i32, i64>,
    read_rows: usize,
) -> Result<(Catalog, u64)> {
    let mut catalog = Catalog::default();
    let mut events = 0u64;
    archive::read_days_upto(dir, train_days, cutoff, read_rows, &mut |_, batch| {
        for e in &batch {
            catalog.add(e);
        }
        events += batch.len() as u64;
        Ok(())
    })?;
    if events == 0 {
        return Err(TrainerError::Data(format!(
            "no training events in {train_days:?}"
        )));
    }
    Ok((catalog, events))
}

/// The test pairs: each known user's first item on `test_day` (by time) not already in
/// their training data; at most `max_users` of them (a sample seeded by `seed`). Also
/// returns how many were eligible before sampling.
pub(super) fn test_pairs(
    dir: &Path,
    test_day: &str,
    cutoff: &BTreeMap<i32, i64>,
    read_rows: usize,
    catalog: &Catalog,
    max_users: usize,
    seed: u64,
) -> Result<(Vec<(String, String)>, usize)> {
    let mut test_events: Vec<Event> = Vec::new();
    archive::read_days_upto(
        dir,
        &[test_day.to_owned()],
        cutoff,
        read_rows,
        &mut |_, batch| {
            test_events.extend(batch);
            Ok(())
        },
    )?;
    test_events.sort_by_key(|e| e.ts);
    let mut test: Vec<(String, String)> = Vec::new();
    let mut tested: HashSet<String> = HashSet::new();
    for e in test_events {
        let Some(seen) = catalog.seen.get(&e.user_id) else {
            continue;
        };
        if tested.contains(&e.user_id) {
            continue;
        }
        if catalog
            .items
            .get(&e.item_id)
            .is_some_and(|r| seen.contains(&r))
        {
            continue;
        }
        tested.insert(e.user_id.clone());
        test.push((e.user_id, e.item_id));
    }
    if test.is_empty() {
        return Err(TrainerError::Data(format!(
            "no test users: nobody active on {test_day} was active before it"
        )));
    }
    let eligible = test.len();
    if test.len() > max_users {
        test.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x7E57));
        test.truncate(max_users);
    }
    Ok((test, eligible))
}
